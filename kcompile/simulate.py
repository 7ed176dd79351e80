"""Run a built circuit in a simulator, one deck per input row, and read the states back.

The simulator is a back end (:mod:`kcompile.backends`, ngspice by default):
it renders each deck, runs it and names the saved vectors; nothing here
depends on its syntax. Every run is checked for what a simulator may do silently: the voltages at
t = 0 must equal the intended inputs (``.ic`` needs ``uic``), and the run
must reach ``tstop``. Node voltages at the layer boundaries are read by
linear interpolation of the saved waveform (a boundary sits mid-way through
a clock crossover, so it is not itself a time point).

A segmented circuit (large networks, :func:`kcompile.netlist.default_tran`)
runs as one transient per layer, each starting from the previous layer's
final voltages read from its raw file; every segment is checked the same way.

Samples are independent runs: they go to local processes by default, or to
any ``concurrent.futures.Executor`` (e.g. a Dask cluster's, see
:func:`dask_executor`). With a cache directory, each finished run is stored
under the hash of its circuit and deck, so a re-run only redoes what is
missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import os
import re
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .backends import DEFAULT, get_simulator
from .errors import InputError, SimulatorError
from .files import atomic_write, sha256
from .knet import KNet
from .netlist import Tran, circuit_form, is_large
from .pool import local_pool
from .scaling import Scaling

IC_TOLERANCE = 1e-6  # model units, relative to max(1, |input|)
#: the most samples one batched deck runs (:func:`batch_size`), and the most devices over its samples
MAX_BATCH = 50
MAX_BATCH_DEVICES = 60_000


@dataclass(frozen=True, eq=False)
class SpiceResult:
    """``states[b, k, n-1]``: node ``n`` at ``t_bounds[k]`` (model units); ``outputs [B, M]``."""

    states: np.ndarray
    outputs: np.ndarray
    waveforms: list | None = None  # per sample (time [T] model units, volts [T, N] model units)
    cached: int = 0  # samples read from the cache
    energy: np.ndarray | None = None  # [B] joules drawn from the supply per sample (transistor level)

    def __repr__(self) -> str:
        b, k, n = self.states.shape
        more = ([f"{self.cached} cached"] if self.cached else []) + [
            name for name in ("waveforms", "energy") if getattr(self, name) is not None]
        return (f"<SpiceResult: {b} samples, {k - 1} layers, {n} nodes, {self.outputs.shape[1]} outputs"
                + "".join(f"; {m}" for m in more) + ">")


@dataclass(frozen=True, eq=False)
class _Job:
    circuit: Path
    deck: str
    initial: np.ndarray
    t_bounds: np.ndarray
    tstop: float
    scaling: Scaling
    timeout: float
    run_dir: Path | None
    cache_file: Path | None
    supply: tuple[str, float] | None = None  # (source name, volts): integrate its power
    tran: Tran | None = None  # set for a segmented run: the decks after the first are rendered from its states
    defines: tuple[str, ...] = ()  # -D variables (a PDK's ngbehavior=hsa)
    simulator: str = DEFAULT  # back end, by name (jobs travel to worker processes)
    libraries: tuple[tuple[str, Path], ...] = ()  # (name in the run directory, file): compiled device models and
    #                                                  the model cards a portable circuit includes


def _checked_run(job: _Job, deck: str, initial: np.ndarray, tstop: float, run_dir: Path | None):
    """Run one deck; check ``tstop`` and the start voltages; return (raw, t, v, start) in model units."""
    sim = get_simulator(job.simulator)
    raw = sim.run(deck, files={sim.circuit_name: job.circuit, **dict(job.libraries)}, defines=job.defines,
                  timeout=job.timeout, run_dir=run_dir, keep=run_dir is not None)
    return (raw, *_checked(sim, raw, job.scaling, initial, tstop, run_dir, deck))


def _checked(sim, raw, scaling: Scaling, initial: np.ndarray, tstop: float, run_dir: Path | None, deck: str,
             what: str = ""):
    """``(t, v, start)`` of one transient in model units, after checking that it reached ``tstop`` and started at
    ``initial``; ``what`` names the sample of a batched run in the error."""
    t = raw.time / scaling.tau
    v = (np.column_stack([raw[sim.node_vector(i)] for i in range(1, initial.size + 1)]) - scaling.vcm) / scaling.v0
    if t[-1] < tstop * (1 - 1e-9):
        raise SimulatorError(f"{sim.name} stopped at t = {t[-1]:g}, before tstop = {tstop:g}{what}", run_dir, deck)
    start = start_voltages(t, v)
    bad = np.flatnonzero(np.abs(start - initial) > IC_TOLERANCE * max(1.0, np.abs(initial).max()))
    if bad.size:
        raise SimulatorError(
            f"initial conditions not applied{what}: node {bad[0] + 1} starts at {start[bad[0]]:g}, expected "
            f"{initial[bad[0]]:g} (inputs {np.array2string(initial[:4], precision=4)}...; is 'uic' on the .tran line?)",
            run_dir, deck)
    return t, v, start


def _run_segments(job: _Job) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], float]:
    """One sample on a segmented circuit: one transient per layer, chained through the final voltages."""
    bounds = np.asarray(job.t_bounds, dtype=float)
    state, states, ts, vs = job.initial, [job.initial], [], []
    for k in range(bounds.size - 1):
        span = float(bounds[k + 1] - bounds[k])
        deck = job.deck if k == 0 else get_simulator(job.simulator).render_deck(
            state, dataclasses.replace(job.tran, tstop=span), job.scaling, None, k)
        run_dir = None if job.run_dir is None else job.run_dir / f"layer{k}"
        _, t, v, start = _checked_run(job, deck, state, span, run_dir)
        if t[0] > 0.0:
            t, v = np.r_[0.0, t], np.vstack([start, v])
        state = at_times(t, v, np.array([span]))[0]
        states.append(state)
        ts.append(t + bounds[k])
        vs.append(v)
    states = np.stack(states)
    t, v = np.concatenate(ts), np.vstack(vs)
    _store(job.cache_file, states, t, v, float("nan"))
    return states, (t, v), float("nan")


def _store(cache_file: Path | None, states, t, v, energy) -> None:
    if cache_file is not None:
        with atomic_write(cache_file, what="cached run") as f:
            np.savez(f, states=states, t=t, v=v, energy=energy)


def _run_one(job: _Job) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], float]:
    """One sample: run, check, and return (states at the boundaries, waveform, supply energy)."""
    if job.cache_file is not None and job.cache_file.is_file():
        with np.load(job.cache_file, allow_pickle=False) as z:
            return z["states"], (z["t"], z["v"]), float(z["energy"])
    if job.tran is not None:
        return _run_segments(job)
    raw, t, v, start = _checked_run(job, job.deck, job.initial, job.tstop, job.run_dir)
    energy = float("nan")
    if job.supply is not None:  # a source delivering power carries negative current in SPICE
        name, volts = job.supply
        energy = float(np.trapezoid(-raw[get_simulator(job.simulator).current_vector(name)] * volts, raw.time))
    if t[0] > 0.0:
        t, v = np.r_[0.0, t], np.vstack([start, v])
    states = at_times(t, v, job.t_bounds)
    _store(job.cache_file, states, t, v, energy)
    return states, (t, v), energy


@dataclass(frozen=True, eq=False)
class _Batch:
    """Several samples of a behavioural circuit, each ngspice run (one per segment) covering all of them."""

    circuit: Path
    initial: np.ndarray  # [K, N]
    t_bounds: np.ndarray
    tran: Tran
    scaling: Scaling
    timeout: float  # per sample
    run_dir: Path | None
    cache_files: tuple[Path | None, ...]
    simulator: str = DEFAULT
    libraries: tuple[tuple[str, Path], ...] = ()  # as _Job's


def _run_batch(batch: _Batch) -> list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray], float]]:
    """Every sample of ``batch``: one batched deck per segment (one for a clocked circuit), each transient checked
    like a run of its own; the results of :func:`_run_one`, in order."""
    sim = get_simulator(batch.simulator)
    bounds, tran, k_samples = np.asarray(batch.t_bounds, dtype=float), batch.tran, len(batch.initial)
    spans = ([(k, dataclasses.replace(tran, tstop=float(bounds[k + 1] - bounds[k])), float(bounds[k]))
              for k in range(bounds.size - 1)] if tran.segmented else [(None, tran, 0.0)])
    state, states = batch.initial, [batch.initial]
    ts, vs = [[] for _ in range(k_samples)], [[] for _ in range(k_samples)]
    for layer, span, offset in spans:
        deck = sim.render_batch_deck(state, span, batch.scaling, layer)
        run_dir = None if batch.run_dir is None else batch.run_dir / ("run" if layer is None else f"layer{layer}")
        raws = sim.run(deck, files={sim.circuit_name: batch.circuit, **dict(batch.libraries)},
                       timeout=batch.timeout * k_samples, run_dir=run_dir, keep=run_dir is not None, batch=True)
        if len(raws) != k_samples:
            raise SimulatorError(f"{sim.name} wrote {len(raws)} of the batched deck's {k_samples} transients",
                                 run_dir, deck)
        ends = []
        for j, raw in enumerate(raws):
            t, v, start = _checked(sim, raw, batch.scaling, state[j], span.tstop, run_dir, deck,
                                   f" (sample {j} of this batched deck)")
            if t[0] > 0.0:
                t, v = np.r_[0.0, t], np.vstack([start, v])
            ends.append(at_times(t, v, np.array([span.tstop]))[0])
            ts[j].append(t + offset)
            vs[j].append(v)
        state = np.stack(ends)
        states.append(state)
    results = []
    for j in range(k_samples):
        t, v = np.concatenate(ts[j]), np.vstack(vs[j])
        sample_states = np.stack([s[j] for s in states]) if tran.segmented else at_times(t, v, bounds)
        _store(batch.cache_files[j], sample_states, t, v, float("nan"))
        results.append((sample_states, (t, v), float("nan")))
    return results


def _batches(work: list[_Job], size: int, run_root: Path | None, tran: Tran) -> list[tuple]:
    """``(function, argument, sample indices)``: cached samples one by one (read back), the others ``size`` per
    batched deck."""
    cached = [b for b, job in enumerate(work) if job.cache_file is not None and job.cache_file.is_file()]
    todo = [b for b in range(len(work)) if b not in set(cached)]
    tasks = [(_run_one, work[b], (b,)) for b in cached]
    for i in range(0, len(todo), size):
        idx = tuple(todo[i:i + size])
        first = work[idx[0]]
        tasks.append((_run_batch, _Batch(
            first.circuit, np.stack([work[b].initial for b in idx]), first.t_bounds, tran, first.scaling,
            first.timeout, None if run_root is None else Path(run_root) / f"batch_{i // size}",
            tuple(work[b].cache_file for b in idx), first.simulator, first.libraries), idx))
    return tasks


def batch_size(knet: KNet, samples: int, jobs: int | None = None) -> int:
    """Samples per batched deck for ``samples`` latent or input rows: enough batches to keep ``jobs`` processes
    busy (four each), at most :data:`MAX_BATCH` and :data:`MAX_BATCH_DEVICES` devices (ngspice keeps every sample's
    parsed circuit until the run ends: ~4 KB per device); 1 for a large network, whose transient outweighs any
    start-up."""
    if is_large(knet):
        return 1
    jobs = jobs or os.cpu_count() or 1
    return max(1, min(MAX_BATCH, MAX_BATCH_DEVICES // max(1, knet.num_devices), -(-samples // (4 * jobs))))


def _form(circuit: Path) -> tuple[bool, bool]:
    try:
        return circuit_form(circuit)
    except OSError as exc:
        raise InputError(f"{circuit}: cannot read the circuit ({exc})") from None


def device_libraries(knet: KNet, circuit: Path, simulator: str = DEFAULT) -> dict[str, Path]:
    """``{name in the run directory: compiled library}`` for a circuit of compiled devices (none for B-sources).

    The libraries are compiled from the ``.va`` beside ``circuit`` (:func:`kcompile.osdi.device_files`);
    a simulator that cannot load them is a :class:`SimulatorError` that says what to do instead.
    """
    segmented, osdi = _form(circuit)
    if not osdi:
        return {}
    sim = get_simulator(simulator)
    if not sim.has_osdi():
        raise SimulatorError(f"{sim.describe()} cannot load the compiled devices (OSDI) of {circuit}: rebuild "
                             f"with --devices bsource, or {sim.install_hint}")
    from .osdi import device_files

    return device_files(Path(circuit).parent, knet, segmented)


def _check_form(circuit: Path, tran: Tran, supply) -> None:
    """A segmented analysis needs a segmented circuit and vice versa (the first line says which)."""
    segmented, _ = _form(circuit)
    if segmented != tran.segmented:
        have, want = ("segmented", "clocked") if segmented else ("clocked", "segmented")
        raise InputError(f"{circuit}: a {have} circuit but a {want} analysis; write the circuit and the analysis "
                         f"with the same 'segmented' choice (write_circuit / default_tran)")
    if segmented and supply is not None:
        raise InputError(f"{circuit}: a segmented (behavioural) circuit has no supply to measure")


#: an include by a plain relative name (a portable build's ``models.spice``), in a circuit's first lines
_RELATIVE_INCLUDE = re.compile(r'^\.(?:include|lib)\s+"([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"', re.I | re.M)


def relative_includes(circuit: Path) -> dict[str, Path]:
    """``{name: file}`` the circuit includes by a plain relative name, beside it (a portable transistor build's
    model cards): each run directory links them next to the circuit, as ngspice resolves them there."""
    with open(circuit, errors="replace") as f:
        head = "".join(itertools.islice(f, 64))
    return {name: circuit.parent / name for name in _RELATIVE_INCLUDE.findall(head)}


def start_voltages(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Voltages at t = 0. ngspice 39 with ``uic`` writes no t = 0 point; its first
    steps are tiny, so a linear extrapolation from the first two is exact to O(t1·t2)."""
    if t[0] == 0.0 or t.size < 2:
        return v[0]
    return v[0] - t[0] * (v[1] - v[0]) / (t[1] - t[0])


