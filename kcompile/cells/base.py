"""The cell protocol: what every transistor-level cell family implements, and what they share.

A cell family is one module of :mod:`kcompile.cells` holding one :class:`Cell`
subclass (its template and ports, instance parameters, characterisation sweep,
calibration, θ → parameter arrays, achieved θ, clip reasons, and, where it has
them, refinement, mismatch attribution and a training surrogate) and one
instance of it, ``CELL``, listed in :mod:`kcompile.cells.registry`.

This module holds the protocol (:class:`Cell`), the mapped layer
(:class:`LayerMap`), the scaling and bias rules every cell shares
(:func:`default_scaling`, :func:`nominal_r`, :func:`tail_current`) and the
calibration-table lookups (log r against log |θ0| per sign variant) and
range checks (:func:`clip_flags`, :func:`clip_reason`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from typing import ClassVar

import jinja2
import numpy as np

from .. import progress
from ..checks import CELL_AREA
from ..errors import InputError
from ..pdk import Pdk
from ..resources import TEMPLATE_DIR
from ..scaling import Scaling

CELL_TEMPLATE_DIR = TEMPLATE_DIR / "cells"


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The Jinja environment of ``templates/cells/`` (cell templates and characterisation benches)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(CELL_TEMPLATE_DIR),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


# ---------------------------------------------------------------- scaling and bias rules

def default_scaling(pdk: Pdk) -> Scaling:
    """Scaling used for transistor-level cells: 0.1 V and 0.5 µA per unit, 100 fF.

    ``vcm`` is one third of the supply (0.6 V at 1.8 V), near the middle of the
    signed cell's compliance window (input pair headroom above, output mirror
    headroom below; measured in ``docs/cells.md``).
    """
    return Scaling(v0=0.1, vcm=round(pdk.supply / 3, 3), i0=0.5e-6, c_unit=100e-15)


# The pair's linear input range ~ ib*r: ib = VLIN / r keeps it at VLIN volts for every θ0,
# and keeps ib (hence the tail mirrors' finite output conductance, which adds a θ0 floor) small
# for small θ0. IB_MIN bounds the bias of nearly-off cells.
VLIN = 0.8
IB_MIN = 0.25e-6


def nominal_r(theta0: float, scaling: Scaling) -> float:
    """First-order degeneration resistor for ``|θ0|``: ``2·v0 / (|θ0|·i0)`` ohms."""
    return 2.0 * scaling.v0 / (abs(theta0) * scaling.i0)


def tail_current(r: float, scaling: Scaling) -> float:
    """Tail current per pair side for degeneration ``r``: ``max(VLIN/r, IB_MIN)`` scaled to ``i0``."""
    return max(VLIN / r, IB_MIN * scaling.i0 / 0.5e-6)


def tail_currents(r: np.ndarray, scaling: Scaling) -> np.ndarray:
    """:func:`tail_current` of every element of ``r``."""
    return np.maximum(VLIN / np.asarray(r, dtype=float), IB_MIN * scaling.i0 / 0.5e-6)


def nearest(r: np.ndarray, theta0: float, scaling: Scaling) -> int:
    """Index of the table resistor nearest (in log) to the one that nominally makes slope ``theta0``."""
    return int(np.argmin(np.abs(np.log(r / nominal_r(theta0, scaling)))))


# ---------------------------------------------------------------- calibration tables

def signed_clip(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``|x|`` clipped into ``[lo, hi]``, the sign of ``x`` kept (``+`` for zero)."""
    return np.copysign(np.clip(np.abs(x), lo, hi), np.where(x != 0, x, 1.0))


