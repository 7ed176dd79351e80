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

import contextlib
import dataclasses
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import ngspice
from .backends import get_simulator
from .build import build, circuit_for, prepare_transistor
from .characterised import characterise, integrate_characterised
from .compare import ReferenceSettings, reference_settings, task_metric, task_of
from .checks import scaling_problem
from .errors import InputError
from .distribution import SampleComparison
from .flow import SAMPLE_METRICS, Flow, Gate
from .generation import check_latent_use, compare_level, latent_batch, pool_latents
from .inputs import check_labels, load_array, load_inputs, random_inputs
from .knet import KNet
from .mapping import map_knet, transistor_scaling
from .mismatch import Attribution, draws, rank_devices
from .netlist import render_transistor_circuit, transistor_tran, write_circuit
from .pool import kill, local_pool
from .scaling import Scaling
from .pdk import get_pdk
from .reference import Trajectory
from .refine import refine, steps_for
from .simulate import batch_size, dask_executor, simulate
from .timing import children_cpu, compute_timing

GRID_POINTS_PER_LAYER = 100
#: behavioural runs of more samples than this keep no waveforms (a generative flow's thousands of latents)
WAVEFORM_SAMPLES = 200
#: the simulators a cross_simulator_max_diff gate compares
CROSS_SIMULATORS = ("ngspice", "vacask")


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
    samples: SampleComparison | None = None  # a generative flow: its samples against the ideal ones


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
    scaling: Scaling | None = None  # of the transistor-level circuits (None: behavioural only, model units)
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)  # how the ideal level was integrated
    warnings: tuple[str, ...] = ()  # the transistor-level circuit's (compliance in volts, θ misses), as a build's

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

    def ideal_outputs(self, run: LevelRun) -> np.ndarray:
        """The ideal outputs of the inputs ``run`` ran (a generative flow's level may run only the first few)."""
        return self.ideal.outputs[:len(run.outputs)]

    def ideal_states(self, run: LevelRun) -> np.ndarray:
        return self.ideal.states[:len(run.states)]


def _inputs(flow: Flow, build_inputs: np.ndarray | None, build_labels: np.ndarray | None, knet: KNet):
    latent = flow.latent
    if latent is not None or flow.inputs == "random":
        check_latent_use(knet, str(flow.model), f"{flow.path}: 'inputs.normal'" if latent else
                         f"{flow.path}: 'inputs: random'", latent is not None)
    if latent is not None:
        source = f"{latent.n} standard-normal latents (seed {latent.seed})"
        return latent_batch(knet, latent.n, latent.seed), None, source
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
    labels = check_labels(load_array(flow.labels), len(x), str(flow.labels))
    return x, labels, f"{flow.inputs} (labels {flow.labels})"


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
    if gate.metric == "cross_simulator_max_diff":
        return [_cross_gate(gate, mine)]
    if not mine:
        return [GateResult(gate, None, False, f"level {gate.level} did not run")]
    return [_gate(gate, run, ideal_outputs, ideal_metric, task) for run in mine]


def _cross_gate(gate: Gate, runs: list[LevelRun]) -> GateResult:
    """The largest output difference between the behavioural level's runs in the two simulators."""
    where = " vs ".join(CROSS_SIMULATORS)
    if len(runs) != 2:
        return GateResult(gate, None, False, f"needs the behavioural level in {where}; it ran in "
                          f"{[r.corner for r in runs]}", where)
    value = float(np.abs(runs[0].outputs - runs[1].outputs).max())
    ok = gate.holds(value)
    return GateResult(gate, value, ok, f"{gate.name} [{where}] = {value:.4g} {'' if ok else 'not '}<= "
                      f"{gate.limit:g}", where)


def _gate(gate: Gate, run: LevelRun, ideal_outputs: np.ndarray, ideal_metric, task) -> GateResult:
    if gate.metric == "max_output_error":
        value = float(np.abs(run.outputs - ideal_outputs[:len(run.outputs)]).max())
    elif gate.metric in SAMPLE_METRICS:
        if run.samples is None:
            return GateResult(gate, None, False, f"metric {gate.metric} needs the samples of a generative flow "
                              "(inputs: {normal: N})", run.corner)
        value = float(run.samples.as_dict()[gate.metric])
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


def _first(flow: Flow, level: str, x: np.ndarray, labels: np.ndarray | None):
    """The inputs (and labels) ``level`` runs: the first ``inputs.levels[level]`` latents of a generative flow."""
    n = flow.count(level) or len(x)
    return x[:n], None if labels is None else labels[:n]


