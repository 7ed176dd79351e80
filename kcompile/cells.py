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

from .netlist import TEMPLATE_DIR, Scaling
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

    def template_text(self) -> str:
        """The template source (its hash keys the characterisation cache)."""
        return (CELL_TEMPLATE_DIR / self.template).read_text()

    def template_hash(self) -> str:
        """First 12 hex digits of the SHA-256 of the template and sizes."""
        return hashlib.sha256((self.template_text() + repr(self.sizes)).encode()).hexdigest()[:12]


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

CELLS: dict[str, Cell] = {c.name: c for c in (SIGNED_RELU, POSTER_RELU)}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(CELL_TEMPLATE_DIR),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def subckt_name(cell: Cell, negative: bool = False) -> str:
    """Subcircuit name of one variant: ``<cell>_p`` or ``<cell>_n`` (θ0 sign)."""
    return f"{cell.name}_{'n' if negative else 'p'}"


def render_cell(cell: Cell, pdk: Pdk, negative: bool = False, scaling: Scaling | None = None,
                mismatch: bool = False) -> str:
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
    mismatch : bool
        Give every transistor the template emits through ``pdk.mos`` a threshold shift
        ``vt_<name>`` and a relative current-factor change ``bt_<name>``, subcircuit
        parameters defaulting to 0 (:meth:`kcompile.pdk.Pdk.mos`, ``vary``). Without
        it the text is the nominal one, unchanged.
    """
    return _render(cell, pdk, negative, scaling, mismatch)[0]


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


def _render(cell: Cell, pdk: Pdk, negative: bool, scaling: Scaling | None,
            mismatch: bool) -> tuple[str, tuple[Transistor, ...]]:
    scaling = scaling or default_scaling(pdk)
    r = nominal_r(1.0, scaling)
    target = _VaryingPdk(pdk) if mismatch else pdk
    name = subckt_name(cell, negative)
    text = _environment().get_template(cell.template).render(
        name=name, negative=negative, pdk=target, sz=dict(cell.sizes),
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
def cell_transistors(cell: Cell, pdk: Pdk, negative: bool = False) -> tuple[Transistor, ...]:
    """The transistors one variant of ``cell`` has on ``pdk``, in template order."""
    return _render(cell, pdk, negative, None, True)[1]


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

    def spice(self) -> str:
        """``name=value`` pairs for the instance line."""
        return f"r={self.r:.6g} ib={self.ib:.6g} ipos={self.ipos:.6g} ineg={self.ineg:.6g}"


@dataclass(frozen=True, eq=False)
class Calibration:
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

    def theta0_range(self, negative: bool = False) -> tuple[float, float]:
        """Smallest and largest achievable ``|θ0|`` of one variant."""
        a = np.abs(self.theta0[int(negative)])
        return float(a.min()), float(a.max())


def relu_params(theta0: float, theta1: float, cal: Calibration, clip: bool = False) -> CellParams:
    """Instance parameters realising ``relu`` law ``max(θ0·Δ + θ1, 0)``.

    ``r`` is interpolated (log r against log |θ0|) in the calibration table of
    the variant of θ0's sign; the cell's own offset at that ``r`` is subtracted
    from θ1 and the rest injected through ``ipos`` or ``ineg``.

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
    negative = bool(theta0 < 0)
    row = int(negative)
    mag = np.abs(cal.theta0[row])
    lo, hi = float(mag.min()), float(mag.max())
    if clip:
        theta0 = float(np.copysign(np.clip(abs(theta0), lo, hi), theta0 if theta0 else 1.0))
    elif not lo <= abs(theta0) <= hi:
        raise ValueError(f"|theta0| = {abs(theta0):g} is outside the calibrated range [{lo:.4g}, {hi:.4g}] "
                         f"of cell {cal.cell} on {cal.pdk}/{cal.corner}.")
    order = np.argsort(mag)
    log_r = np.interp(np.log(abs(theta0)), np.log(mag[order]), np.log(cal.r[order]))
    r = float(np.exp(log_r))
    own = float(np.interp(log_r, np.log(cal.r), cal.theta1[row]))
    need = theta1 - own
    inj = need / cal.inj_gain[0] if need >= 0 else -need / cal.inj_gain[1]
    current = inj * cal.scaling.i0
    return CellParams(negative, r, tail_current(r, cal.scaling),
                      ipos=current if need >= 0 else 0.0, ineg=current if need < 0 else 0.0)


def shift_relu_params(theta0: float, theta1: float, cal: Calibration, clip: bool = False) -> CellParams:
    """Instance parameters realising ``shift_relu`` ``θ1·max(Δ − θ0, 0)``.

    For ``θ1 ≥ 0`` it is ``relu`` with slope ``θ1`` and intercept ``−θ1·θ0``.
    For ``θ1 < 0`` the current flows from d to s and equals
    ``max(θ1·Δ' + θ1·θ0, 0)`` with ``Δ' = vd − vs``: a ReLU instance with its
    ports swapped (``swap=True``).
    """
    if clip:  # clip the gain and keep the threshold θ0 (clipping the relu-form slope alone would move it)
        lo, hi = cal.theta0_range(theta1 < 0)
        theta1 = float(np.copysign(np.clip(abs(theta1), lo, hi), theta1 if theta1 else 1.0))
    if theta1 >= 0:
        return relu_params(theta1, -theta1 * theta0, cal, clip)
    p = relu_params(theta1, theta1 * theta0, cal, clip)
    return CellParams(p.negative, p.r, p.ib, p.ipos, p.ineg, swap=True)
