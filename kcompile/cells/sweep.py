"""Shared characterisation machinery: DC benches from a Jinja template, ngspice runs, and the sweep cache.

One deck holds many instances of a cell (one per parameter point), each
between its own pair of 0 V ammeters on two shared swept terminals; one
nested ``.dc`` sweep measures them all. Two grids:

* the ``(vs, vd)`` plane (:func:`measure`, :class:`Sweep`): both terminals swept;
* the ``(Δ, m)`` grid (:func:`measure_diff`, :class:`DiffSweep`): the difference
  ``Δ = vs − vd`` finely and the common mode ``m`` coarsely, through two exact VCVSs.

Results are cached as ``.npz`` under ``<cache>/cells/<pdk>/<corner>/`` keyed by
:func:`deck_key` of the deck text and the cell's template hash, so the same deck
never runs twice. Every deck is rendered from ``templates/cells/bench_dc.cir.j2``
(DC) or ``bench_switching.cir.j2`` (transient); only generated names and
formatted numbers reach it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .. import ngspice, progress
from ..files import cache_dir, sha256
from ..pdk import Pdk
from ..scaling import Scaling
from .base import default_scaling, environment

if TYPE_CHECKING:
    from .base import Cell

DIFF_SPAN, DIFF_POINTS = 8.0, 129  # Δ in [-8, 8] units, 0.125 apart
MID_SPAN, MID_POINTS = 4.0, 9  # common mode in [-4, 4] units, 1 apart

_MODEL_FILE = re.compile(r'^(\s*\.(?:lib|include)\s+)"([^"]+)"', re.IGNORECASE | re.MULTILINE)


def deck_key(deck: str, pdk: Pdk, extra: str = "") -> str:
    """Cache key of a bench deck run on ``pdk``: its text with each model file's path replaced by the hash
    of the file's content, so that checkouts in other places (and other cache roots) share the measured
    tables, and the ngspice variables it runs with (:func:`run_ngspice`)."""
    def content(m: re.Match) -> str:
        path = Path(m.group(2))
        return f'{m.group(1)}"sha256:{sha256(path)}"' if path.is_file() else m.group(0)

    defines = " ".join(f"-D {d}" for d in pdk.ngspice_defines(bench=True))
    return hashlib.sha256((_MODEL_FILE.sub(content, deck) + extra + defines).encode()).hexdigest()[:16]


#: the wall-clock limit of a DC deck: this many seconds per instance and sweep point, at least
#: :data:`MIN_TIMEOUT`. A sky130 kc_relu deck of 24 instances x 1,161 points took just over 600 s of wall
#: time on 2 cores at load 16 (21 ms per instance and point; the two-stage tanh cells 20-50 ms of CPU):
#: a fixed 600 s limit stopped it at 99.7 % of its points (in ngspice's HSPICE mode, which the benches no longer
#: use: :meth:`kcompile.pdk.Pdk.ngspice_defines`; a 400-instance sky130 deck of 65 points now takes ~51 s)
SECONDS_PER_POINT = 0.1
MIN_TIMEOUT = 600.0


def sweep_timeout(instances: int, points: int) -> float:
    """ngspice's wall-clock limit (s) for a DC deck of ``instances`` cells swept over ``points`` points."""
    return max(MIN_TIMEOUT, SECONDS_PER_POINT * instances * points)


def run_ngspice(deck_text: str, pdk: Pdk, timeout: float = MIN_TIMEOUT) -> dict[str, np.ndarray]:
    """Run one deck on ``pdk``'s models in batch mode; every saved vector by its lower-case name.

    The sweep variable (or time) is under ``"sweep"``. Thin wrapper over
    :func:`kcompile.ngspice.run` (which raises ``SimulatorError`` on failure, or after ``timeout`` seconds).
    """
    raw = ngspice.run(deck_text, defines=pdk.ngspice_defines(bench=True), timeout=timeout)
    return {"sweep": raw.time, **{k.lower(): v for k, v in raw.vectors.items()}}


