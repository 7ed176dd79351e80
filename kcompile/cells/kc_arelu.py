"""``kc_arelu``: the two-pair ReLU cell (law ``relu_affine``, ``max(θ0·vs + θ1·vd + θ2, 0)``).

Template ``templates/cells/signed_gm.sp.j2`` with two input pairs, ``s`` against
``vr`` (pair A, θ0) and ``d`` against ``vr`` (pair B, θ1), into one ReLU core.
Four variants, one sign letter per pair (``pp``, ``pn``, ``np``, ``nn``). θ2 is
the pairs' own offset plus a current added at the core (``ap``) or subtracted
through its mirror (``sp``). :func:`characterize_affine_relu` sweeps rows
``pp``/``nn`` with both pairs at each resistor on the ``(vs, vd)`` plane, plus
injection points. The two-pair tanh cell (:mod:`kcompile.cells.kc_atanh`)
reuses the plane fits. docs/cells.md has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import least_squares

from ..pdk import get_pdk
from ..scaling import Scaling
from .base import (MIN_CURRENT, WINDOW_GRID, Cell, clip_reason, coef, default_scaling, fit_each, interp_rows, log_r,
                   magnitude_range, nearest, nominal_r, slope_ceiling, tail_currents)
from .kc_gm import GM_PARAMS, GM_SIZES, GmParams
from .sweep import DiffSweep, measure_diff


@dataclass(frozen=True, eq=False)
class AffineCalibration:
    """Measured map from two-pair instance parameters to achieved θ of ``max(θ0·vs + θ1·vd + θ2, 0)``.

    Table instances have both pairs at the same ``r`` and sign (row 0: ``pp``, row 1: ``nn``).

    Attributes
    ----------
    r : ndarray, shape (K,)
        Degeneration resistors (ohms, increasing); each pair's tail is ``tail_current(r)``.
    a, b : ndarray, shape (2, K)
        Fitted coefficient of vs (pair A) and of vd (pair B).
    own : ndarray, shape (2, K)
        Fitted θ2 with no injection (both pairs' offsets and the core's); an instance is assigned the
        mean of its two pairs' values.
    inj_gain : ndarray, shape (2,)
        Achieved θ2 per unit of ``ap`` (added at xp) and per unit of ``sp`` (subtracted through the mirror).
    """

    pdk: str
    corner: str
    cell: str
    scaling: Scaling
    r: np.ndarray
    a: np.ndarray
    b: np.ndarray
    own: np.ndarray
    inj_gain: np.ndarray

    def theta0_range(self, negative: bool = False) -> tuple[float, float]:
        """Smallest and largest achievable coefficient magnitude (the tighter of the two pairs)."""
        (lo_a, hi_a), (lo_b, hi_b) = (magnitude_range(t, int(negative)) for t in (self.a, self.b))
        return max(lo_a, lo_b), min(hi_a, hi_b)


@dataclass(frozen=True, eq=False)
class PairArrays:
    """Both pairs of many two-pair instances (arrays of one length): variant, resistors, tails."""

    signs: np.ndarray  # str: "pp", "pn", "np", "nn"
    r: np.ndarray
    ib: np.ndarray
    rb: np.ndarray
    ibb: np.ndarray

    def __len__(self) -> int:
        return self.r.size

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``devices.npz`` records (``ipos``, ``ineg``: zeros, the columns every build has written)."""
        zero = np.zeros(self.r.shape[0])
        return {"negative": np.array([str(s)[0] == "n" for s in self.signs], dtype=bool),
                "swap": np.zeros(self.r.shape[0], dtype=bool), "r": self.r, "ib": self.ib, "ipos": zero,
                "ineg": zero, "signs": self.signs, "rb": self.rb, "ibb": self.ibb}