def interp_rows(x: np.ndarray, negative: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp(x, xp, fp[row])`` with the row chosen per element by ``negative``."""
    out = np.empty_like(x, dtype=float)
    for row in (0, 1):
        sel = negative == bool(row)
        out[sel] = np.interp(x[sel], xp[row] if xp.ndim == 2 else xp, fp[row])
    return out


def monotone(table: np.ndarray) -> np.ndarray:
    """``(2, K)`` mask of each row's calibrated part: the run of a slope table (resistors increasing) over which
    ``|slope|`` falls with r, from the largest resistor down. A point at a smaller r whose slope is not above
    the next one's (measured on sky130's two-pair ReLU cell: the nn variant at 50 kΩ, out of compliance) ends
    the run; it and every point before it are outside the calibrated range."""
    mag = np.abs(table)
    keep = np.ones(mag.shape, dtype=bool)
    for row in range(mag.shape[0]):
        k = mag.shape[1] - 1
        while k > 0 and mag[row, k - 1] > mag[row, k]:
            k -= 1
        keep[row, :k] = False
    return keep


def magnitude_range(table: np.ndarray, row: int) -> tuple[float, float]:
    """Smallest and largest ``|slope|`` of a ``(2, K)`` table's row over its calibrated part (:func:`monotone`)."""
    a = np.abs(table[row])[monotone(table)[row]]
    return float(a.min()), float(a.max())


def log_r(magnitude: np.ndarray, negative: np.ndarray, table: np.ndarray, r: np.ndarray) -> np.ndarray:
    """log r at which each element's variant row of a ``(2, K)`` slope ``table`` (measured at resistors ``r``)
    reaches ``magnitude`` (> 0, inside the row's range): log–log interpolation over the row's calibrated part
    (:func:`monotone`)."""
    mag, keep, x = np.abs(table), monotone(table), np.log(magnitude)
    out = np.empty_like(x, dtype=float)
    for row in (0, 1):
        m, lr = mag[row][keep[row]], np.log(r)[keep[row]]
        order = np.argsort(m)
        sel = negative == bool(row)
        out[sel] = np.interp(x[sel], np.log(m[order]), lr[order])
    return out