def _behavioural(flow: Flow, b, simulator: str, label: str, x: np.ndarray, labels, task, work: Path, executor,
                 progress) -> LevelRun:
    """The build's circuit in ``simulator`` (:func:`~kcompile.build.circuit_for`), or its segmented form
    (``segmented``), in batched decks (``samples_per_run``) where the back end has them; waveforms kept for at most
    :data:`WAVEFORM_SAMPLES` samples."""
    knet = b.knet
    x, labels = _first(flow, "behavioural", x, labels)
    circuit, tran = circuit_for(b, simulator, work / simulator), b.tran
    if flow.segmented and not tran.segmented:
        circuit, tran = work / f"{simulator}-segmented" / circuit.name, dataclasses.replace(tran, segmented=True)
        circuit.parent.mkdir()
        write_circuit(knet, circuit, b.scaling, segmented=True, simulator=simulator,
                      devices=b.manifest["cells"].get("devices", "bsource"))
    batch = flow.samples_per_run
    if batch == "auto":
        batch = batch_size(knet, len(x), flow.jobs) if get_simulator(simulator).has_batch() else 1
    t0 = time.perf_counter()
    spice = simulate(knet, circuit, x, tran, scaling=b.scaling, jobs=flow.jobs, executor=executor, simulator=simulator,
                     waveforms=len(x) <= WAVEFORM_SAMPLES, cache_dir=flow.cache, batch=batch,
                     timeout=flow.run_timeout(knet, tran, transistor=False),
                     progress=_ticker(progress, f"behavioural ({simulator})", len(x)))
    return LevelRun("behavioural", label, spice.outputs, spice.states, time.perf_counter() - t0, spice.waveforms,
                    task_metric(task, spice.outputs, labels))


def _compare_samples(flow: Flow, knet: KNet, ideal: Trajectory, runs: list[LevelRun], settings: ReferenceSettings,
                     progress) -> tuple[list, dict]:
    """Every simulated level's samples against the ideal ones of the same latents, over a noise floor from ideal
    samples (``settings``) of :func:`~kcompile.generation.pool_latents`; returns the runs with ``samples`` set, and
    timing."""
    latent = flow.latent
    t0 = time.perf_counter()
    n = max(len(r.outputs) for r in runs)
    pool_x = pool_latents(n, knet.num_features, latent.seed)
    if progress:
        progress("ideal noise-floor pool", 0, 1)
    pool = settings.integrate(knet, pool_x).outputs
    if progress:
        progress("ideal noise-floor pool", 1, 1)
    t1 = time.perf_counter()
    out = [r if r.level == "ideal" else dataclasses.replace(r, samples=compare_level(ideal.outputs, r.outputs, pool))
           for r in runs]
    return out, {"pool_samples": len(pool), "pool_wall_s": t1 - t0, "metrics_wall_s": time.perf_counter() - t1}


def _ticker(progress, label: str, total: int):
    """``tick(n)``: ``n`` more of ``total`` done; tells ``progress`` at once that the phase ``label`` started."""
    done = [0]
    if progress:
        progress(label, 0, total)

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
                                       refine(knet, map_knet(knet, pdk.name, corner, scaling, area=flow.cell_area),
                                              steps_for(knet, flow.refine_steps)), recalibrated=True))
    return specs


def _run_specs(specs: list[_Spec], knet: KNet, network: KNet, x: np.ndarray, tran, scaling, flow: Flow, work: Path,
               executor, tick) -> list:
    """Write every spec's circuit (of ``network``, the circuit's rescaled ``knet``), then run them all at once over
    one pool (local processes or ``executor``)."""
    circuits = []
    for n, spec in enumerate(specs):
        circuit = work / f"transistor_{n}.cir"
        with open(circuit, "w") as f:
            f.writelines(render_transistor_circuit(network, spec.cellmap, supply=spec.supply,
                                                   mismatch=spec.mismatch))
        circuits.append(circuit)
    jobs = max(1, min(flow.jobs or os.cpu_count() or 1, len(specs) * len(x)))
    # No subprocess may start in a thread while the pool forks its workers from another (the child would
    # inherit the exec pipe and the thread would wait for it forever): ask ngspice's version here, once.
    ngspice.version()

    def one(n: int):
        spec = specs[n]
        t0 = time.perf_counter()
        res = simulate(knet, circuits[n], x, dataclasses.replace(tran, temp=spec.temp), scaling=scaling,
                       executor=pool, timeout=flow.run_timeout(knet, tran, transistor=True),
                       waveforms=spec.mismatch is None, cache_dir=flow.cache, supply=("vdd", spec.supply),
                       defines=spec.cellmap.pdk.ngspice_defines(), progress=tick)
        return res, time.perf_counter() - t0

    # at most max(2, jobs) circuits in flight (each queues its samples on the pool): enough to keep the pool
    # busy; after a failure the others never start, and a local pool's running samples are killed at once
    with local_pool(jobs) if executor is None else contextlib.nullcontext(executor) as pool, \
            ThreadPoolExecutor(max(1, min(len(specs), max(2, jobs)))) as threads:
        futures = [threads.submit(one, n) for n in range(len(specs))]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            if executor is None:
                kill(pool)  # before the threads are joined: they wait on its samples
            raise
        return [future.result() for future in futures]


