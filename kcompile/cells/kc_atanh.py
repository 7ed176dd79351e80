"""``kc_atanh``: the two-pair two-stage tanh cell (law ``tanh_affine``, ``tanh(θ0·vs + θ1·vd + θ2)``).

Template ``templates/cells/tanh2.sp.j2`` with two input pairs: stage 1 is the
two-pair signed transconductor (pairs as :mod:`kcompile.cells.kc_arelu`, both
cores, dead zone filled by ``ap = an``) into ``rl``; stage 2 and ``iz`` (θ2)
as :mod:`kcompile.cells.kc_tanh2`, whose characterisation sets the stage-2
tails. The table is fitted on the ``(vs, vd)`` plane with kc_arelu's fits.
docs/cells.md has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..pdk import get_pdk
from ..scaling import Scaling
from .base import WINDOW_GRID, Cell, default_scaling, fit_each, interp_rows, nearest, nominal_r, slope_ceiling, tail_currents
from .kc_arelu import (AFFINE_GRID, AffineCalibration, AffineTable, PairArrays, coefficient_reason, pairs_for,
                       pairs_of, plane_fits, plane_refine_fit, report_affine)
from .kc_gm import GM_SIZES, dead_zone, offset_after
from .kc_tanh2 import TANH2_PARAMS, Tanh2Params, characterize_tanh2
from .sweep import measure_diff


@dataclass(frozen=True, eq=False, kw_only=True)
class AffineTanhCalibration(AffineCalibration):
    """An :class:`kcompile.cells.kc_arelu.AffineCalibration` of stage 1 (``inj_gain`` unused), with stage 1's
    crossover ``eps`` per row ``(2, K)`` (filled by ``ap = an``), ``iz_gain``: θ2 per unit of ``iz/i0`` (the offset
    current into the tanh stage's input), stage 2's tail ``ib2`` per side (A) and the z-to-vr resistor ``rl`` (ohm)."""

    eps: np.ndarray
    iz_gain: float
    ib2: float
    rl: float


@dataclass(frozen=True, eq=False)
class AffineTanhArrays(PairArrays):
    """Instance parameters of many ``kc_atanh`` instances: :class:`kcompile.cells.kc_arelu.PairArrays`, the
    dead-zone fill ``ap`` (= ``an``), θ2 as ``iz`` (A), and ``rl``, ``ib2`` (the same for every instance)."""

    ap: np.ndarray
    iz: np.ndarray
    rl: float
    ib2: float

    def __getitem__(self, i: int) -> Tanh2Params:
        return Tanh2Params(str(self.signs[i]), float(self.r[i]), float(self.ib[i]), self.rl, self.ib2,
                           rb=float(self.rb[i]), ibb=float(self.ibb[i]), ap=float(self.ap[i]), an=float(self.ap[i]),
                           iz=float(self.iz[i]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "ap": self.ap, "iz": self.iz}


def affine_tanh_param_arrays(theta: np.ndarray, cal: AffineTanhCalibration) -> AffineTanhArrays:
    """Instances realising ``tanh(θ0·vs + θ1·vd + θ2)`` for rows of ``theta`` ``[E, 3]`` (coefficients clipped into
    the calibrated range): θ2 as a current into the tanh stage's input node; stage 1's dead zone filled."""
    theta = np.asarray(theta, dtype=float)
    q = pairs_for(theta, cal)
    lr = np.log(cal.r)
    need = theta[:, 2] - q.own
    i0 = cal.scaling.i0
    ra, rb = np.exp(q.log_ra), np.exp(q.log_rb)
    eps = 0.5 * (interp_rows(q.log_ra, q.neg_a, lr, cal.eps) + interp_rows(q.log_rb, q.neg_b, lr, cal.eps))
    return AffineTanhArrays(q.signs(), ra, tail_currents(ra, cal.scaling), rb, tail_currents(rb, cal.scaling),
                            np.maximum(-eps, 0.0) / cal.iz_gain * i0, need / cal.iz_gain * i0, cal.rl, cal.ib2)


def affine_tanh_achieved(p: AffineTanhArrays, cal: AffineTanhCalibration) -> np.ndarray:
    """The ``[E, 3]`` θ the calibration predicts for instances ``p``."""
    a, b, q = pairs_of(p, cal)
    return np.stack([a, b, q.own + cal.iz_gain * p.iz / cal.scaling.i0], axis=1)


def fit_affine_tanh(vs: np.ndarray, vd: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Least-squares ``(θ0, θ1, θ2, eps)`` of ``tanh(dz(θ0·vs + θ1·vd + θ2, eps))`` (stage 1's cores: dead zone
    ``eps < 0``, as :func:`kcompile.cells.kc_gm.gm_model` ``tanh2``) to a measured current (model units)."""
    x, y, z = np.ravel(vs), np.ravel(vd), np.ravel(current)
    lin = np.abs(z) < 0.7
    start = np.linalg.lstsq(np.c_[x[lin], y[lin], np.ones(lin.sum())], np.arctanh(np.clip(z[lin], -0.99, 0.99)),
                            rcond=None)[0]

    def model(q):
        arg = q[0] * x + q[1] * y + q[2]
        return np.tanh(dead_zone(arg, q[3]))

    return least_squares(lambda q: model(q) - z, np.r_[start, 0.0], method="lm").x


# kc_atanh's table: nominal coefficients 0.002 … 1. Above ~1 the (vs, vd) grid (0.5 units) cannot resolve the
# tanh's transition (the fits fell to 0.86 at nominal 1 and 1.0 at nominal 2); below ~0.005 the table
# instances' own stage-1 dead zone (no fill yet) hides the slope, which is extrapolated as 1/r there
# (:func:`one_over_r`; kc_gm's linear table follows 1/r down to 0.0012).
AFFINE_TANH_THETA0 = np.geomspace(0.002, 1.0, 10)


def one_over_r(c: np.ndarray, r: np.ndarray, tol: float = 0.2) -> np.ndarray:
    """Coefficients of a table row (increasing ``r``) with the tail that falls below ``1/r`` scaling by more
    than ``tol`` replaced by the ``1/r`` extrapolation of the last entry that did not."""
    out = c.copy()
    for k in range(1, c.size):
        if abs(out[k]) * r[k] < (1 - tol) * abs(out[k - 1]) * r[k - 1]:
            out[k:] = out[k - 1] * r[k - 1] / r[k:]
            break
    return out


def characterize_affine_tanh(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                             theta0: np.ndarray = AFFINE_TANH_THETA0, cache: bool = True,
                             cell: Cell | None = None) -> AffineTable:
    """DC-sweep ``kc_atanh`` on the (vs, vd) plane: rows ``pp``/``nn`` with both pairs at each ``r``, then
    ``r[inj_k]`` with ``iz`` = ±1 unit. Stage 2 is ``kc_tanh2``'s, with its tails."""
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    stage2 = characterize_tanh2(pdk_name, corner, scaling, cache)  # kc_tanh2's stage 2: its tails and rl
    ib2, rl = float(stage2.ib[-1]), stage2.rl
    r = np.sort(nominal_r(1.0, scaling) / np.asarray(theta0, dtype=float))
    inj_k = nearest(r, 0.5, scaling)
    levels = np.array([-1.0, 1.0])
    ib = tail_currents(r, scaling)
    inst = [Tanh2Params(v, float(x), float(b), rl, ib2, rb=float(x), ibb=float(b))
            for v in ("pp", "nn") for x, b in zip(r, ib)]
    rk, bk = float(r[inj_k]), float(ib[inj_k])
    inst += [Tanh2Params("pp", rk, bk, rl, ib2, rb=rk, ibb=bk, iz=lvl * scaling.i0) for lvl in levels]
    sweep = measure_diff(cell or CELL, pdk, corner, inst, scaling, *AFFINE_GRID, cache=cache)
    return AffineTable(pdk_name, corner, scaling, r, inj_k, levels, sweep)


def calibrate_affine_tanh(table: AffineTable) -> AffineTanhCalibration:
    """Fit every instance of :func:`characterize_affine_tanh` (``|vs|, |vd| ≤ 4``) into an
    :class:`AffineTanhCalibration`."""
    vs, vd, sink, fits, rows = plane_fits(table, fit_affine_tanh)
    coefs = lambda j: np.array([one_over_r(row, table.r) for row in rows(j)])  # noqa: E731
    # θ2 per unit iz: iz enters after stage 1's dead zone, so fit tanh(dz(θ0·vs + θ1·vd + θ2, eps) + d)
    a, b, c, e = fits[table.inj_k]
    core = dead_zone(a * vs + b * vd + c, e)
    d = [offset_after(core, current) for current in sink[2 * table.r.size:]]
    gain = float(np.polyfit(table.inj_levels, d, 1)[0])
    stage2 = characterize_tanh2(table.pdk, table.corner, table.scaling)
    return AffineTanhCalibration(table.pdk, table.corner, CELL.name, table.scaling, table.r, coefs(0), coefs(1),
                                 rows(2), np.ones(2), eps=rows(3), iz_gain=gain, ib2=float(stage2.ib[-1]),
                                 rl=stage2.rl)


@dataclass(frozen=True)
class AffineTanh(Cell):
    """The two-pair two-stage tanh cell (see the module docstring)."""

    refinable = True

    def characterize(self, pdk_name="generic180", corner="tt", scaling=None, cache=True) -> AffineTable:
        return characterize_affine_tanh(pdk_name, corner, scaling, cache=cache, cell=self)

    def calibrate(self, table: AffineTable) -> AffineTanhCalibration:
        return calibrate_affine_tanh(table)

    def theta_box(self, law: str, cal: AffineTanhCalibration) -> tuple[tuple[float, float], ...]:
        return (slope_ceiling(cal), slope_ceiling(cal), (-1.0, 1.0))

    def param_arrays(self, law: str, theta: np.ndarray, cal: AffineTanhCalibration) -> AffineTanhArrays:
        return affine_tanh_param_arrays(theta, cal)

    def achieved(self, law: str, params: AffineTanhArrays, cal: AffineTanhCalibration) -> np.ndarray:
        return affine_tanh_achieved(params, cal)

    def clip_reason(self, law: str, theta: np.ndarray, instance, cal) -> str | None:
        # θ2 is a current into z, which stage 2's input takes either way: only the coefficients can be out of range
        return coefficient_reason(theta, cal)

    def refine_columns(self, law: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (0, 1), (2,)

    def refine_fit(self, law: str, theta: np.ndarray, delta: np.ndarray, mid: np.ndarray,
                   current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`fit_affine_tanh` (θ0, θ1, θ2) to each device's current on the window's ``(vs, vd)`` points."""
        return fit_each(theta, plane_refine_fit(delta, mid, current, fit_affine_tanh, 3, lambda i: True))

    def report(self, study: str, pdk_name: str, corner: str) -> None:
        report_affine(self, study, self.calibration(pdk_name, corner), fit_affine_tanh, np.tanh, False, pdk_name,
                      corner)


CELL = AffineTanh(
    name="kc_atanh",
    template="tanh2.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("tanh_affine",),
    params=TANH2_PARAMS,
    sizes=GM_SIZES,
    options=(("pairs", 2), ("stages", 2)),
    variants=("pp", "pn", "np", "nn"),
    includes=("signed_gm.sp.j2",),
    mid_points=33,  # affine laws depend on the common mode as much as on Δ: 0.25-unit steps (4x the default)
    # measured on generic180 tt (docs/cells.md, tanh_affine): coefficients within 1.4-5 %, θ2 within 0.007 units
    # (3.5 nA), s/d copy 1.3-2.7 %
    accuracy_spec=(("gain", 0.03), ("offset_i", 3.5e-9), ("offset_v", 2e-3), ("copy", 0.027), ("c_cell", 150e-15)),
    refine_grid=WINDOW_GRID,
)
