"""``kc_gm``: the signed transconductance cell (law ``linear``; the one-stage tanh as a study).

Template ``templates/cells/signed_gm.sp.j2`` with one input pair (``s`` against
``d``): a degenerated PMOS pair whose difference current feeds two current-mode
ReLU cores, one per output sign, so that ``I(s→d) = relu(P + eps) − relu(−P + eps)``
with ``P = θ0·Δ + θ1`` (``eps < 0``: a small dead zone, filled by ``ap = an``).
``io`` across the degeneration resistor shifts the input (θ1). With tails
``i0/2`` and no degeneration the pair saturates: ``tanh1``, the one-stage tanh
(``python -m kcompile.characterize PDK CORNER tanh1``); the ``tanh`` law is
realised by the two-stage :mod:`kcompile.cells.kc_tanh2`, which reuses this
module's model and fits. docs/cells.md has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import least_squares

from ..pdk import get_pdk
from ..scaling import Scaling
from .base import (WINDOW_GRID, Cell, SlopeRange, SpiceParams, clip_flags, clip_reason, coef, default_scaling, fit_each,
                   interp_rows, log_r, nearest, nominal_r, signed_clip, slope_ceiling, slope_ranges, tail_currents)
from .sweep import DiffSweep, measure_diff

#: the parameters of ``signed_gm.sp.j2``'s ``.subckt`` line (one- and two-pair cells alike)
GM_PARAMS = ("r", "ib", "io", "rb", "ibb", "iob", "ap", "sp", "an", "sn")


@dataclass(frozen=True)
class GmParams(SpiceParams):
    """Instance parameters of one ``signed_gm.sp.j2`` instance (:mod:`kc_gm <kcompile.cells.kc_gm>`,
    :mod:`kc_arelu <kcompile.cells.kc_arelu>`; ohms, amperes).

    ``signs`` is the variant (one letter per input pair); pair B (``rb``, ``ibb``, ``iob``) exists
    only in the two-pair cell; ``swap`` as in :class:`kcompile.cells.kc_relu.ReluParams`.
    """

    keys = GM_PARAMS
    signs: str
    r: float
    ib: float
    io: float = 0.0
    rb: float = 1e6
    ibb: float = 1e-7
    iob: float = 0.0
    ap: float = 0.0
    sp: float = 0.0
    an: float = 0.0
    sn: float = 0.0
    swap: bool = False

    @property
    def negative(self) -> bool:
        return self.signs[0] == "n"


@dataclass(frozen=True, eq=False)
class GmArrays:
    """Instance parameters of many ``kc_gm`` instances (arrays of one length)."""

    negative: np.ndarray
    r: np.ndarray
    ib: np.ndarray
    io: np.ndarray
    ap: np.ndarray  # = an (both cores get the same crossover fill)
    swap: np.ndarray

    def __getitem__(self, i: int) -> GmParams:
        return GmParams("n" if self.negative[i] else "p", float(self.r[i]), float(self.ib[i]), float(self.io[i]),
                        ap=float(self.ap[i]), an=float(self.ap[i]), swap=bool(self.swap[i]))

    def __len__(self) -> int:
        return self.r.size

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``devices.npz`` records (``ipos``, ``ineg``: zeros, the columns every build has written)."""
        zero = np.zeros(self.r.shape)
        return {"negative": self.negative, "swap": self.swap, "r": self.r, "ib": self.ib, "ipos": zero,
                "ineg": zero, "io": self.io, "ap": self.ap}


