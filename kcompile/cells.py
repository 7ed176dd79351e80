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


def render_cell(cell: Cell, pdk: Pdk, negative: bool = False, scaling: Scaling | None = None) -> str:
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
    """
    scaling = scaling or default_scaling(pdk)
    r = nominal_r(1.0, scaling)
    return _environment().get_template(cell.template).render(
        name=subckt_name(cell, negative), negative=negative, pdk=pdk, sz=dict(cell.sizes),
        r=f"{r:.6g}", ib=f"{tail_current(r, scaling):.6g}", iref=f"{scaling.i0:.6g}")


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


def _ranges(cal: Calibration, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element, the calibrated ``|θ0|`` range of its variant."""
    (lp, hp), (ln, hn) = cal.theta0_range(False), cal.theta0_range(True)
    return np.where(negative, ln, lp), np.where(negative, hn, hp)


def relu_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: Calibration, clip: bool = False) -> ParamArrays:
    """:func:`relu_params` of every element of ``theta0``, ``theta1`` (arrays of one shape).

    Raises
    ------
    ValueError
        Some ``|θ0|`` is outside the calibrated range and ``clip`` is false.
    """
    theta0, theta1 = np.asarray(theta0, dtype=float), np.asarray(theta1, dtype=float)
    negative = theta0 < 0
    lo, hi = _ranges(cal, negative)
    if clip:
        theta0 = _signed_clip(theta0, lo, hi)
    else:
        bad = (np.abs(theta0) < lo) | (np.abs(theta0) > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"|theta0| = {abs(theta0.flat[i]):g} is outside the calibrated range "
                             f"[{lo.flat[i]:.4g}, {hi.flat[i]:.4g}] of cell {cal.cell} on {cal.pdk}/{cal.corner}.")
    log_r, own = np.empty_like(theta0), np.empty_like(theta0)
    log_abs = np.log(np.abs(theta0))
    for row in (0, 1):
        sel = negative == bool(row)
        mag = np.abs(cal.theta0[row])
        order = np.argsort(mag)
        log_r[sel] = np.interp(log_abs[sel], np.log(mag[order]), np.log(cal.r[order]))
        own[sel] = np.interp(log_r[sel], np.log(cal.r), cal.theta1[row])
    r = np.exp(log_r)
    need = theta1 - own
    up = need >= 0
    current = np.where(up, need / cal.inj_gain[0], -need / cal.inj_gain[1]) * cal.scaling.i0
    return ParamArrays(negative, r, tail_currents(r, cal.scaling), np.where(up, current, 0.0),
                       np.where(up, 0.0, current), np.zeros(theta0.shape, dtype=bool))


def shift_relu_param_arrays(theta0: np.ndarray, theta1: np.ndarray, cal: Calibration,
                            clip: bool = False) -> ParamArrays:
    """:func:`shift_relu_params` of every element of ``theta0``, ``theta1``."""
    theta0, theta1 = np.asarray(theta0, dtype=float), np.asarray(theta1, dtype=float)
    if clip:  # clip the gain and keep the threshold θ0 (clipping the relu-form slope alone would move it)
        theta1 = _signed_clip(theta1, *_ranges(cal, theta1 < 0))
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
