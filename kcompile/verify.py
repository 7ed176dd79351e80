"""Run a verification flow: every level on the same inputs, then the gates.

Level ``ideal`` is the NumPy reference (always run: it is what the others
are judged against); ``behavioural`` compiles the network to behavioural
sources and runs ngspice; ``characterised`` integrates the ODE with every
cell's measured DC I–V; ``transistor`` runs the calibrated transistor-level
cells in ngspice at every process corner, temperature and supply of the flow
(calibrated at the first corner, so the others show the degradation; with
``recalibrate`` also calibrated at each corner), and the flow's Monte Carlo
mismatch runs at the first corner (:mod:`kcompile.mismatch`). Each level's gap
to ``ideal`` is reported separately so a compiler bug (behavioural) can be told
from a device non-ideality (transistor).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import ngspice
from .build import build
from .characterised import integrate_characterised, measure_devices
from .errors import InputError
from .flow import Flow, Gate
from .inputs import load_inputs, load_labels, random_inputs
from .knet import KNet
from .mapping import map_knet, transistor_scaling
from .mismatch import Attribution, draws, rank_devices
from .netlist import render_transistor_circuit, transistor_tran
from .scaling import Scaling
from .pdk import get_pdk
from .reference import Trajectory, integrate
from .refine import refine, steps_for
from .simulate import dask_executor, simulate
from .timing import children_cpu, compute_timing

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
    temperature: float | None = None  # °C (transistor level)
    supply: float | None = None  # volts (transistor level)
    recalibrated: bool = False  # calibrated at its own corner instead of the nominal one


@dataclass(frozen=True, eq=False)
class MonteCarloResult:
    """Mismatch runs at transistor level (``corner``: the nominal corner, temperature and supply)."""

    corner: str
    runs: int
    seed: int
    scale: float
    outputs: np.ndarray  # [R, B, M]
    metrics: np.ndarray | None  # [R] task metric of each run
    errors: np.ndarray  # [R] largest |output - ideal| of each run
    nominal_outputs: np.ndarray  # [B, M] the nominal transistor-level run at the same corner
    seconds: float  # summed wall time of the runs (they overlap: see FlowResult.timing for the stage's)
    energy: np.ndarray  # [R, B] joules per inference
    attribution: Attribution | None = None

    def percentile_metric(self, task: str | None) -> float | None:
        """The 5th-percentile accuracy, or the 95th-percentile MSE (the bad tail either way)."""
        if self.metrics is None:
            return None
        return float(np.percentile(self.metrics, 5 if task == "classification" else 95))

    def worst_metric(self, task: str | None) -> float | None:
        if self.metrics is None:
            return None
        return float(self.metrics.min() if task == "classification" else self.metrics.max())


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
    monte_carlo: MonteCarloResult | None = None
    timing: dict = field(default_factory=dict)  # seconds of the stages, and compute comparisons

    def __repr__(self) -> str:
        levels = ", ".join(dict.fromkeys(run.level for run in self.levels))
        held = sum(g.passed for g in self.gates)
        return (f"<FlowResult {self.flow.name}: {'PASS' if self.passed else 'FAIL'}, {held}/{len(self.gates)} gates "
                f"held; levels {levels}; {len(self.inputs)} samples>")

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
    x = load_inputs(flow.inputs, knet)
    if flow.labels is None:
        return x, None, str(flow.inputs)
    return x, load_labels(flow.labels, len(x)), f"{flow.inputs} (labels {flow.labels})"


def _mc_gate(gate: Gate, mc: MonteCarloResult | None, task, nominal_metric: float | None = None) -> GateResult:
    where = "-" if mc is None else f"mc {mc.corner}"
    if mc is None or mc.runs < 2:
        return GateResult(gate, None, False, f"metric {gate.metric} needs at least 2 Monte Carlo runs", where)
    if gate.metric in ("mc_percentile_accuracy", "mc_percentile_accuracy_drop"):
        if task != "classification":
            return GateResult(gate, None, False, f"needs a classification model with labels; this flow has "
                              f"{task or 'no labels'}", where)
        value = float(np.percentile(mc.metrics, 5))
        if gate.metric == "mc_percentile_accuracy_drop":  # against the nominal run at the same corner
            value = nominal_metric - value
    else:
        value = float(np.percentile(mc.errors, 95))
    ok = gate.holds(value)
    rel = ">=" if gate.is_floor else "<="
    return GateResult(gate, value, ok, f"{gate.name} [{where}, {mc.runs} runs] = {value:.4g} "
                      f"{'' if ok else 'not '}{rel} {gate.limit:g}", where)


def _gates(gate: Gate, runs: list[LevelRun], ideal_outputs: np.ndarray, ideal_metric, task,
           mc: MonteCarloResult | None = None) -> list[GateResult]:
    """One result per run of the gate's level (one per corner for the transistor level; one for the
    Monte Carlo metrics)."""
    if gate.is_monte_carlo:
        nominal = next((r.metric for r in runs if mc is not None and r.level == "transistor" and r.corner == mc.corner),
                       None)
        return [_mc_gate(gate, mc, task, nominal)]
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


@dataclass(frozen=True)
class _Spec:
    """One transistor-level circuit to run on every input."""

    label: str
    corner: str
    temp: float
    supply: float
    cellmap: object
    mismatch: object = None  # MismatchDraw
    recalibrated: bool = False


def _label(corner: str, temp: float, supply: float, nominal_supply: float) -> str:
    return f"{corner} {temp:g}C" + ("" if supply == nominal_supply else f" {supply:g}V")


def _corner_specs(flow: Flow, knet: KNet, pdk, scaling, cellmap) -> list[_Spec]:
    """Every corner × temperature × supply, calibrated at the nominal corner; with ``recalibrate`` also every
    other corner at the first temperature and supply, calibrated at itself."""
    specs = []
    supplies = flow.supply or (pdk.supply,)
    for corner in flow.corners:
        for temp in flow.temperature:
            for vdd in supplies:
                label = _label(corner, temp, vdd, pdk.supply)
                specs.append(_Spec(label, corner, temp, vdd, dataclasses.replace(cellmap, corner=corner)))
                if flow.recalibrate and corner != flow.corners[0] and (temp, vdd) == (flow.temperature[0], supplies[0]):
                    specs.append(_Spec(f"{label} recal", corner, temp, vdd,
                                       refine(knet, map_knet(knet, pdk.name, corner, scaling),
                                              steps_for(knet, flow.refine_steps)), recalibrated=True))
    return specs


def _run_specs(specs: list[_Spec], knet: KNet, x: np.ndarray, tran, scaling, flow: Flow, work: Path, executor,
               tick) -> list:
    """Write every spec's circuit, then run them all at once over one pool (local processes or ``executor``)."""
    circuits = []
    for n, spec in enumerate(specs):
        circuit = work / f"transistor_{n}.cir"
        with open(circuit, "w") as f:
            f.writelines(render_transistor_circuit(knet, spec.cellmap, supply=spec.supply, mismatch=spec.mismatch))
        circuits.append(circuit)
    jobs = max(1, min(flow.jobs or os.cpu_count() or 1, len(specs) * len(x)))
    # No subprocess may start in a thread while the pool forks its workers from another (the child would
    # inherit the exec pipe and the thread would wait for it forever): ask ngspice's version here, once.
    ngspice.version()
    pool = executor or ProcessPoolExecutor(jobs)

    def one(n: int):
        spec = specs[n]
        t0 = time.perf_counter()
        res = simulate(knet, circuits[n], x, dataclasses.replace(tran, temp=spec.temp), scaling=scaling,
                       timeout=flow.timeout, executor=pool, waveforms=spec.mismatch is None, cache_dir=flow.cache,
                       supply=("vdd", spec.supply), defines=spec.cellmap.pdk.ngspice_defines(), progress=tick)
        return res, time.perf_counter() - t0

    try:
        # at most max(2, jobs) circuits in flight (each queues its samples on the pool): enough to keep the pool
        # busy, and after a failure only those finish before it is raised; the others never start
        with ThreadPoolExecutor(max(1, min(len(specs), max(2, jobs)))) as threads:
            futures = [threads.submit(one, n) for n in range(len(specs))]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            return [future.result() for future in futures]
    finally:
        if executor is None:
            pool.shutdown(cancel_futures=True)


