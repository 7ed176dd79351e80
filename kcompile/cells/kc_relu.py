"""``kc_relu``: the signed current-mode ReLU cell (laws ``relu`` and ``shift_relu``).

Template ``templates/cells/signed_relu.sp.j2``: a degenerated PMOS pair whose
difference current, plus an injected offset, lands on a diode (current-mode
ReLU) copied as a sink from ``s`` and a source into ``d``. Variants ``p``
(θ0 > 0) and ``n`` (θ0 < 0, the pair's gates swapped). :func:`characterize_relu`
sweeps both variants over a table of degeneration resistors plus injection
points; :func:`calibrate` fits ``max(θ0·Δ + θ1, 0)`` to each; :func:`relu_params`
inverts the table (log r against log |θ0|) and injects the rest of θ1.
``shift_relu`` ``θ1·max(Δ − θ0, 0)`` is the same cell in relu form, port-swapped
for θ1 < 0. Refinable (as every cell), the one with a relu form for the Monte Carlo
attribution, and the one with a training surrogate (docs/cells.md, docs/transistor.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from ..pdk import get_pdk
from ..scaling import Scaling
from .base import (MIN_CURRENT, MIN_SLOPE, Cell, SlopeRange, SpiceParams, clip_flags, clip_reason, default_scaling,
                   environment, interp_rows, log_r, signed_clip, slope_ceiling, slope_ranges, tail_current,
                   tail_currents)
from .sweep import Sweep, measure, run_ngspice


RELU_PARAMS = ("r", "ib", "ipos", "ineg")  # the parameters of ``signed_relu.sp.j2``'s ``.subckt`` line


@dataclass(frozen=True)
class ReluParams(SpiceParams):
    """Instance parameters of one signed-cell instance.

    ``swap`` means the instance's ``s`` port goes to the device's ``d`` node and
    vice versa (the law's current then flows from d to s).
    """

    keys = RELU_PARAMS
    negative: bool
    r: float
    ib: float
    ipos: float = 0.0
    ineg: float = 0.0
    swap: bool = False

    @property
    def signs(self) -> str:
        """The variant letter (:attr:`Cell.variants`)."""
        return "n" if self.negative else "p"


@dataclass(frozen=True, eq=False)
class ReluArrays:
    """Instance parameters of many signed-cell instances (arrays of one length; see :class:`ReluParams`)."""

    negative: np.ndarray
    r: np.ndarray
    ib: np.ndarray
    ipos: np.ndarray
    ineg: np.ndarray
    swap: np.ndarray

    def __getitem__(self, i: int) -> ReluParams:
        return ReluParams(bool(self.negative[i]), float(self.r[i]), float(self.ib[i]), float(self.ipos[i]),
                          float(self.ineg[i]), bool(self.swap[i]))

    def __len__(self) -> int:
        return self.r.size

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``devices.npz`` records."""
        return {"negative": self.negative, "swap": self.swap, "r": self.r, "ib": self.ib, "ipos": self.ipos,
                "ineg": self.ineg}


@dataclass(frozen=True, eq=False)
class ReluCalibration(SlopeRange):
    """Measured map from instance parameters to achieved θ, per sign variant.

    Attributes
    ----------
    pdk, corner, cell : str
        What was measured.
    scaling : Scaling
        The scaling the measurements are expressed in.
    r : ndarray, shape (K,)
        Degeneration resistors measured (ohms, increasing).
    theta0 : ndarray, shape (2, K)
        Achieved slope for the positive (row 0) and negative (row 1) variant.
    theta1 : ndarray, shape (2, K)
        Achieved intercept with no offset injection (the cell's own offset).
    inj_gain : ndarray, shape (2,)
        Achieved θ1 per unit of injected offset current (``ipos`` or ``ineg`` / i0),
        for positive and negative injection.
    """

    pdk: str
    corner: str
    cell: str
    scaling: Scaling
    r: np.ndarray
    theta0: np.ndarray
    theta1: np.ndarray
    inj_gain: np.ndarray = field(default_factory=lambda: np.ones(2))


# ---------------------------------------------------------------- θ → parameters → achieved θ

def relu_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: ReluCalibration, clip: bool = False) -> ReluArrays:
    """:func:`relu_params` of every element of ``theta0``, ``theta1`` (arrays of one shape).

    Raises
    ------
    ValueError
        Some ``|θ0|`` is outside the calibrated range and ``clip`` is false.
    """
    theta0, theta1 = np.asarray(theta0, dtype=float), np.asarray(theta1, dtype=float)
    negative = theta0 < 0
    lo, hi = slope_ranges(cal, negative)
    if clip:
        theta0 = signed_clip(theta0, lo, hi)
    else:
        bad = (np.abs(theta0) < lo) | (np.abs(theta0) > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"|theta0| = {abs(theta0.flat[i]):g} is outside the calibrated range "
                             f"[{lo.flat[i]:.4g}, {hi.flat[i]:.4g}] of cell {cal.cell} on {cal.pdk}/{cal.corner}.")
    lr = log_r(np.abs(theta0), negative, cal.theta0, cal.r)
    own = interp_rows(lr, negative, np.log(cal.r), cal.theta1)
    r = np.exp(lr)
    need = theta1 - own
    up = need >= 0
    current = np.where(up, need / cal.inj_gain[0], -need / cal.inj_gain[1]) * cal.scaling.i0
    return ReluArrays(negative, r, tail_currents(r, cal.scaling), np.where(up, current, 0.0),
                      np.where(up, 0.0, current), np.zeros(theta0.shape, dtype=bool))