def flow_scaling(flow: Flow) -> Scaling:
    """The scaling of a flow's transistor-level circuits: the PDK's, with the flow's ``scaling`` overrides."""
    pdk = get_pdk(flow.pdk or "generic180")
    scaling = dataclasses.replace(transistor_scaling(pdk), **flow.scaling)
    if scaling_problem(scaling):
        raise InputError(f"{flow.path}: 'scaling' is unusable with {pdk.name}'s defaults: {scaling_problem(scaling)}")
    return scaling


def _transistor_runs(flow: Flow, knet: KNet, x: np.ndarray, labels, task, work: Path, executor, progress,
                     ideal_outputs: np.ndarray, grid: np.ndarray):
    """Characterised, transistor (every corner) and Monte Carlo levels, calibrated at the nominal (first) corner,
    and their scaling in the flow's model units."""
    pdk = get_pdk(flow.pdk or "generic180")
    scaling = flow_scaling(flow)
    nominal = flow.corners[0]
    # automatic scaling (kcompile.mapping.plan_scaling) unless the flow fixes v0, i0 or vcm; the circuit realises
    # prep.plan.network (u = v/α), the recorded scaling maps the flow's model units onto it
    gate = min((g.limit for g in flow.gates if g.level == "transistor" and g.metric == "max_output_error"),
               default=None)
    tick = _ticker(progress, f"range analysis, scaling, calibrating and refining the cells on {pdk.name}/{nominal}", 1)
    prep = prepare_transistor(knet, x, "the flow's inputs", pdk.name, nominal, scaling,
                              "manual" if {"v0", "i0", "vcm"} & set(flow.scaling) else "auto",
                              allow_clipped=flow.allow_clipped, refine_steps=flow.refine_steps, gate=gate,
                              allow_out_of_budget=flow.allow_out_of_budget, where=str(flow.path),
                              area=flow.cell_area,
                              fixes=("set 'allow_clipped: true' in the flow",
                                     "set 'allow_out_of_budget: true' in the flow",
                                     "set 'scaling: {{c_unit: {:g}}}' in the flow"))
    tick(1)
    circuit, cellmap, scaling, alpha = prep.plan.network, prep.cellmap, prep.plan.scaling, prep.plan.alpha
    runs, mc = [], None
    if "characterised" in flow.levels:
        t0, tick = time.perf_counter(), _ticker(progress, "characterised: every cell's DC I-V, then the ODE", 1)
        xc, lc = _first(flow, "characterised", x, labels)
        ch = integrate_characterised(circuit, characterise(cellmap), xc, alpha=alpha, grid=grid)
        tick(1)
        runs.append(LevelRun("characterised", nominal, ch.outputs, ch.states, time.perf_counter() - t0,
                             [(ch.grid, ch.grid_states[b]) for b in range(min(len(xc), WAVEFORM_SAMPLES))],
                             task_metric(task, ch.outputs, lc)))
    if "transistor" not in flow.levels:
        return runs, mc, scaling, tuple(prep.warnings())
    x, labels = _first(flow, "transistor", x, labels)
    ideal_outputs = ideal_outputs[:len(x)]
    tran = prep.plan.tran(transistor_tran(knet, *([flow.points_per_layer] if flow.points_per_layer else [])))
    specs = _corner_specs(flow, circuit, pdk, prep.plan.cell_scaling, cellmap)
    mcf = flow.monte_carlo
    nominal_supply = (flow.supply or (pdk.supply,))[0]
    mc_label = _label(nominal, flow.temperature[0], nominal_supply, pdk.supply)
    if mcf.runs:
        if pdk.mismatch is None:
            raise InputError(f"{flow.path}: 'monte_carlo' needs mismatch coefficients, which PDK {pdk.name} lacks")
        specs += [_Spec(f"mc{d.run}", nominal, flow.temperature[0], nominal_supply, cellmap, d)
                  for d in draws(pdk.mismatch, mcf.seed, mcf.runs, mcf.scale)]
    results = _run_specs(specs, knet, circuit, x, tran, scaling, flow, work, executor,
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
            tick = _ticker(progress, "Monte Carlo: ranking the devices (DC sweeps of every mismatched cell)", 1)
            attribution = rank_devices(circuit, cellmap, x / alpha,
                                       [s.mismatch for s in specs if s.mismatch is not None],
                                       (outputs - reference.outputs[None]) / alpha, jobs=flow.jobs)
            tick(1)
        mc = MonteCarloResult(
            mc_label, mcf.runs, mcf.seed, mcf.scale, outputs,
            None if task is None else np.array([task_metric(task, o, labels) for o in outputs]),
            np.abs(outputs - ideal_outputs[None]).max(axis=(1, 2)), reference.outputs,
            sum(r[1] for r in mc_results), np.stack([r[0].energy for r in mc_results]), attribution)
    return runs, mc, scaling, tuple(prep.warnings())


def run_flow(flow: Flow, *, progress: Callable[[str, int, int], None] | None = None,
             work_dir: Path | None = None) -> FlowResult:
    """Run every level of ``flow`` and evaluate its gates.

    ``progress(label, done, total)`` is called as samples finish.

    Raises
    ------
    InputError
        The flow has no gate (it would pass whatever the circuit did), or its inputs are unusable.
    """
    if not flow.gates:
        raise InputError(f"{flow.path}: 'gates' is missing or empty: a flow without a gate passes whatever the "
                         "circuit does; add one, e.g. {level: behavioural, metric: max_output_error, limit: 1.0e-4}")

    with tempfile.TemporaryDirectory(prefix="kcompile-flow-") as tmp:
        work = Path(work_dir or tmp)
        scaling = Scaling()  # behavioural level runs in model units
        vacask = flow.simulator != "ngspice" or any(g.metric == "cross_simulator_max_diff" for g in flow.gates)
        b = build(flow.model, work / "behavioural", scaling, devices="osdi" if vacask else None,
                  points_per_layer=flow.behavioural_points_per_layer)
        knet = b.knet
        x, labels, source = _inputs(flow, b.recorded("inputs"), b.recorded("labels"), knet)
        task = task_of(knet, labels)
        grid = np.linspace(0.0, knet.t_bounds[-1], GRID_POINTS_PER_LAYER * knet.num_layers + 1)
        limits = [g.limit for g in flow.gates if g.metric == "max_output_error"]
        settings = reference_settings(knet, min(limits) if limits else None)
        t0, tick = time.perf_counter(), _ticker(progress, f"ideal reference ({settings.describe()})", 1)
        ideal = settings.integrate(knet, x, grid=grid)
        tick(1)
        ideal_run = LevelRun("ideal", "-", ideal.outputs, ideal.states, time.perf_counter() - t0,
                             metric=task_metric(task, ideal.outputs, labels))
        # cells: the transistor levels' scaling in the flow's model units (automatic scaling: the plan's)
        runs, mc, timing, cells, warnings = [ideal_run], None, {}, None, ()
        executor = dask_executor(flow.scheduler) if flow.scheduler else None
        if "behavioural" in flow.levels:
            both = any(g.metric == "cross_simulator_max_diff" for g in flow.gates)  # in both, on the same inputs
            for name in (flow.simulator, *(s for s in CROSS_SIMULATORS if s != flow.simulator and both)):
                runs.append(_behavioural(flow, b, name, name if both else "-", x, labels, task, work, executor,
                                         progress))
        if {"characterised", "transistor"} & set(flow.levels):
            t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
            more, mc, cells, warnings = _transistor_runs(flow, knet, x, labels, task, work, executor, progress, ideal.outputs,
                                               grid)
            runs += more
            timing["transistor_stage"] = {"wall_s": time.perf_counter() - t0,
                                          "cpu_s": time.process_time() - c0 + children_cpu() - k0}
        if "transistor" in flow.levels:
            tick = _ticker(progress, "timing the software forward passes (best of 3)", 1)
            timing["compute"] = compute_timing(knet, _first(flow, "transistor", x, None)[0])
            tick(1)
        if flow.latent is not None and len(runs) > 1:
            runs, timing["samples"] = _compare_samples(flow, knet, ideal, runs, settings, progress)
        gates = [result for g in flow.gates for result in _gates(g, runs, ideal.outputs, ideal_run.metric, task, mc)]
    return FlowResult(flow, knet, x, labels, source, task, ideal, runs, gates, mc, timing, cells, settings, warnings)
