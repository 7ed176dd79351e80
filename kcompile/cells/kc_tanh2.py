"""``kc_tanh2``: the two-stage tanh cell (law ``tanh``).

Template ``templates/cells/tanh2.sp.j2``: stage 1 is a linear ``kc_gm`` (its
slope table, its dead-zone fill ``ap = an``) driving a resistor ``rl`` from the
internal node ``z`` to ``vr``; stage 2 an undegenerated weak-inversion pair
on ``z`` whose output saturates at ±1 unit (tails ``ib2``). θ1 is a current
``iz`` into ``z``, independent of stage 1's slope. :func:`characterize_tanh2`
measures the linear table twice (the second pass sets ``ib2`` from the first's
amplitude), and a third time where stage 2's gain is not 1 (``rl`` set again:
sky130). docs/cells.md has the measurements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..pdk import get_pdk
from ..scaling import Scaling
from .base import (WINDOW_GRID, Cell, SpiceParams, clip_flags, clip_reason, default_scaling, fit_each, nearest,
                   slope_ceiling, tail_currents)
from .kc_gm import (GM_GRID, GM_SIZES, GmArrays, GmCalibration, GmTable, fit_gm, gm_fits, gm_instances, gm_model,
                    gm_predicted, gm_stage, gm_table_r, offset_after, report_gm)
from .sweep import DiffSweep, measure_diff

#: the parameters of ``tanh2.sp.j2``'s ``.subckt`` line (one- and two-pair cells alike)
TANH2_PARAMS = ("r", "ib", "io", "rb", "ibb", "iob", "ap", "an", "iz", "rl", "ib2")


@dataclass(frozen=True)
class Tanh2Params(SpiceParams):
    """Instance parameters of one ``tanh2.sp.j2`` instance (``kc_tanh2``, ``kc_atanh``; ohms, amperes).

    Stage 1 as :class:`kcompile.cells.kc_gm.GmParams` (``an = ap``, no ``sp``/``sn``); ``rl`` the z-to-vr
    resistor, ``ib2`` the tanh pair's tail per side, ``iz`` the offset current into ``z``.
    """

    keys = TANH2_PARAMS
    signs: str
    r: float
    ib: float
    rl: float
    ib2: float
    io: float = 0.0
    rb: float = 1e6
    ibb: float = 1e-7
    iob: float = 0.0
    ap: float = 0.0
    an: float = 0.0
    iz: float = 0.0
    swap: bool = False

    @property
    def negative(self) -> bool:
        return self.signs[0] == "n"


@dataclass(frozen=True, eq=False)
class Tanh2Arrays(GmArrays):
    """Instance parameters of many ``kc_tanh2`` instances: stage 1's arrays, ``rl`` and ``ib2`` (the same for
    every instance) and ``iz`` (A)."""

    rl: float
    ib2: float
    iz: np.ndarray

    def __getitem__(self, i: int) -> Tanh2Params:
        return Tanh2Params("n" if self.negative[i] else "p", float(self.r[i]), float(self.ib[i]), self.rl, self.ib2,
                           float(self.io[i]), ap=float(self.ap[i]), an=float(self.ap[i]), iz=float(self.iz[i]),
                           swap=bool(self.swap[i]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "iz": self.iz}


@dataclass(frozen=True, eq=False, kw_only=True)
class Tanh2Calibration(GmCalibration):
    """A :class:`kcompile.cells.kc_gm.GmCalibration` of stage 1 (law ``tanh``), with stage 2's tail ``ib2`` (A),
    the z-to-vr resistor ``rl`` (ohm), and ``iz_gain``: θ1 per unit of ``iz/i0``."""

    ib2: float
    rl: float
    iz_gain: float


def tanh2_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: Tanh2Calibration,
                       clip: bool = True) -> Tanh2Arrays:
    """Instances realising ``tanh(θ0·Δ + θ1)``: stage 1 by :func:`kcompile.cells.kc_gm.gm_stage` (no input
    shift), ``θ1 − own θ1`` by ``iz`` into the tanh stage's input ``z``."""
    theta1 = np.asarray(theta1, dtype=float)
    s = gm_stage(theta0, cal, clip)
    iz = (theta1 - s.own) / cal.iz_gain * cal.scaling.i0
    # the table's eps is in units of the tanh argument, the fill a current at the cores, which stage 2 turns into
    # argument by iz_gain (1.01 on generic180 tt, 0.78 on sky130 tt: filled as eps, a fifth of it stayed)
    fill = s.fill / cal.iz_gain
    return Tanh2Arrays(s.negative, s.r, s.ib, np.zeros(s.r.shape), fill, np.zeros(s.r.shape, dtype=bool),
                       cal.rl, cal.ib2, iz)