def at_times(t: np.ndarray, v: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of all columns of ``v [T, N]`` at ``times``."""
    hi = np.clip(np.searchsorted(t, times), 1, t.size - 1)
    lo = hi - 1
    w = np.clip((times - t[lo]) / np.where(t[hi] > t[lo], t[hi] - t[lo], 1.0), 0.0, 1.0)
    return v[lo] * (1 - w)[:, None] + v[hi] * w[:, None]


def dask_executor(address: str) -> Executor:
    """A ``concurrent.futures`` executor on an existing Dask cluster (``tcp://HOST:PORT``).

    Workers must see the circuit file at the same path (shared file system).
    """
    try:
        from distributed import Client
    except ImportError:
        raise InputError("a Dask scheduler needs the 'distributed' package: pip install -e .[dask]") from None
    try:
        return Client(address, timeout=30).get_executor(pure=False)
    except (OSError, ValueError) as exc:  # ValueError: an address Dask cannot parse
        raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def simulate(knet: KNet, circuit: Path, inputs: np.ndarray, tran: Tran, *, scaling: Scaling = Scaling(),
             timeout: float = 600.0, jobs: int | None = None, executor: Executor | None = None,
             waveforms: bool = False, run_root: Path | None = None, cache_dir: Path | None = None,
             supply: tuple[str, float] | None = None, defines: tuple[str, ...] = (),
             progress: Callable[[int], None] | None = None, simulator: str = DEFAULT, batch: int = 1) -> SpiceResult:
    """Simulate every row of ``inputs`` through ``circuit`` in ``simulator`` (ngspice by default).

    Parameters
    ----------
    knet : KNet
        The network the circuit was built from (for node counts and windows).
    circuit : Path
        The ``circuit.cir`` written by :func:`kcompile.netlist.write_circuit`.
    inputs : array ``[B, F]``
    tran : Tran
        Analysis (model time units). ``tran.segmented`` must match the circuit
        (both come from the network's size by default; see
        :func:`kcompile.netlist.default_tran`).
    jobs : int, optional
        Local simulator processes (default: all cores, at most one per sample).
    executor : Executor, optional
        Run samples there instead (e.g. :func:`dask_executor`); ``jobs`` is then ignored.
    waveforms : bool
        Also return every sample's full waveform.
    run_root : Path, optional
        Keep each run's directory under ``run_root/sample_<b>`` (for inspection).
    cache_dir : Path, optional
        Store and reuse finished runs, keyed by the hash of circuit and deck.
    supply : (str, float), optional
        Voltage source name and volts: report the energy it delivers per sample.
    defines : tuple of str
        ngspice ``-D`` variables: a transistor circuit's ``Pdk.ngspice_defines()``.
    progress : callable, optional
        Called with 1 after each finished sample.
    simulator : str
        Name of the back end (:func:`kcompile.backends.get_simulator`) that wrote ``circuit`` and runs the decks.
    batch : int
        Samples per simulator run: above 1, a behavioural circuit runs in batched decks (the back end's
        :meth:`~kcompile.backends.Simulator.render_batch_deck`: the circuit read once, one transient per sample,
        each checked as above; ``timeout`` is then per sample). :func:`batch_size` suggests one.
    """
    sim = get_simulator(simulator)
    sim.require()
    circuit = Path(circuit).resolve()
    _check_form(circuit, tran, supply)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise InputError(f"The 'batch' parameter of simulate must be an integer of at least 1. Got {batch!r} instead.")
    if batch > 1 and (supply is not None or defines or not tran.uic or not sim.has_batch()):
        why = (f"the {sim.name} back end has no batched decks" if not sim.has_batch() else
               "a transistor-level circuit (supply, PDK defines or an operating point without 'uic') runs one "
               "sample per deck")
        raise InputError(f"{circuit}: batch={batch} asks for batched decks, but {why}; use batch=1")
    libraries = tuple({**relative_includes(circuit), **device_libraries(knet, circuit, sim.name)}.items())
    initial = knet.initial_state(inputs)
    circuit_hash = " ".join(sha256(f) for f in (circuit, *(p for _, p in libraries))) if cache_dir is not None else ""
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    work, defines = [], tuple(defines)
    first = dataclasses.replace(tran, tstop=float(knet.t_bounds[1] - knet.t_bounds[0])) if tran.segmented else tran
    for b, row in enumerate(initial):
        deck = sim.render_deck(row, first, scaling, supply[0] if supply else None, 0 if tran.segmented else None)
        segments = f"\nsegments {knet.t_bounds.tolist()}" if tran.segmented else ""  # later decks follow from these
        batched = "\nbatched" if batch > 1 else ""  # alterparam + reset: equal to 1e-13, not bit for bit
        key = hashlib.sha256(f"{circuit_hash}\n{sim.name} {sim.version()}\n{defines}\n{libraries}\n{deck}{segments}"
                             f"{batched}"
                             .encode())
        work.append(_Job(circuit, deck, row, knet.t_bounds, tran.tstop, scaling, timeout,
                         None if run_root is None else Path(run_root) / f"sample_{b}",
                         None if cache_dir is None else Path(cache_dir) / f"{key.hexdigest()}.npz", supply,
                         tran if tran.segmented else None, defines, sim.name, libraries))
    cached = sum(job.cache_file is not None and job.cache_file.is_file() for job in work)
    results: list = [None] * len(work)
    tasks = [(_run_one, job, (b,)) for b, job in enumerate(work)] if batch == 1 else _batches(work, batch, run_root,
                                                                                             tran)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))

    def done(indices, result) -> None:
        for b, r in zip(indices, result if isinstance(result, list) else [result]):
            results[b] = r
        if progress:
            progress(len(indices))

    if executor is None and jobs == 1:
        for fn, arg, indices in tasks:
            done(indices, fn(arg))
    else:  # own processes are killed at the first failure (kcompile.pool), not waited for
        with local_pool(jobs) if executor is None else contextlib.nullcontext(executor) as pool:
            futures = {pool.submit(fn, arg): indices for fn, arg, indices in tasks}
            for future in as_completed(futures):
                done(futures[future], future.result())
    states = np.stack([r[0] for r in results])
    return SpiceResult(states, states[:, -1, knet.output_nodes - 1],
                       [r[1] for r in results] if waveforms else None, cached,
                       np.array([r[2] for r in results]) if supply else None)
