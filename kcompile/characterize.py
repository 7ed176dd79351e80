"""Characterise transistor-level cells with ngspice DC sweeps and calibrate them.

One deck holds many instances of a cell (one per parameter point), each
between its own pair of 0 V ammeters on two shared swept terminals; one
nested ``.dc`` sweep over ``(vs, vd)`` measures them all. Results are cached
as ``.npz`` under ``<cache>/cells/<pdk>/<corner>/`` keyed by a hash of the
deck text (template, sizes, grid, scaling, and the model files by content: :func:`deck_key`).

Run ``python -m kcompile.characterize PDK [CORNER [LAW]]`` for the figures quoted
in ``docs/cells.md`` (LAW: linear, tanh, tanh1 (the one-stage tanh), relu_affine,
tanh_affine; default the signed ReLU cell).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.optimize import least_squares

from . import ngspice
from .cells import (AFFINE_RELU, AFFINE_TANH, POSTER_RELU, TANH2, SIGNED_GM, SIGNED_RELU, AffineCalibration, Calibration, Cell, CellParams,
                    GmCalibration, GmParams,
                    default_scaling, nominal_r, relu_params, render_cell, subckt_name, tail_current, tail_currents)
from .files import sha256
from .scaling import Scaling
from .files import cache_dir
from .pdk import Pdk, get_pdk


_MODEL_FILE = re.compile(r'^(\s*\.(?:lib|include)\s+)"([^"]+)"', re.IGNORECASE | re.MULTILINE)


def deck_key(deck: str, extra: str = "") -> str:
    """Cache key of a deck: its text with each model file's path replaced by the hash of the file's
    content, so that checkouts in other places (and other cache roots) share the measured tables."""
    def content(m: re.Match) -> str:
        path = Path(m.group(2))
        return f'{m.group(1)}"sha256:{sha256(path)}"' if path.is_file() else m.group(0)

    return hashlib.sha256((_MODEL_FILE.sub(content, deck) + extra).encode()).hexdigest()[:16]


def _run_ngspice(deck_text: str, pdk: Pdk) -> dict[str, np.ndarray]:
    """Run one deck on ``pdk``'s models in batch mode; every saved vector by its lower-case name.

    The sweep variable (or time) is under ``"sweep"``. Thin wrapper over
    :func:`kcompile.ngspice.run` (which raises ``SimulatorError`` on failure).
    """
    raw = ngspice.run(deck_text, defines=pdk.ngspice_defines())
    return {"sweep": raw.time, **{k.lower(): v for k, v in raw.vectors.items()}}


@dataclass(frozen=True, eq=False)
class Sweep:
    """Measured DC currents of several instances on a ``(vs, vd)`` grid (model units).

    ``sink[k, i, j]`` is the current instance ``k`` draws out of ``s`` and
    ``source[k, i, j]`` the current it pushes into ``d``, at ``vs[i]``, ``vd[j]``.
    """

    vs: np.ndarray
    vd: np.ndarray
    sink: np.ndarray
    source: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        """``vs − vd`` on the grid, shape ``(len(vs), len(vd))``."""
        return self.vs[:, None] - self.vd[None, :]


def _subckts(cell: Cell, pdk: Pdk, scaling: Scaling) -> list[str]:
    """Every variant's ``.subckt`` of ``cell``."""
    return [render_cell(cell, pdk, scaling=scaling, signs=v) for v in cell.variants]


def _instance(cell: Cell, k: int, p) -> list[str]:
    """Ammeters and instance line of instance ``k`` between the swept terminals ``s``/``d``."""
    a, b = (f"d{k}", f"s{k}") if p.swap else (f"s{k}", f"d{k}")
    name = subckt_name(cell, signs=p.signs)
    return [f"vs{k} s{k} s 0", f"vd{k} d{k} d 0", f"x{k} {a} {b} en enb vdd 0 vr {name} {p.spice()}"]


def sweep_deck(cell: Cell, pdk: Pdk, corner: str, instances: list[CellParams], scaling: Scaling,
               span: float = 4.0, points: int = 17, enabled: bool = True, full: bool = False) -> str:
    """Deck measuring ``instances`` on a ``points × points`` grid of ``vs, vd ∈ [−span, span]``.

    Parameters
    ----------
    cell : Cell
    pdk : Pdk
    corner : str
    instances : list of CellParams
    scaling : Scaling
        Maps model units to volts and amperes.
    span : float
        Half-width of the terminal voltage range in model units.
    points : int
        Grid points per terminal.
    enabled : bool
        Drive ``en`` high (layer active) or low (layer off).
    full : bool
        Load the PDK's full library (sky130) instead of the trimmed one.
    """
    lo, hi = scaling.vcm - span * scaling.v0, scaling.vcm + span * scaling.v0
    step = (hi - lo) / (points - 1)
    vdd = pdk.supply
    lines = [f"* kcompile characterisation: {cell.name} on {pdk.name}/{corner}", *pdk.model_lines(corner, full),
             *_subckts(cell, pdk, scaling),
             f"vdd vdd 0 {vdd:g}", f"ven en 0 {vdd if enabled else 0:g}", f"venb enb 0 {0 if enabled else vdd:g}",
             f"vr vr 0 {scaling.vcm:g}", f"vs s 0 {scaling.vcm:g}", f"vd d 0 {scaling.vcm:g}"]
    for k, p in enumerate(instances):
        lines += _instance(cell, k, p)
    lines += [f".dc vs {lo:.6g} {hi:.6g} {step:.6g} vd {lo:.6g} {hi:.6g} {step:.6g}", ".end"]
    return "\n".join(lines) + "\n"