def tanh2_achieved(p: Tanh2Arrays, cal: Tanh2Calibration) -> tuple[np.ndarray, np.ndarray]:
    """The (θ0, θ1) the calibration predicts for instances ``p``."""
    a0, own = gm_predicted(p, cal)
    return a0, own + cal.iz_gain * p.iz / cal.scaling.i0


# Two-stage tanh (kc_tanh2): stage 1 as the linear table, stage 2 undegenerated with rl = v0/(THETA_WI·i0), so
# that 1 unit of stage-1 current is 1 unit of tanh argument; THETA_WI is the undegenerated pair's slope per
# unit (measured 1.14 on generic180 tt, the kc_gm tanh table at r = 1 Ω). Where the PDK's pair is slower or
# faster, the measured gain (iz_gain) sets rl again (characterize_tanh2).
THETA_WI = 1.14
#: stage 2's measured gain (argument per unit of current into z) is brought to 1 when it is further off than this
STAGE2_GAIN_TOLERANCE = 0.05


def tanh2_rl(scaling: Scaling) -> float:
    """The two-stage tanh cell's z-to-vr resistor (ohm) at :data:`THETA_WI`: the first sweep's."""
    return scaling.v0 / (THETA_WI * scaling.i0)


def characterize_tanh2(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                       cache: bool = True, cell: Cell | None = None) -> GmTable:
    """DC-sweep ``kc_tanh2`` over the linear law's resistor table (stage 1), two or three times: the second pass
    sets the stage-2 tails to ``i0/(2·amp)`` with the amplitude ``amp`` fitted on the first; where stage 2's gain
    (``iz_gain``, argument per unit of current into ``z``) then misses 1 by more than
    :data:`STAGE2_GAIN_TOLERANCE` (sky130 tt: 0.78), a third sets ``rl`` to bring it to 1 (the argument is the
    current times ``rl``): the cell's largest slopes grow by as much, and the dead-zone fill is in the units it
    was measured in."""
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = gm_table_r("linear", scaling)
    io_k = nearest(r, 0.5, scaling)
    levels = np.array([-1.0, 1.0])
    ib = tail_currents(r, scaling)

    def run(ib2: float, rl: float) -> DiffSweep:  # the last two instances inject iz = ±1 unit instead of io
        inst = [Tanh2Params(p.signs, p.r, p.ib, rl, ib2) for p in gm_instances(r, ib, io_k, levels, scaling)]
        inst[-2:] = [dataclasses.replace(p, iz=lvl * scaling.i0) for p, lvl in zip(inst[-2:], levels)]
        return measure_diff(cell or CELL, pdk, corner, inst, scaling, *GM_GRID, cache=cache)

    rl = tanh2_rl(scaling)
    sweep = run(scaling.i0 / 2, rl)
    big = nearest(r, 2.0, scaling)  # saturated within ±8
    amp = np.mean([fit_gm("tanh2", sweep.delta, sweep.sink[k][:, 1])[3] for k in (big, r.size + big)])
    ib2 = scaling.i0 / (2 * amp)
    table = GmTable("tanh2", pdk_name, corner, scaling, r, np.r_[ib, ib2], io_k, levels, run(ib2, rl), rl)
    gain = calibrate_tanh2(table).iz_gain
    if abs(gain - 1.0) <= STAGE2_GAIN_TOLERANCE:
        return table
    rl /= gain
    return dataclasses.replace(table, sweep=run(ib2, rl), rl=rl)