@dataclass(frozen=True, eq=False)
class GmCalibration(SlopeRange):
    """Measured map from ``kc_gm`` instance parameters to achieved θ, per sign variant (row 0: θ0 > 0).

    The cell's law is ``P(Δ + σ)`` with ``P = θ0·Δ + θ1`` (``linear``, ``θ1`` its own output offset) or
    ``amp·tanh(θ0·Δ + θ1)`` (``tanh``); the two output cores pass ``relu(P + eps) − relu(−P + eps)``
    (``eps < 0``: a dead zone, filled by ``ap = an = −eps·i0``).

    Attributes
    ----------
    law : {"linear", "tanh"}
    r : ndarray, shape (K,)
        Degeneration resistors measured (ohms, increasing).
    ib : ndarray, shape (K,)
        Tail current per side used at each ``r`` (A).
    theta0, theta1, eps, amp : ndarray, shape (2, K)
        Fitted slope, own offset, crossover and amplitude with ``io = ap = an = 0``.
    shift_gain : float
        Input shift (Δ units) of the positive variant per ``io·r/v0``: the law becomes ``P(Δ + σ)`` with
        ``σ = ±shift_gain·io·r/v0`` (``−`` for the negative variant, whose pair sees ``−Δ``).
    """

    pdk: str
    corner: str
    cell: str
    law: str
    scaling: Scaling
    r: np.ndarray
    ib: np.ndarray
    theta0: np.ndarray
    theta1: np.ndarray
    eps: np.ndarray
    amp: np.ndarray
    shift_gain: float = 1.0


# ---------------------------------------------------------------- θ → parameters → achieved θ

@dataclass(frozen=True, eq=False)
class Stage:
    """What a slope table gives per device: variant, log r, own θ1, predicted slope, r, tail, dead-zone fill."""

    negative: np.ndarray
    log_r: np.ndarray
    own: np.ndarray
    a0: np.ndarray
    r: np.ndarray
    ib: np.ndarray
    fill: np.ndarray


def gm_stage(theta0: np.ndarray, cal: GmCalibration, clip: bool) -> Stage:
    """``r`` from the variant's table (log r against log |θ0|), ``ib`` interpolated, the own θ1 there, and the
    cores' dead-zone fill ``ap = an``. ``|θ0|`` is clipped into the calibrated range (sign kept), or
    out-of-range values raise when ``clip`` is false."""
    theta0 = np.asarray(theta0, dtype=float)
    negative = theta0 < 0
    lo, hi = slope_ranges(cal, negative)
    if clip:
        theta0 = signed_clip(theta0, lo, hi)
    elif ((np.abs(theta0) < lo) | (np.abs(theta0) > hi)).any():
        raise ValueError(f"|theta0| outside the calibrated range of cell {cal.cell} ({cal.law}) on "
                         f"{cal.pdk}/{cal.corner}.")
    lr = log_r(np.abs(theta0), negative, cal.theta0, cal.r)
    lrt = np.log(cal.r)
    own = interp_rows(lr, negative, lrt, cal.theta1)
    eps = interp_rows(lr, negative, lrt, cal.eps)
    # the slope the table predicts (= θ0 inside the range), by the log–log interpolation gm_achieved uses
    a0 = coef(lr, negative, cal.theta0, cal.r)
    ib = np.exp(np.interp(lr, lrt, np.log(cal.ib)))
    return Stage(negative, lr, own, a0, np.exp(lr), ib, np.maximum(-eps, 0.0) * cal.scaling.i0)


def gm_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: GmCalibration, clip: bool = True) -> GmArrays:
    """Instances realising ``linear`` ``θ0·Δ`` (``theta1`` = 0) or the one-stage ``tanh(θ0·Δ + θ1)`` (arrays).

    :func:`gm_stage`, then ``θ1 − own θ1`` made by ``io`` across ``r`` (an input shift ``(θ1 − own)/θ0``).
    """
    theta1 = np.asarray(theta1, dtype=float)
    s = gm_stage(theta0, cal, clip)
    shift = (theta1 - s.own) / s.a0  # Δ units; the negative variant's pair sees −Δ, so io shifts it the other way
    io = np.where(s.negative, -1.0, 1.0) * shift * cal.scaling.v0 / (cal.shift_gain * s.r)
    return GmArrays(s.negative, s.r, s.ib, io, s.fill, np.zeros(s.r.shape, dtype=bool))


