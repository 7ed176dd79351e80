"""Technology mapping: every device of a KNet onto a calibrated transistor-level cell, at a scaling that fits.

:func:`plan_scaling` chooses how the network meets the cells: with automatic
scaling (the default of transistor builds) it measures every node's range
(:mod:`kcompile.ranges`) and rescales the network exactly, ``v = α·u``
(:mod:`kcompile.scaling`), so that the circuit's node voltages stay inside
the cell's compliance window in volts (:meth:`kcompile.cells.base.Cell.window`)
with a margin; the circuit is the rescaled network at the cells' own
scaling (where they are calibrated and cached), and the recorded scaling
maps the ORIGINAL model units onto it. An explicit scaling is taken as is.

``map_knet`` takes a network, a PDK corner and a scaling, asks the cell
registry (:mod:`kcompile.cells.registry`) for the law's cell, characterises and
calibrates it there (cached DC sweeps), and returns a :class:`CellMap`: per
layer a :class:`kcompile.cells.base.LayerMap` with the instances' parameters,
target θ, the θ the calibration predicts each instance achieves, and a flag
where the two differ beyond tolerance (the cell's
:meth:`~kcompile.cells.base.Cell.clip_reason` says why). A law without a cell is
refused with the laws that have one and the fix. :func:`theta_misses` counts
the devices whose achieved θ (predicted, or measured after refinement) misses
its target beyond the cell's calibrated accuracy, whatever the reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .cells import Accuracy, Cell, LayerMap, cell_for_law, default_scaling
from .cells.base import THETA0_RESOLUTION
from .knet import KNet
from .laws import LAWS
from .netlist import Tran
from .pdk import Pdk, get_pdk
from .ranges import Ranges
from .scaling import Scaling, argument_coefficients, rescale, rescaling

# 30 pF per model capacitance unit: tau = 6 µs at 0.5 µA. What sets the transistor level's error is not
# tau but the ratio of the node capacitance to the charge each cell moves on its own: ~8 fC of switch charge
# at every enable edge and ~150 fF of effective (delay) capacitance per enabled cell, independent of i0 and
# θ0 (docs/transistor.md). At 1 pF they moved the shipped example's nodes by up to 0.25 units per layer
# boundary; at 10 pF by 0.025. It was 10 pF: on random networks with θ in [-1, 1] (generic180 tt, seeds 0-4 of
# relu, shift_relu, relu_affine, linear) 30 pF lowered |transistor - ideal| on 15 of 20 and met the issue-13
# target on 16 instead of 13 (docs/transistor.md, "The fix: three times the capacitance per unit"). ngspice's
# cost does not depend on C (its steps follow the layer windows); latency and energy per inference grow as C.
DEFAULT_C_UNIT = 30e-12
#: automatic scaling fits the node ranges into this fraction of the window on each side of vcm
FILL = 0.9
#: the largest device current (model units of the cells' scaling, 1 µA) a current gain may reach. It was 8 units: on
#: random relu networks with θ in [-1, 1] (generic180 tt) β = 1.2-2.3 then drove devices to 5-8 units, where the
#: refined ReLU cell's I-V falls 4-5 % below its law (the refinement fits |Δ| <= 4); with β = 1 the worst output
#: error of five seeds fell from 0.48 to 0.24 units and seed 3's from 0.40 to 0.09 (docs/transistor.md, "Measured on
#: networks it was not tuned on"). A current gain now only lifts networks whose currents stay small.
CURRENT_LIMIT = 2.0
#: devices whose achieved θ misses its target by more than this many times the cell's calibrated accuracy are
#: counted as θ misses (:func:`theta_misses`)
MISS_SIGMAS = 3.0


@dataclass(frozen=True, eq=False)
class CellMap:
    """The mapped circuit: which cell, PDK, corner, scaling, calibration, per-layer instances, and the law."""

    pdk: Pdk
    corner: str
    scaling: Scaling
    calibration: object
    layers: tuple[LayerMap, ...]
    cell: Cell
    law: str

    def instances(self, k: int) -> list:
        """Every instance of layer ``k`` (the cell's own parameter objects)."""
        lm = self.layers[k]
        return [lm.instance(i) for i in range(len(lm))]

    @property
    def clipped(self) -> list[tuple[int, int]]:
        """``(layer, index)`` of every device realised with clipped θ."""
        return [(k, int(i)) for k, lm in enumerate(self.layers) for i in np.flatnonzero(lm.clipped)]

    def clip_reason(self, law: str, k: int, i: int) -> str | None:
        """Why device ``i`` of layer ``k`` is flagged (the cell's reason), or ``None``."""
        lm = self.layers[k]
        return self.cell.clip_reason(law, lm.target[i], lm.instance(i), self.calibration)


def transistor_scaling(pdk: Pdk, **overrides: float) -> Scaling:
    """Default transistor-level scaling: 0.1 V and 0.5 µA per unit, 30 pF, vcm a third of the supply."""
    return dataclasses.replace(default_scaling(pdk), **{"c_unit": DEFAULT_C_UNIT, **overrides})


def map_knet(knet: KNet, pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
             cache: bool = True, area: float = 1.0) -> CellMap:
    """Map every device of ``knet`` onto the calibrated cell of its law, drawn ``area`` times as large
    (:meth:`kcompile.cells.base.Cell.with_area`).

    Raises
    ------
    kcompile.cells.NoCellError
        No cell realises the law (an :class:`~kcompile.errors.InputError`; the message names the fix).
    """
    cell = cell_for_law(knet.law, area)
    pdk = get_pdk(pdk_name)
    scaling = scaling or transistor_scaling(pdk)
    # the cell's I-V in model units does not depend on the capacitance; calibrate at the cells' own scaling
    cal_scaling = dataclasses.replace(scaling, c_unit=default_scaling(pdk).c_unit)
    cal = cell.calibration(pdk_name, corner, cal_scaling, cache=cache)
    layers = tuple(cell.map_layer(knet.law, layer.theta, cal) for layer in knet.layers)
    return CellMap(pdk, corner, scaling, cal, layers, cell, knet.law)


# ---------------------------------------------------------------- the scaling plan

@dataclass(frozen=True, eq=False)
class ScalingPlan:
    """How a network meets the cells: the circuit realises ``network`` (``u = v/α``) at ``cell_scaling``;
    ``scaling`` is the same circuit in the original model units (what the build records and simulate reads).

    Attributes
    ----------
    alpha : float
        ``v = α·u`` (1: the network as it is).
    beta : float
        Current gain of the circuit's network (homogeneous laws; ≤ α: it gives back at most the current that
        the voltage rescaling took away, within the cell's θ box and :data:`CURRENT_LIMIT`).
    mode : {"auto", "manual"}
        Chosen to fit the window, or the scaling given.
    kind : str
        The law's rescaling (:attr:`kcompile.scaling.Rescaling.kind`).
    network : KNet
        The network the circuit realises.
    cell_scaling, scaling : Scaling
    window : (float, float)
        The cell's compliance window, volts.
    ranges : Ranges
        Node ranges of the original network (model units) on the calibration inputs.
    need : float
        The α that fits the ranges into :data:`FILL` of the window (≤ 1: they fit as they are).
    limit : str or None
        Why α stops short of ``need`` (automatic scaling), else ``None``.
    """

    alpha: float
    beta: float
    mode: str
    kind: str
    network: KNet
    cell_scaling: Scaling
    scaling: Scaling
    window: tuple[float, float]
    ranges: Ranges
    need: float
    limit: str | None = None

    @property
    def volts(self) -> tuple[float, float]:
        """The lowest and highest node voltage (volts) of the circuit on the calibration inputs."""
        return (self.scaling.vcm + self.scaling.v0 * self.ranges.low,
                self.scaling.vcm + self.scaling.v0 * self.ranges.high)

    @property
    def outside(self) -> float:
        """How far (volts) the nodes leave the window on the calibration inputs (0 when they stay inside)."""
        lo, hi = self.volts
        beyond = max(self.window[0] - lo, hi - self.window[1])
        return beyond if beyond > 1e-12 else 0.0

    @property
    def fits(self) -> bool:
        """Whether every node stays inside the window (without margin) on the calibration inputs."""
        return self.outside == 0.0

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """Inputs of :attr:`network` for the original inputs ``x``."""
        return np.asarray(x, dtype=float) / self.alpha

    def states(self, s: np.ndarray) -> np.ndarray:
        """Original node voltages from :attr:`network`'s."""
        return np.asarray(s) * self.alpha

    def tran(self, tran: Tran) -> Tran:
        """``tran`` with its tolerances (model units) rescaled so that the simulator options in volts and amperes
        are those of the cells' scaling."""
        if self.scaling == self.cell_scaling:
            return tran
        return dataclasses.replace(tran, abstol=tran.abstol * self.cell_scaling.i0 / self.scaling.i0,
                                   vntol=tran.vntol * self.cell_scaling.v0 / self.scaling.v0)

    def record(self) -> dict:
        """What the manifest records (``cells.scaling_plan``)."""
        lo, hi = self.volts
        return {"mode": self.mode, "alpha": self.alpha, "beta": self.beta, "kind": self.kind, "reason": self.reason,
                "window_volts": list(self.window), "volts": [lo, hi], "peak": self.ranges.peak, "fill": FILL,
                "need": self.need, "limit": self.limit, "ranges": self.ranges.record(),
                "cell_scaling": dataclasses.asdict(self.cell_scaling)}

    @property
    def reason(self) -> str:
        """One phrase: why this α."""
        if self.mode == "manual":
            return "the scaling was given (--v0/--i0): no automatic scaling"
        if self.alpha == 1.0 and self.need <= 1.0:
            return (f"the nodes stay within ±{self.ranges.peak:.3g} units, inside {100 * FILL:g} % of the window: "
                    "no rescaling needed")
        if self.limit:
            return f"limited: {self.limit}"
        if self.alpha < 1.0:
            return (f"the slopes exceed the cell's calibrated box at α = 1: rescaled by α = {self.alpha:.4g} "
                    f"({self.kind}: slopes × α) while the nodes, ±{self.ranges.peak:.3g} units, still fit the window")
        gain = f", currents × β = {self.beta:.3g}" if self.beta != 1.0 else ""
        return (f"the nodes reach ±{self.ranges.peak:.3g} units: rescaled by α = {self.alpha:.4g} ({self.kind}{gain}) "
                f"to fill {100 * FILL:g} % of the window")


def _half_widths(window: tuple[float, float], scaling: Scaling) -> tuple[float, float]:
    """Room below and above ``scaling.vcm`` inside ``window``, in model units of ``scaling``."""
    return (scaling.vcm - window[0]) / scaling.v0, (window[1] - scaling.vcm) / scaling.v0


def needed_alpha(ranges: Ranges, window: tuple[float, float], scaling: Scaling, fill: float = FILL) -> float:
    """The α that puts ``ranges`` inside ``fill`` of ``window`` around ``scaling.vcm`` (may be ≤ 1)."""
    down, up = _half_widths(window, scaling)
    if down <= 0 or up <= 0:
        return np.inf
    return max(-ranges.low / down, ranges.high / up) / fill


def _box_limit(knet: KNet, box, columns) -> tuple[float, str]:
    """The largest factor the θ ``columns`` of ``knet`` may be multiplied by inside ``box`` (per column an
    interval), and a phrase naming the binding column."""
    best, why = np.inf, ""
    for j in columns:
        lo, hi = box[j]
        theta = np.concatenate([layer.theta[:, j] for layer in knet.layers]) if knet.layers else np.zeros(0)
        most, least = float(theta.max(initial=0.0)), float(theta.min(initial=0.0))
        for value, bound in ((most, hi), (least, lo)):
            if value != 0 and bound / value < best:
                best, why = max(bound / value, 0.0), f"θ{j} up to {value:.3g}, calibrated to {bound:.3g}"
    return best, why


def plan_scaling(knet: KNet, ranges: Ranges, pdk_name: str, corner: str = "tt", scaling: Scaling | None = None,
                 mode: str = "auto", cache: bool = True, area: float = 1.0) -> ScalingPlan:
    """Choose how ``knet`` meets its law's cell, drawn ``area`` times as large, on ``pdk_name``/``corner``.

    Parameters
    ----------
    ranges : Ranges
        ``knet``'s node ranges on the calibration inputs (:func:`kcompile.ranges.node_ranges`).
    scaling : Scaling, optional
        ``mode="manual"``: the scaling to use (default :func:`transistor_scaling`). ``mode="auto"``: the cells'
        scaling of the circuit (default :func:`transistor_scaling`); its ``c_unit`` is the capacitance per
        original unit at α = 1, and grows as α (the cells' fixed charges and delay capacitances then keep
        their share of the original units).
    mode : {"auto", "manual"}
        ``"auto"``: the smallest ``α ≥ 1`` that fits the ranges into :data:`FILL` of the cell's window, limited
        by what the law's rescaling allows (homogeneous laws: any α; slope-scaled laws: slopes × α inside the
        cell's calibrated θ box; laws without an exact rescaling: 1). A slope-scaled law whose slopes leave the
        box at α = 1 while its nodes fill less than the window takes ``α < 1``, as small as the box asks and the
        window allows (larger circuit voltages, smaller slopes).
    """
    pdk = get_pdk(pdk_name)
    cell = cell_for_law(knet.law, area)
    cell_scaling = scaling or transistor_scaling(pdk)
    window = cell.window(pdk)
    need = needed_alpha(ranges, window, cell_scaling)
    r = rescaling(knet.law)
    if mode == "manual":
        return ScalingPlan(1.0, 1.0, mode, r.kind, knet, cell_scaling, cell_scaling, window, ranges, need)
    if mode != "auto":
        raise ValueError(f"The 'mode' parameter of plan_scaling must be 'auto' or 'manual'. Got {mode!r} instead.")
    alpha, limit = max(1.0, need), None
    if not np.isfinite(alpha):
        alpha, limit = 1.0, (f"vcm {cell_scaling.vcm:g} V lies outside the window {window[0]:g}-{window[1]:g} V; "
                             "use the default vcm")
    elif alpha > 1.0 and r.kind == "none":
        alpha, limit = 1.0, f"law {knet.law!r} has no exact rescaling ({r.why})"
    beta = 1.0
    if np.isfinite(need) and (alpha > 1.0 and r.kind != "none" or r.kind == "slopes"):
        cal = cell.calibration(pdk_name, corner, dataclasses.replace(cell_scaling, c_unit=default_scaling(pdk).c_unit),
                               cache=cache)
        box = cell.theta_box(knet.law, cal)
        if r.kind == "slopes":
            most, why = _box_limit(knet, box, r.slopes)
            if alpha > most and need < 1.0:
                # slopes beyond the box, nodes with room to spare: α < 1 trades the room for smaller slopes
                alpha = max(need, most)
                limit = None if alpha == most else (
                    f"the law's slopes leave cell {cell.name}'s calibrated box on {pdk_name}/{corner} ({why}) "
                    f"unless α ≤ {most:.3g}, and the nodes fill the window at α = {need:.3g}")
            elif alpha > most:
                alpha = max(1.0, most)
                limit = (f"the law's slopes scale with α and would leave cell {cell.name}'s calibrated box on "
                         f"{pdk_name}/{corner} beyond α = {most:.3g} ({why})")
        elif r.gains:
            shrunk = rescale(knet, alpha)
            room = ranges.current / alpha
            beta = max(1.0, min(alpha, _box_limit(shrunk, box, r.gains)[0],
                                CURRENT_LIMIT / room if room > 0 else np.inf))
    if r.kind == "homogeneous":
        # the fixed charges and delay capacitances of the cells move the circuit's nodes by fixed volts, i.e. by
        # α times more original units: the capacitance per original unit grows with α (slope-scaled laws: the
        # rescaling itself multiplies it by α)
        cell_scaling = dataclasses.replace(cell_scaling, c_unit=cell_scaling.c_unit * alpha / beta)
    network = rescale(knet, alpha, beta)
    return ScalingPlan(alpha, beta, mode, r.kind, network, cell_scaling, r.physical(cell_scaling, alpha, beta),
                       window, ranges, need, limit)


# ---------------------------------------------------------------- θ misses

def theta_tolerance(law: str, theta: np.ndarray, accuracy: Accuracy, scaling: Scaling,
                    sigmas: float = MISS_SIGMAS) -> np.ndarray:
    """Per device and θ column ``[E, P]``: how far achieved θ may miss ``theta`` within the cell's calibrated
    accuracy (``sigmas`` times it). Slopes: relative ``gain``; offsets (the columns of the argument's constant
    term): ``offset_i`` (over the device's output scale) plus the largest terminal coefficient times
    ``offset_v``; other columns (output scales): relative ``gain``."""
    theta = np.asarray(theta, dtype=float)
    r = rescaling(law)
    a, b, c, scale = (np.broadcast_to(np.asarray(x, dtype=float), theta.shape[:1]) for x in
                      LAWS[law].coefficients(theta))
    tol = sigmas * accuracy.gain * np.abs(theta) + THETA0_RESOLUTION
    c_tol = sigmas * (accuracy.offset_i / scaling.i0 / np.maximum(np.abs(scale), 1e-12)
                      + np.maximum(np.abs(a), np.abs(b)) * accuracy.offset_v / scaling.v0)
    zero = argument_coefficients(LAWS[law], np.zeros(theta.shape[1]))[2]
    for j in r.offsets:
        dc = abs(argument_coefficients(LAWS[law], np.eye(theta.shape[1])[j])[2] - zero)
        tol[:, j] = c_tol / dc + THETA0_RESOLUTION
    return tol


@dataclass(frozen=True)
class ThetaMisses:
    """Devices whose achieved θ misses the target beyond the cell's calibrated accuracy (:func:`theta_misses`)."""

    law: str
    cell: str
    count: int
    devices: int
    worst: float  # largest |achieved − target| over the missed devices (0 if none)
    examples: tuple[tuple[int, int], ...]  # (layer, index) of the first few

    def record(self) -> dict:
        return {"law": self.law, "cell": self.cell, "count": self.count, "devices": self.devices,
                "worst": self.worst, "examples": [list(e) for e in self.examples]}

    def message(self, corner: str) -> str:
        where = ", ".join(f"layer{k}[{i}]" for k, i in self.examples)
        return (f"{self.count} of {self.devices} {self.law} device(s) on cell {self.cell} ({corner}) miss their "
                f"target θ beyond the cell's calibrated accuracy ({MISS_SIGMAS:g}σ; largest miss {self.worst:.3g} "
                f"units; e.g. {where}); devices.npz holds target and achieved θ")


def theta_misses(law: str, cellmap: CellMap, limit: int = 4) -> ThetaMisses:
    """Count the devices of ``cellmap`` whose achieved θ misses the target beyond :func:`theta_tolerance`
    (clipped or not, predicted or measured)."""
    acc = cellmap.cell.accuracy(cellmap.pdk)
    bad, worst, total = [], 0.0, 0
    for k, lm in enumerate(cellmap.layers):
        total += len(lm)
        if not len(lm):
            continue
        miss = np.abs(lm.achieved - lm.target)
        over = (miss > theta_tolerance(law, lm.target, acc, cellmap.calibration.scaling)).any(axis=1)
        bad += [(k, int(i)) for i in np.flatnonzero(over)]
        if over.any():
            worst = max(worst, float(miss[over].max()))
    return ThetaMisses(law, cellmap.cell.name, len(bad), total, worst, tuple(bad[:limit]))