def relu_achieved(p: ReluArrays, cal: ReluCalibration) -> tuple[np.ndarray, np.ndarray]:
    """The relu-form (θ0, θ1) the calibration predicts for instances ``p`` (the inverse of
    :func:`relu_param_arrays`)."""
    lr, lrt = np.log(p.r), np.log(cal.r)
    theta0 = np.copysign(np.exp(interp_rows(lr, p.negative, lrt, np.log(np.abs(cal.theta0)))),
                         np.where(p.negative, cal.theta0[1][0], cal.theta0[0][0]))
    own = interp_rows(lr, p.negative, lrt, cal.theta1)
    return theta0, own + (p.ipos * cal.inj_gain[0] - p.ineg * cal.inj_gain[1]) / cal.scaling.i0


def shift_relu_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: ReluCalibration,
                            clip: bool = False) -> ReluArrays:
    """:func:`shift_relu_params` of every element of ``theta0``, ``theta1``."""
    theta0, theta1 = np.asarray(theta0, dtype=float), np.asarray(theta1, dtype=float)
    if clip:  # clip the gain and keep the threshold θ0 (clipping the relu-form slope alone would move it)
        theta1 = signed_clip(theta1, *slope_ranges(cal, theta1 < 0))
    swap = theta1 < 0
    p = relu_param_arrays(theta1, np.where(swap, theta1 * theta0, -theta1 * theta0), cal, clip)
    return ReluArrays(p.negative, p.r, p.ib, p.ipos, p.ineg, swap)


def relu_params(theta0: float, theta1: float, cal: ReluCalibration, clip: bool = False) -> ReluParams:
    """Instance parameters realising ``relu`` law ``max(θ0·Δ + θ1, 0)``.

    ``r`` is interpolated (log r against log |θ0|) in the calibration table of
    the variant of θ0's sign; the cell's own offset at that ``r`` is subtracted
    from θ1 and the rest injected through ``ipos`` or ``ineg``. One element of
    :func:`relu_param_arrays`.

    Parameters
    ----------
    theta0, theta1 : float
    cal : ReluCalibration
    clip : bool
        Clip ``|θ0|`` into the calibrated range instead of raising (the law
        error is then at most ``|Δθ0|·|Δ|``).

    Raises
    ------
    ValueError
        ``|θ0|`` is outside the calibrated range and ``clip`` is false.
    """
    return relu_param_arrays(np.array([theta0]), np.array([theta1]), cal, clip)[0]