def gm_predicted(p, cal: GmCalibration) -> tuple[np.ndarray, np.ndarray]:
    """The slope and own θ1 the calibration predicts at the instances' resistors ``p.r``."""
    lr = np.log(p.r)
    return coef(lr, p.negative, cal.theta0, cal.r), interp_rows(lr, p.negative, np.log(cal.r), cal.theta1)


def gm_achieved(p: GmArrays, cal: GmCalibration) -> tuple[np.ndarray, np.ndarray]:
    """The (θ0, θ1) the calibration predicts for instances ``p``."""
    sign = np.where(p.negative, -1.0, 1.0)
    a0, own = gm_predicted(p, cal)
    return a0, own + a0 * sign * cal.shift_gain * p.io * p.r / cal.scaling.v0


# ---------------------------------------------------------------- the model and its fits

def dead_zone(x: np.ndarray, eps: float) -> np.ndarray:
    """The two current-mode cores' output ``relu(x + eps) − relu(eps − x)`` (``eps < 0``: a dead zone)."""
    return np.maximum(x + eps, 0.0) - np.maximum(eps - x, 0.0)


def offset_after(core: np.ndarray, current: np.ndarray) -> float:
    """The offset ``d`` of ``tanh(core + d)`` fitted to ``current``: an injection into a two-stage cell's tanh
    stage, which enters after stage 1's cores (``core``)."""
    return float(least_squares(lambda q: np.tanh(core + q[0]) - current, [0.0], method="lm").x[0])