def calibrate_tanh2(table: GmTable) -> Tanh2Calibration:
    """Fit every instance (:func:`kcompile.cells.kc_gm.gm_fits`; ``table.ib`` holds stage 1's tails, then stage 2's,
    one value) into a :class:`Tanh2Calibration`.

    θ1 per unit of ``iz``: ``iz`` enters after stage 1's dead zone, so it is fitted as
    ``tanh(dz(θ0·Δ + θ1, eps) + d)`` against the levels.
    """
    k = table.r.size
    sw = table.sweep
    win, fits, rows = gm_fits(table)
    core = gm_model("linear", fits[table.io_k][:3], sw.delta[win])
    d = [offset_after(core, sw.sink[i][win, sw.mid.size // 2]) for i in range(2 * k, len(fits))]
    gain = float(np.polyfit(table.io_levels, d, 1)[0])
    return Tanh2Calibration(table.pdk, table.corner, CELL.name, "tanh", table.scaling, table.r, table.ib[:k],
                            rows(0), rows(1), rows(2), rows(3), 1.0, ib2=float(table.ib[k]),
                            rl=table.rl, iz_gain=gain)


@dataclass(frozen=True)
class Tanh2(Cell):
    """The two-stage tanh cell (see the module docstring)."""

    refinable = True

    def characterize(self, pdk_name="generic180", corner="tt", scaling=None, cache=True) -> GmTable:
        return characterize_tanh2(pdk_name, corner, scaling, cache, cell=self)

    def calibrate(self, table: GmTable) -> Tanh2Calibration:
        return calibrate_tanh2(table)

    def theta_box(self, law: str, cal: Tanh2Calibration) -> tuple[tuple[float, float], ...]:
        return (slope_ceiling(cal), (-2.0, 2.0))

    def param_arrays(self, law: str, theta: np.ndarray, cal: Tanh2Calibration) -> Tanh2Arrays:
        return tanh2_param_arrays(theta[:, 0], theta[:, 1], cal, clip=True)

    def achieved(self, law: str, params: Tanh2Arrays, cal: Tanh2Calibration) -> np.ndarray:
        return np.stack(tanh2_achieved(params, cal), axis=1)

    def clipped(self, law: str, theta: np.ndarray, params, cal) -> np.ndarray:
        return clip_flags(theta[:, 0], cal)

    def clip_reason(self, law: str, theta: np.ndarray, instance, cal) -> str | None:
        return clip_reason(float(theta[0]), cal)

    def refine_columns(self, law: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (0,), (1,)

    def refine_fit(self, law: str, theta: np.ndarray, delta: np.ndarray, mid: np.ndarray,
                   current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`kcompile.cells.kc_gm.fit_gm` (``tanh2``, unit amplitude as calibrated) to each device's current."""
        return fit_each(theta, lambda e: fit_gm("tanh2", delta, current[e], 1.0)[:2])

    def report(self, study: str, pdk_name: str, corner: str) -> None:
        report_gm(self, study, "tanh", self.calibration(pdk_name, corner), pdk_name, corner)


# two stages: a linear kc_gm into a resistor, then an undegenerated kc_gm (tanh)
CELL = Tanh2(
    name="kc_tanh2",
    template="tanh2.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("tanh",),
    params=TANH2_PARAMS,
    sizes=GM_SIZES,
    options=(("pairs", 1), ("stages", 2)),
    includes=("signed_gm.sp.j2",),
    # measured on generic180 tt (docs/cells.md, tanh): slopes within 1-5 % (3 % typical), θ1 within 0.02 units
    # (10 nA into z), s/d copy 0.2-2.4 %
    accuracy_spec=(("gain", 0.03), ("offset_i", 1e-8), ("offset_v", 2e-3), ("copy", 0.02), ("c_cell", 150e-15)),
    refine_grid=WINDOW_GRID,
)
