"""Technology mapping: every device of a KNet onto a calibrated transistor-level cell.

``map_knet`` takes a network, a PDK corner and a scaling, characterises the
law's cell there (cached DC sweeps: the signed ReLU cell for relu/shift_relu,
the signed transconductance cell for linear, the two-stage tanh cell for tanh,
the two-pair cells for relu_affine/tanh_affine), and returns a :class:`CellMap`:
per device the cell variant, instance parameters, target θ, the θ the
calibration predicts the instance achieves, and a flag where the two differ
(a slope above the calibrated range, or below a floor coarser than
``THETA0_RESOLUTION``; see :func:`clip_reason`). Laws without a cell are refused
with the reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .cells import (AFFINE_RELU, AFFINE_TANH, SIGNED_GM, SIGNED_RELU, TANH2, AffineCalibration, Calibration, Cell, CellParams,
                    GmCalibration, GmParams, affine_achieved, affine_param_arrays, default_scaling, gm_achieved,
                    gm_param_arrays, relu_achieved, relu_param_arrays, shift_relu_param_arrays, slope_ranges)
from .characterize import (calibrate, calibrate_affine_relu, calibrate_affine_tanh, calibrate_gm,
                           characterize_affine_relu, characterize_affine_tanh, characterize_gm, characterize_relu,
                           characterize_tanh2)
from .errors import InputError
from .knet import KNet
from .scaling import Scaling
from .pdk import Pdk, get_pdk

# laws with a transistor-level cell, and why the others have none (yet)
CELL_FOR_LAW = {"relu": SIGNED_RELU, "shift_relu": SIGNED_RELU, "linear": SIGNED_GM, "tanh": TANH2,
                "relu_affine": AFFINE_RELU, "tanh_affine": AFFINE_TANH}
NO_CELL_REASON: dict[str, str] = {}  # every law of kcompile.knet/1 has a cell now
# 10 pF per model capacitance unit: tau = 2 µs at 0.5 µA. What sets the transistor level's error is not
# tau but the ratio of the node capacitance to the charge each cell moves on its own: ~8 fC of switch charge
# at every enable edge and ~150 fF of effective (delay) capacitance per enabled cell, independent of i0 and
# θ0 (docs/transistor.md). At 1 pF they moved the shipped example's nodes by up to 0.25 units per layer
# boundary; at 10 pF by 0.025. ngspice's cost does not depend on C (its steps follow the layer windows).
DEFAULT_C_UNIT = 10e-12
# Slopes |θ0| (relu) or gains |θ1| (shift_relu) below the calibrated floor are realised AT the floor, sign
# kept, and not flagged while the floor is at most this: the law's error is then at most 0.0025·|Δ|, i.e.
# 0.01 units of current at |Δ| = 4 (the compliance window), below the cells' own DC error (≈2-5 % of full
# scale, ≥ 0.02 units for a 0.25-slope device). Slopes above the calibrated ceiling are clipped AND flagged.
THETA0_RESOLUTION = 0.0025


@dataclass(frozen=True, eq=False)
class LayerMap:
    """Instance parameters of one layer's cells (arrays of length ``E``)."""

    negative: np.ndarray  # bool: the θ0 < 0 variant
    swap: bool | np.ndarray  # bool: instance ports swapped (current from d to s)
    r: np.ndarray
    ib: np.ndarray
    ipos: np.ndarray
    ineg: np.ndarray
    target: np.ndarray  # [E, P] θ as trained
    achieved: np.ndarray  # [E, P] θ the calibration predicts for the instance
    clipped: np.ndarray  # bool: flagged by clip_reason (realised clipped, beyond tolerance)
    # the transconductance cells' parameters (kc_gm, kc_tanh2, kc_arelu, kc_atanh); None where a cell has none
    io: np.ndarray | None = None  # input shift current of pair A (A)
    ap: np.ndarray | None = None  # current added at the ReLU core(s): the dead-zone fill, or kc_arelu's θ2 (A)
    signs: np.ndarray | None = None  # two-pair cells: variant per instance ("pp", "pn", "np", "nn")
    rb: np.ndarray | None = None  # two-pair cells: pair B (vd) resistor (ohm) and tail (A)
    ibb: np.ndarray | None = None
    sp: np.ndarray | None = None  # kc_arelu only (its single core): current subtracted through its mirror (A)
    iz: np.ndarray | None = None  # two-stage tanh cells: offset current into the tanh stage's input z (A)
    rl: float | None = None  # two-stage tanh cells: z-to-vr resistor (ohm) and stage-2 tail (A), per layer
    ib2: float | None = None

    def instance(self, i: int) -> CellParams | GmParams:
        """Instance ``i``'s parameters (the cell's own parameter dataclass)."""
        if self.io is None and self.rb is None:
            return CellParams(bool(self.negative[i]), float(self.r[i]), float(self.ib[i]), float(self.ipos[i]),
                              float(self.ineg[i]), bool(self.swap[i]))
        at = lambda a, default=0.0: default if a is None else float(a[i])  # noqa: E731
        signs = str(self.signs[i]) if self.signs is not None else ("n" if self.negative[i] else "p")
        return GmParams(signs, float(self.r[i]), float(self.ib[i]), at(self.io), at(self.rb, 1e6), at(self.ibb, 1e-7),
                        0.0, at(self.ap), at(self.sp), an=at(self.ap) if self.sp is None else 0.0,
                        swap=bool(self.swap[i]), rl=self.rl, ib2=self.ib2, iz=at(self.iz))