def store(path: Path, **arrays: np.ndarray) -> None:
    """Write a cache entry atomically (a per-process temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def cached(path: Path, cache: bool, keys: tuple[str, ...], run) -> dict[str, np.ndarray]:
    """The arrays ``keys`` stored at ``path``, or ``run()``'s (stored there when ``cache``); either way one deck of
    the open progress step (:func:`kcompile.progress.deck`)."""
    if cache and path.is_file():
        with np.load(path) as z:
            arrays = {k: z[k] for k in keys}
        progress.deck(cached=True)
        return arrays
    arrays = run()
    if cache:
        store(path, **arrays)
    progress.deck(cached=False)
    return arrays


@dataclass(frozen=True)
class BenchInstance:
    """One instance of a DC bench: its number, port nets in the cell's port order, subcircuit, parameters,
    and the voltage of its own gate source ``vg<k>`` (a cell with a ``vg`` port), else ``None``."""

    k: int
    ports: str
    subckt: str
    params: str
    gate: str | None = None


def bench_ports(cell: Cell, k: int, swap: bool = False) -> str:
    """The nets of instance ``k``'s ports, in the cell's port order: ``s``/``d`` through its own ammeters
    (``vs<k>``, ``vd<k>``; exchanged when ``swap``), ``vss`` ground, ``vg`` its own gate source, any other
    port the bench net of its name (``en``, ``enb``, ``vdd``, ``vr``)."""
    a, b = (f"d{k}", f"s{k}") if swap else (f"s{k}", f"d{k}")
    nets = {"s": a, "d": b, "vss": "0", "vg": f"g{k}"}
    return " ".join(nets.get(port, port) for port in cell.ports)


def bench_instance(cell: Cell, k: int, p, gate: float | None = None) -> BenchInstance:
    """Instance ``k`` (parameters ``p``: ``signs``, ``swap`` and ``spice()``) between the swept terminals;
    a port-swapped instance is wired swapped, so its currents are in the device's own orientation."""
    return BenchInstance(k, bench_ports(cell, k, p.swap), cell.subckt(p.signs), p.spice(),
                         None if gate is None else f"{gate:g}")


def dc_bench(title: str, pdk: Pdk, corner: str, subckts: Sequence[str], instances: Sequence[BenchInstance],
             scaling: Scaling, sweeps: Sequence[tuple[str, float, float, float]], *, drive: str = "plane",
             enabled: bool | None = True, full: bool = False) -> str:
    """A DC bench deck (``templates/cells/bench_dc.cir.j2``).

    Parameters
    ----------
    title : str
        What the bench measures, for its first line.
    subckts : sequence of str
        The cell variants' ``.subckt`` texts.
    sweeps : sequence of (source, start, stop, step)
        The ``.dc`` sweep, outer source last (volts).
    drive : {"plane", "diff"}
        Terminals driven directly (``vs``, ``vd``) or through VCVSs from ``vdl`` and ``vcmn``.
    enabled : bool or None
        Drive ``en`` high or low (with ``enb`` its complement and the rail ``vr``); ``None``: the cell has none.
    """
    vdd = pdk.supply
    enable = None if enabled is None else {"en": f"{vdd if enabled else 0:g}", "enb": f"{0 if enabled else vdd:g}"}
    return environment().get_template("bench_dc.cir.j2").render(
        title=title, model_lines=pdk.model_lines(corner, full), subckts=subckts, vdd=f"{vdd:g}",
        enable=enable, vcm=f"{scaling.vcm:g}", drive=drive, instances=instances,
        sweeps=[(src, f"{lo:.6g}", f"{hi:.6g}", f"{step:.6g}") for src, lo, hi, step in sweeps])


def variants(cell: Cell, pdk: Pdk, scaling: Scaling, mismatch: bool = False) -> list[str]:
    """Every variant's ``.subckt`` of ``cell``."""
    return [cell.render(pdk, v, scaling, mismatch) for v in cell.variants]


def _path(cell: Cell, pdk: Pdk, corner: str, kind: str, deck: str) -> Path:
    key = deck_key(deck, pdk, cell.template_hash())
    return cache_dir() / "cells" / pdk.name / corner / f"{cell.name}{kind}-{key}.npz"


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


def plane_sweeps(scaling: Scaling, span: float, points: int, lo_v: float | None = None,
                 hi_v: float | None = None) -> list[tuple[str, float, float, float]]:
    """The nested ``vs``, ``vd`` sweep over ``vcm ± span`` units (or ``[lo_v, hi_v]`` volts), ``points`` each."""
    lo = scaling.vcm - span * scaling.v0 if lo_v is None else lo_v
    hi = scaling.vcm + span * scaling.v0 if hi_v is None else hi_v
    step = (hi - lo) / (points - 1)
    return [("vs", lo, hi, step), ("vd", lo, hi, step)]