def coef(log_r: np.ndarray, negative: np.ndarray, table: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The signed slope a ``(2, K)`` table measured at resistors ``r`` predicts at ``log r`` (the inverse of
    :func:`log_r`; row 1, the negative variant, negated)."""
    return np.where(negative, -1.0, 1.0) * np.exp(interp_rows(log_r, negative, np.log(r), np.log(np.abs(table))))


class SlopeRange:
    """``theta0_range`` of a calibration whose ``theta0[v]`` holds variant ``v``'s measured slopes."""

    def theta0_range(self, negative: bool = False) -> tuple[float, float]:
        """Smallest and largest achievable ``|θ0|`` of one variant."""
        return magnitude_range(self.theta0, int(negative))


def slope_ranges(cal, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element, the calibrated ``|θ0|`` range of its variant (``cal.theta0_range``)."""
    (lp, hp), (ln, hn) = cal.theta0_range(False), cal.theta0_range(True)
    return np.where(negative, ln, lp), np.where(negative, hn, hp)


# Slopes |θ0| (relu) or gains |θ1| (shift_relu) below the calibrated floor are realised AT the floor, sign
# kept, and not flagged while the floor is at most this: the law's error is then at most 0.0025·|Δ|, i.e.
# 0.01 units of current at |Δ| = 4 (the compliance window), below the cells' own DC error (≈2-5 % of full
# scale, ≥ 0.02 units for a 0.25-slope device). Slopes above the calibrated ceiling are clipped AND flagged.
THETA0_RESOLUTION = 0.0025


def slope_ceiling(cal) -> tuple[float, float]:
    """``(−hi, hi)``: the largest |slope| both sign variants of ``cal`` realise."""
    hi = min(cal.theta0_range(False)[1], cal.theta0_range(True)[1])
    return -hi, hi


def clip_flags(t0: np.ndarray, cal) -> np.ndarray:
    """Per device, whether :func:`clip_reason` flags slope ``t0`` (array)."""
    lo, hi = slope_ranges(cal, np.asarray(t0) < 0)
    mag = np.abs(t0)
    return (mag > hi) | ((mag < lo) & (lo > THETA0_RESOLUTION))


def clip_reason(t0: float, cal) -> str | None:
    """Why a device needing slope ``t0`` is flagged, or ``None`` when it is realised within tolerance.

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


# ---------------------------------------------------------------- refinement

#: refinement keeps the mapping of a slope column smaller than this (the fit is noise there) ...
MIN_SLOPE = 0.01
#: ... and of devices that conduct less than this (model units) inside the window
MIN_CURRENT = 0.05
#: the refinement grid of the cells whose characterised grid is costly: the window only (|Δ| ≤ 4 in 0.25
#: steps, |m| ≤ 2 in 0.5 steps), 14x fewer points than the affine cells' characterised grid
WINDOW_GRID = (4.0, 33, 2.0, 9)


def fit_each(theta: np.ndarray, fit) -> tuple[np.ndarray, np.ndarray]:
    """``fit(e)`` of every device ``e`` of ``theta`` ``[E, P]``: its law-form θ, or ``None`` where the fit is unusable
    (the device then keeps ``theta[e]``); the achieved θ and the usable mask."""
    achieved, usable = np.array(theta, dtype=float), np.zeros(len(theta), dtype=bool)
    for e in range(len(theta)):
        got = fit(e)
        if got is not None:
            achieved[e], usable[e] = got, True
    return achieved, usable


# ---------------------------------------------------------------- window and accuracy

#: half-width, in model units of :func:`default_scaling` around ``vcm``, of the terminal voltages over which every cell
#: is characterised and calibrated (±0.4 V: 0.2-1.0 V on the 1.8 V PDKs): its compliance window
COMPLIANCE_SPAN = 4.0


@dataclass(frozen=True)
class Accuracy:
    """What a calibrated instance of a cell gets wrong, in amperes, volts and relative terms.

    The systematic terms are measured after calibration (docs/cells.md, re-measured instances);
    the mismatch terms follow from the PDK's Pelgrom coefficients and the cell's sizes.

    Attributes
    ----------
    gain : float
        Relative error of a calibrated slope.
    offset_i : float
        Offset-current residue where the cell forms its argument (the ReLU core, the tanh stage's
        input, the output), amperes.
    offset_v : float
        Input-referred offset residue of an input pair, volts.
    copy : float
        Relative error of the s-side and d-side output copies.
    c_cell : float
        Effective (delay) capacitance an enabled cell adds at a terminal, farads (docs/transistor.md).
    mismatch_v : float
        σ of an input pair's offset from mismatch (√2·σ_VT of one input transistor), volts.
    mismatch_gain : float
        σ of a copy's relative gain from mismatch (√2·σ_β/β of one mirror transistor).
    """

    gain: float
    offset_i: float
    offset_v: float
    copy: float
    c_cell: float
    mismatch_v: float = 0.0
    mismatch_gain: float = 0.0

    def record(self) -> dict:
        """The declaration as numbers (the manifest's)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- transistors (mismatch)

@dataclass(frozen=True)
class Transistor:
    """One transistor a cell template emitted: instance name (no prefix), flavour, drawn µm."""

    name: str
    kind: str
    w: float
    l: float


class _VaryingPdk:
    """Stands in for a :class:`Pdk` in a template: every ``mos`` is varied and recorded.

    A template that includes another twice (the two-stage cells: two ``signed_gm`` stages) emits the same
    instance names in each; the n-th occurrence of a name (n ≥ 2) varies as ``<name>_<n>``, so that every
    transistor of the cell draws its own mismatch.
    """

    def __init__(self, pdk: Pdk):
        self._pdk, self.transistors, self._seen = pdk, [], {}

    def __getattr__(self, attr):
        return getattr(self._pdk, attr)

    def mos(self, name, d, g, s, b, kind, w, l):
        n = self._seen[name] = self._seen.get(name, 0) + 1
        vary = name if n == 1 else f"{name}_{n}"
        self.transistors.append(Transistor(vary, kind, float(w), float(max(l, self._pdk.lmin))))
        return self._pdk.mos(name, d, g, s, b, kind, w, l, vary=vary)


def _add_subckt_params(text: str, name: str, params: str) -> str:
    """Append ``params`` as a continuation line of the ``.subckt name`` statement."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(f".subckt {name.lower()} "))
    end = start + 1
    while end < len(lines) and lines[end].startswith("+"):
        end += 1
    return "\n".join(lines[:end] + [f"+ {params}"] + lines[end:])


@functools.lru_cache(maxsize=None)
def _transistors(cell: Cell, pdk: Pdk, signs: str) -> tuple[Transistor, ...]:
    return cell._render(pdk, signs, None, True)[1]


# ---------------------------------------------------------------- instances and the mapped layer

class SpiceParams:
    """Mixin of a cell's per-instance parameter dataclass: :meth:`spice` writes the fields named in ``keys``
    (the ``.subckt`` line's parameters, in its order) as ``name=value`` pairs for an instance line."""

    keys: ClassVar[tuple[str, ...]] = ()

    def spice(self) -> str:
        """``name=value`` pairs for the instance line."""
        return " ".join(f"{k}={getattr(self, k):.6g}" for k in self.keys)



@dataclass(frozen=True, eq=False)
class LayerMap:
    """One layer's devices mapped onto a cell.

    Attributes
    ----------
    params
        The cell's instance-parameter arrays (one entry per device; ``params[i]`` is instance ``i``'s
        parameter object, with ``signs``, ``swap`` and ``spice()``; ``params.arrays()`` what
        ``devices.npz`` records).
    target : ndarray, shape (E, P)
        θ as trained.
    achieved : ndarray, shape (E, P)
        θ the calibration predicts for the instance (measured, after refinement).
    clipped : ndarray of bool, shape (E,)
        Flagged: realised clipped beyond tolerance (:meth:`Cell.clip_reason` says why).
    """

    params: object
    target: np.ndarray
    achieved: np.ndarray
    clipped: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def instance(self, i: int):
        """Instance ``i``'s parameters (the cell's own parameter dataclass)."""
        return self.params[i]

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``devices.npz`` records of this layer: θ, flags and the instance parameters."""
        return {"target": self.target, "achieved": self.achieved, "clipped": self.clipped, **self.params.arrays()}


# ---------------------------------------------------------------- the protocol

@dataclass(frozen=True)
class Cell:
    """A cell family: its template, ports and parameters, and (in subclasses) what it can do.

    Attributes
    ----------
    name : str
        Registry key, also the stem of the subcircuit names it renders (``<name>_<signs>``).
    template : str
        File name in ``templates/cells/``.
    ports : tuple of str
        Subcircuit ports, in order.
    laws : tuple of str
        Device laws it realises (empty for baselines that only illustrate).
    params : tuple of str
        Subcircuit parameters an instance sets (the ``.subckt`` line's, in order).
    sizes : tuple of (str, float) pairs
        Transistor sizes in µm passed to the template as ``sz``.
    options : tuple of (str, object) pairs
        Template options (``opt``).
    variants : tuple of str
        Sign variants, one letter per input pair (``p``: as drawn, ``n``: the pair's gates swapped).
    includes : tuple of str
        Templates the template includes (their text keys the characterisation cache too).
    studies : tuple of str
        Names ``python -m kcompile.characterize PDK CORNER NAME`` accepts for :meth:`report`
        (default: :attr:`laws`).
    mid_points : int or None
        Common-mode points of the per-device (characterised) tables; ``None``: the sweep default.
    accuracy_spec : tuple of (str, float) pairs
        The measured systematic fields of :class:`Accuracy` (``gain``, ``offset_i``, ``offset_v``, ``copy``,
        ``c_cell``) on generic180 tt; :meth:`accuracy` adds the mismatch terms per PDK.
    refine_grid : (Δ span, Δ points, common-mode span, common-mode points) or None
        The ``(Δ, m)`` grid refinement measures every instance on (:func:`kcompile.refine.measure`); ``None``: the
        characterised level's (whose last sweep it then shares).
    refine_devices : int
        Refinement is on by default (:func:`kcompile.refine.steps_for`) for networks of at most this many devices
        (0: off unless asked for).
    area : float
        Gate area relative to the drawn design (:meth:`with_area`; 1: ``sizes`` as declared).
    """

    name: str
    template: str
    ports: tuple[str, ...]
    laws: tuple[str, ...]
    params: tuple[str, ...]
    sizes: tuple[tuple[str, float], ...] = ()
    options: tuple[tuple[str, object], ...] = ()
    variants: tuple[str, ...] = ("p", "n")
    includes: tuple[str, ...] = ()
    studies: tuple[str, ...] | None = None
    mid_points: int | None = None
    accuracy_spec: tuple[tuple[str, float], ...] = ()
    refine_grid: tuple[float, int, float, int] | None = None
    refine_devices: int = 0
    area: float = 1.0

    #: drawn sizes :meth:`with_area` leaves at their minimum: the switches (their charge injection grows with area)
    FIXED_SIZES: ClassVar[tuple[str, ...]] = ("w_sw", "l_sw")

    #: :meth:`refine_fit` and :meth:`refine_columns` are implemented (per-device refinement, :mod:`kcompile.refine`)
    refinable: ClassVar[bool] = False
    #: laws with a training surrogate and θ box (:meth:`surrogate`, :meth:`training_range`)
    trains: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------ size

    def with_area(self, area: float) -> Cell:
        """This cell drawn ``area`` times as large as declared: every width and length but :data:`FIXED_SIZES`
        times √area. The W/L ratios, so the bias and the currents, stay; Pelgrom mismatch σ falls as 1/√area
        (:meth:`accuracy`, :mod:`kcompile.mismatch`), gate area and capacitance grow as area. Its calibration and
        sweeps are its own (:meth:`template_hash` covers the sizes).

        Raises
        ------
        InputError
            ``area`` outside :data:`kcompile.checks.CELL_AREA` (below 1: smaller than the sizes the cell's accuracy
            was measured at).
        """
        if CELL_AREA.problem(area):
            raise InputError(f"The cell area (times the drawn {self.name}) {CELL_AREA.problem(area)}.")
        if area == self.area:
            return self
        k = (area / self.area) ** 0.5
        return dataclasses.replace(self, area=float(area), sizes=tuple(
            (n, v if n in self.FIXED_SIZES else v * k) for n, v in self.sizes))

    def gate_area(self, pdk: Pdk) -> float:
        """Σ W·L of one instance's transistors on ``pdk``, µm² (lengths raised to the PDK's minimum). The sign
        variants only swap which gate of a pair an input drives, so every variant has this area (the cell contract
        checks it)."""
        return float(sum(t.w * t.l for t in self.transistors(pdk)))

    # ------------------------------------------------------------ template

    def subckt(self, signs: str) -> str:
        """Subcircuit name of variant ``signs``: ``<name>_<signs>``."""
        return f"{self.name}_{signs}"

    def template_text(self) -> str:
        """The template source and that of the templates it includes (their hash keys the characterisation cache)."""
        return "".join((CELL_TEMPLATE_DIR / t).read_text() for t in (self.template, *self.includes))

    def template_hash(self) -> str:
        """First 12 hex digits of the SHA-256 of the template, sizes and options."""
        return hashlib.sha256((self.template_text() + repr(self.sizes) + repr(self.options)).encode()).hexdigest()[:12]

    def render(self, pdk: Pdk, signs: str | None = None, scaling: Scaling | None = None,
               mismatch: bool = False) -> str:
        """The ``.subckt`` text of one variant for one PDK.

        Parameters
        ----------
        pdk : Pdk
        signs : str, optional
            The variant (:attr:`variants`; default the first).
        scaling : Scaling, optional
            Sets the parameter defaults (``r`` for θ0 = 1, ``ib`` from :func:`tail_current`);
            :func:`default_scaling` if omitted.
        mismatch : bool
            Give every transistor the template emits through ``pdk.mos`` a threshold shift
            ``vt_<name>`` and a relative current-factor change ``bt_<name>``, subcircuit
            parameters defaulting to 0 (:meth:`kcompile.pdk.Pdk.mos`, ``vary``). Without
            it the text is the nominal one, unchanged.
        """
        return self._render(pdk, signs or self.variants[0], scaling, mismatch)[0]

    def transistors(self, pdk: Pdk, signs: str | None = None) -> tuple[Transistor, ...]:
        """The transistors variant ``signs`` has on ``pdk``, in template order (what mismatch varies)."""
        return _transistors(self, pdk, signs or self.variants[0])

    def _render(self, pdk: Pdk, signs: str, scaling: Scaling | None,
                mismatch: bool) -> tuple[str, tuple[Transistor, ...]]:
        if signs not in self.variants:
            raise ValueError(f"cell {self.name} has the variants {', '.join(self.variants)}, not {signs!r}")
        scaling = scaling or default_scaling(pdk)
        r = nominal_r(1.0, scaling)
        target = _VaryingPdk(pdk) if mismatch else pdk
        name = self.subckt(signs)
        text = environment().get_template(self.template).render(
            name=name, negative=signs[0] == "n", signs=signs, pdk=target,
            sz=dict(self.sizes), opt=dict(self.options),
            r=f"{r:.6g}", ib=f"{tail_current(r, scaling):.6g}", iref=f"{scaling.i0:.6g}")
        if not mismatch:
            return text, ()
        devices = tuple(target.transistors)
        return _add_subckt_params(text, name, " ".join(f"vt_{t.name}=0 bt_{t.name}=0" for t in devices)), devices

    # ------------------------------------------------------------ window and accuracy

    def window(self, pdk: Pdk) -> tuple[float, float]:
        """The terminal voltages (volts) within which the cell's calibration holds: ±:data:`COMPLIANCE_SPAN` units
        of :func:`default_scaling` around its ``vcm``, the span every cell is characterised over."""
        sc = default_scaling(pdk)
        return round(sc.vcm - COMPLIANCE_SPAN * sc.v0, 9), round(sc.vcm + COMPLIANCE_SPAN * sc.v0, 9)

    def accuracy(self, pdk: Pdk) -> Accuracy:
        """:attr:`accuracy_spec` with the mismatch terms of ``pdk``'s Pelgrom coefficients (none: 0) for the
        input pair (``plvt``, ``w_in × l_in``) and the mirrors (``n``, ``w_mir × l_mir``)."""
        if not self.accuracy_spec:
            raise self._refuse("declares no accuracy: it realises no law")
        sz, mm = dict(self.sizes), pdk.mismatch
        # the delay capacitance was measured at the drawn sizes; × area bounds it from above (the switches stay)
        spec = dict(self.accuracy_spec)
        spec["c_cell"] *= self.area
        if mm is None:
            return Accuracy(**spec)
        vt = mm.sigma("plvt", sz["w_in"], max(sz["l_in"], pdk.lmin))[0]
        beta = mm.sigma("n", sz["w_mir"], max(sz["l_mir"], pdk.lmin))[1]
        return Accuracy(**spec, mismatch_v=2 ** 0.5 * vt, mismatch_gain=2 ** 0.5 * beta)

    # ------------------------------------------------------------ characterisation and calibration

    def characterize(self, pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                     cache: bool = True):
        """DC-sweep the cell's calibration table on one PDK corner (cached by deck; see :mod:`.sweep`)."""
        raise NotImplementedError

    def calibrate(self, table):
        """Fit :meth:`characterize`'s table into a calibration (θ per instance parameter)."""
        raise self._refuse("has no calibration: it realises no law")

    def calibration(self, pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                    cache: bool = True):
        """:meth:`calibrate` of :meth:`characterize` (a progress step, :mod:`kcompile.progress`)."""
        with progress.task(f"calibration of {self.name} on {pdk_name}/{corner}"):
            return self.calibrate(self.characterize(pdk_name, corner, scaling, cache=cache))

    def report(self, study: str, pdk_name: str, corner: str) -> None:
        """Print the calibration and its re-measured accuracy (``python -m kcompile.characterize``)."""
        raise NotImplementedError

    # ------------------------------------------------------------ mapping

    def theta_box(self, law: str, cal) -> tuple[tuple[float, float], ...]:
        """Per law parameter, an interval (model units) inside which calibration ``cal`` realises θ unflagged:
        slopes within the ceiling of both sign variants, offsets within what the cell was tested on."""
        raise self._refuse("has no calibrated θ range: it realises no law")

    def param_arrays(self, law: str, theta: np.ndarray, cal):
        """Instance-parameter arrays realising the rows of ``theta`` ``[E, P]`` (out-of-range θ clipped)."""
        raise self._refuse("has no calibration: it realises no law")

    def achieved(self, law: str, params, cal) -> np.ndarray:
        """The ``[E, P]`` θ the calibration predicts for instances ``params`` (the inverse of :meth:`param_arrays`)."""
        raise self._refuse("has no calibration: it realises no law")

    def clip_reason(self, law: str, theta: np.ndarray, instance, cal) -> str | None:
        """Why the device of θ ``theta`` (one row), mapped to ``instance``, is flagged; ``None`` if it is not."""
        raise self._refuse("has no calibration: it realises no law")

    def clipped(self, law: str, theta: np.ndarray, params, cal) -> np.ndarray:
        """Per device, whether :meth:`clip_reason` flags it (the cells override this with array code)."""
        return np.array([self.clip_reason(law, th, params[i], cal) is not None for i, th in enumerate(theta)],
                        dtype=bool) if len(theta) else np.zeros(0, dtype=bool)

    def map_layer(self, law: str, theta: np.ndarray, cal) -> LayerMap:
        """Map one layer's devices (arrays throughout): instances, achieved θ and flags."""
        theta = np.asarray(theta, dtype=float)
        p = self.param_arrays(law, theta, cal)
        return LayerMap(p, theta, self.achieved(law, p, cal).reshape(theta.shape), self.clipped(law, theta, p, cal))

    # ------------------------------------------------------------ refinement, mismatch attribution, training

    def refine_columns(self, law: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The θ columns a refinement step moves multiplicatively (slopes) and additively (offsets)."""
        raise self._refuse(f"is not refinable (law {law!r}): build with --refine-steps 0")

    def refine_fit(self, law: str, theta: np.ndarray, delta: np.ndarray, mid: np.ndarray,
                   current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Law-form θ each device achieves, fitted to its measured ``current`` ``[E, D, M]`` at ``delta`` and
        common mode ``mid`` (both ``[D, M]``, inside the refinement window), and whether each fit is usable."""
        raise self._refuse(f"is not refinable (law {law!r}): build with --refine-steps 0")

    def relu_targets(self, law: str, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The relu-form (θ0, θ1) each device's instance realises and whether its ports are swapped, for the
        Monte Carlo attribution (:mod:`kcompile.mismatch`, which fits ``max(θ0·Δ + θ1, 0)`` per copy)."""
        raise self._refuse(f"has no relu form (law {law!r}), which the Monte Carlo device ranking needs: "
                           "set 'monte_carlo.rank: false' in the flow")

    def training_range(self, law: str, pdk_name: str, corner: str) -> tuple[tuple, tuple, float]:
        """``(lo, hi, theta1_max)``: per sign of θ0 (``[θ0 ≥ 0, θ0 < 0]``) the calibrated ``|θ0|`` range, and the
        largest ``|θ1|`` (``kcompile train --theta-range``)."""
        raise self._refuse(f"has no training θ box for law {law!r}: train without --theta-range")

    def surrogate(self, law: str, pdk_name: str, corner: str) -> dict:
        """The arrays of :class:`kcompile.train.CellSurrogate` fitted to the characterised cell
        (``kcompile train --device-in-the-loop``)."""
        raise self._refuse(f"has no training surrogate for law {law!r}: train without --device-in-the-loop")

    def _refuse(self, why: str) -> InputError:
        return InputError(f"cell {self.name} {why}")
