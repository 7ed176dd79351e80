"""Run a verification flow: every level on the same inputs, then the gates.

Level ``ideal`` is the NumPy reference (always run: it is what the others
are judged against); ``behavioural`` compiles the network to behavioural
sources and runs ngspice; ``characterised`` integrates the ODE with every
cell's measured DC I–V; ``transistor`` runs the calibrated transistor-level
cells in ngspice at every process corner and temperature of the flow
(calibrated at the first corner, so the others show the degradation). Each level's gap to ``ideal`` is reported
separately so a compiler bug (behavioural) can be told from a device
non-ideality (transistor).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .build import build
from .characterised import integrate_characterised, measure_devices
from .errors import InputError
from .flow import Flow, Gate
from .inputs import load_inputs, random_inputs
from .knet import KNet
from .mapping import map_knet, transistor_scaling
from .refine import refine, steps_for
from .netlist import Scaling, render_transistor_circuit, transistor_tran
from .pdk import get_pdk
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
    energy: np.ndarray | None = None  # [B] joules per inference (transistor level)
    latency: float | None = None  # seconds: t_L · tau


@dataclass(frozen=True, eq=False)
class GateResult:
    gate: Gate
    value: float | None
    passed: bool
    detail: str
    corner: str = "-"


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


def _gates(gate: Gate, runs: list[LevelRun], ideal_outputs: np.ndarray, ideal_metric, task) -> list[GateResult]:
    """One result per run of the gate's level (one per corner for the transistor level)."""
    mine = [run for run in runs if run.level == gate.level]
    if not mine:
        return [GateResult(gate, None, False, f"level {gate.level} did not run")]
    return [_gate(gate, run, ideal_outputs, ideal_metric, task) for run in mine]


def _gate(gate: Gate, run: LevelRun, ideal_outputs: np.ndarray, ideal_metric, task) -> GateResult:
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
    where = "" if run.corner == "-" else f" [{run.corner}]"
    return GateResult(gate, value, ok, f"{gate.name}{where} = {value:.4g} {'' if ok else 'not '}{rel} {gate.limit:g}",
                      run.corner)


def _ticker(progress, label: str, total: int):
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(label, done[0], total)

    return tick


def _transistor_runs(flow: Flow, knet: KNet, x: np.ndarray, labels, task, work: Path, executor, progress):
    """Characterised and transistor levels: calibrated at the nominal (first) corner, run at every corner."""
    pdk = get_pdk(flow.pdk or "generic180")
    scaling = dataclasses.replace(transistor_scaling(pdk), **flow.scaling)
    nominal = flow.corners[0]
    cellmap = map_knet(knet, pdk.name, nominal, scaling)
    if cellmap.clipped and not flow.allow_clipped:
        raise InputError(f"{flow.path}: {len(cellmap.clipped)} device(s) of {flow.model} need θ outside the cell's "
                         "calibrated range; set 'allow_clipped: true' in the flow to run them clipped")
    cellmap = refine(knet, cellmap, steps_for(knet, flow.refine_steps))
    runs = []
    if "characterised" in flow.levels:
        t0 = time.perf_counter()
        ch = integrate_characterised(knet, measure_devices(cellmap), x)
        runs.append(LevelRun("characterised", nominal, ch.outputs, ch.states, time.perf_counter() - t0,
                             metric=task_metric(task, ch.outputs, labels)))
    if "transistor" in flow.levels:
        tran = transistor_tran(knet)
        for corner in flow.corners:
            for temp in flow.temperature:
                label = f"{corner} {temp:g}C"
                circuit = work / f"transistor_{corner}_{temp:g}.cir"
                with open(circuit, "w") as f:
                    f.writelines(render_transistor_circuit(knet, dataclasses.replace(cellmap, corner=corner)))
                t0 = time.perf_counter()
                spice = simulate(knet, circuit, x, dataclasses.replace(tran, temp=temp), scaling=scaling, jobs=flow.jobs, executor=executor,
                                 waveforms=True, cache_dir=flow.cache, supply=("vdd", pdk.supply),
                                 progress=_ticker(progress, f"transistor {label}", len(x)))
                runs.append(LevelRun("transistor", label, spice.outputs, spice.states, time.perf_counter() - t0,
                                     spice.waveforms, task_metric(task, spice.outputs, labels),
                                     energy=spice.energy, latency=float(knet.t_bounds[-1]) * scaling.tau))
    return runs


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
        executor = dask_executor(flow.scheduler) if flow.scheduler else None
        if "behavioural" in flow.levels:
            t0 = time.perf_counter()
            spice = simulate(knet, b.circuit, x, b.tran, scaling=scaling, jobs=flow.jobs, executor=executor,
                             waveforms=True, cache_dir=flow.cache, progress=_ticker(progress, "behavioural", len(x)))
            runs.append(LevelRun("behavioural", "-", spice.outputs, spice.states, time.perf_counter() - t0,
                                 spice.waveforms, task_metric(task, spice.outputs, labels)))
        if {"characterised", "transistor"} & set(flow.levels):
            runs += _transistor_runs(flow, knet, x, labels, task, work, executor, progress)
        gates = [result for g in flow.gates for result in _gates(g, runs, ideal.outputs, ideal_run.metric, task)]
    return FlowResult(flow, knet, x, labels, source, task, ideal, runs, gates)