def sweep_deck(cell: Cell, pdk: Pdk, corner: str, instances: list, scaling: Scaling, span: float = 4.0,
               points: int = 17, enabled: bool = True, full: bool = False) -> str:
    """Deck measuring ``instances`` on a ``points × points`` grid of ``vs, vd ∈ [−span, span]``.

    Parameters
    ----------
    cell : Cell
    pdk : Pdk
    corner : str
    instances : list
        The cell's instance parameters (``signs``, ``swap``, ``spice()``).
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
    return dc_bench(f"characterisation: {cell.name} on {pdk.name}/{corner}", pdk, corner,
                    variants(cell, pdk, scaling), [bench_instance(cell, k, p) for k, p in enumerate(instances)],
                    scaling, plane_sweeps(scaling, span, points), enabled=enabled, full=full)


def run_sweep(deck: str, pdk: Pdk, n: int, scaling: Scaling, points: int) -> Sweep:
    """Run a :func:`sweep_deck` deck on ``pdk``'s models for ``n`` instances and reshape its currents."""
    data = run_ngspice(deck, pdk, sweep_timeout(n, points * points))
    shape = (points, points)  # ngspice varies the first source fastest: [vd index, vs index]
    vs = data["sweep"].reshape(shape)[0]
    vd = data["v(d)"].reshape(shape)[:, 0]
    sink = np.stack([-data[f"i(vs{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
    source = np.stack([data[f"i(vd{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
    return Sweep((vs - scaling.vcm) / scaling.v0, (vd - scaling.vcm) / scaling.v0, sink, source)


def measure_deck(cell: Cell, pdk: Pdk, deck: str, corner: str, n: int, scaling: Scaling, points: int,
                 cache: bool = True) -> Sweep:
    """Run a ``(vs, vd)`` deck of ``n`` instances of ``cell``, from the cache when it holds this deck."""
    def run() -> dict[str, np.ndarray]:
        sweep = run_sweep(deck, pdk, n, scaling, points)
        return {"vs": sweep.vs, "vd": sweep.vd, "sink": sweep.sink, "source": sweep.source}

    z = cached(_path(cell, pdk, corner, "", deck), cache, ("vs", "vd", "sink", "source"), run)
    return Sweep(z["vs"], z["vd"], z["sink"], z["source"])


def measure(cell: Cell, pdk: Pdk, corner: str, instances: list, scaling: Scaling | None = None,
            span: float = 4.0, points: int = 17, enabled: bool = True, full: bool = False,
            cache: bool = True) -> Sweep:
    """Measure ``instances`` (see :func:`sweep_deck`), from the cache when it holds this deck."""
    scaling = scaling or default_scaling(pdk)
    deck = sweep_deck(cell, pdk, corner, instances, scaling, span, points, enabled, full)
    return measure_deck(cell, pdk, deck, corner, len(instances), scaling, points, cache)


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


def diff_sweeps(scaling: Scaling, dspan: float, dpoints: int, mspan: float | None = None,
                mpoints: int | None = None) -> list[tuple[str, float, float, float]]:
    """The ``vdl`` sweep (Δ over ``±dspan`` units, ``dpoints``), then ``vcmn`` (``vcm ± mspan``, ``mpoints``)
    if ``mspan`` is given."""
    sweeps = [("vdl", -dspan * scaling.v0, dspan * scaling.v0, 2 * dspan * scaling.v0 / (dpoints - 1))]
    if mspan is not None:
        lo, hi = scaling.vcm - mspan * scaling.v0, scaling.vcm + mspan * scaling.v0
        sweeps.append(("vcmn", lo, hi, (hi - lo) / (mpoints - 1)))
    return sweeps


def diff_sweep_deck(cell: Cell, pdk: Pdk, corner: str, instances: list, scaling: Scaling,
                    dspan: float = DIFF_SPAN, dpoints: int = DIFF_POINTS, mspan: float = MID_SPAN,
                    mpoints: int = MID_POINTS, enabled: bool = True) -> str:
    """Deck measuring ``instances`` on a ``(Δ, m)`` grid (see :class:`DiffSweep`).

    Two swept sources, ``vdl`` (Δ in volts) and ``vcmn`` (common mode), drive
    the terminals through exact linear VCVSs: ``s = cm + dl/2``, ``d = cm − dl/2``.
    """
    return dc_bench(f"differential characterisation: {cell.name} on {pdk.name}/{corner}", pdk, corner,
                    variants(cell, pdk, scaling), [bench_instance(cell, k, p) for k, p in enumerate(instances)],
                    scaling, diff_sweeps(scaling, dspan, dpoints, mspan, mpoints), drive="diff", enabled=enabled)


def measure_diff(cell: Cell, pdk: Pdk, corner: str, instances: list, scaling: Scaling | None = None,
                 dspan: float = DIFF_SPAN, dpoints: int = DIFF_POINTS, mspan: float = MID_SPAN,
                 mpoints: int = MID_POINTS, enabled: bool = True, cache: bool = True) -> DiffSweep:
    """Measure ``instances`` on a ``(Δ, m)`` grid (:func:`diff_sweep_deck`), cached like :func:`measure`."""
    scaling = scaling or default_scaling(pdk)
    deck = diff_sweep_deck(cell, pdk, corner, instances, scaling, dspan, dpoints, mspan, mpoints, enabled)

    def run() -> dict[str, np.ndarray]:
        data = run_ngspice(deck, pdk, sweep_timeout(len(instances), mpoints * dpoints))
        shape = (mpoints, dpoints)  # the first source (vdl) varies fastest: [mid index, delta index]
        delta = (data["sweep"].reshape(shape)[0]) / scaling.v0
        mid = (data["v(cm)"].reshape(shape)[:, 0] - scaling.vcm) / scaling.v0
        n = len(instances)
        sink = np.stack([-data[f"i(vs{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
        source = np.stack([data[f"i(vd{k})"].reshape(shape).T for k in range(n)]) / scaling.i0
        return {"delta": delta, "mid": mid, "sink": sink, "source": source}

    z = cached(_path(cell, pdk, corner, "-diff", deck), cache, ("delta", "mid", "sink", "source"), run)
    return DiffSweep(z["delta"], z["mid"], z["sink"], z["source"])