def gm_model(law: str, p: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The signed cell's model current: ``relu(P + eps) − relu(−P + eps)``, ``p = (θ0, θ1, eps[, amp])``."""
    arg = p[0] * delta + p[1]
    if law == "tanh2":  # two-stage cell: stage 1's cores (dead zone eps) feed the tanh pair
        return p[3] * np.tanh(dead_zone(arg, p[2]))
    core = p[3] * np.tanh(arg) if law == "tanh" else arg
    return dead_zone(core, p[2])


def fit_gm(law: str, delta: np.ndarray, current: np.ndarray, amp: float | None = None) -> np.ndarray:
    """Least-squares ``(θ0, θ1, eps, amp)`` of :func:`gm_model` to a measured I–V (model units).

    ``amp`` (tanh) is fitted only when not given; linear fits return ``amp = 1``.
    """
    x, y = np.ravel(delta), np.ravel(current)
    g0 = np.polyfit(x[np.abs(x) <= 1], y[np.abs(x) <= 1], 1)[0]
    if law in ("tanh", "tanh2") and amp is None:
        a0 = float(np.abs(y).max())
        return least_squares(lambda q: gm_model(law, q, x) - y, [g0 / a0, 0.0, 0.0, a0], method="lm").x
    a = 1.0 if amp is None else amp
    res = least_squares(lambda q: gm_model(law, np.r_[q, a], x) - y, [g0 / a, 0.0, 0.0], method="lm")
    return np.r_[res.x, a]


# ---------------------------------------------------------------- characterisation and calibration

# Nominal |θ0| of the tables. linear: as the ReLU cell (tails VLIN/r); tanh: tails I0/2, r from 1 Ω
# (undegenerated: the pair's own slope, ~1.14 per unit at 0.1 V per unit) down to θ0 ≈ 0.002.
GM_THETA0 = {"linear": np.geomspace(0.002, 8.0, 13), "tanh": np.geomspace(0.002, 1.0, 10)}
GM_FIT_SPAN = {"linear": 4.0, "tanh": 8.0, "tanh2": 8.0}  # |Δ| window of the fits (linear: the compliance window)
GM_GRID = (8.0, 129, 1.0, 3)  # Δ ∈ ±8 (0.125 apart), common mode ∈ {−1, 0, 1}


@dataclass(frozen=True, eq=False)
class GmTable:
    """Characterisation of ``kc_gm`` for one law (or of ``kc_tanh2``, law ``tanh2``): both variants at each
    ``r``, then ``io`` (``kc_tanh2``: ``iz``) points."""

    law: str
    pdk: str
    corner: str
    scaling: Scaling
    r: np.ndarray
    ib: np.ndarray
    io_k: int
    io_levels: np.ndarray  # Δ units of nominal shift (io = level·v0/r)
    sweep: DiffSweep
    rl: float | None = None  # kc_tanh2: the z-to-vr resistor its sweep ran with (ohm)


def gm_table_r(law: str, scaling: Scaling) -> np.ndarray:
    """Degeneration resistors of the law's table (increasing; tanh adds 1 Ω, the undegenerated end)."""
    r = np.sort(nominal_r(1.0, scaling) / GM_THETA0[law])
    # tanh: below ~2/gm (~300 kΩ at 0.25 µA) the slope bends over to the undegenerated pair's; sample it
    return np.r_[1.0, 25e3, 50e3, 100e3, 200e3, r] if law == "tanh" else r


def gm_instances(r: np.ndarray, ib: np.ndarray, io_k: int, io_levels: np.ndarray, scaling: Scaling) -> list[GmParams]:
    """Both variants at each ``r`` (no injection), then the positive variant at ``r[io_k]`` with ``io`` shifts."""
    base = [GmParams(v, float(x), float(b)) for v in ("p", "n") for x, b in zip(r, ib)]
    rk = float(r[io_k])
    return base + [GmParams("p", rk, float(ib[io_k]), io=lvl * scaling.v0 / rk) for lvl in io_levels]


def characterize_gm(law: str, pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                    cache: bool = True, cell: Cell | None = None) -> GmTable:
    """DC-sweep ``kc_gm`` over the law's table of resistors (Δ ∈ ±8, 129 points; m ∈ {−1, 0, 1}).

    tanh is measured twice: at ``ib = i0/2``, then at ``ib = i0/(2·amp)`` with the amplitude ``amp``
    the first pass fitted, so that the output saturates at ±1 unit.
    """
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = gm_table_r(law, scaling)
    io_k = nearest(r, 0.5, scaling)
    levels = np.array([-1.0, 1.0])
    ib = tail_currents(r, scaling) if law == "linear" else np.full(r.size, scaling.i0 / 2)

    def run(ib: np.ndarray) -> DiffSweep:
        return measure_diff(cell or CELL, pdk, corner, gm_instances(r, ib, io_k, levels, scaling), scaling, *GM_GRID,
                            cache=cache)

    sweep = run(ib)
    if law == "tanh":  # the amplitude, 2·ib times the output copies' gain, is seen saturated at r = 1 Ω
        amp = np.mean([fit_gm(law, sweep.delta, sweep.sink[k][:, 1])[3] for k in (0, r.size)])
        ib = ib / amp
        sweep = run(ib)
    return GmTable(law, pdk_name, corner, scaling, r, ib, io_k, levels, sweep)


def gm_fits(table: GmTable) -> tuple[np.ndarray, np.ndarray, Callable[[int], np.ndarray]]:
    """Every instance's s-side current at common mode 0 and ``|Δ| ≤`` :data:`GM_FIT_SPAN` fitted by
    :func:`fit_gm` (tanh: the amplitude was set to 1 by ``ib``; the slope only): the window, the fits
    ``[n, 4]``, and ``rows(j)``: fit column ``j`` of the table rows as ``[2, len(table.r)]``."""
    k = table.r.size
    sw = table.sweep
    win = np.abs(sw.delta) <= GM_FIT_SPAN[table.law]
    amp = None if table.law == "linear" else 1.0
    fits = np.array([fit_gm(table.law, sw.delta[win], sw.sink[i][win, sw.mid.size // 2], amp)
                     for i in range(len(sw.sink))])
    return win, fits, lambda j: fits[:2 * k, j].reshape(2, k)


def calibrate_gm(table: GmTable) -> GmCalibration:
    """Fit every instance (:func:`gm_fits`) into a calibration.

    The shift gain is the slope of the fitted input shift ``θ1/θ0`` against ``io·r/v0``.
    """
    k = table.r.size
    _, fits, rows = gm_fits(table)
    shifts = fits[2 * k:, 1] / fits[2 * k:, 0] - fits[table.io_k, 1] / fits[table.io_k, 0]
    gain = float(np.polyfit(table.io_levels, shifts, 1)[0])
    return GmCalibration(table.pdk, table.corner, CELL.name, table.law, table.scaling, table.r, table.ib,
                         rows(0), rows(1), rows(2), rows(3), gain)


# ---------------------------------------------------------------- re-measured accuracy

def gm_error(law: str, delta: np.ndarray, current: np.ndarray, theta0: float, theta1: float,
             span: float = 8.0) -> dict[str, float]:
    """Shape error of a measured I–V against the ideal law on ``|Δ| ≤ span``, in % of the ideal full scale."""
    win = np.abs(delta) <= span
    ideal = np.tanh(theta0 * delta + theta1) if law == "tanh" else theta0 * delta + theta1
    err = (current - ideal)[win]
    fs = float(np.abs(ideal[win]).max()) if law == "linear" else 1.0
    return {"max_err": 100 * float(np.abs(err).max()) / fs, "rms_err": 100 * float(np.sqrt((err ** 2).mean())) / fs,
            "full_scale": fs}


# targets re-measured by ``python -m kcompile.characterize PDK CORNER LAW`` (docs/cells.md)
GM_TARGETS = {
    "linear": [(0.05, 0.0), (-0.05, 0.0), (0.3, 0.0), (-0.3, 0.0), (1.0, 0.0), (-1.0, 0.0), (3.0, 0.0)],
    "tanh": [(0.1, 0.0), (-0.1, 0.3), (0.3, -0.5), (-0.3, 0.2), (0.6, 0.5), (-0.6, -1.0), (1.0, 0.0), (0.02, 0.1),
             (2.0, 0.5)],
}


def report_gm(cell: Cell, study: str, law: str, cal: GmCalibration, pdk_name: str, corner: str) -> None:
    """Print a transconductance cell's calibration and the re-measured accuracy of :data:`GM_TARGETS` ``[law]``."""
    np.set_printoptions(precision=4, suppress=True, linewidth=160)
    print(f"{study} on {pdk_name}/{corner} ({cal.cell}): r {cal.r}\n  theta0 {cal.theta0}\n  own theta1 {cal.theta1}\n"
          f"  eps {cal.eps}")
    thetas = GM_TARGETS[law]
    arrays = cell.param_arrays(law, np.array(thetas), cal)
    params = [arrays[i] for i in range(len(thetas))]
    sweep = measure_diff(cell, get_pdk(pdk_name), corner, params, cal.scaling, *GM_GRID)
    for k, (t0, t1) in enumerate(thetas):
        cur = sweep.sink[k][:, 1]
        win = np.abs(sweep.delta) <= GM_FIT_SPAN[law]
        fit = fit_gm(law, sweep.delta[win], cur[win], None if law == "linear" else 1.0)
        e8, e4 = (gm_error(law, sweep.delta, cur, t0, t1, w) for w in (8.0, 4.0))
        copy = np.abs(sweep.source[k][:, 1] - cur)[np.abs(sweep.delta) <= 8].max() / e8["full_scale"]
        print(f"  target ({t0:+.3f}, {t1:+.3f}) -> fit ({fit[0]:+.4f}, {fit[1]:+.4f}); "
              f"|Δ| <= 8: max {e8['max_err']:.2f} % rms {e8['rms_err']:.2f} %; "
              f"|Δ| <= 4: max {e4['max_err']:.2f} % rms {e4['rms_err']:.2f} % of fs "
              f"{e8['full_scale']:.3g}; s/d copy {100 * copy:.2f} %")


# ---------------------------------------------------------------- the cell

@dataclass(frozen=True)
class SignedGm(Cell):
    """The signed transconductance cell (see the module docstring)."""

    refinable = True

    def characterize(self, pdk_name="generic180", corner="tt", scaling=None, cache=True, law="linear") -> GmTable:
        """:func:`characterize_gm` of ``law`` (``linear``; ``tanh``: the one-stage tanh study)."""
        return characterize_gm(law, pdk_name, corner, scaling, cache, cell=self)

    def calibrate(self, table: GmTable) -> GmCalibration:
        return calibrate_gm(table)

    def theta_box(self, law: str, cal: GmCalibration) -> tuple[tuple[float, float], ...]:
        return (slope_ceiling(cal),)

    def param_arrays(self, law: str, theta: np.ndarray, cal: GmCalibration) -> GmArrays:
        t0 = theta[:, 0]
        return gm_param_arrays(t0, theta[:, 1] if theta.shape[1] > 1 else np.zeros(t0.shape), cal, clip=True)

    def achieved(self, law: str, params: GmArrays, cal: GmCalibration) -> np.ndarray:
        a0, a1 = gm_achieved(params, cal)
        return a0[:, None] if law == "linear" else np.stack([a0, a1], axis=1)

    def clipped(self, law: str, theta: np.ndarray, params, cal) -> np.ndarray:
        return clip_flags(theta[:, 0], cal)

    def clip_reason(self, law: str, theta: np.ndarray, instance, cal) -> str | None:
        return clip_reason(float(theta[0]), cal)

    def refine_columns(self, law: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (0,), ()

    def refine_fit(self, law: str, theta: np.ndarray, delta: np.ndarray, mid: np.ndarray,
                   current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The slope of :func:`fit_gm` (``linear``) to each device's current (the cell's own offset is not a θ of the
        law: it stays as calibrated)."""
        return fit_each(theta, lambda e: fit_gm("linear", delta, current[e])[:1])

    def report(self, study: str, pdk_name: str, corner: str) -> None:
        law = "tanh" if study == "tanh1" else study
        report_gm(self, study, law, calibrate_gm(characterize_gm(law, pdk_name, corner)), pdk_name, corner)


# w_cc = w_mir / 1.08: the NMOS copies feeding the cores' PMOS mirrors (c2p, c1n) sit at ~0.5 V more drain
# voltage than the diodes they copy; untrimmed, each core carried +4..6 % of the tail current at balance (both
# cores on: the slope doubled near zero). Trimmed past balance, every tail current leaves a small dead zone,
# which the calibration fills exactly with ap = an (currents added at the cores' ReLU nodes).
GM_SIZES = (("w_tail", 2.0), ("l_tail", 4.0), ("w_in", 8.0), ("l_in", 1.0), ("w_mir", 2.0), ("l_mir", 2.0),
            ("w_cc", 2.0 / 1.08), ("w_pmir", 4.0), ("l_pmir", 2.0), ("w_po", 3.88), ("w_sw", 0.5), ("l_sw", 0.18))

# one input pair (s against d), signed output: linear (tails >> signal) and, as a study, tanh (tails = I0/2)
CELL = SignedGm(
    name="kc_gm",
    template="signed_gm.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("linear",),
    params=GM_PARAMS,
    sizes=GM_SIZES,
    options=(("pairs", 1), ("out", "signed")),
    studies=("linear", "tanh1"),
    # measured on generic180 tt (docs/cells.md, linear): slopes within 0.4 %, own offset <= 0.0063 units (3 nA) for
    # |θ0| <= 1, s/d copy 0.75-3.4 %
    accuracy_spec=(("gain", 0.005), ("offset_i", 3e-9), ("offset_v", 0.5e-3), ("copy", 0.02), ("c_cell", 150e-15)),
    refine_grid=WINDOW_GRID,
)