def run_sweep(deck: str, pdk: Pdk, n: int, scaling: Scaling, points: int) -> Sweep:
    """Run a :func:`sweep_deck` deck on ``pdk``'s models for ``n`` instances and reshape its currents."""
    data = _run_ngspice(deck, pdk)
    shape = (points, points)  # ngspice varies the first source fastest: [vd index, vs index]
    vs = data["sweep"].reshape(shape)[0]
    vd = data["v(d)"].reshape(shape)[:, 0]
    sink = np.stack([-data[f"i(vs{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
    source = np.stack([data[f"i(vd{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
    return Sweep((vs - scaling.vcm) / scaling.v0, (vd - scaling.vcm) / scaling.v0, sink, source)


def measure(cell: Cell, pdk: Pdk, corner: str, instances: list[CellParams], scaling: Scaling | None = None,
            span: float = 4.0, points: int = 17, enabled: bool = True, full: bool = False,
            cache: bool = True) -> Sweep:
    """Measure ``instances`` (see :func:`sweep_deck`), from the cache when it holds this deck."""
    scaling = scaling or default_scaling(pdk)
    deck = sweep_deck(cell, pdk, corner, instances, scaling, span, points, enabled, full)
    key = deck_key(deck, cell.template_hash())
    path = cache_dir() / "cells" / pdk.name / corner / f"{cell.name}-{key}.npz"
    if cache and path.is_file():
        with np.load(path) as z:
            return Sweep(z["vs"], z["vd"], z["sink"], z["source"])
    sweep = run_sweep(deck, pdk, len(instances), scaling, points)
    if cache:
        _store(path, vs=sweep.vs, vd=sweep.vd, sink=sweep.sink, source=sweep.source)
    return sweep


def _store(path, **arrays: np.ndarray) -> None:
    """Write a cache entry atomically (a per-process temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


@dataclass(frozen=True, eq=False)
class DiffSweep:
    """Measured DC currents on a ``(Δ, m)`` grid: ``Δ = vs − vd``, ``m = (vs + vd)/2`` (model units).

    ``sink[k, i, j]`` / ``source[k, i, j]`` at ``delta[i]``, ``mid[j]``. The signed
    cell's current is a function of Δ to first order (the common mode only
    enters through output conductance), so this grid resolves the ReLU kink
    finely in Δ while sampling the common mode coarsely; a square ``(vs, vd)``
    grid of the same size puts the kink diagonally across its cells, where
    bilinear interpolation errs by up to ``θ0·h/2``.
    """

    delta: np.ndarray
    mid: np.ndarray
    sink: np.ndarray
    source: np.ndarray


DIFF_SPAN, DIFF_POINTS = 8.0, 129  # Δ in [-8, 8] units, 0.125 apart
MID_SPAN, MID_POINTS = 4.0, 9  # common mode in [-4, 4] units, 1 apart


def diff_sweep_deck(cell: Cell, pdk: Pdk, corner: str, instances: list[CellParams], scaling: Scaling,
                    dspan: float = DIFF_SPAN, dpoints: int = DIFF_POINTS, mspan: float = MID_SPAN,
                    mpoints: int = MID_POINTS, enabled: bool = True) -> str:
    """Deck measuring ``instances`` on a ``(Δ, m)`` grid (see :class:`DiffSweep`).

    Two swept sources, ``vdl`` (Δ in volts) and ``vcmn`` (common mode), drive
    the terminals through exact linear VCVSs: ``s = cm + dl/2``, ``d = cm − dl/2``.
    """
    vdd = pdk.supply
    lines = [f"* kcompile differential characterisation: {cell.name} on {pdk.name}/{corner}",
             *pdk.model_lines(corner), *_subckts(cell, pdk, scaling),
             f"vdd vdd 0 {vdd:g}", f"ven en 0 {vdd if enabled else 0:g}", f"venb enb 0 {0 if enabled else vdd:g}",
             f"vr vr 0 {scaling.vcm:g}", f"vcmn cm 0 {scaling.vcm:g}", "vdl dl 0 0",
             "es s cm dl 0 0.5", "ed d cm dl 0 -0.5"]
    for k, p in enumerate(instances):
        lines += _instance(cell, k, p)
    dstep = 2 * dspan * scaling.v0 / (dpoints - 1)
    mlo, mhi = scaling.vcm - mspan * scaling.v0, scaling.vcm + mspan * scaling.v0
    mstep = (mhi - mlo) / (mpoints - 1)
    lines += [f".dc vdl {-dspan * scaling.v0:.6g} {dspan * scaling.v0:.6g} {dstep:.6g} "
              f"vcmn {mlo:.6g} {mhi:.6g} {mstep:.6g}", ".end"]
    return "\n".join(lines) + "\n"


def measure_diff(cell: Cell, pdk: Pdk, corner: str, instances: list[CellParams], scaling: Scaling | None = None,
                 dspan: float = DIFF_SPAN, dpoints: int = DIFF_POINTS, mspan: float = MID_SPAN,
                 mpoints: int = MID_POINTS, enabled: bool = True, cache: bool = True) -> DiffSweep:
    """Measure ``instances`` on a ``(Δ, m)`` grid (:func:`diff_sweep_deck`), cached like :func:`measure`."""
    scaling = scaling or default_scaling(pdk)
    deck = diff_sweep_deck(cell, pdk, corner, instances, scaling, dspan, dpoints, mspan, mpoints, enabled)
    key = deck_key(deck, cell.template_hash())
    path = cache_dir() / "cells" / pdk.name / corner / f"{cell.name}-diff-{key}.npz"
    if cache and path.is_file():
        with np.load(path) as z:
            return DiffSweep(z["delta"], z["mid"], z["sink"], z["source"])
    data = _run_ngspice(deck, pdk)
    shape = (mpoints, dpoints)  # the first source (vdl) varies fastest: [mid index, delta index]
    delta = (data["sweep"].reshape(shape)[0]) / scaling.v0
    mid = (data["v(cm)"].reshape(shape)[:, 0] - scaling.vcm) / scaling.v0
    n = len(instances)
    sink = np.stack([-data[f"i(vs{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
    source = np.stack([data[f"i(vd{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
    sweep = DiffSweep(delta, mid, sink, source)
    if cache:
        _store(path, delta=sweep.delta, mid=sweep.mid, sink=sweep.sink, source=sweep.source)
    return sweep


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


def relu_instances(r: np.ndarray, inj_k: int, inj_levels: np.ndarray, scaling: Scaling) -> list[CellParams]:
    """Instances of :class:`ReluTable`: both variants at each ``r``, then the injection points."""
    base = [CellParams(neg, float(x), tail_current(float(x), scaling)) for neg in (False, True) for x in r]
    rk = float(r[inj_k])
    ib = tail_current(rk, scaling)
    inj = [CellParams(False, rk, ib, ipos=lvl * scaling.i0) for lvl in inj_levels]
    inj += [CellParams(False, rk, ib, ineg=lvl * scaling.i0) for lvl in inj_levels]
    return base + inj


def characterize_relu(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                      theta0: np.ndarray = DEFAULT_THETA0, span: float = 4.0, points: int = 17,
                      full: bool = False, cache: bool = True) -> ReluTable:
    """DC-sweep the signed ReLU cell over a grid of degeneration resistors.

    Parameters
    ----------
    pdk_name, corner : str
    scaling : Scaling, optional
        :func:`kcompile.cells.default_scaling` if omitted.
    theta0 : ndarray
        Nominal ``|θ0|`` values; the resistors are :func:`kcompile.cells.nominal_r` of them.
    span, points, full, cache
        See :func:`measure`.
    """
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = np.sort(2.0 * scaling.v0 / (np.asarray(theta0, dtype=float) * scaling.i0))
    # injection measured where θ0 ~ 2, so that the kink of θ1 = -1, -3 lies inside the sweep
    inj_k, levels = int(np.argmin(np.abs(np.log(np.sort(theta0)[::-1] / 2.0)))), np.array([1.0, 3.0])
    sweep = measure(SIGNED_RELU, pdk, corner, relu_instances(r, inj_k, levels, scaling), scaling,
                    span, points, True, full, cache)
    return ReluTable(pdk_name, corner, scaling, r, inj_k, levels, sweep)


def calibrate(table: ReluTable) -> Calibration:
    """Fit the achieved ``(θ0, θ1)`` of every instance and build a :class:`Calibration`.

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
    return Calibration(table.pdk, table.corner, SIGNED_RELU.name, table.scaling, table.r, theta0, theta1,
                       np.array([gain_pos, gain_neg]))


def _dead_zone(x: np.ndarray, eps: float) -> np.ndarray:
    """The two current-mode cores' output ``relu(x + eps) − relu(eps − x)`` (``eps < 0``: a dead zone)."""
    return np.maximum(x + eps, 0.0) - np.maximum(eps - x, 0.0)


def _nearest(r: np.ndarray, theta0: float, scaling: Scaling) -> int:
    """Index of the table resistor nearest (in log) to the one that nominally makes slope ``theta0``."""
    return int(np.argmin(np.abs(np.log(r / nominal_r(theta0, scaling)))))


def _offset_after(core: np.ndarray, current: np.ndarray) -> float:
    """The offset ``d`` of ``tanh(core + d)`` fitted to ``current``: an injection into a two-stage cell's tanh
    stage, which enters after stage 1's cores (``core``)."""
    return float(least_squares(lambda q: np.tanh(core + q[0]) - current, [0.0], method="lm").x[0])


def gm_model(law: str, p: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The signed cell's model current: ``relu(P + eps) − relu(−P + eps)``, ``p = (θ0, θ1, eps[, amp])``."""
    arg = p[0] * delta + p[1]
    if law == "tanh2":  # two-stage cell: stage 1's cores (dead zone eps) feed the tanh pair
        return p[3] * np.tanh(_dead_zone(arg, p[2]))
    core = p[3] * np.tanh(arg) if law == "tanh" else arg
    return _dead_zone(core, p[2])


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


# Nominal |θ0| of the tables. linear: as the ReLU cell (tails VLIN/r); tanh: tails I0/2, r from 1 Ω
# (undegenerated: the pair's own slope, ~1.14 per unit at 0.1 V per unit) down to θ0 ≈ 0.002.
GM_THETA0 = {"linear": np.geomspace(0.002, 8.0, 13), "tanh": np.geomspace(0.002, 1.0, 10)}
GM_FIT_SPAN = {"linear": 4.0, "tanh": 8.0, "tanh2": 8.0}  # |Δ| window of the fits (linear: the compliance window)


@dataclass(frozen=True, eq=False)
class GmTable:
    """Characterisation of :data:`SIGNED_GM` for one law: both variants at each ``r``, then ``io`` points."""

    law: str
    pdk: str
    corner: str
    scaling: Scaling
    r: np.ndarray
    ib: np.ndarray
    io_k: int
    io_levels: np.ndarray  # Δ units of nominal shift (io = level·v0/r)
    sweep: DiffSweep


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
                    cache: bool = True) -> GmTable:
    """DC-sweep :data:`SIGNED_GM` over the law's table of resistors (Δ ∈ ±8, 129 points; m ∈ {−1, 0, 1}).

    tanh is measured twice: at ``ib = i0/2``, then at ``ib = i0/(2·amp)`` with the amplitude ``amp``
    the first pass fitted, so that the output saturates at ±1 unit.
    """
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = gm_table_r(law, scaling)
    io_k = _nearest(r, 0.5, scaling)
    levels = np.array([-1.0, 1.0])
    ib = tail_currents(r, scaling) if law == "linear" else np.full(r.size, scaling.i0 / 2)
    def run(ib: np.ndarray) -> DiffSweep:
        return measure_diff(SIGNED_GM, pdk, corner, gm_instances(r, ib, io_k, levels, scaling), scaling,
                            8.0, 129, 1.0, 3, cache=cache)
    sweep = run(ib)
    if law == "tanh":  # the amplitude, 2·ib times the output copies' gain, is seen saturated at r = 1 Ω
        amp = np.mean([fit_gm(law, sweep.delta, sweep.sink[k][:, 1])[3] for k in (0, r.size)])
        ib = ib / amp
        sweep = run(ib)
    return GmTable(law, pdk_name, corner, scaling, r, ib, io_k, levels, sweep)


# Two-stage tanh (kc_tanh2): stage 1 as the linear table, stage 2 undegenerated with rl = v0/(THETA_WI·i0), so
# that 1 unit of stage-1 current is 1 unit of tanh argument; THETA_WI is the undegenerated pair's slope per
# unit (measured 1.14 on generic180 tt, the kc_gm tanh table at r = 1 Ω).
THETA_WI = 1.14


def tanh2_rl(scaling: Scaling) -> float:
    """The two-stage tanh cell's z-to-vr resistor (ohm)."""
    return scaling.v0 / (THETA_WI * scaling.i0)


def characterize_tanh2(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                       cache: bool = True) -> GmTable:
    """DC-sweep :data:`TANH2` over the linear law's resistor table (stage 1), twice: the second pass sets the
    stage-2 tails to ``i0/(2·amp)`` with the amplitude ``amp`` fitted on the first."""
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = gm_table_r("linear", scaling)
    io_k = _nearest(r, 0.5, scaling)
    levels = np.array([-1.0, 1.0])
    ib = tail_currents(r, scaling)
    rl = tanh2_rl(scaling)

    def run(ib2: float) -> DiffSweep:  # the last two instances inject iz = ±1 unit instead of io
        inst = [dataclasses.replace(p, rl=rl, ib2=ib2) for p in gm_instances(r, ib, io_k, levels, scaling)]
        inst[-2:] = [dataclasses.replace(p, io=0.0, iz=lvl * scaling.i0) for p, lvl in zip(inst[-2:], levels)]
        return measure_diff(TANH2, pdk, corner, inst, scaling, 8.0, 129, 1.0, 3, cache=cache)

    sweep = run(scaling.i0 / 2)
    big = _nearest(r, 2.0, scaling)  # saturated within ±8
    amp = np.mean([fit_gm("tanh2", sweep.delta, sweep.sink[k][:, 1])[3] for k in (big, r.size + big)])
    ib2 = scaling.i0 / (2 * amp)
    return GmTable("tanh2", pdk_name, corner, scaling, r, np.r_[ib, ib2], io_k, levels, run(ib2))


def calibrate_gm(table: GmTable) -> GmCalibration:
    """Fit every instance (s-side current, common mode 0, ``|Δ| ≤`` :data:`GM_FIT_SPAN`) into a calibration.

    The shift gain is the slope of the fitted input shift ``θ1/θ0`` against ``io·r/v0``.
    """
    k = table.r.size
    sw = table.sweep
    win = np.abs(sw.delta) <= GM_FIT_SPAN[table.law]
    amp = None if table.law == "linear" else 1.0  # tanh: the amplitude was set to 1 by ib; fit the slope only
    fits = np.array([fit_gm(table.law, sw.delta[win], sw.sink[i][win, sw.mid.size // 2], amp)
                     for i in range(len(sw.sink))])
    rows = lambda j: fits[:2 * k, j].reshape(2, k)  # noqa: E731
    two = table.law == "tanh2"  # kc_tanh2: table.ib holds stage 1's tails, then stage 2's (one value)
    if two:  # θ1 per unit of iz: iz enters after stage 1's dead zone, so fit it as tanh(dz(θ0·Δ + θ1, eps) + d)
        base = fits[table.io_k]
        core = gm_model("linear", base[:3], sw.delta[win])  # fit tanh(dz(θ0·Δ + θ1, eps) + d)
        d = [_offset_after(core, sw.sink[i][win, sw.mid.size // 2]) for i in range(2 * k, len(fits))]
        gain = float(np.polyfit(table.io_levels, d, 1)[0])
        return GmCalibration(table.pdk, table.corner, TANH2.name, "tanh", table.scaling, table.r, table.ib[:k],
                             rows(0), rows(1), rows(2), rows(3), 1.0, float(table.ib[k]), tanh2_rl(table.scaling), gain)
    shifts = fits[2 * k:, 1] / fits[2 * k:, 0] - fits[table.io_k, 1] / fits[table.io_k, 0]
    gain = float(np.polyfit(table.io_levels, shifts, 1)[0])
    return GmCalibration(table.pdk, table.corner, SIGNED_GM.name, table.law, table.scaling, table.r, table.ib,
                         rows(0), rows(1), rows(2), rows(3), gain)


def verify_gm(cal: GmCalibration, thetas: list[tuple[float, float]], cache: bool = True) -> tuple[DiffSweep, list]:
    """Map each ``(θ0, θ1)`` through ``cal`` and measure the instances (Δ ∈ ±8, m ∈ {−1, 0, 1})."""
    from .cells import gm_param_arrays

    t = np.array(thetas, dtype=float)
    arrays = gm_param_arrays(t[:, 0], t[:, 1], cal, clip=False)
    params = [arrays[i] for i in range(len(t))]
    sweep = measure_diff(SIGNED_GM, get_pdk(cal.pdk), cal.corner, params, cal.scaling, 8.0, 129, 1.0, 3, cache=cache)
    return sweep, params


def fit_affine_relu(vs: np.ndarray, vd: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Least-squares ``(θ0, θ1, θ2)`` of ``max(θ0·vs + θ1·vd + θ2, 0)`` to a measured current (model units)."""
    x, y, z = np.ravel(vs), np.ravel(vd), np.ravel(current)
    on = z > 0.1 * z.max()
    start = np.linalg.lstsq(np.c_[x[on], y[on], np.ones(on.sum())], z[on], rcond=None)[0]
    return least_squares(lambda q: np.maximum(q[0] * x + q[1] * y + q[2], 0.0) - z, start, method="lm").x


@dataclass(frozen=True, eq=False)
class AffineTable:
    """Characterisation of :data:`AFFINE_RELU`: rows ``pp``/``nn`` at each ``r``, then injection points."""

    pdk: str
    corner: str
    scaling: Scaling
    r: np.ndarray
    inj_k: int
    inj_levels: np.ndarray
    sweep: DiffSweep


AFFINE_GRID = (8.0, 33, 4.0, 17)  # Δ ∈ ±8 (0.5 apart), common mode ∈ ±4 (0.5 apart): the (vs, vd) plane


def affine_instances(r: np.ndarray, inj_k: int, levels: np.ndarray, scaling: Scaling) -> list[GmParams]:
    """Table instances of :class:`AffineTable`."""
    ib = tail_currents(r, scaling)
    base = [GmParams(v, float(x), float(b), rb=float(x), ibb=float(b)) for v in ("pp", "nn") for x, b in zip(r, ib)]
    rk, bk = float(r[inj_k]), float(ib[inj_k])
    inj = [GmParams("pp", rk, bk, rb=rk, ibb=bk, ap=lvl * scaling.i0) for lvl in levels]
    inj += [GmParams("pp", rk, bk, rb=rk, ibb=bk, sp=lvl * scaling.i0) for lvl in levels]
    return base + inj


def characterize_affine_relu(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                             theta0: np.ndarray = DEFAULT_THETA0, cache: bool = True) -> AffineTable:
    """DC-sweep :data:`AFFINE_RELU` on the (vs, vd) plane over a table of resistors (both pairs equal)."""
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    r = np.sort(nominal_r(1.0, scaling) / np.asarray(theta0, dtype=float))
    inj_k = _nearest(r, 1.0, scaling)
    levels = np.array([1.0, 2.0])
    sweep = measure_diff(AFFINE_RELU, pdk, corner, affine_instances(r, inj_k, levels, scaling), scaling,
                         *AFFINE_GRID, cache=cache)
    return AffineTable(pdk_name, corner, scaling, r, inj_k, levels, sweep)


def _plane(sw: DiffSweep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """vs, vd of a (Δ, m) grid and the mask of points with both inside ±4 units."""
    vs = sw.mid[None, :] + sw.delta[:, None] / 2
    vd = sw.mid[None, :] - sw.delta[:, None] / 2
    return vs, vd, (np.abs(vs) <= 4.0 + 1e-9) & (np.abs(vd) <= 4.0 + 1e-9)


def _plane_fits(table: AffineTable, fit: Callable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                            Callable]:
    """Every instance's s-side current fitted by ``fit(vs, vd, current)`` on ``|vs|, |vd| ≤ 4``: the points'
    ``vs``, ``vd``, the currents there ``[n, P]``, the fits ``[n, J]``, and ``rows(j)``: fit column ``j`` of the
    ``pp``/``nn`` table rows as ``[2, len(table.r)]``."""
    vs, vd, ok = _plane(table.sweep)
    vs, vd, sink = vs[ok], vd[ok], table.sweep.sink[:, ok]
    fits = np.array([fit(vs, vd, current) for current in sink])
    k = table.r.size
    return vs, vd, sink, fits, lambda j: fits[:2 * k, j].reshape(2, k)


def calibrate_affine_relu(table: AffineTable) -> AffineCalibration:
    """Fit every instance (s-side current, ``|vs|, |vd| ≤ 4``) into an :class:`AffineCalibration`."""
    *_, fits, rows = _plane_fits(table, fit_affine_relu)
    k = table.r.size
    own = fits[table.inj_k, 2]
    n = table.inj_levels.size
    x = np.r_[0.0, table.inj_levels]
    gain_ap = np.polyfit(x, np.r_[own, fits[2 * k:2 * k + n, 2]], 1)[0]
    gain_sp = -np.polyfit(x, np.r_[own, fits[2 * k + n:, 2]], 1)[0]
    return AffineCalibration(table.pdk, table.corner, AFFINE_RELU.name, table.scaling, table.r, rows(0), rows(1),
                             rows(2), np.array([gain_ap, gain_sp]))


def fit_affine_tanh(vs: np.ndarray, vd: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Least-squares ``(θ0, θ1, θ2, eps)`` of ``tanh(dz(θ0·vs + θ1·vd + θ2, eps))`` (stage 1's cores: dead zone
    ``eps < 0``, as :func:`gm_model` ``tanh2``) to a measured current (model units)."""
    x, y, z = np.ravel(vs), np.ravel(vd), np.ravel(current)
    lin = np.abs(z) < 0.7
    start = np.linalg.lstsq(np.c_[x[lin], y[lin], np.ones(lin.sum())], np.arctanh(np.clip(z[lin], -0.99, 0.99)),
                            rcond=None)[0]

    def model(q):
        arg = q[0] * x + q[1] * y + q[2]
        return np.tanh(_dead_zone(arg, q[3]))

    return least_squares(lambda q: model(q) - z, np.r_[start, 0.0], method="lm").x


# kc_atanh's table: nominal coefficients 0.002 … 1. Above ~1 the (vs, vd) grid (0.5 units) cannot resolve the
# tanh's transition (the fits fell to 0.86 at nominal 1 and 1.0 at nominal 2); below ~0.005 the table
# instances' own stage-1 dead zone (no fill yet) hides the slope, which is extrapolated as 1/r there
# (:func:`_one_over_r`; kc_gm's linear table follows 1/r down to 0.0012).
AFFINE_TANH_THETA0 = np.geomspace(0.002, 1.0, 10)


def _one_over_r(coef: np.ndarray, r: np.ndarray, tol: float = 0.2) -> np.ndarray:
    """Coefficients of a table row (increasing ``r``) with the tail that falls below ``1/r`` scaling by more
    than ``tol`` replaced by the ``1/r`` extrapolation of the last entry that did not."""
    out = coef.copy()
    for k in range(1, coef.size):
        if abs(out[k]) * r[k] < (1 - tol) * abs(out[k - 1]) * r[k - 1]:
            out[k:] = out[k - 1] * r[k - 1] / r[k:]
            break
    return out


def characterize_affine_tanh(pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
                             theta0: np.ndarray = AFFINE_TANH_THETA0, cache: bool = True) -> AffineTable:
    """DC-sweep :data:`AFFINE_TANH` on the (vs, vd) plane: rows ``pp``/``nn`` with both pairs at each ``r``, then
    ``r[inj_k]`` with ``iz`` = ±1 unit. Stage 2 is :data:`TANH2`'s, with its tails."""
    pdk = get_pdk(pdk_name)
    scaling = scaling or default_scaling(pdk)
    ib2 = float(characterize_tanh2(pdk_name, corner, scaling, cache).ib[-1])
    rl = tanh2_rl(scaling)
    r = np.sort(nominal_r(1.0, scaling) / np.asarray(theta0, dtype=float))
    inj_k = _nearest(r, 0.5, scaling)
    levels = np.array([-1.0, 1.0])
    ib = tail_currents(r, scaling)
    inst = [GmParams(v, float(x), float(b), rb=float(x), ibb=float(b), rl=rl, ib2=ib2)
            for v in ("pp", "nn") for x, b in zip(r, ib)]
    rk, bk = float(r[inj_k]), float(ib[inj_k])
    inst += [GmParams("pp", rk, bk, rb=rk, ibb=bk, rl=rl, ib2=ib2, iz=lvl * scaling.i0) for lvl in levels]
    sweep = measure_diff(AFFINE_TANH, pdk, corner, inst, scaling, *AFFINE_GRID, cache=cache)
    return AffineTable(pdk_name, corner, scaling, r, inj_k, levels, sweep)


def calibrate_affine_tanh(table: AffineTable) -> AffineCalibration:
    """Fit every instance of :func:`characterize_affine_tanh` (``|vs|, |vd| ≤ 4``) into an :class:`AffineCalibration`."""
    vs, vd, sink, fits, rows = _plane_fits(table, fit_affine_tanh)
    coef = lambda j: np.array([_one_over_r(row, table.r) for row in rows(j)])  # noqa: E731
    # θ2 per unit iz: iz enters after stage 1's dead zone, so fit tanh(dz(θ0·vs + θ1·vd + θ2, eps) + d)
    a, b, c, e = fits[table.inj_k]
    core = _dead_zone(a * vs + b * vd + c, e)
    d = [_offset_after(core, current) for current in sink[2 * table.r.size:]]
    gain = float(np.polyfit(table.inj_levels, d, 1)[0])
    ib2 = float(characterize_tanh2(table.pdk, table.corner, table.scaling).ib[-1])
    return AffineCalibration(table.pdk, table.corner, AFFINE_TANH.name, table.scaling, table.r, coef(0), coef(1),
                             rows(2), np.ones(2), "tanh_affine", rows(3), gain, ib2, tanh2_rl(table.scaling))


def verify_affine(cal: AffineCalibration, thetas: list[tuple[float, float, float]],
                  cache: bool = True) -> tuple[DiffSweep, list[GmParams]]:
    """Map each ``(θ0, θ1, θ2)`` through ``cal`` and measure the instances on the (vs, vd) plane."""
    from .cells import affine_param_arrays

    arrays = affine_param_arrays(np.array(thetas, dtype=float), cal)
    params = [arrays[i] for i in range(len(thetas))]
    cell = AFFINE_TANH if cal.law == "tanh_affine" else AFFINE_RELU
    return measure_diff(cell, get_pdk(cal.pdk), cal.corner, params, cal.scaling, *AFFINE_GRID,
                        cache=cache), params


def gm_error(law: str, delta: np.ndarray, current: np.ndarray, theta0: float, theta1: float,
             span: float = 8.0) -> dict[str, float]:
    """Shape error of a measured I–V against the ideal law on ``|Δ| ≤ span``, in % of the ideal full scale."""
    win = np.abs(delta) <= span
    ideal = np.tanh(theta0 * delta + theta1) if law == "tanh" else theta0 * delta + theta1
    err = (current - ideal)[win]
    fs = float(np.abs(ideal[win]).max()) if law == "linear" else 1.0
    return {"max_err": 100 * float(np.abs(err).max()) / fs, "rms_err": 100 * float(np.sqrt((err ** 2).mean())) / fs,
            "full_scale": fs}


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


def verify_relu(cal: Calibration, thetas: list[tuple[float, float]], span: float = 4.0, points: int = 17,
                cache: bool = True) -> tuple[Sweep, list[CellParams]]:
    """Map each ``(θ0, θ1)`` through ``cal``, then measure the resulting instances."""
    pdk = get_pdk(cal.pdk)
    params = [relu_params(t0, t1, cal) for t0, t1 in thetas]
    return measure(SIGNED_RELU, pdk, cal.corner, params, cal.scaling, span, points, True, cache=cache), params


def measure_poster(pdk_name: str = "generic180", corner: str = "tt", vg: tuple[float, ...] = (0.9, 1.2, 1.8),
                   iref: tuple[float, ...] = (0.0, 1.0), span: float = 8.0, points: int = 33) -> dict:
    """DC-sweep the poster's baseline cell for each gate voltage ``vg`` (V) and ``iref`` (units of i0).

    Returns the :class:`Sweep` (instances ordered ``vg``-major) and, per instance,
    the fitted ``(θ0, θ1)``, the max deviation from that fit (% of its full
    scale) and ``turn_on_v``, the smallest ``vs − vd`` in volts, on the line of
    the lowest ``vd``, where the current exceeds 0.05 units.
    """
    pdk = get_pdk(pdk_name)
    sc = default_scaling(pdk)
    lo, hi = max(sc.vcm - span * sc.v0, 0.0), min(sc.vcm + span * sc.v0, pdk.supply)
    step = (hi - lo) / (points - 1)
    lines = [f"* kcompile baseline: poster cell on {pdk.name}/{corner}", *pdk.model_lines(corner),
             render_cell(POSTER_RELU, pdk, False, sc), f"vdd vdd 0 {pdk.supply:g}", f"vs s 0 {sc.vcm:g}", f"vd d 0 {sc.vcm:g}"]
    grid = [(g, i) for g in vg for i in iref]
    for k, (g, i) in enumerate(grid):
        lines += [f"vs{k} s{k} s 0", f"vd{k} d{k} d 0", f"vg{k} g{k} 0 {g:g}",
                  f"x{k} s{k} d{k} g{k} vdd 0 {subckt_name(POSTER_RELU)} iref={i * sc.i0:.6g}"]
    lines += [f".dc vs {lo:.6g} {hi:.6g} {step:.6g} vd {lo:.6g} {hi:.6g} {step:.6g}", ".end"]
    sweep = run_sweep("\n".join(lines) + "\n", pdk, len(grid), sc, points)
    rows = []
    for k, (g, i) in enumerate(grid):
        t0, t1 = fit_relu(sweep.delta, sweep.sink[k])
        fit = np.maximum(t0 * sweep.delta + t1, 0.0)
        on = (sweep.vs - sweep.vd[0])[sweep.sink[k][:, 0] > 0.05] * sc.v0
        rows.append({"vg": g, "iref": i, "theta0": t0, "theta1": t1,
                     "fit_err": 100 * float(np.abs(sweep.sink[k] - fit).max() / max(fit.max(), 1e-12)),
                     "turn_on_v": float(on.min()) if on.size else float("nan")})
    return {"sweep": sweep, "rows": rows}


def switching(cal: Calibration, theta: tuple[float, float] = (1.0, 0.5), delta: float = 2.0,
              step: float = 2.0, edge: float = 0.1e-9) -> dict[str, float]:
    """Transient figures of one calibrated instance with ideal terminal sources.

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
    vdd = pdk.supply
    v1, v2 = sc.vcm + delta * sc.v0, sc.vcm + (delta + step) * sc.v0
    lines = [f"* kcompile switching: {SIGNED_RELU.name} on {pdk.name}/{cal.corner}", *pdk.model_lines(cal.corner),
             render_cell(SIGNED_RELU, pdk, p.negative, sc), f"vdd vdd 0 {vdd:g}",
             f"ven en 0 pwl(0 0 20n 0 {20e-9 + edge:.6g} {vdd:g} 140n {vdd:g} {140e-9 + edge:.6g} 0)",
             f"venb enb 0 pwl(0 {vdd:g} 20n {vdd:g} {20e-9 + edge:.6g} 0 140n 0 {140e-9 + edge:.6g} {vdd:g})",
             f"vs s 0 pwl(0 {v1:.6g} 80n {v1:.6g} {80e-9 + edge:.6g} {v2:.6g})", f"vd d 0 {sc.vcm:g}",
             f"vr vr 0 {sc.vcm:g}", f"x0 s d en enb vdd 0 vr {subckt_name(SIGNED_RELU, p.negative)} {p.spice()}",
             ".options method=gear", f".tran 0.02n 200n 0 {edge / 2:.3g}", ".end"]
    data = _run_ngspice("\n".join(lines) + "\n", pdk)
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


# targets re-measured by ``python -m kcompile.characterize PDK CORNER LAW`` (docs/cells.md)
GM_TARGETS = {
    "linear": [(0.05, 0.0), (-0.05, 0.0), (0.3, 0.0), (-0.3, 0.0), (1.0, 0.0), (-1.0, 0.0), (3.0, 0.0)],
    "tanh": [(0.1, 0.0), (-0.1, 0.3), (0.3, -0.5), (-0.3, 0.2), (0.6, 0.5), (-0.6, -1.0), (1.0, 0.0), (0.02, 0.1),
             (2.0, 0.5)],
}
AFFINE_TARGETS = [(0.3, -0.2, 0.1), (-0.3, 0.25, 0.2), (0.5, 0.5, -0.3), (-0.2, -0.3, 0.5), (1.0, -1.0, 0.0),
                  (0.05, -0.1, 0.2), (0.25, 0.0, 0.3)]


def main_gm(law: str, pdk_name: str, corner: str) -> None:
    """Print a transconductance cell's calibration and its re-measured accuracy (``tanh1``: one-stage kc_gm)."""
    from .cells import gm_param_arrays

    np.set_printoptions(precision=4, suppress=True, linewidth=160)
    pdk = get_pdk(pdk_name)
    if law in ("relu_affine", "tanh_affine"):
        cal = (calibrate_affine_relu(characterize_affine_relu(pdk_name, corner)) if law == "relu_affine"
               else calibrate_affine_tanh(characterize_affine_tanh(pdk_name, corner)))
        print(f"{law} on {pdk_name}/{corner} ({cal.cell}): r {cal.r}\n  a {cal.a}\n  b {cal.b}\n  own {cal.own}")
        sweep, params = verify_affine(cal, AFFINE_TARGETS)
        vs, vd, ok = _plane(sweep)
        for k, t in enumerate(AFFINE_TARGETS):
            fit = (fit_affine_relu if law == "relu_affine" else fit_affine_tanh)(vs[ok], vd[ok], sweep.sink[k][ok])
            arg = t[0] * vs + t[1] * vd + t[2]
            ideal = np.maximum(arg, 0.0) if law == "relu_affine" else np.tanh(arg)
            fs = float(np.abs(ideal[ok]).max()) if law == "relu_affine" else 1.0
            err = np.abs(sweep.sink[k] - ideal)[ok]
            copy = np.abs(sweep.source[k] - sweep.sink[k])[ok].max()
            print(f"  target {t} [{params[k].signs}] -> fit {np.round(fit[:3], 4)}; max err {100 * err.max() / fs:.2f} % "
                  f"rms {100 * np.sqrt((err ** 2).mean()) / fs:.2f} % of fs {fs:.3g} (|vs|, |vd| <= 4); "
                  f"s/d copy {100 * copy / fs:.2f} %")
        return
    two = law == "tanh"
    fit_law = "tanh" if law == "tanh1" else law
    table = characterize_tanh2(pdk_name, corner) if two else characterize_gm(fit_law, pdk_name, corner)
    cal = calibrate_gm(table)
    print(f"{law} on {pdk_name}/{corner} ({cal.cell}): r {cal.r}\n  theta0 {cal.theta0}\n  own theta1 {cal.theta1}\n"
          f"  eps {cal.eps}")
    thetas = GM_TARGETS[fit_law]
    t = np.array(thetas)
    arrays = gm_param_arrays(t[:, 0], t[:, 1], cal, clip=True)
    params = [arrays[i] for i in range(len(t))]
    sweep = measure_diff(TANH2 if two else SIGNED_GM, pdk, corner, params, cal.scaling, 8.0, 129, 1.0, 3)
    for k, (t0, t1) in enumerate(thetas):
        cur = sweep.sink[k][:, 1]
        win = np.abs(sweep.delta) <= GM_FIT_SPAN[fit_law]
        fit = fit_gm(fit_law, sweep.delta[win], cur[win], None if fit_law == "linear" else 1.0)
        e8, e4 = (gm_error(fit_law, sweep.delta, cur, t0, t1, w) for w in (8.0, 4.0))
        copy = np.abs(sweep.source[k][:, 1] - cur)[np.abs(sweep.delta) <= 8].max() / e8["full_scale"]
        print(f"  target ({t0:+.3f}, {t1:+.3f}) -> fit ({fit[0]:+.4f}, {fit[1]:+.4f}); |Δ| <= 8: max {e8['max_err']:.2f} % "
              f"rms {e8['rms_err']:.2f} %; |Δ| <= 4: max {e4['max_err']:.2f} % rms {e4['rms_err']:.2f} % of fs "
              f"{e8['full_scale']:.3g}; s/d copy {100 * copy:.2f} %")


def main(argv: list[str]) -> None:
    """Print a cell's calibration and accuracy on one PDK corner: ``PDK [CORNER [LAW]]`` (default: the ReLU cell)."""
    pdk_name = argv[0] if argv else "generic180"
    corner = argv[1] if len(argv) > 1 else "tt"
    if len(argv) > 2 and argv[2] not in ("relu", "shift_relu"):
        return main_gm(argv[2], pdk_name, corner)
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
    pdk = get_pdk(pdk_name)
    off = measure(SIGNED_RELU, pdk, corner, params, cal.scaling, enabled=False)
    print(f"  disabled: max |I(s)| {np.abs(off.sink).max() * cal.scaling.i0:.3g} A, "
          f"max |I(d)| {np.abs(off.source).max() * cal.scaling.i0:.3g} A over the same grid")
    for theta in ((1.0, 0.5), (-0.25, 1.5)):
        sw = switching(cal, theta)
        print(f"  switching theta={theta}: " + ", ".join(f"{k} {v:.3g}" for k, v in sw.items()))
    for row in measure_poster(pdk_name, corner)["rows"]:
        print("  poster baseline: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