@dataclass(frozen=True, eq=False)
class AffineArrays(PairArrays):
    """Instance parameters of many ``kc_arelu`` instances: :class:`PairArrays` and θ2's injections ``ap``, ``sp``."""

    ap: np.ndarray
    sp: np.ndarray

    def __getitem__(self, i: int) -> GmParams:
        return GmParams(str(self.signs[i]), float(self.r[i]), float(self.ib[i]), rb=float(self.rb[i]),
                        ibb=float(self.ibb[i]), ap=float(self.ap[i]), sp=float(self.sp[i]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "ap": self.ap, "sp": self.sp}


@dataclass(frozen=True, eq=False)
class Pairs:
    """What the coefficient tables give per device: each pair's sign and log r, and the mean own θ2."""

    neg_a: np.ndarray
    log_ra: np.ndarray
    neg_b: np.ndarray
    log_rb: np.ndarray
    own: np.ndarray

    def signs(self) -> np.ndarray:
        return np.char.add(np.where(self.neg_a, "n", "p"), np.where(self.neg_b, "n", "p"))


def _log_r_for(c: np.ndarray, table: np.ndarray, cal: AffineCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Sign row and log r realising ``|c|`` from a ``(2, K)`` coefficient table (clipped into range)."""
    neg = c < 0
    (lo_p, hi_p), (lo_n, hi_n) = magnitude_range(table, 0), magnitude_range(table, 1)
    x = np.clip(np.abs(c), np.where(neg, lo_n, lo_p), np.where(neg, hi_n, hi_p))
    return neg, log_r(x, neg, table, cal.r)


def pairs_for(theta: np.ndarray, cal: AffineCalibration) -> Pairs:
    """Both pairs of the rows of ``theta`` ``[E, 3]`` (coefficients clipped into the calibrated range)."""
    lr = np.log(cal.r)
    neg_a, log_ra = _log_r_for(theta[:, 0], cal.a, cal)
    neg_b, log_rb = _log_r_for(theta[:, 1], cal.b, cal)
    own = 0.5 * (interp_rows(log_ra, neg_a, lr, cal.own) + interp_rows(log_rb, neg_b, lr, cal.own))
    return Pairs(neg_a, log_ra, neg_b, log_rb, own)


def pairs_of(p: PairArrays, cal: AffineCalibration) -> tuple[np.ndarray, np.ndarray, Pairs]:
    """The coefficients (θ0, θ1) the calibration predicts for instances ``p``, and their :class:`Pairs`."""
    lr = np.log(cal.r)
    neg_a = np.array([s[0] == "n" for s in p.signs], dtype=bool)
    neg_b = np.array([s[1] == "n" for s in p.signs], dtype=bool)
    la, lb = np.log(p.r), np.log(p.rb)
    own = 0.5 * (interp_rows(la, neg_a, lr, cal.own) + interp_rows(lb, neg_b, lr, cal.own))
    return coef(la, neg_a, cal.a, cal.r), coef(lb, neg_b, cal.b, cal.r), Pairs(neg_a, la, neg_b, lb, own)


def affine_param_arrays(theta: np.ndarray, cal: AffineCalibration) -> AffineArrays:
    """Instances realising ``max(θ0·vs + θ1·vd + θ2, 0)`` for rows of ``theta`` ``[E, 3]`` (coefficients clipped
    into the calibrated range): θ2 above the own offset by ``ap``, below it by ``sp``."""
    theta = np.asarray(theta, dtype=float)
    q = pairs_for(theta, cal)
    need = theta[:, 2] - q.own
    i0 = cal.scaling.i0
    ra, rb = np.exp(q.log_ra), np.exp(q.log_rb)
    return AffineArrays(q.signs(), ra, tail_currents(ra, cal.scaling), rb, tail_currents(rb, cal.scaling),
                        np.where(need >= 0, need / cal.inj_gain[0], 0.0) * i0,
                        np.where(need < 0, -need / cal.inj_gain[1], 0.0) * i0)


def affine_achieved(p: AffineArrays, cal: AffineCalibration) -> np.ndarray:
    """The ``[E, 3]`` θ the calibration predicts for instances ``p``."""
    a, b, q = pairs_of(p, cal)
    return np.stack([a, b, q.own + (p.ap * cal.inj_gain[0] - p.sp * cal.inj_gain[1]) / cal.scaling.i0], axis=1)


def coefficient_reason(theta: np.ndarray, cal) -> str | None:
    """Why a two-pair device is flagged for a coefficient beyond the calibrated ceiling (or below a floor coarser
    than :data:`kcompile.cells.base.THETA0_RESOLUTION`), or ``None``."""
    for j, name in ((0, "θ0 (vs)"), (1, "θ1 (vd)")):
        why = clip_reason(float(theta[j]), cal)
        if why:
            return f"{name}: {why}"
    return None


# kc_arelu subtracts θ2 through the core's PMOS mirror, whose input carries the copy of I2 ≈ (ib + ibb)/1.08:
# a subtraction above this fraction of it starves the mirror
SP_HEADROOM = 0.8


def affine_reason(theta: np.ndarray, sp: float, tails: float, cal: AffineCalibration) -> str | None:
    """Why a relu_affine device is flagged: a coefficient beyond the calibrated ceiling (or below a floor coarser
    than the resolution), or a θ2 too negative for the core's mirror to subtract."""
    why = coefficient_reason(theta, cal)
    if why:
        return why
    if sp > SP_HEADROOM * tails / 1.08:
        return (f"θ2 {theta[2]:.4g} needs {sp:.3g} A subtracted at the ReLU core, more than {SP_HEADROOM:g} of "
                f"its mirror current {tails / 1.08:.3g} A (the copy of I2: both pairs' tails); not realisable at "
                "these tails")
    return None


# ---------------------------------------------------------------- characterisation and calibration

def fit_affine_relu(vs: np.ndarray, vd: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Least-squares ``(θ0, θ1, θ2)`` of ``max(θ0·vs + θ1·vd + θ2, 0)`` to a measured current (model units)."""
    x, y, z = np.ravel(vs), np.ravel(vd), np.ravel(current)
    on = z > 0.1 * z.max()
    start = np.linalg.lstsq(np.c_[x[on], y[on], np.ones(on.sum())], z[on], rcond=None)[0]
    return least_squares(lambda q: np.maximum(q[0] * x + q[1] * y + q[2], 0.0) - z, start, method="lm").x


@dataclass(frozen=True, eq=False)
class AffineTable:
    """Characterisation of a two-pair cell: rows ``pp``/``nn`` at each ``r``, then injection points."""

    pdk: str
    corner: str
    scaling: Scaling
    r: np.ndarray
    inj_k: int
    inj_levels: np.ndarray
    sweep: DiffSweep


AFFINE_GRID = (8.0, 33, 4.0, 17)  # Δ ∈ ±8 (0.5 apart), common mode ∈ ±4 (0.5 apart): the (vs, vd) plane
AFFINE_RELU_THETA0 = np.geomspace(0.002, 8.0, 13)  # nominal coefficients of the table (as kc_relu's)


def affine_instances(r: np.ndarray, inj_k: int, levels: np.ndarray, scaling: Scaling) -> list[GmParams]:
    """Table instances of :class:`AffineTable`."""
    ib = tail_currents(r, scaling)
    base = [GmParams(v, float(x), float(b), rb=float(x), ibb=float(b)) for v in ("pp", "nn") for x, b in zip(r, ib)]
    rk, bk = float(r[inj_k]), float(ib[inj_k])
    inj = [GmParams("pp", rk, bk, rb=rk, ibb=bk, ap=lvl * scaling.i0) for lvl in levels]
    inj += [GmParams("pp", rk, bk, rb=rk, ibb=bk, sp=lvl * scaling.i0) for lvl in levels]
    return base + inj


def characterize_affine_relu(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                             theta0: np.ndarray = AFFINE_RELU_THETA0, cache: bool = True,
                             cell: Cell | None = None) -> AffineTable:
    """DC-sweep ``kc_arelu`` on the (vs, vd) plane over a table of resistors (both pairs equal)."""
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = np.sort(nominal_r(1.0, scaling) / np.asarray(theta0, dtype=float))
    inj_k = nearest(r, 1.0, scaling)
    levels = np.array([1.0, 2.0])
    sweep = measure_diff(cell or CELL, pdk, corner, affine_instances(r, inj_k, levels, scaling), scaling,
                         *AFFINE_GRID, cache=cache)
    return AffineTable(pdk_name, corner, scaling, r, inj_k, levels, sweep)


def plane(sw: DiffSweep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """vs, vd of a (Δ, m) grid and the mask of points with both inside ±4 units."""
    vs = sw.mid[None, :] + sw.delta[:, None] / 2
    vd = sw.mid[None, :] - sw.delta[:, None] / 2
    return vs, vd, (np.abs(vs) <= 4.0 + 1e-9) & (np.abs(vd) <= 4.0 + 1e-9)


def plane_fits(table: AffineTable, fit: Callable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                           Callable]:
    """Every instance's s-side current fitted by ``fit(vs, vd, current)`` on ``|vs|, |vd| ≤ 4``: the points'
    ``vs``, ``vd``, the currents there ``[n, P]``, the fits ``[n, J]``, and ``rows(j)``: fit column ``j`` of the
    ``pp``/``nn`` table rows as ``[2, len(table.r)]``."""
    vs, vd, ok = plane(table.sweep)
    vs, vd, sink = vs[ok], vd[ok], table.sweep.sink[:, ok]
    fits = np.array([fit(vs, vd, current) for current in sink])
    k = table.r.size
    return vs, vd, sink, fits, lambda j: fits[:2 * k, j].reshape(2, k)


def calibrate_affine_relu(table: AffineTable) -> AffineCalibration:
    """Fit every instance (s-side current, ``|vs|, |vd| ≤ 4``) into an :class:`AffineCalibration`."""
    *_, fits, rows = plane_fits(table, fit_affine_relu)
    k = table.r.size
    own = fits[table.inj_k, 2]
    n = table.inj_levels.size
    x = np.r_[0.0, table.inj_levels]
    gain_ap = np.polyfit(x, np.r_[own, fits[2 * k:2 * k + n, 2]], 1)[0]
    gain_sp = -np.polyfit(x, np.r_[own, fits[2 * k + n:, 2]], 1)[0]
    return AffineCalibration(table.pdk, table.corner, CELL.name, table.scaling, table.r, rows(0), rows(1),
                             rows(2), np.array([gain_ap, gain_sp]))


# ---------------------------------------------------------------- re-measured accuracy

# targets re-measured by ``python -m kcompile.characterize PDK CORNER LAW`` (docs/cells.md)
AFFINE_TARGETS = [(0.3, -0.2, 0.1), (-0.3, 0.25, 0.2), (0.5, 0.5, -0.3), (-0.2, -0.3, 0.5), (1.0, -1.0, 0.0),
                  (0.05, -0.1, 0.2), (0.25, 0.0, 0.3)]


def report_affine(cell: Cell, law: str, cal, fit: Callable, ideal: Callable, relative: bool, pdk_name: str,
                  corner: str) -> None:
    """Print a two-pair cell's calibration and the re-measured accuracy of :data:`AFFINE_TARGETS`: ``fit`` the
    plane fit, ``ideal(arg)`` the law of ``arg = θ0·vs + θ1·vd + θ2``, errors relative to the ideal full scale
    (``relative``) or to 1."""
    np.set_printoptions(precision=4, suppress=True, linewidth=160)
    print(f"{law} on {pdk_name}/{corner} ({cal.cell}): r {cal.r}\n  a {cal.a}\n  b {cal.b}\n  own {cal.own}")
    arrays = cell.param_arrays(law, np.array(AFFINE_TARGETS, dtype=float), cal)
    params = [arrays[i] for i in range(len(AFFINE_TARGETS))]
    sweep = measure_diff(cell, get_pdk(cal.pdk), cal.corner, params, cal.scaling, *AFFINE_GRID)
    vs, vd, ok = plane(sweep)
    for k, t in enumerate(AFFINE_TARGETS):
        got = fit(vs[ok], vd[ok], sweep.sink[k][ok])
        want = ideal(t[0] * vs + t[1] * vd + t[2])
        fs = float(np.abs(want[ok]).max()) if relative else 1.0
        err = np.abs(sweep.sink[k] - want)[ok]
        copy = np.abs(sweep.source[k] - sweep.sink[k])[ok].max()
        print(f"  target {t} [{params[k].signs}] -> fit {np.round(got[:3], 4)}; max err {100 * err.max() / fs:.2f} % "
              f"rms {100 * np.sqrt((err ** 2).mean()) / fs:.2f} % of fs {fs:.3g} (|vs|, |vd| <= 4); "
              f"s/d copy {100 * copy / fs:.2f} %")


# ---------------------------------------------------------------- the cell

def plane_refine_fit(delta: np.ndarray, mid: np.ndarray, current: np.ndarray, fit: Callable, columns: int,
                     conducts: Callable[[np.ndarray], bool]) -> Callable[[int], np.ndarray | None]:
    """Per device ``e``, the first ``columns`` of ``fit(vs, vd, current[e])`` on the refinement window, or ``None``
    where the device does not ``conducts`` enough to be fitted (:func:`kcompile.cells.base.fit_each`)."""
    vs, vd = mid + delta / 2, mid - delta / 2
    return lambda e: fit(vs, vd, current[e])[:columns] if conducts(current[e]) else None


def relu_conducts(current: np.ndarray) -> bool:
    """Whether a ReLU-type device conducts enough inside the window for a fit: at least
    :data:`kcompile.cells.base.MIN_CURRENT` and on at six grid points."""
    return bool(current.max() >= MIN_CURRENT and (current > 0.1 * current.max()).sum() >= 6)


@dataclass(frozen=True)
class AffineRelu(Cell):
    """The two-pair ReLU cell (see the module docstring)."""

    refinable = True

    def characterize(self, pdk_name="generic180", corner="tt", scaling=None, cache=True) -> AffineTable:
        return characterize_affine_relu(pdk_name, corner, scaling, cache=cache, cell=self)

    def calibrate(self, table: AffineTable) -> AffineCalibration:
        return calibrate_affine_relu(table)

    def theta_box(self, law: str, cal: AffineCalibration) -> tuple[tuple[float, float], ...]:
        # θ2 down to -0.5: below, small-slope instances (tails ~0.5 units a pair) cannot subtract it (SP_HEADROOM)
        return (slope_ceiling(cal), slope_ceiling(cal), (-0.5, 1.0))

    def param_arrays(self, law: str, theta: np.ndarray, cal: AffineCalibration) -> AffineArrays:
        return affine_param_arrays(theta, cal)

    def achieved(self, law: str, params: AffineArrays, cal: AffineCalibration) -> np.ndarray:
        return affine_achieved(params, cal)

    def clip_reason(self, law: str, theta: np.ndarray, instance: GmParams, cal: AffineCalibration) -> str | None:
        return affine_reason(theta, instance.sp, instance.ib + instance.ibb, cal)

    def refine_columns(self, law: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (0, 1), (2,)

    def refine_fit(self, law: str, theta: np.ndarray, delta: np.ndarray, mid: np.ndarray,
                   current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`fit_affine_relu` to each device's current on the window's ``(vs, vd)`` points."""
        return fit_each(theta, plane_refine_fit(delta, mid, current, fit_affine_relu, 3, relu_conducts))

    def report(self, study: str, pdk_name: str, corner: str) -> None:
        report_affine(self, study, self.calibration(pdk_name, corner), fit_affine_relu,
                      lambda arg: np.maximum(arg, 0.0), True, pdk_name, corner)


# two input pairs (s against vr, d against vr), ReLU output
CELL = AffineRelu(
    name="kc_arelu",
    template="signed_gm.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("relu_affine",),
    params=GM_PARAMS,
    sizes=GM_SIZES,
    options=(("pairs", 2), ("out", "relu")),
    variants=("pp", "pn", "np", "nn"),
    mid_points=33,  # affine laws depend on the common mode as much as on Δ: 0.25-unit steps (4x the default)
    # measured on generic180 tt (docs/cells.md, relu_affine): coefficients within 2.5 %, θ2 within 0.02 units
    # (10 nA), s/d copy 1.5-2.6 %
    accuracy_spec=(("gain", 0.025), ("offset_i", 1e-8), ("offset_v", 2e-3), ("copy", 0.025), ("c_cell", 150e-15)),
    refine_grid=WINDOW_GRID,
    refine_devices=2000,
)