def shift_relu_params(theta0: float, theta1: float, cal: ReluCalibration, clip: bool = False) -> ReluParams:
    """Instance parameters realising ``shift_relu`` ``θ1·max(Δ − θ0, 0)``.

    For ``θ1 ≥ 0`` it is ``relu`` with slope ``θ1`` and intercept ``−θ1·θ0``.
    For ``θ1 < 0`` the current flows from d to s and equals
    ``max(θ1·Δ' + θ1·θ0, 0)`` with ``Δ' = vd − vs``: a ReLU instance with its
    ports swapped (``swap=True``).
    """
    return shift_relu_param_arrays(np.array([theta0]), np.array([theta1]), cal, clip)[0]


def relu_targets(law: str, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The relu-form (θ0, θ1) each device needs, and whether its instance is port-swapped (arrays)."""
    t0 = theta[:, 0].astype(float)
    t1 = theta[:, 1].astype(float)
    if law == "relu":
        return t0, t1, np.zeros(t0.shape, dtype=bool)
    swap = t1 < 0  # shift_relu: θ1·max(Δ − θ0, 0)
    return t1, np.where(swap, t1 * t0, -t1 * t0), swap


# ---------------------------------------------------------------- characterisation and calibration

def fit_relu(delta: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(θ0, θ1)`` of ``max(θ0·Δ + θ1, 0)`` to a measured I–V.

    Parameters
    ----------
    delta, current : ndarray
        Same shape: ``vs − vd`` and the measured current (model units).
    """
    x, y = np.ravel(delta), np.ravel(current)
    on = y > 0.1 * y.max()
    a, b = np.polyfit(x[on], y[on], 1) if np.ptp(x[on]) > 0 else (0.0, y.mean())
    res = least_squares(lambda p: np.maximum(p[0] * x + p[1], 0.0) - y, [a, b], method="lm")
    return float(res.x[0]), float(res.x[1])


@dataclass(frozen=True, eq=False)
class ReluTable:
    """Characterisation of the signed ReLU cell on one PDK corner.

    ``sweep.sink[v*K + k]`` is variant ``v`` (0: θ0 > 0, 1: θ0 < 0) at ``r[k]``
    with no offset injection; the last four instances inject
    ``ipos = inj·i0`` and ``ineg = inj·i0`` at ``r[inj_k]`` for ``inj`` in ``inj_levels``.
    """

    pdk: str
    corner: str
    scaling: Scaling
    r: np.ndarray
    inj_k: int
    inj_levels: np.ndarray
    sweep: Sweep


# Nominal |θ0| of the calibration table: 0.002 … 8, a factor ≈2 apart. The slope keeps falling as
# 1/r down to the table's end (r = 200 MΩ; measured to 400 MΩ: θ0 = 0.0012 on generic180), so the
# floor is where the table stops, not a property of the cell; the old floor of 0.02 clipped 9 % of a
# ±0.25 uniform θ (see docs/transistor.md). Resistors above ~20 MΩ are ideal here; on silicon they
# would be pseudo-resistors or a scaled-down output mirror.
DEFAULT_THETA0 = np.geomspace(0.002, 8.0, 13)


def relu_instances(r: np.ndarray, inj_k: int, inj_levels: np.ndarray, scaling: Scaling) -> list[ReluParams]:
    """Instances of :class:`ReluTable`: both variants at each ``r``, then the injection points."""
    base = [ReluParams(neg, float(x), tail_current(float(x), scaling)) for neg in (False, True) for x in r]
    rk = float(r[inj_k])
    ib = tail_current(rk, scaling)
    inj = [ReluParams(False, rk, ib, ipos=lvl * scaling.i0) for lvl in inj_levels]
    inj += [ReluParams(False, rk, ib, ineg=lvl * scaling.i0) for lvl in inj_levels]
    return base + inj


def characterize_relu(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                      theta0: np.ndarray = DEFAULT_THETA0, span: float = 4.0, points: int = 17,
                      full: bool = False, cache: bool = True, cell: Cell | None = None) -> ReluTable:
    """DC-sweep the signed ReLU cell over a grid of degeneration resistors.

    Parameters
    ----------
    pdk_name, corner : str
    scaling : Scaling, optional
        :func:`kcompile.cells.base.default_scaling` if omitted.
    theta0 : ndarray
        Nominal ``|θ0|`` values; the resistors are :func:`kcompile.cells.base.nominal_r` of them.
    span, points, full, cache
        See :func:`kcompile.cells.sweep.measure`.
    """
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = np.sort(2.0 * scaling.v0 / (np.asarray(theta0, dtype=float) * scaling.i0))
    # injection measured where θ0 ~ 2, so that the kink of θ1 = -1, -3 lies inside the sweep
    inj_k, levels = int(np.argmin(np.abs(np.log(np.sort(theta0)[::-1] / 2.0)))), np.array([1.0, 3.0])
    sweep = measure(cell or CELL, pdk, corner, relu_instances(r, inj_k, levels, scaling), scaling,
                    span, points, True, full, cache)
    return ReluTable(pdk_name, corner, scaling, r, inj_k, levels, sweep)


def calibrate(table: ReluTable) -> ReluCalibration:
    """Fit the achieved ``(θ0, θ1)`` of every instance and build a :class:`ReluCalibration`.

    Fits use the s-side (sink) current. Injection gains are the slopes of
    achieved θ1 against injected current (in units of i0) at ``r[inj_k]``.
    """
    k = len(table.r)
    fits = np.array([fit_relu(table.sweep.delta, table.sweep.sink[i]) for i in range(len(table.sweep.sink))])
    theta0 = fits[:2 * k, 0].reshape(2, k)
    theta1 = fits[:2 * k, 1].reshape(2, k)
    own = theta1[0, table.inj_k]
    n = len(table.inj_levels)
    pos, neg = fits[2 * k:2 * k + n, 1], fits[2 * k + n:, 1]
    gain_pos = np.polyfit(np.r_[0.0, table.inj_levels], np.r_[own, pos], 1)[0]
    gain_neg = -np.polyfit(np.r_[0.0, table.inj_levels], np.r_[own, neg], 1)[0]
    return ReluCalibration(table.pdk, table.corner, CELL.name, table.scaling, table.r, theta0, theta1,
                           np.array([gain_pos, gain_neg]))


# ---------------------------------------------------------------- re-measured accuracy

def relu_error(sweep: Sweep, k: int, theta0: float, theta1: float, swap: bool = False) -> dict[str, float]:
    """Errors of instance ``k`` against the ideal ``relu`` law, in % of the ideal full scale.

    Returns ``max_err`` and ``rms_err`` (s-side), ``copy_err`` (max |source − sink|)
    and ``full_scale`` (max ideal current on the grid, model units).
    """
    delta = -sweep.delta if swap else sweep.delta
    ideal = np.maximum(theta0 * delta + theta1, 0.0)
    fs = float(ideal.max())
    err = sweep.sink[k] - ideal
    return {"max_err": 100 * float(np.abs(err).max()) / fs, "rms_err": 100 * float(np.sqrt((err ** 2).mean())) / fs,
            "copy_err": 100 * float(np.abs(sweep.source[k] - sweep.sink[k]).max()) / fs, "full_scale": fs}


def verify_relu(cal: ReluCalibration, thetas: list[tuple[float, float]], span: float = 4.0, points: int = 17,
                cache: bool = True) -> tuple[Sweep, list[ReluParams]]:
    """Map each ``(θ0, θ1)`` through ``cal``, then measure the resulting instances."""
    pdk = get_pdk(cal.pdk)
    params = [relu_params(t0, t1, cal) for t0, t1 in thetas]
    return measure(CELL, pdk, cal.corner, params, cal.scaling, span, points, True, cache=cache), params


def switching(cal: ReluCalibration, theta: tuple[float, float] = (1.0, 0.5), delta: float = 2.0,
              step: float = 2.0, edge: float = 0.1e-9) -> dict[str, float]:
    """Transient figures of one calibrated instance with ideal terminal sources (``bench_switching.cir.j2``).

    Schedule: ``en`` low until 20 ns, high until 140 ns, low until 200 ns;
    ``Δ = delta`` (``vs`` above ``vcm``, ``vd = vcm``), stepped by ``step`` at 80 ns.
    Returns seconds for ``t_on`` (en edge to within 2 % of the settled current),
    ``t_step`` (input step to within 2 % of the new value), ``t_off`` (to below
    2 % of the on current), and amperes for ``leak_s``/``leak_d`` (largest
    |current| into s / out of d while off, after the first 5 ns).
    """
    pdk = get_pdk(cal.pdk)
    sc = cal.scaling
    p = relu_params(*theta, cal)
    deck = environment().get_template("bench_switching.cir.j2").render(
        cell=CELL.name, pdk=pdk.name, corner=cal.corner, model_lines=pdk.model_lines(cal.corner),
        subckt=CELL.render(pdk, p.signs, sc), vdd=f"{pdk.supply:g}", t_on=f"{20e-9 + edge:.6g}",
        t_off=f"{140e-9 + edge:.6g}", v1=f"{sc.vcm + delta * sc.v0:.6g}", v2=f"{sc.vcm + (delta + step) * sc.v0:.6g}",
        t_step=f"{80e-9 + edge:.6g}", vcm=f"{sc.vcm:g}", name=CELL.subckt(p.signs), params=p.spice(),
        tmax=f"{edge / 2:.3g}")
    data = run_ngspice(deck, pdk)
    t, i_s, i_d = data["sweep"], -data["i(vs)"], data["i(vd)"]

    def settle(t0: float, t1: float) -> float:
        win = (t > t0) & (t < t1)
        final = i_s[win][-1]
        bad = win & (np.abs(i_s - final) > 0.02 * abs(final))
        return float(t[bad].max() - t0) if bad.any() else 0.0

    on = i_s[(t > 70e-9) & (t < 80e-9)].mean()
    off = (t > 140e-9) & (np.abs(i_s) > 0.02 * abs(on))
    quiet = ((t > 5e-9) & (t < 20e-9)) | (t > 190e-9)
    return {"t_on": settle(20e-9, 80e-9), "t_step": settle(80e-9, 140e-9),
            "t_off": float(t[off].max() - 140e-9) if off.any() else 0.0,
            "leak_s": float(np.abs(i_s[quiet]).max()), "leak_d": float(np.abs(i_d[quiet]).max()),
            "i_on": float(on)}


THETA1_MAX = (-4.0, 4.0)  # the intercept range the cell is tested on (θ1, relu form; the trainer's --theta-range)


# ---------------------------------------------------------------- the cell

def _softplus_relu(u: np.ndarray, w: float) -> np.ndarray:
    return w * np.logaddexp(0.0, u / w)


@dataclass(frozen=True)
class SignedRelu(Cell):
    """The signed current-mode ReLU cell (see the module docstring)."""

    refinable = True
    trains = ("relu",)

    def characterize(self, pdk_name="generic180", corner="tt", scaling=None, cache=True) -> ReluTable:
        return characterize_relu(pdk_name, corner, scaling, cache=cache, cell=self)

    def calibrate(self, table: ReluTable) -> ReluCalibration:
        return calibrate(table)

    def theta_box(self, law: str, cal: ReluCalibration) -> tuple[tuple[float, float], ...]:
        # |θ0| calibrated to >= 4.6 on all three PDKs; θ1 (relu form) tested to ±3, the threshold of shift_relu
        # within the compliance window
        return (slope_ceiling(cal), THETA1_MAX) if law == "relu" else (THETA1_MAX, slope_ceiling(cal))

    def param_arrays(self, law: str, theta: np.ndarray, cal: ReluCalibration) -> ReluArrays:
        to_params = relu_param_arrays if law == "relu" else shift_relu_param_arrays
        return to_params(theta[:, 0], theta[:, 1], cal, clip=True)

    def achieved(self, law: str, params: ReluArrays, cal: ReluCalibration) -> np.ndarray:
        a0, a1 = relu_achieved(params, cal)
        if law == "relu":
            return np.stack([a0, a1], axis=1)
        # back to shift_relu form: θ1' = a0, θ0' = ∓a1/a0 (the swapped instance has θ1 < 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            thr = np.where(a0 != 0, np.where(params.swap, a1, -a1) / a0, 0.0)
        return np.stack([thr, a0], axis=1)

    def clipped(self, law: str, theta: np.ndarray, params: ReluArrays, cal: ReluCalibration) -> np.ndarray:
        return clip_flags(relu_targets(law, theta)[0], cal)

    def clip_reason(self, law: str, theta: np.ndarray, instance: ReluParams, cal: ReluCalibration) -> str | None:
        return clip_reason(float(relu_targets(law, np.reshape(theta, (1, -1)))[0][0]), cal)

    def relu_targets(self, law: str, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return relu_targets(law, np.asarray(theta, dtype=float))

    def refine_columns(self, law: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return ((0,), (1,)) if law == "relu" else ((1,), (0,))

    def refine_fit(self, law: str, theta: np.ndarray, delta: np.ndarray, mid: np.ndarray,
                   current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`fit_relu` to each device's current, in relu form; ``shift_relu`` devices with ``θ1 < 0``
        (current from d to s) are fitted to the negated current."""
        achieved, usable = np.array(theta, dtype=float), np.zeros(len(theta), dtype=bool)
        for e, th in enumerate(theta):
            sign = -1.0 if law == "shift_relu" and th[1] < 0 else 1.0
            slope = th[0] if law == "relu" else th[1]
            i = sign * current[e]
            if abs(slope) < MIN_SLOPE or i.max() < MIN_CURRENT:
                continue
            a, c = fit_relu(delta, i)
            if law == "relu":
                achieved[e] = (a, c)
            elif a > 0:
                achieved[e] = (-c / a, sign * a)
            else:
                continue
            usable[e] = True
        return achieved, usable

    def training_range(self, law: str, pdk_name: str, corner: str) -> tuple[tuple, tuple, float]:
        if law not in self.trains:
            return super().training_range(law, pdk_name, corner)
        cal = self.calibration(pdk_name, corner)
        lo, hi = zip(cal.theta0_range(False), cal.theta0_range(True))
        return lo, hi, THETA1_MAX[1]

    def surrogate(self, law: str, pdk_name: str, corner: str) -> dict:
        """Per sign variant and table point: log |θ0|, the soft knee's width ``w`` fitted to the measured s-side
        sweep (``i_s = w·softplus((θ0·Δ + θ1)/w)``, θ0, θ1 as calibrated), the median d/s copy ratio where it
        conducts, the own θ1; and the calibrated |θ0| range (``lo``, ``hi`` per sign)."""
        from scipy.optimize import minimize_scalar

        if law not in self.trains:
            return super().surrogate(law, pdk_name, corner)
        table = self.characterize(pdk_name, corner)
        cal = self.calibrate(table)
        sw, k = table.sweep, len(table.r)
        delta = sw.delta
        log_mag, knee, copy, own = (np.zeros((2, k)) for _ in range(4))
        for row in range(2):
            for j in range(k):
                sink, source = sw.sink[row * k + j], sw.source[row * k + j]
                t0, t1 = cal.theta0[row, j], cal.theta1[row, j]
                u = t0 * delta + t1
                fs = max(float(np.maximum(u, 0).max()), 1e-12)
                res = minimize_scalar(lambda lw: float(np.sum((_softplus_relu(u, np.exp(lw)) - sink) ** 2)),
                                      bounds=(np.log(1e-4 * fs), np.log(0.5 * fs)), method="bounded")
                on = sink > 0.1 * sink.max()
                log_mag[row, j], knee[row, j] = np.log(abs(t0)), float(np.exp(res.x))
                copy[row, j] = float(np.median(source[on] / sink[on])) if on.any() else 1.0
                own[row, j] = t1
        order = np.argsort(log_mag, axis=1)
        take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
        lo, hi = zip(cal.theta0_range(False), cal.theta0_range(True))
        return {"log_mag": take(log_mag), "knee": take(knee), "copy": take(copy), "own": take(own), "lo": lo, "hi": hi}

    def report(self, study: str, pdk_name: str, corner: str) -> None:
        cal = calibrate(characterize_relu(pdk_name, corner))
        print(f"{pdk_name}/{corner}: |theta0| range +{cal.theta0_range(False)} -{cal.theta0_range(True)}, "
              f"injection gain {cal.inj_gain.round(4)}")
        for row, sign in ((0, "+"), (1, "-")):
            for r, t0, t1 in zip(cal.r, cal.theta0[row], cal.theta1[row]):
                print(f"  {sign} r={r:10.4g}  theta0={t0:+.4f}  own theta1={t1:+.4f}")
        thetas = [(0.25, 0.5), (-0.25, 0.5), (1.0, -0.5), (-1.0, 1.0), (3.0, 0.0), (-3.0, 2.0), (0.05, 0.2)]
        sweep, params = verify_relu(cal, thetas)
        for k, ((t0, t1), p) in enumerate(zip(thetas, params)):
            a0, a1 = fit_relu(sweep.delta, sweep.sink[k])
            e = relu_error(sweep, k, t0, t1)
            inner = np.abs(sweep.vs) <= 2.0
            sub = Sweep(sweep.vs[inner], sweep.vd[inner], sweep.sink[:, inner][:, :, inner],
                        sweep.source[:, inner][:, :, inner])
            print(f"  target ({t0:+.3f}, {t1:+.3f}) -> fit ({a0:+.4f}, {a1:+.4f}); max err {e['max_err']:.2f} % "
                  f"rms {e['rms_err']:.2f} % of fs {e['full_scale']:.2f}; s/d copy {e['copy_err']:.2f} %; "
                  f"within |v| <= 2: max err {relu_error(sub, k, t0, t1)['max_err']:.2f} %")
        off = measure(CELL, get_pdk(pdk_name), corner, params, cal.scaling, enabled=False)
        print(f"  disabled: max |I(s)| {np.abs(off.sink).max() * cal.scaling.i0:.3g} A, "
              f"max |I(d)| {np.abs(off.source).max() * cal.scaling.i0:.3g} A over the same grid")
        for theta in ((1.0, 0.5), (-0.25, 1.5)):
            sw = switching(cal, theta)
            print(f"  switching theta={theta}: " + ", ".join(f"{k} {v:.3g}" for k, v in sw.items()))


CELL = SignedRelu(
    name="kc_relu",
    template="signed_relu.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("relu", "shift_relu"),
    params=RELU_PARAMS,
    # w_po = w_pmir / 1.03: trims the d-side copy's systematic +2..4.5 % excess (measured on generic180,
    # positive / negative variant); w_sw/l_sw minimum size (l is raised to each PDK's lmin): switch charge
    # (docs/transistor.md)
    sizes=(("w_tail", 2.0), ("l_tail", 4.0), ("w_in", 8.0), ("l_in", 1.0), ("w_mir", 2.0), ("l_mir", 2.0),
           ("w_pmir", 4.0), ("l_pmir", 2.0), ("w_po", 3.88), ("w_sw", 0.5), ("l_sw", 0.18)),
    # measured on generic180 tt (docs/cells.md, "Measured"): θ0 within 1 %, θ1 residues 0.01 units at small slopes
    # (5 nA) and up to 0.08 at |θ0| = 0.94 on the negative variant (≈ 8 mV input-referred; docs/transistor.md,
    # "Automatic scaling"), s/d copy 0.6-5 %; ≈150 fF of delay capacitance
    accuracy_spec=(("gain", 0.01), ("offset_i", 5e-9), ("offset_v", 8e-3), ("copy", 0.03), ("c_cell", 150e-15)),
    # two refinement steps cost one DC deck per 150 instances each (about a minute a step for the 84-device moons
    # classifier at load ~13, generic180); the MNIST checkpoint would need ~3,000 decks per sweep
    refine_devices=2000,
)
