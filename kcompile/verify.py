"""Run a verification flow: every level on the same inputs, then the gates.

Level ``ideal`` is the NumPy reference (always run: it is what the others
are judged against); ``behavioural`` compiles the network to behavioural
sources and runs ngspice. Each level's gap to ``ideal`` is reported
separately so a compiler bug (behavioural) can be told from a device
non-ideality (transistor).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .build import build
from .errors import InputError
from .flow import Flow, Gate
from .inputs import load_inputs, random_inputs
from .knet import KNet
from .netlist import Scaling
from .reference import Trajectory, integrate
from .simulate import dask_executor, simulate

GRID_POINTS_PER_LAYER = 100


@dataclass(frozen=True, eq=False)
class LevelRun:
    """One level's results on the flow's inputs (model units)."""

    level: str
    corner: str
    outputs: np.ndarray  # [B, M]
    states: np.ndarray  # [B, L+1, N]
    seconds: float
    waveforms: list | None = None  # per sample: (t [T], v [T, N])
    metric: float | None = None


@dataclass(frozen=True, eq=False)
class GateResult:
    gate: Gate
    value: float | None
    passed: bool
    detail: str


@dataclass(frozen=True, eq=False)
class FlowResult:
    flow: Flow
    knet: KNet
    inputs: np.ndarray
    labels: np.ndarray | None
    inputs_source: str
    task: str | None  # "classification", "regression" or None
    ideal: Trajectory
    levels: list[LevelRun]
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def level(self, name: str) -> list[LevelRun]:
        return [run for run in self.levels if run.level == name]


def task_of(knet: KNet, labels: np.ndarray | None) -> str | None:
    """``classification`` for integer labels and several outputs, ``regression`` otherwise."""
    if labels is None:
        return None
    if labels.dtype.kind in "iu" and knet.output_nodes.size > 1:
        return "classification"
    return "regression"


def task_metric(task: str | None, outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Accuracy in percent, or mean squared error (first output against the labels)."""
    if task == "classification":
        return float(100.0 * np.mean(np.argmax(outputs, axis=1) == labels))
    if task == "regression":
        return float(np.mean((outputs[:, 0] - labels.astype(float)) ** 2))
    return None


def _inputs(flow: Flow, build_inputs: np.ndarray | None, build_labels: np.ndarray | None, knet: KNet):
    if flow.inputs == "recorded":
        if build_inputs is None:
            raise InputError(f"{flow.path}: 'inputs' is 'recorded' but {flow.model} records no test_inputs; "
                             "give an .npy path or 'random'")
        n = min(flow.batch, len(build_inputs))
        labels = None if build_labels is None else build_labels[:n]
        return build_inputs[:n], labels, f"the first {n} test inputs recorded with the model"
    if flow.inputs == "random":
        return random_inputs(knet, flow.batch, flow.seed), None, f"random batch of {flow.batch} (seed {flow.seed})"
    return load_inputs(flow.inputs, knet), None, str(flow.inputs)


def _gate(gate: Gate, result_levels: dict[str, LevelRun], ideal_outputs: np.ndarray, ideal_metric, task) -> GateResult:
    run = result_levels.get(gate.level)
    if run is None:
        return GateResult(gate, None, False, f"level {gate.level} did not run")
    if gate.metric == "max_output_error":
        value = float(np.abs(run.outputs - ideal_outputs).max())
    elif gate.metric in ("accuracy_drop", "mse_ratio"):
        want = "classification" if gate.metric == "accuracy_drop" else "regression"
        if task != want:
            return GateResult(gate, None, False, f"needs a {want} model with labels; this flow has {task or 'no labels'}")
        value = ideal_metric - run.metric if want == "classification" else run.metric / max(ideal_metric, 1e-300)
    else:
        return GateResult(gate, None, False, f"metric {gate.metric} needs Monte Carlo runs, which this flow has not")
    ok = gate.holds(value)
    rel = ">=" if gate.is_floor else "<="
    return GateResult(gate, value, ok, f"{gate.name} = {value:.4g} {'' if ok else 'not '}{rel} {gate.limit:g}")


def run_flow(flow: Flow, *, progress: Callable[[str, int, int], None] | None = None,
             work_dir: Path | None = None) -> FlowResult:
    """Run every level of ``flow`` and evaluate its gates.

    ``progress(label, done, total)`` is called as samples finish.
    """
    with tempfile.TemporaryDirectory(prefix="kcompile-flow-") as tmp:
        work = Path(work_dir or tmp)
        scaling = Scaling()  # behavioural level runs in model units
        b = build(flow.model, work / "behavioural", scaling)
        knet = b.knet
        x, labels, source = _inputs(flow, b.recorded("inputs"), b.recorded("labels"), knet)
        task = task_of(knet, labels)
        grid = np.linspace(0.0, knet.t_bounds[-1], GRID_POINTS_PER_LAYER * knet.num_layers + 1)
        t0 = time.perf_counter()
        ideal = integrate(knet, x, grid=grid)
        ideal_run = LevelRun("ideal", "-", ideal.outputs, ideal.states, time.perf_counter() - t0,
                             metric=task_metric(task, ideal.outputs, labels))
        runs = [ideal_run]
        if "behavioural" in flow.levels:
            done = [0]

            def tick(n):
                done[0] += n
                if progress:
                    progress("behavioural", done[0], len(x))

            t0 = time.perf_counter()
            executor = dask_executor(flow.scheduler) if flow.scheduler else None
            spice = simulate(knet, b.circuit, x, b.tran, scaling=scaling, jobs=flow.jobs, executor=executor,
                             waveforms=True, cache_dir=flow.cache, progress=tick)
            runs.append(LevelRun("behavioural", "-", spice.outputs, spice.states, time.perf_counter() - t0,
                                 spice.waveforms, task_metric(task, spice.outputs, labels)))
        for level in flow.levels:
            if level in ("characterised", "transistor"):
                raise InputError(f"{flow.path}: level '{level}' needs transistor-level cells, "
                                 "which this version of kcompile does not build yet")
        by_level = {run.level: run for run in runs}
        gates = [_gate(g, by_level, ideal.outputs, ideal_run.metric, task) for g in flow.gates]
    return FlowResult(flow, knet, x, labels, source, task, ideal, runs, gates)
