"""Run a built circuit in ngspice, one deck per input row, and read the states back.

Every run is checked for what ngspice may do silently: the voltages at
t = 0 must equal the intended inputs (``.ic`` needs ``uic``), and the run
must reach ``tstop``. Node voltages at the layer boundaries are read by
linear interpolation of the saved waveform (a boundary sits mid-way through
a clock crossover, so it is not itself a time point).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import ngspice
from .errors import SimulatorError
from .knet import KNet
from .netlist import Scaling, Tran, render_deck

IC_TOLERANCE = 1e-6  # model units, relative to max(1, |input|)


@dataclass(frozen=True, eq=False)
class SpiceResult:
    """``states[b, k, n-1]``: node ``n`` at ``t_bounds[k]`` (model units); ``outputs [B, M]``."""

    states: np.ndarray
    outputs: np.ndarray
    waveforms: list | None = None  # per sample (time [T] model units, volts [T, N] model units)


def _run_one(args) -> tuple[np.ndarray, tuple | None]:
    circuit, initial, t_bounds, tran, scaling, timeout, keep_waveform, run_dir = args
    deck = render_deck(initial, tran, scaling)
    raw = ngspice.run(deck, files={"circuit.cir": circuit}, timeout=timeout, run_dir=run_dir, keep=run_dir is not None)
    n = initial.size
    t = raw.time / scaling.tau
    volts = np.column_stack([raw[f"v(n{i})"] for i in range(1, n + 1)])
    v = (volts - scaling.vcm) / scaling.v0
    where = f"inputs {np.array2string(initial[:4], precision=4)}..."
    if t[-1] < tran.tstop * (1 - 1e-9):
        raise SimulatorError(f"ngspice stopped at t = {t[-1]:g}, before tstop = {tran.tstop:g}", run_dir, deck)
    start = start_voltages(t, v)
    bad = np.flatnonzero(np.abs(start - initial) > IC_TOLERANCE * max(1.0, np.abs(initial).max()))
    if bad.size:
        raise SimulatorError(
            f"initial conditions not applied: node {bad[0] + 1} starts at {start[bad[0]]:g}, "
            f"expected {initial[bad[0]]:g} ({where}; is 'uic' on the .tran line?)", run_dir, deck)
    if t[0] > 0.0:
        t, v = np.r_[0.0, t], np.vstack([start, v])
    return _at_times(t, v, t_bounds), ((t, v) if keep_waveform else None)


def start_voltages(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Voltages at t = 0. ngspice 39 with ``uic`` writes no t = 0 point; its first
    steps are tiny, so a linear extrapolation from the first two is exact to O(t1·t2)."""
    if t[0] == 0.0 or t.size < 2:
        return v[0]
    return v[0] - t[0] * (v[1] - v[0]) / (t[1] - t[0])


def _at_times(t: np.ndarray, v: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of all columns of ``v [T, N]`` at ``times``."""
    hi = np.clip(np.searchsorted(t, times), 1, t.size - 1)
    lo = hi - 1
    w = np.clip((times - t[lo]) / np.where(t[hi] > t[lo], t[hi] - t[lo], 1.0), 0.0, 1.0)
    return v[lo] * (1 - w)[:, None] + v[hi] * w[:, None]


def simulate(knet: KNet, circuit: Path, inputs: np.ndarray, tran: Tran, *, scaling: Scaling = Scaling(),
             timeout: float = 600.0, jobs: int | None = None, waveforms: bool = False,
             run_root: Path | None = None, progress: Callable[[int], None] | None = None) -> SpiceResult:
    """Simulate every row of ``inputs`` through ``circuit`` in ngspice.

    Parameters
    ----------
    knet : KNet
        The network the circuit was built from (for node counts and windows).
    circuit : Path
        The ``circuit.cir`` written by :func:`kcompile.netlist.write_circuit`.
    inputs : array ``[B, F]``
    tran : Tran
        Analysis (model time units).
    jobs : int, optional
        Parallel ngspice processes (default: all cores, at most one per sample).
    waveforms : bool
        Also return every sample's full waveform.
    run_root : Path, optional
        Keep each run's directory under ``run_root/sample_<b>`` (for inspection).
    progress : callable, optional
        Called with 1 after each finished sample.
    """
    ngspice.require()
    initial = knet.initial_state(inputs)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(initial)))
    work = [
        (Path(circuit), initial[b], knet.t_bounds, tran, scaling, timeout, waveforms,
         None if run_root is None else Path(run_root) / f"sample_{b}")
        for b in range(len(initial))
    ]
    results = []
    if jobs == 1:
        for item in work:
            results.append(_run_one(item))
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(jobs) as pool:
            for res in pool.map(_run_one, work):
                results.append(res)
                if progress:
                    progress(1)
    states = np.stack([r[0] for r in results])
    return SpiceResult(states, states[:, -1, knet.output_nodes - 1],
                       [r[1] for r in results] if waveforms else None)