def _transistor_runs(flow: Flow, knet: KNet, x: np.ndarray, labels, task, work: Path, executor, progress,
                     ideal_outputs: np.ndarray):
    """Characterised, transistor (every corner) and Monte Carlo levels, calibrated at the nominal (first) corner."""
    pdk = get_pdk(flow.pdk or "generic180")
    scaling = dataclasses.replace(transistor_scaling(pdk), **flow.scaling)
    nominal = flow.corners[0]
    cellmap = map_knet(knet, pdk.name, nominal, scaling)
    if cellmap.clipped and not flow.allow_clipped:
        raise InputError(f"{flow.path}: {len(cellmap.clipped)} device(s) of {flow.model} need θ outside the cell's "
                         "calibrated range; set 'allow_clipped: true' in the flow to run them clipped")
    cellmap = refine(knet, cellmap, steps_for(knet, flow.refine_steps))
    runs, mc = [], None
    if "characterised" in flow.levels:
        t0 = time.perf_counter()
        ch = integrate_characterised(knet, measure_devices(cellmap), x)
        runs.append(LevelRun("characterised", nominal, ch.outputs, ch.states, time.perf_counter() - t0,
                             metric=task_metric(task, ch.outputs, labels)))
    if "transistor" not in flow.levels:
        return runs, mc
    tran = transistor_tran(knet, *([flow.points_per_layer] if flow.points_per_layer else []))
    specs = _corner_specs(flow, knet, pdk, scaling, cellmap)
    mcf = flow.monte_carlo
    nominal_supply = (flow.supply or (pdk.supply,))[0]
    mc_label = _label(nominal, flow.temperature[0], nominal_supply, pdk.supply)
    if mcf.runs:
        if pdk.mismatch is None:
            raise InputError(f"{flow.path}: 'monte_carlo' needs mismatch coefficients, which PDK {pdk.name} lacks")
        specs += [_Spec(f"mc{d.run}", nominal, flow.temperature[0], nominal_supply, cellmap, d)
                  for d in draws(pdk.mismatch, mcf.seed, mcf.runs, mcf.scale)]
    results = _run_specs(specs, knet, x, tran, scaling, flow, work, executor,
                         _ticker(progress, "transistor (corners, Monte Carlo)", len(specs) * len(x)))
    latency = float(knet.t_bounds[-1]) * scaling.tau
    for spec, (spice, seconds) in zip(specs, results):
        if spec.mismatch is None:
            runs.append(LevelRun("transistor", spec.label, spice.outputs, spice.states, seconds, spice.waveforms,
                                 task_metric(task, spice.outputs, labels), energy=spice.energy, latency=latency,
                                 temperature=spec.temp, supply=spec.supply, recalibrated=spec.recalibrated))
    if mcf.runs:
        mc_results = [r for spec, r in zip(specs, results) if spec.mismatch is not None]
        outputs = np.stack([r[0].outputs for r in mc_results])
        reference = next(run for run in runs if run.level == "transistor" and run.corner == mc_label)
        attribution = None
        if mcf.rank:
            attribution = rank_devices(knet, cellmap, x, [s.mismatch for s in specs if s.mismatch is not None],
                                       outputs - reference.outputs[None], jobs=flow.jobs)
        mc = MonteCarloResult(
            mc_label, mcf.runs, mcf.seed, mcf.scale, outputs,
            None if task is None else np.array([task_metric(task, o, labels) for o in outputs]),
            np.abs(outputs - ideal_outputs[None]).max(axis=(1, 2)), reference.outputs,
            sum(r[1] for r in mc_results), np.stack([r[0].energy for r in mc_results]), attribution)
    return runs, mc


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
        runs, mc, timing = [ideal_run], None, {}
        executor = dask_executor(flow.scheduler) if flow.scheduler else None
        if "behavioural" in flow.levels:
            t0 = time.perf_counter()
            spice = simulate(knet, b.circuit, x, b.tran, scaling=scaling, timeout=flow.timeout, jobs=flow.jobs,
                             executor=executor, waveforms=True, cache_dir=flow.cache,
                             progress=_ticker(progress, "behavioural", len(x)))
            runs.append(LevelRun("behavioural", "-", spice.outputs, spice.states, time.perf_counter() - t0,
                                 spice.waveforms, task_metric(task, spice.outputs, labels)))
        if {"characterised", "transistor"} & set(flow.levels):
            t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
            more, mc = _transistor_runs(flow, knet, x, labels, task, work, executor, progress, ideal.outputs)
            runs += more
            timing["transistor_stage"] = {"wall_s": time.perf_counter() - t0,
                                          "cpu_s": time.process_time() - c0 + children_cpu() - k0}
        if "transistor" in flow.levels:
            timing["compute"] = compute_timing(knet, x)
        gates = [result for g in flow.gates for result in _gates(g, runs, ideal.outputs, ideal_run.metric, task, mc)]
    return FlowResult(flow, knet, x, labels, source, task, ideal, runs, gates, mc, timing)
