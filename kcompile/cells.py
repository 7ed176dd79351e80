"""Transistor-level cells: what each realises and how θ maps onto its parameters.

A :class:`Cell` names a Jinja template in ``templates/cells/``, its ports,
the laws it realises and its parameter ranges. :func:`render_cell` turns it
into a ``.subckt`` for one :class:`~kcompile.pdk.Pdk`. A :class:`Calibration`
(made by :func:`kcompile.characterize.calibrate` from measured DC sweeps)
maps device parameters θ to instance parameters (:func:`relu_params`).

Only the signed ReLU cell is calibrated; the poster's baseline cells are
rendered for documentation and comparison (see ``docs/cells.md``).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import jinja2
import numpy as np

from .resources import TEMPLATE_DIR
from .scaling import Scaling
from .pdk import Pdk

CELL_TEMPLATE_DIR = TEMPLATE_DIR / "cells"


@dataclass(frozen=True)
class Cell:
    """A cell template and what it can do.

    Attributes
    ----------
    name : str
        Registry key, also the stem of the subcircuit names it renders.
    template : str
        File name in ``templates/cells/``.
    ports : tuple of str
        Subcircuit ports, in order.
    laws : tuple of str
        Device laws it realises (empty for baselines that only illustrate).
    params : tuple of str
        Subcircuit parameters an instance sets.
    sizes : tuple of (str, float) pairs
        Transistor sizes in µm passed to the template as ``sz``.
    theta_range : tuple of (float, float) pairs
        Calibrated range of each law parameter, for model units at the
        default scaling; outside it the error grows (see ``docs/cells.md``).
    """

    name: str
    template: str
    ports: tuple[str, ...]
    laws: tuple[str, ...]
    params: tuple[str, ...]
    sizes: tuple[tuple[str, float], ...] = ()
    theta_range: tuple[tuple[float, float], ...] = ()
    options: tuple[tuple[str, object], ...] = ()

    @property
    def variants(self) -> tuple[str, ...]:
        """Sign variants, one letter per input pair (``p``: as drawn, ``n``: the pair's gates swapped)."""
        return ("pp", "pn", "np", "nn") if dict(self.options).get("pairs") == 2 else ("p", "n")

    def template_text(self) -> str:
        """The template source (its hash keys the characterisation cache); two-stage cells include the gm one."""
        text = (CELL_TEMPLATE_DIR / self.template).read_text()
        return text + (CELL_TEMPLATE_DIR / "signed_gm.sp.j2").read_text() if "stages" in dict(self.options) else text

    def template_hash(self) -> str:
        """First 12 hex digits of the SHA-256 of the template and sizes."""
        return hashlib.sha256((self.template_text() + repr(self.sizes) + repr(self.options)).encode()).hexdigest()[:12]


SIGNED_RELU = Cell(
    name="kc_relu",
    template="signed_relu.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("relu", "shift_relu"),
    params=("r", "ib", "ipos", "ineg"),
    # w_po = w_pmir / 1.03: trims the d-side copy's systematic +2..4.5 % excess (measured on generic180,
    # positive / negative variant); w_sw/l_sw minimum size (l is raised to each PDK's lmin): switch charge
    # (docs/transistor.md)
    sizes=(("w_tail", 2.0), ("l_tail", 4.0), ("w_in", 8.0), ("l_in", 1.0), ("w_mir", 2.0), ("l_mir", 2.0),
           ("w_pmir", 4.0), ("l_pmir", 2.0), ("w_po", 3.88), ("w_sw", 0.5), ("l_sw", 0.18)),
    theta_range=((-4.5, 4.5), (-4.0, 4.0)),  # |θ0| calibrated to >= 4.6 on all three PDKs; θ1 tested to ±3
)

POSTER_RELU = Cell(
    name="kc_poster",
    template="poster_relu.sp.j2",
    ports=("s", "d", "vg", "vdd", "vss"),
    laws=(),
    params=("iref",),
    sizes=(("w_res", 1.0), ("l_res", 4.0), ("w_dio", 4.0), ("l_dio", 0.5), ("w_mir", 2.0), ("l_mir", 2.0)),
)

# w_cc = w_mir / 1.08: the NMOS copies feeding the cores' PMOS mirrors (c2p, c1n) sit at ~0.5 V more drain
# voltage than the diodes they copy; untrimmed, each core carried +4..6 % of the tail current at balance (both
# cores on: the slope doubled near zero). Trimmed past balance, every tail current leaves a small dead zone,
# which the calibration fills exactly with ap = an (currents added at the cores' ReLU nodes).
_GM_SIZES = (("w_tail", 2.0), ("l_tail", 4.0), ("w_in", 8.0), ("l_in", 1.0), ("w_mir", 2.0), ("l_mir", 2.0),
             ("w_cc", 2.0 / 1.08), ("w_pmir", 4.0), ("l_pmir", 2.0), ("w_po", 3.88), ("w_sw", 0.5), ("l_sw", 0.18))

# one input pair (s against d), signed output: linear (tails >> signal) and tanh (tails = I0/2: the pair saturates)
SIGNED_GM = Cell(
    name="kc_gm",
    template="signed_gm.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("linear", "tanh"),
    params=("r", "ib", "io", "ap", "sp", "an", "sn"),
    sizes=_GM_SIZES,
    options=(("pairs", 1), ("out", "signed")),
)
# two input pairs (s against vr, d against vr), ReLU output
AFFINE_RELU = Cell(
    name="kc_arelu",
    template="signed_gm.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("relu_affine",),
    params=("r", "ib", "io", "rb", "ibb", "iob", "ap", "sp"),
    sizes=_GM_SIZES,
    options=(("pairs", 2), ("out", "relu")),
)

# two stages: a linear kc_gm (one pair, or two for tanh_affine) into a resistor, then an undegenerated kc_gm (tanh)
TANH2 = Cell(
    name="kc_tanh2",
    template="tanh2.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("tanh",),
    params=("r", "ib", "io", "ap", "an", "iz", "rl", "ib2"),
    sizes=_GM_SIZES,
    options=(("pairs", 1), ("stages", 2)),
)
AFFINE_TANH = Cell(
    name="kc_atanh",
    template="tanh2.sp.j2",
    ports=("s", "d", "en", "enb", "vdd", "vss", "vr"),
    laws=("tanh_affine",),
    params=("r", "ib", "rb", "ibb", "ap", "an", "iz", "rl", "ib2"),
    sizes=_GM_SIZES,
    options=(("pairs", 2), ("stages", 2)),
)

CELLS: dict[str, Cell] = {c.name: c for c in (SIGNED_RELU, POSTER_RELU, SIGNED_GM, AFFINE_RELU, TANH2, AFFINE_TANH)}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(CELL_TEMPLATE_DIR),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def subckt_name(cell: Cell, negative: bool = False, signs: str | None = None) -> str:
    """Subcircuit name of one variant: ``<cell>_p`` or ``<cell>_n`` (θ0 sign), or ``<cell>_<signs>``."""
    return f"{cell.name}_{signs or ('n' if negative else 'p')}"


def render_cell(cell: Cell, pdk: Pdk, negative: bool = False, scaling: Scaling | None = None,
                signs: str | None = None, mismatch: bool = False) -> str:
    """The ``.subckt`` text of one cell variant for one PDK.

    Parameters
    ----------
    cell : Cell
    pdk : Pdk
    negative : bool
        The θ0 < 0 variant (input pair gates swapped).
    scaling : Scaling, optional
        Sets the parameter defaults (``r`` for θ0 = 1, ``ib`` from :func:`tail_current`);
        :func:`default_scaling` if omitted.
    signs : str, optional
        The variant of a cell with :attr:`Cell.variants` (one letter per input pair); overrides ``negative``.
    mismatch : bool
        Give every transistor the template emits through ``pdk.mos`` a threshold shift
        ``vt_<name>`` and a relative current-factor change ``bt_<name>``, subcircuit
        parameters defaulting to 0 (:meth:`kcompile.pdk.Pdk.mos`, ``vary``). Without
        it the text is the nominal one, unchanged.
    """
    return _render(cell, pdk, negative, scaling, signs, mismatch)[0]


@dataclass(frozen=True)
class Transistor:
    """One transistor a cell template emitted: instance name (no prefix), flavour, drawn µm."""

    name: str
    kind: str
    w: float
    l: float


class _VaryingPdk:
    """Stands in for a :class:`Pdk` in a template: every ``mos`` is varied and recorded."""

    def __init__(self, pdk: Pdk):
        self._pdk, self.transistors = pdk, []

    def __getattr__(self, attr):
        return getattr(self._pdk, attr)

    def mos(self, name, d, g, s, b, kind, w, l):
        self.transistors.append(Transistor(name, kind, float(w), float(max(l, self._pdk.lmin))))
        return self._pdk.mos(name, d, g, s, b, kind, w, l, vary=name)


def _render(cell: Cell, pdk: Pdk, negative: bool, scaling: Scaling | None, signs: str | None,
            mismatch: bool) -> tuple[str, tuple[Transistor, ...]]:
    scaling = scaling or default_scaling(pdk)
    r = nominal_r(1.0, scaling)
    signs = signs or ("n" if negative else "p") * (2 if len(cell.variants) == 4 else 1)
    negative = signs[0] == "n"
    target = _VaryingPdk(pdk) if mismatch else pdk
    name = subckt_name(cell, negative, signs if cell.options else None)
    text = _environment().get_template(cell.template).render(
        name=name, negative=negative, signs=signs, pdk=target,
        sz=dict(cell.sizes), opt=dict(cell.options),
        r=f"{r:.6g}", ib=f"{tail_current(r, scaling):.6g}", iref=f"{scaling.i0:.6g}")
    if not mismatch:
        return text, ()
    devices = tuple(target.transistors)
    return _add_subckt_params(text, name, " ".join(f"vt_{t.name}=0 bt_{t.name}=0" for t in devices)), devices


def _add_subckt_params(text: str, name: str, params: str) -> str:
    """Append ``params`` as a continuation line of the ``.subckt name`` statement."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(f".subckt {name.lower()} "))
    end = start + 1
    while end < len(lines) and lines[end].startswith("+"):
        end += 1
    return "\n".join(lines[:end] + [f"+ {params}"] + lines[end:])


@functools.lru_cache(maxsize=None)
def cell_transistors(cell: Cell, pdk: Pdk, negative: bool = False, signs: str | None = None) -> tuple[Transistor, ...]:
    """The transistors one variant of ``cell`` has on ``pdk``, in template order."""
    return _render(cell, pdk, negative, None, signs, True)[1]


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


@dataclass(frozen=True)
class CellParams:
    """Instance parameters of one signed-cell instance.

    ``swap`` means the instance's ``s`` port goes to the device's ``d`` node and
    vice versa (the law's current then flows from d to s).
    """

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

    def spice(self) -> str:
        """``name=value`` pairs for the instance line."""
        return f"r={self.r:.6g} ib={self.ib:.6g} ipos={self.ipos:.6g} ineg={self.ineg:.6g}"


@dataclass(frozen=True)
class GmParams:
    """Instance parameters of one :data:`SIGNED_GM` / :data:`AFFINE_RELU` instance (ohms, amperes).

    ``signs`` is the variant (one letter per input pair); pair B (``rb``, ``ibb``, ``iob``) exists
    only in the two-pair cell; ``swap`` as in :class:`CellParams`.
    """

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
    rl: float | None = None  # two-stage tanh cells only: z-to-vr resistor (ohm) ...
    ib2: float | None = None  # ... and the tanh pair's tail per side (A)
    iz: float = 0.0  # two-stage tanh cells only: offset current into z (A)

    @property
    def negative(self) -> bool:
        return self.signs[0] == "n"

    def spice(self) -> str:
        """``name=value`` pairs for the instance line."""
        keys = (("r", "ib", "io", "rb", "ibb", "iob", "ap", "sp", "an", "sn") if self.rl is None else
                ("r", "ib", "io", "rb", "ibb", "iob", "ap", "an", "iz", "rl", "ib2"))
        return " ".join(f"{k}={getattr(self, k):.6g}" for k in keys)


class _SlopeRange:
    """``theta0_range`` of a calibration whose ``theta0[v]`` holds variant ``v``'s measured slopes."""

    def theta0_range(self, negative: bool = False) -> tuple[float, float]:
        """Smallest and largest achievable ``|θ0|`` of one variant."""
        a = np.abs(self.theta0[int(negative)])
        return float(a.min()), float(a.max())


@dataclass(frozen=True, eq=False)
class Calibration(_SlopeRange):
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


@dataclass(frozen=True, eq=False)
class ParamArrays:
    """Instance parameters of many signed-cell instances (arrays of one length; see :class:`CellParams`)."""

    negative: np.ndarray
    r: np.ndarray
    ib: np.ndarray
    ipos: np.ndarray
    ineg: np.ndarray
    swap: np.ndarray

    def __getitem__(self, i: int) -> CellParams:
        return CellParams(bool(self.negative[i]), float(self.r[i]), float(self.ib[i]), float(self.ipos[i]),
                          float(self.ineg[i]), bool(self.swap[i]))


def tail_currents(r: np.ndarray, scaling: Scaling) -> np.ndarray:
    """:func:`tail_current` of every element of ``r``."""
    return np.maximum(VLIN / np.asarray(r, dtype=float), IB_MIN * scaling.i0 / 0.5e-6)


def _signed_clip(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``|x|`` clipped into ``[lo, hi]``, the sign of ``x`` kept (``+`` for zero)."""
    return np.copysign(np.clip(np.abs(x), lo, hi), np.where(x != 0, x, 1.0))


def slope_ranges(cal: _SlopeRange, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element, the calibrated ``|θ0|`` range of its variant."""
    (lp, hp), (ln, hn) = cal.theta0_range(False), cal.theta0_range(True)
    return np.where(negative, ln, lp), np.where(negative, hn, hp)


def _interp_rows(x: np.ndarray, negative: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp(x, xp, fp[row])`` with the row chosen per element by ``negative``."""
    out = np.empty_like(x, dtype=float)
    for row in (0, 1):
        sel = negative == bool(row)
        out[sel] = np.interp(x[sel], xp[row] if xp.ndim == 2 else xp, fp[row])
    return out


def _log_r(magnitude: np.ndarray, negative: np.ndarray, table: np.ndarray, r: np.ndarray) -> np.ndarray:
    """log r at which each element's variant row of a ``(2, K)`` slope ``table`` (measured at resistors ``r``)
    reaches ``magnitude`` (> 0, inside the row's range): log–log interpolation."""
    mag = np.abs(table)
    order = np.argsort(mag, axis=1)
    return _interp_rows(np.log(magnitude), negative, np.log(np.take_along_axis(mag, order, axis=1)),
                        np.log(r)[order])


def _coef(log_r: np.ndarray, negative: np.ndarray, table: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The signed slope a ``(2, K)`` table measured at resistors ``r`` predicts at ``log r`` (the inverse of
    :func:`_log_r`; row 1, the negative variant, negated)."""
    return np.where(negative, -1.0, 1.0) * np.exp(_interp_rows(log_r, negative, np.log(r), np.log(np.abs(table))))


def relu_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: Calibration, clip: bool = False) -> ParamArrays:
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
        theta0 = _signed_clip(theta0, lo, hi)
    else:
        bad = (np.abs(theta0) < lo) | (np.abs(theta0) > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"|theta0| = {abs(theta0.flat[i]):g} is outside the calibrated range "
                             f"[{lo.flat[i]:.4g}, {hi.flat[i]:.4g}] of cell {cal.cell} on {cal.pdk}/{cal.corner}.")
    log_r = _log_r(np.abs(theta0), negative, cal.theta0, cal.r)
    own = _interp_rows(log_r, negative, np.log(cal.r), cal.theta1)
    r = np.exp(log_r)
    need = theta1 - own
    up = need >= 0
    current = np.where(up, need / cal.inj_gain[0], -need / cal.inj_gain[1]) * cal.scaling.i0
    return ParamArrays(negative, r, tail_currents(r, cal.scaling), np.where(up, current, 0.0),
                       np.where(up, 0.0, current), np.zeros(theta0.shape, dtype=bool))


def relu_achieved(p: ParamArrays, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """The relu-form (θ0, θ1) the calibration predicts for instances ``p`` (the inverse of :func:`relu_param_arrays`)."""
    log_r, lr = np.log(p.r), np.log(cal.r)
    theta0 = np.copysign(np.exp(_interp_rows(log_r, p.negative, lr, np.log(np.abs(cal.theta0)))),
                         np.where(p.negative, cal.theta0[1][0], cal.theta0[0][0]))
    own = _interp_rows(log_r, p.negative, lr, cal.theta1)
    return theta0, own + (p.ipos * cal.inj_gain[0] - p.ineg * cal.inj_gain[1]) / cal.scaling.i0


def shift_relu_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: Calibration,
                            clip: bool = False) -> ParamArrays:
    """:func:`shift_relu_params` of every element of ``theta0``, ``theta1``."""
    theta0, theta1 = np.asarray(theta0, dtype=float), np.asarray(theta1, dtype=float)
    if clip:  # clip the gain and keep the threshold θ0 (clipping the relu-form slope alone would move it)
        theta1 = _signed_clip(theta1, *slope_ranges(cal, theta1 < 0))
    swap = theta1 < 0
    p = relu_param_arrays(theta1, np.where(swap, theta1 * theta0, -theta1 * theta0), cal, clip)
    return ParamArrays(p.negative, p.r, p.ib, p.ipos, p.ineg, swap)


def relu_params(theta0: float, theta1: float, cal: Calibration, clip: bool = False) -> CellParams:
    """Instance parameters realising ``relu`` law ``max(θ0·Δ + θ1, 0)``.

    ``r`` is interpolated (log r against log |θ0|) in the calibration table of
    the variant of θ0's sign; the cell's own offset at that ``r`` is subtracted
    from θ1 and the rest injected through ``ipos`` or ``ineg``. One element of
    :func:`relu_param_arrays`.

    Parameters
    ----------
    theta0, theta1 : float
    cal : Calibration
    clip : bool
        Clip ``|θ0|`` into the calibrated range instead of raising (the law
        error is then at most ``|Δθ0|·|Δ|``).

    Raises
    ------
    ValueError
        ``|θ0|`` is outside the calibrated range and ``clip`` is false.
    """
    return relu_param_arrays(np.array([theta0]), np.array([theta1]), cal, clip)[0]


def shift_relu_params(theta0: float, theta1: float, cal: Calibration, clip: bool = False) -> CellParams:
    """Instance parameters realising ``shift_relu`` ``θ1·max(Δ − θ0, 0)``.

    For ``θ1 ≥ 0`` it is ``relu`` with slope ``θ1`` and intercept ``−θ1·θ0``.
    For ``θ1 < 0`` the current flows from d to s and equals
    ``max(θ1·Δ' + θ1·θ0, 0)`` with ``Δ' = vd − vs``: a ReLU instance with its
    ports swapped (``swap=True``).
    """
    return shift_relu_param_arrays(np.array([theta0]), np.array([theta1]), cal, clip)[0]


@dataclass(frozen=True, eq=False)
class GmCalibration(_SlopeRange):
    """Measured map from :data:`SIGNED_GM` instance parameters to achieved θ, per sign variant (row 0: θ0 > 0).

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
    ib2: float | None = None  # two-stage tanh cell (kc_tanh2): stage 2's tail per side (A) ...
    rl: float | None = None  # ... its z-to-vr resistor (ohm) ...
    iz_gain: float | None = None  # ... and θ1 per unit of iz/i0 (θ1 is made by iz, not by io)


@dataclass(frozen=True, eq=False)
class GmArrays:
    """Instance parameters of many :data:`SIGNED_GM` instances (arrays of one length)."""

    negative: np.ndarray
    r: np.ndarray
    ib: np.ndarray
    io: np.ndarray
    ap: np.ndarray  # = an (both cores get the same crossover fill)
    swap: np.ndarray

    rl: float | None = None  # kc_tanh2: the same for every instance
    ib2: float | None = None
    iz: np.ndarray | None = None  # kc_tanh2: offset current into z (A)

    def __getitem__(self, i: int) -> GmParams:
        return GmParams("n" if self.negative[i] else "p", float(self.r[i]), float(self.ib[i]), float(self.io[i]),
                        ap=float(self.ap[i]), an=float(self.ap[i]), swap=bool(self.swap[i]), rl=self.rl, ib2=self.ib2,
                        iz=0.0 if self.iz is None else float(self.iz[i]))


def gm_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: GmCalibration, clip: bool = True) -> GmArrays:
    """Instances realising ``linear`` ``θ0·Δ`` (``theta1`` = 0) or ``tanh`` ``tanh(θ0·Δ + θ1)`` (arrays).

    ``r`` from the variant's table (log r against log |θ0|), ``ib`` interpolated; ``θ1 − own θ1`` is made by
    ``io`` across ``r`` (an input shift ``(θ1 − own)/θ0``; kc_gm) or, for the two-stage tanh cell (a
    calibration with ``iz_gain``), by ``iz`` into the tanh stage's input; stage 1's (the cores') dead zone
    is filled with ``ap = an``. ``|θ0|`` is clipped into the calibrated range (sign kept), or out-of-range
    values raise when ``clip`` is false.
    """
    theta0, theta1 = np.asarray(theta0, dtype=float), np.asarray(theta1, dtype=float)
    negative = theta0 < 0
    lo, hi = slope_ranges(cal, negative)
    if clip:
        theta0 = _signed_clip(theta0, lo, hi)
    elif ((np.abs(theta0) < lo) | (np.abs(theta0) > hi)).any():
        raise ValueError(f"|theta0| outside the calibrated range of cell {cal.cell} ({cal.law}) on "
                         f"{cal.pdk}/{cal.corner}.")
    log_r = _log_r(np.abs(theta0), negative, cal.theta0, cal.r)
    lr = np.log(cal.r)
    own = _interp_rows(log_r, negative, lr, cal.theta1)
    eps = _interp_rows(log_r, negative, lr, cal.eps)
    # the slope the table predicts (= θ0 inside the range), by the log–log interpolation gm_achieved uses
    a0 = _coef(log_r, negative, cal.theta0, cal.r)
    r = np.exp(log_r)
    ib = np.exp(np.interp(log_r, lr, np.log(cal.ib)))
    fill = np.maximum(-eps, 0.0) * cal.scaling.i0
    swap = np.zeros(theta0.shape, dtype=bool)
    if cal.iz_gain is not None:  # two-stage tanh: θ1 is a current into the tanh stage's input node z
        iz = (theta1 - own) / cal.iz_gain * cal.scaling.i0
        return GmArrays(negative, r, ib, np.zeros(theta0.shape), fill, swap, cal.rl, cal.ib2, iz)
    shift = (theta1 - own) / a0  # Δ units; the negative variant's pair sees −Δ, so io shifts it the other way
    io = np.where(negative, -1.0, 1.0) * shift * cal.scaling.v0 / (cal.shift_gain * r)
    return GmArrays(negative, r, ib, io, fill, swap)


def gm_achieved(p: GmArrays, cal: GmCalibration) -> tuple[np.ndarray, np.ndarray]:
    """The (θ0, θ1) the calibration predicts for instances ``p``."""
    lr = np.log(cal.r)
    log_r = np.log(p.r)
    sign = np.where(p.negative, -1.0, 1.0)
    a0 = _coef(log_r, p.negative, cal.theta0, cal.r)
    own = _interp_rows(log_r, p.negative, lr, cal.theta1)
    if cal.iz_gain is not None:
        return a0, own + cal.iz_gain * p.iz / cal.scaling.i0
    return a0, own + a0 * sign * cal.shift_gain * p.io * p.r / cal.scaling.v0


@dataclass(frozen=True, eq=False)
class AffineCalibration:
    """Measured map from :data:`AFFINE_RELU` instance parameters to achieved θ of ``max(θ0·vs + θ1·vd + θ2, 0)``.

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
    law: str = "relu_affine"
    eps: np.ndarray | None = None  # tanh_affine (kc_atanh): stage 1's crossover per row, filled by ap = an
    iz_gain: float = 1.0  # tanh_affine: θ2 per unit of iz/i0 (the offset current into the tanh stage's input)
    ib2: float | None = None  # tanh_affine: stage 2's tail per side (A) ...
    rl: float | None = None  # ... and its z-to-vr resistor (ohm)

    def theta0_range(self, negative: bool = False) -> tuple[float, float]:
        """Smallest and largest achievable coefficient magnitude (the tighter of the two pairs)."""
        row = int(negative)
        lo = max(np.abs(self.a[row]).min(), np.abs(self.b[row]).min())
        hi = min(np.abs(self.a[row]).max(), np.abs(self.b[row]).max())
        return float(lo), float(hi)


@dataclass(frozen=True, eq=False)
class AffineArrays:
    """Instance parameters of many :data:`AFFINE_RELU` instances (arrays of one length)."""

    signs: np.ndarray  # str: "pp", "pn", "np", "nn"
    r: np.ndarray
    ib: np.ndarray
    rb: np.ndarray
    ibb: np.ndarray
    ap: np.ndarray
    sp: np.ndarray
    iz: np.ndarray | None = None  # tanh_affine: θ2 as a current into the tanh stage's input node z (A)
    rl: float | None = None
    ib2: float | None = None

    def __getitem__(self, i: int) -> GmParams:
        if self.rl is None:
            return GmParams(str(self.signs[i]), float(self.r[i]), float(self.ib[i]), rb=float(self.rb[i]),
                            ibb=float(self.ibb[i]), ap=float(self.ap[i]), sp=float(self.sp[i]))
        return GmParams(str(self.signs[i]), float(self.r[i]), float(self.ib[i]), rb=float(self.rb[i]),
                        ibb=float(self.ibb[i]), ap=float(self.ap[i]), an=float(self.ap[i]), rl=self.rl, ib2=self.ib2,
                        iz=float(self.iz[i]))


def _log_r_for(coef: np.ndarray, table: np.ndarray, cal: AffineCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Sign row and log r realising ``|coef|`` from a ``(2, K)`` coefficient table (clipped into range)."""
    neg = coef < 0
    mag = np.abs(table)
    x = np.clip(np.abs(coef), np.where(neg, mag[1].min(), mag[0].min()), np.where(neg, mag[1].max(), mag[0].max()))
    return neg, _log_r(x, neg, table, cal.r)


def affine_param_arrays(theta: np.ndarray, cal: AffineCalibration) -> AffineArrays:
    """Instances realising ``max(θ0·vs + θ1·vd + θ2, 0)`` (kc_arelu) or ``tanh(θ0·vs + θ1·vd + θ2)`` (kc_atanh)
    for rows of ``theta`` ``[E, 3]`` (coefficients clipped into the calibrated range)."""
    theta = np.asarray(theta, dtype=float)
    lr = np.log(cal.r)
    neg_a, log_ra = _log_r_for(theta[:, 0], cal.a, cal)
    neg_b, log_rb = _log_r_for(theta[:, 1], cal.b, cal)
    own = 0.5 * (_interp_rows(log_ra, neg_a, lr, cal.own) + _interp_rows(log_rb, neg_b, lr, cal.own))
    need = theta[:, 2] - own
    i0 = cal.scaling.i0
    ra, rb = np.exp(log_ra), np.exp(log_rb)
    signs = np.char.add(np.where(neg_a, "n", "p"), np.where(neg_b, "n", "p"))
    if cal.law == "tanh_affine":  # θ2 as a current into the tanh stage's input node; stage 1's dead zone filled
        eps = 0.5 * (_interp_rows(log_ra, neg_a, lr, cal.eps) + _interp_rows(log_rb, neg_b, lr, cal.eps))
        return AffineArrays(signs, ra, tail_currents(ra, cal.scaling), rb, tail_currents(rb, cal.scaling),
                            np.maximum(-eps, 0.0) * i0, np.zeros(theta.shape[0]), need / cal.iz_gain * i0,
                            cal.rl, cal.ib2)
    return AffineArrays(signs, ra, tail_currents(ra, cal.scaling), rb, tail_currents(rb, cal.scaling),
                        np.where(need >= 0, need / cal.inj_gain[0], 0.0) * i0,
                        np.where(need < 0, -need / cal.inj_gain[1], 0.0) * i0)


def affine_achieved(p: AffineArrays, cal: AffineCalibration) -> np.ndarray:
    """The ``[E, 3]`` θ the calibration predicts for instances ``p``."""
    lr = np.log(cal.r)
    neg_a = np.array([s[0] == "n" for s in p.signs], dtype=bool)
    neg_b = np.array([s[1] == "n" for s in p.signs], dtype=bool)
    la, lb = np.log(p.r), np.log(p.rb)
    a, b = _coef(la, neg_a, cal.a, cal.r), _coef(lb, neg_b, cal.b, cal.r)
    own = 0.5 * (_interp_rows(la, neg_a, lr, cal.own) + _interp_rows(lb, neg_b, lr, cal.own))
    if cal.law == "tanh_affine":
        c = own + cal.iz_gain * p.iz / cal.scaling.i0
    else:
        c = own + (p.ap * cal.inj_gain[0] - p.sp * cal.inj_gain[1]) / cal.scaling.i0
    return np.stack([a, b, c], axis=1)