@dataclass(frozen=True, eq=False)
class CellMap:
    """The mapped circuit: which cell, PDK, corner, scaling, and per-layer instances."""

    pdk: Pdk
    corner: str
    scaling: Scaling
    calibration: Calibration | GmCalibration | AffineCalibration
    layers: tuple[LayerMap, ...]
    cell: Cell = SIGNED_RELU

    def instances(self, k: int) -> list[CellParams | GmParams]:
        """Every instance of layer ``k``."""
        lm = self.layers[k]
        return [lm.instance(i) for i in range(lm.r.size)]

    @property
    def clipped(self) -> list[tuple[int, int]]:
        """``(layer, index)`` of every device realised with clipped θ."""
        return [(k, int(i)) for k, lm in enumerate(self.layers) for i in np.flatnonzero(lm.clipped)]


def transistor_scaling(pdk: Pdk, **overrides: float) -> Scaling:
    """Default transistor-level scaling: 0.1 V and 0.5 µA per unit, 1 pF, vcm a third of the supply."""
    return dataclasses.replace(default_scaling(pdk), **{"c_unit": DEFAULT_C_UNIT, **overrides})


def relu_targets(law: str, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The relu-form (θ0, θ1) each device needs, and whether its instance is port-swapped (arrays)."""
    t0 = theta[:, 0].astype(float)
    t1 = theta[:, 1].astype(float) if theta.shape[1] > 1 else np.zeros(t0.shape)
    if law != "shift_relu":  # relu, and the slope θ0 of linear and tanh
        return t0, t1, np.zeros(t0.shape, dtype=bool)
    swap = t1 < 0  # shift_relu: θ1·max(Δ − θ0, 0)
    return t1, np.where(swap, t1 * t0, -t1 * t0), swap


def relu_target(law: str, theta: np.ndarray) -> tuple[float, float, bool]:
    """The relu-form (θ0, θ1) one device needs, and whether its instance is port-swapped."""
    t0, t1, swap = relu_targets(law, np.asarray(theta, dtype=float).reshape(1, -1))
    return float(t0[0]), float(t1[0]), bool(swap[0])


def clip_flags(t0: np.ndarray, cal: Calibration) -> np.ndarray:
    """Per device, whether :func:`clip_reason` flags relu-form slope ``t0`` (array)."""
    lo, hi = slope_ranges(cal, np.asarray(t0) < 0)
    mag = np.abs(t0)
    return (mag > hi) | ((mag < lo) & (lo > THETA0_RESOLUTION))


def clip_reason(t0: float, cal: Calibration) -> str | None:
    """Why a device needing relu-form slope ``t0`` is flagged, or ``None`` when it is realised within tolerance.

    Below the calibrated floor the slope is realised at the floor; that is flagged only when the floor
    exceeds :data:`THETA0_RESOLUTION` (it is 0.002 on every calibrated PDK). Above the ceiling it is
    always flagged.
    """
    lo, hi = cal.theta0_range(t0 < 0)
    if abs(t0) > hi:
        return f"|slope| {abs(t0):.4g} above the calibrated ceiling {hi:.4g}: realised at the ceiling"
    if abs(t0) < lo and lo > THETA0_RESOLUTION:
        return (f"|slope| {abs(t0):.4g} below the calibrated floor {lo:.4g} (> resolution {THETA0_RESOLUTION:g}): "
                "realised at the floor")
    return None


def _map_layer(law: str, theta: np.ndarray, cal: Calibration) -> LayerMap:
    """Map one layer's devices (arrays throughout: ~1 µs a device)."""
    theta = np.asarray(theta, dtype=float)
    t0, _, swap = relu_targets(law, theta)
    to_params = relu_param_arrays if law == "relu" else shift_relu_param_arrays
    p = to_params(theta[:, 0], theta[:, 1], cal, clip=True)
    a0, a1 = relu_achieved(p, cal)
    if law == "relu":
        achieved = np.stack([a0, a1], axis=1)
    else:  # back to shift_relu form: θ1' = a0, θ0' = ∓a1/a0 (the swapped instance has θ1 < 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            thr = np.where(a0 != 0, np.where(swap, a1, -a1) / a0, 0.0)
        achieved = np.stack([thr, a0], axis=1)
    return LayerMap(p.negative, p.swap, p.r, p.ib, p.ipos, p.ineg, theta, achieved.reshape(theta.shape),
                    clip_flags(t0, cal))


def _map_gm_layer(law: str, theta: np.ndarray, cal: GmCalibration) -> LayerMap:
    """Map one layer of ``linear`` (θ0) or ``tanh`` (θ0, θ1) devices onto the signed transconductance cell."""
    theta = np.asarray(theta, dtype=float)
    t0 = theta[:, 0]
    t1 = theta[:, 1] if law == "tanh" else np.zeros(t0.shape)
    p = gm_param_arrays(t0, t1, cal, clip=True)
    a0, a1 = gm_achieved(p, cal)
    achieved = np.stack([a0, a1], axis=1) if law == "tanh" else a0[:, None]
    zero = np.zeros(t0.shape)
    return LayerMap(p.negative, p.swap, p.r, p.ib, zero, zero, theta, achieved.reshape(theta.shape),
                    clip_flags(t0, cal), io=p.io, ap=p.ap, iz=p.iz, rl=p.rl, ib2=p.ib2)


# kc_arelu subtracts θ2 through the core's PMOS mirror, whose input carries the copy of I2 ≈ (ib + ibb)/1.08:
# a subtraction above this fraction of it starves the mirror
SP_HEADROOM = 0.8


def affine_flags(theta: np.ndarray, p, cal: AffineCalibration) -> np.ndarray:
    """Per device, whether the relu_affine instance ``p`` misses θ beyond tolerance (see :func:`affine_reason`)."""
    return np.array([affine_reason(th, p.sp[i], p.ib[i] + p.ibb[i], cal) is not None for i, th in enumerate(theta)],
                    dtype=bool) if len(theta) else np.zeros(0, dtype=bool)


def affine_reason(theta: np.ndarray, sp: float, tails: float, cal: AffineCalibration) -> str | None:
    """Why a relu_affine device is flagged: a coefficient beyond the calibrated ceiling (or below a floor coarser
    than :data:`THETA0_RESOLUTION`), or a θ2 too negative for the core's mirror to subtract."""
    for j, name in ((0, "θ0 (vs)"), (1, "θ1 (vd)")):
        why = clip_reason(float(theta[j]), cal)
        if why:
            return f"{name}: {why}"
    if sp > SP_HEADROOM * tails / 1.08:
        return (f"θ2 {theta[2]:.4g} needs {sp:.3g} A subtracted at the ReLU core, more than {SP_HEADROOM:g} of "
                f"its mirror current {tails / 1.08:.3g} A (the copy of I2: both pairs' tails); not realisable at "
                "these tails")
    return None


def _map_affine_layer(theta: np.ndarray, cal: AffineCalibration) -> LayerMap:
    """Map one layer of ``relu_affine`` (two-pair ReLU cell) or ``tanh_affine`` (two-pair two-stage tanh) devices."""
    theta = np.asarray(theta, dtype=float)
    p = affine_param_arrays(theta, cal)
    zero = np.zeros(theta.shape[0])
    neg = np.array([str(s)[0] == "n" for s in p.signs], dtype=bool)
    return LayerMap(neg, np.zeros(theta.shape[0], dtype=bool), p.r, p.ib, zero, zero, theta,
                    affine_achieved(p, cal).reshape(theta.shape), affine_flags(theta, p, cal),
                    ap=p.ap, signs=p.signs, rb=p.rb, ibb=p.ibb, sp=p.sp if cal.law == "relu_affine" else None,
                    iz=p.iz, rl=p.rl, ib2=p.ib2)


def unrealisable(knet: KNet) -> str | None:
    """Why ``knet``'s law has no cell, or ``None`` when it has one."""
    if knet.law in CELL_FOR_LAW:
        return None
    return (f"law {knet.law!r} has no transistor-level cell: {NO_CELL_REASON[knet.law]}; "
            f"all {knet.num_devices} devices are affected (cells exist for {', '.join(CELL_FOR_LAW)})")


def map_knet(knet: KNet, pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
             cache: bool = True) -> CellMap:
    """Map every device of ``knet`` onto calibrated cells (:data:`CELL_FOR_LAW`).

    Raises
    ------
    InputError
        The law has no cell (the message says why).
    """
    reason = unrealisable(knet)
    if reason:
        raise InputError(reason)
    pdk = get_pdk(pdk_name)
    scaling = scaling or transistor_scaling(pdk)
    # the cell's I-V in model units does not depend on the capacitance; calibrate at the cells' own scaling
    cal_scaling = dataclasses.replace(scaling, c_unit=default_scaling(pdk).c_unit)
    cell = CELL_FOR_LAW[knet.law]
    if cell in (AFFINE_RELU, AFFINE_TANH):
        characterize, fit = ((characterize_affine_relu, calibrate_affine_relu) if cell is AFFINE_RELU
                             else (characterize_affine_tanh, calibrate_affine_tanh))
        cal = fit(characterize(pdk_name, corner, cal_scaling, cache=cache))
        layers = tuple(_map_affine_layer(layer.theta, cal) for layer in knet.layers)
    elif cell in (SIGNED_GM, TANH2):
        table = (characterize_tanh2(pdk_name, corner, cal_scaling, cache=cache) if cell is TANH2
                 else characterize_gm(knet.law, pdk_name, corner, cal_scaling, cache=cache))
        cal = calibrate_gm(table)
        layers = tuple(_map_gm_layer(knet.law, layer.theta, cal) for layer in knet.layers)
    else:
        cal = calibrate(characterize_relu(pdk_name, corner, cal_scaling, cache=cache))
        layers = tuple(_map_layer(knet.law, layer.theta, cal) for layer in knet.layers)
    return CellMap(pdk, corner, scaling, cal, layers, cell)
