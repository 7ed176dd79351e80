"""Verification flow files (``flows/*.yaml``): read, validate, normalise.

A flow names a model, the inputs, the levels to run and the gates that
decide the verdict. Unknown keys and wrong types are refused with the file
and the dotted key path, e.g. ``flows/ci.yaml: 'gates[1].limit' must be a
number, got 'abc'``.

Example::

    name: ci
    model: ../examples/random_relu.npz     # relative to the flow file
    inputs: recorded                       # or a .npy path, "random", {file: X.npy, labels: Y.npy},
                                           # or {normal: N, seed: S} (a generative model's latents)
    batch: 8                               # recorded or random inputs: how many (a file or latents run whole)
    levels: [behavioural]
    gates:
      - {level: behavioural, metric: max_output_error, limit: 1.0e-4}
    jobs: 2                                # local ngspice processes (default: all cores)
    scheduler: tcp://127.0.0.1:8786        # optional: run samples on a Dask cluster
    cache: ../.kcompile-cache              # optional: reuse finished runs by deck hash
    simulator: ngspice                     # the behavioural level's back end (or vacask); a gate
                                           # {level: behavioural, metric: cross_simulator_max_diff} runs both
    timeout: 600                           # optional: seconds per simulator run (default as the command line's)

Any key can be replaced from the command line without editing the file:
``kcompile verify flows/ci.yaml --set batch=1 --set monte_carlo.runs=2``
(:func:`load_flow`'s ``overrides``; each value is read as YAML).

Transistor-level keys: ``pdk`` (generic180, sky130, gf180mcu), ``corners``
(the first is the calibration corner; ``all``: every corner of the PDK),
``temperature`` (°C, list), ``supply`` (volts, list; default the PDK's
nominal), ``recalibrate`` (also run every other corner calibrated there),
``points_per_layer`` (transient step cap), ``timeout`` (seconds per ngspice
run; default as ``kcompile simulate``'s, :func:`kcompile.netlist.run_timeout`:
600, and for a transistor run at least 3.5 ms per cell and time step),
``scaling`` (v0, vcm, i0, c_unit overrides; without v0, i0 and vcm the
network is scaled automatically into the cells' window,
:func:`kcompile.mapping.plan_scaling`), ``allow_clipped``,
``allow_out_of_budget`` (run even when the estimated output error exceeds the
transistor ``max_output_error`` gate), ``refine_steps`` (per-device refinement of
the transistor cells, :mod:`kcompile.refine`; default 2 up to 2,000 relu
devices), ``cell_area`` (every cell drawn this many times as large, 1-64:
mismatch σ ÷ √area, :meth:`kcompile.cells.base.Cell.with_area`), and ``monte_carlo`` (``runs``, ``seed``,
``scale`` of every σ, ``rank`` the devices, ``top`` devices to report):
mismatch runs at the first corner, temperature and supply.

Generative models (``meta.generative``): ``inputs: {normal: N, seed: S,
levels: {transistor: 16}}`` draws N standard-normal latents; a level named in
``levels`` runs only the first n of them. Their gates compare sample
distributions against the ideal model's (``sample_mmd_ratio``,
``sample_energy_ratio``, ``max_displacement``; :mod:`kcompile.generation`).
``segmented: true`` runs the behavioural level on the segmented circuit (one
transient per layer, no clocks) and ``samples_per_run: K`` (or ``auto``) runs
it K samples per ngspice process in batched decks (``timeout`` is then per
sample); ``behavioural_points_per_layer`` caps its step (default the build's
1000 points per layer: fast flows need more for 1e-4, docs/generation.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .checks import (CELL_AREA, CELSIUS, COUNT, FINITE, NON_NEGATIVE, POINTS_PER_LAYER, REFINE_STEPS, SCALING, SEED,
                     Number, short)
from .errors import InputError
from .files import _NoAliasLoader, read_yaml
from .knet import KNet
from .netlist import Tran, run_timeout

LEVELS = ("ideal", "behavioural", "characterised", "transistor")
METRICS = {
    "max_output_error": "largest |level - ideal| over outputs and samples (model units)",
    "accuracy_drop": "ideal accuracy minus level accuracy, in percentage points",
    "mse_ratio": "level MSE / ideal MSE against the labels",
    "mc_percentile_accuracy": "5th-percentile accuracy over Monte Carlo runs, as a floor (percent)",
    "mc_percentile_accuracy_drop": "accuracy of the nominal transistor run minus the 5th-percentile accuracy over "
                                   "the Monte Carlo runs (same corner), in percentage points",
    "mc_p95_output_error": "95th percentile over Monte Carlo runs of the largest |output - ideal| (model units)",
    "sample_mmd_ratio": "MMD² of the level's samples against the ideal ones (same latents) / its noise floor",
    "sample_energy_ratio": "energy distance of the level's samples against the ideal ones / its noise floor",
    "max_displacement": "largest distance between a level's sample and the ideal one of the same latent",
    "cross_simulator_max_diff": "largest |ngspice - vacask| over outputs and samples, behavioural (model units)",
}
_FLOOR_METRICS = {"mc_percentile_accuracy"}
MC_METRICS = {"mc_percentile_accuracy", "mc_percentile_accuracy_drop", "mc_p95_output_error"}
#: distribution metrics of a generative model's samples (inputs: {normal: N})
SAMPLE_METRICS = {"sample_mmd_ratio", "sample_energy_ratio", "max_displacement"}
#: metrics that need labelled inputs
TASK_METRICS = {"accuracy_drop", "mse_ratio"}


@dataclass(frozen=True)
class Gate:
    """One pass/fail rule: ``metric`` of ``level`` must stay within ``limit``."""

    level: str
    metric: str
    limit: float

    @property
    def is_floor(self) -> bool:
        """True when the value must be at least ``limit`` (otherwise at most)."""
        return self.metric in _FLOOR_METRICS

    def holds(self, value: float) -> bool:
        return value >= self.limit if self.is_floor else value <= self.limit

    @property
    def name(self) -> str:
        return f"{self.level}.{self.metric}"

    @property
    def is_monte_carlo(self) -> bool:
        return self.metric in MC_METRICS


@dataclass(frozen=True)
class MonteCarlo:
    """Mismatch runs at transistor level: ``runs`` seeded by ``seed`` (run i of seed S is always the same),
    every σ times ``scale``; ``rank``: attribute the spread to devices, the ``top`` of them reported."""

    runs: int = 0
    seed: int = 1
    scale: float = 1.0
    rank: bool = True
    top: int = 10


@dataclass(frozen=True)
class Latent:
    """``inputs: {normal: N, seed: S, levels: {level: n}}``: ``n`` standard-normal latent vectors of a generative
    model (:func:`kcompile.distribution.latents`); a level in ``levels`` runs only the first n of them."""

    n: int
    seed: int = 0
    levels: tuple[tuple[str, int], ...] = ()

    def count(self, level: str) -> int:
        """How many of the latents ``level`` runs."""
        return dict(self.levels).get(level, self.n)


@dataclass(frozen=True)
class Flow:
    """A validated flow; paths are absolute."""

    name: str
    path: Path
    model: Path
    inputs: str | Path | Latent = "recorded"
    labels: Path | None = None  # with inputs from a file: one label per row
    batch: int = 8
    seed: int = 0
    levels: tuple[str, ...] = ("behavioural",)
    pdk: str | None = None
    corners: tuple[str, ...] = ("tt",)
    temperature: tuple[float, ...] = (27.0,)
    supply: tuple[float, ...] = ()  # volts; empty: the PDK's nominal
    recalibrate: bool = False
    points_per_layer: int | None = None
    monte_carlo: MonteCarlo = MonteCarlo()
    scaling: dict = field(default_factory=dict)
    gates: tuple[Gate, ...] = ()
    jobs: int | None = None
    scheduler: str | None = None
    cache: Path | None = None
    allow_clipped: bool = False
    refine_steps: int | None = None
    cell_area: float = 1.0  # the cells' gate area relative to their drawn sizes
    allow_out_of_budget: bool = False
    simulator: str = "ngspice"  # behavioural level's back end (a cross_simulator_max_diff gate runs both)
    timeout: float | None = None  # seconds per simulator run (per sample of a batched deck); None: run_timeout()
    overrides: tuple[str, ...] = ()  # the --set KEY=VALUE that changed the file's keys, as given
    segmented: bool = False  # behavioural level on the segmented circuit
    samples_per_run: int | str = 1  # behavioural samples per ngspice run (batched decks), or "auto"
    behavioural_points_per_layer: int | None = None  # the behavioural transient's step cap (None: the build's)

    @property
    def latent(self) -> Latent | None:
        """The latent inputs of a generative flow, else ``None``."""
        return self.inputs if isinstance(self.inputs, Latent) else None

    def count(self, level: str) -> int | None:
        """Samples ``level`` runs: all of the flow's inputs (``None``) unless ``inputs.levels`` says fewer."""
        return None if self.latent is None else self.latent.count(level)

    def run_timeout(self, knet: KNet, tran: Tran, transistor: bool) -> float:
        """Seconds one simulator run of ``knet`` may take: the flow's ``timeout``, else the command line's default
        (:func:`kcompile.netlist.run_timeout`; a transistor run's grows with its cells and time steps)."""
        return self.timeout if self.timeout is not None else run_timeout(knet, tran, transistor)


class _Checker:
    def __init__(self, path: Path, overrides: tuple[str, ...] = ()):
        self.path = path
        self.origin = f" with {' '.join(f'--set {o}' for o in overrides)}" if overrides else ""

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(f"{self.path}{self.origin}: '{key}' {problem}")

    def typed(self, data: dict, key: str, kind, default=None, required=False, where: str | None = None):
        """``data[key]`` checked to be a ``kind``; errors name ``where`` (the dotted path), else ``key``."""
        if key not in data:
            if required:
                raise self.fail(where or key, "is missing")
            return default
        value = data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(where or key, f"must be a {'number' if kind is float else names}, got {short(value)}")
        if isinstance(value, str) and _CONTROL.search(value):
            raise self.fail(where or key, f"contains control characters, got {short(value)}")
        return value

    def counted(self, data: dict, key: str, rule: Number, default=None, where: str | None = None):
        """An integer ``data[key]`` within ``rule``."""
        value = self.typed(data, key, int, default, where=where)
        if value is not None and rule.problem(value):
            raise self.fail(where or key, rule.problem(value))
        return value

    def number(self, data: dict, key: str, rule: Number = FINITE, where: str | None = None) -> float:
        """A required number ``data[key]`` within ``rule`` (always finite)."""
        if key not in data:
            raise self.fail(where or key, "is missing")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where or key, f"must be a number, got {short(value)}")
        if rule.problem(value):
            raise self.fail(where or key, rule.problem(value))
        return float(value)

    def choices(self, key: str, value: str, allowed) -> str:
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {short(value)}")
        return value

    def relative(self, data: dict, key: str, default=None, where: str | None = None) -> Path | None:
        """A path relative to the flow file, made absolute; errors name ``where`` (the dotted path), else ``key``."""
        value = self.typed(data, key, str, default, where=where)
        if value is None:
            return None
        try:
            path = (self.path.parent / value).resolve()
            path.exists()  # a name the file system refuses (too long, ...) fails here, not later
        except (OSError, ValueError) as exc:
            raise self.fail(where or key, f"is not a usable path ({getattr(exc, 'strerror', None) or exc}), "
                            f"got {short(value)}") from None
        return path


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: a Dask scheduler address, e.g. tcp://127.0.0.1:8786
SCHEDULER = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://[^\s/]+$")
#: what a gate's limit may be, per metric: errors and ratios are never negative, accuracies are percentages
_LIMITS = {"max_output_error": NON_NEGATIVE, "mse_ratio": NON_NEGATIVE, "mc_p95_output_error": NON_NEGATIVE,
           "accuracy_drop": Number(-100, 100), "mc_percentile_accuracy": Number(0, 100),
           "mc_percentile_accuracy_drop": Number(-100, 100),
           "cross_simulator_max_diff": NON_NEGATIVE, **{metric: NON_NEGATIVE for metric in SAMPLE_METRICS}}
#: Monte Carlo runs per flow, and devices reported
_RUNS = Number(0, 100_000, integer=True)
_TOP = Number(1, 1_000_000, integer=True)
#: supply volts
_VOLTS = Number(0, 100, low_open=True)
#: seconds a simulator run may take (as the command line's --timeout)
_TIMEOUT = Number(0, 1e6, low_open=True)
#: ``--set`` keys: dotted names (``monte_carlo.runs``)
_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,39})(\.[A-Za-z_][A-Za-z0-9_]{0,39})*=(.{0,1000})$", re.S)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def apply_overrides(data: dict, overrides, path: Path) -> dict:
    """``data`` with every ``KEY=VALUE`` of ``overrides`` set (``KEY`` dotted into nested mappings, ``VALUE``
    read as YAML: ``batch=1``, ``levels=[behavioural]``, ``monte_carlo.runs=2``); the result is validated
    like the file itself."""
    data = dict(data)
    for text in overrides:
        m = _OVERRIDE.match(text)
        if m is None:
            raise InputError(f"--set {short(text)}: must be KEY=VALUE with KEY a flow key or a dotted one "
                             "(batch=1, monte_carlo.runs=2)")
        keys, raw = text.partition("=")[0].split("."), m.group(3)
        try:
            value = yaml.load(raw, Loader=_NoAliasLoader) if raw.strip() else None  # a SafeLoader without aliases
        except (yaml.YAMLError, RecursionError) as exc:
            raise InputError(f"--set {short(text)}: the value is not plain YAML "
                             f"({short(str(exc).splitlines()[0] if str(exc) else 'nested too deeply', 80)})") from None
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.get(key, {})
            if not isinstance(child, dict):
                raise InputError(f"{path}: --set {short(text)}: '{'.'.join(keys[:i + 1])}' is not a mapping")
            node[key] = node = dict(child)
        node[keys[-1]] = value
    return data


def load_flow(path: str | Path, overrides=()) -> Flow:
    """Read and validate a flow file.

    The file is untrusted: it is read as UTF-8 of at most 1 MiB without YAML
    anchors or aliases (:func:`kcompile.files.read_yaml`), every number must be
    finite and within its range, and every string free of control characters.

    Parameters
    ----------
    overrides : sequence of str
        ``KEY=VALUE`` replacing the file's keys before validation (:func:`apply_overrides`; the command
        line's ``--set``); messages then name them.

    Raises
    ------
    InputError
        Unreadable YAML, unknown keys, wrong types or values, a missing model.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError(f"{path}: no such flow file")
    data = read_yaml(path, "flow file")
    if not isinstance(data, dict):
        raise InputError(f"{path}: a flow file must be a YAML mapping")
    overrides = tuple(overrides)
    data = apply_overrides(data, overrides, path)
    c = _Checker(path, overrides)
    known = {"name", "model", "inputs", "batch", "seed", "levels", "pdk", "corners", "temperature", "supply",
             "recalibrate", "points_per_layer", "monte_carlo", "scaling", "gates", "jobs", "scheduler", "cache",
             "allow_clipped", "refine_steps", "allow_out_of_budget", "simulator", "timeout", "segmented",
             "samples_per_run", "behavioural_points_per_layer", "cell_area"}
    for key in data:
        if key not in known:
            raise c.fail(str(key)[:40], f"is not a flow key (known: {', '.join(sorted(known))})")

    if "model" not in data:
        raise c.fail("model", "is missing")
    model = c.relative(data, "model")
    if not model.is_file():
        raise c.fail("model", f"names {model}, which does not exist")
    levels = tuple(c.choices("levels", str(v), LEVELS) for v in _as_list(data.get("levels", ["behavioural"])))
    inputs, labels = _inputs(c, data, levels)
    if "batch" in data and inputs not in ("recorded", "random"):
        raise c.fail("batch", "applies to recorded and random inputs, but this flow's inputs are a file or latents, "
                     "which run whole: leave batch out and give a file (or inputs.normal) of the size you want")
    pdk_name = c.typed(data, "pdk", str, None)
    corners = _corners(c, data, pdk_name)
    temperature = tuple(c.number({"t": v}, "t", CELSIUS, "temperature")
                        for v in _as_list(data.get("temperature", [27.0])))
    supply = tuple(c.number({"v": v}, "v", FINITE, "supply") for v in _as_list(data.get("supply", [])))
    if any(v <= 0 for v in supply):
        raise c.fail("supply", f"must be positive volts, got {list(supply)}")
    for v in supply:
        c.number({"v": v}, "v", _VOLTS, "supply")
    ppl = c.counted(data, "points_per_layer", POINTS_PER_LAYER)
    monte_carlo = _monte_carlo(c, c.typed(data, "monte_carlo", dict, {}), levels)
    scaling = c.typed(data, "scaling", dict, {})
    for key in scaling:
        rule = SCALING[c.choices(f"scaling.{str(key)[:40]}", key, tuple(SCALING))]
        c.number(scaling, key, rule, f"scaling.{key}")
    scheduler = c.typed(data, "scheduler", str, None)
    if scheduler is not None and not SCHEDULER.match(scheduler):
        raise c.fail("scheduler", f"must be a Dask scheduler address like tcp://HOST:PORT, got {short(scheduler)}")
    cache = c.relative(data, "cache")
    if cache is not None and cache.exists() and not cache.is_dir():
        raise c.fail("cache", f"names {cache}, which is not a directory")

    gates = []
    for i, g in enumerate(c.typed(data, "gates", list, [])):
        if not isinstance(g, dict):
            raise c.fail(f"gates[{i}]", f"must be a mapping with level, metric, limit; got {short(g)}")
        for key in g:
            c.choices(f"gates[{i}].{str(key)[:40]}", key, ("level", "metric", "limit"))
        metric = c.choices(f"gates[{i}].metric", c.typed(g, "metric", str, required=True), tuple(METRICS))
        gate = Gate(c.choices(f"gates[{i}].level", c.typed(g, "level", str, required=True), LEVELS), metric,
                    c.number(g, "limit", _LIMITS[metric], f"gates[{i}].limit"))
        if gate.level not in levels and gate.level != "ideal":
            raise c.fail(f"gates[{i}].level", f"is {gate.level!r}, which the flow's levels {list(levels)} don't run")
        if gate.metric == "cross_simulator_max_diff" and gate.level != "behavioural":
            raise c.fail(f"gates[{i}].level", f"is {gate.level!r}; cross_simulator_max_diff compares the "
                         "behavioural level in ngspice and vacask")
        if gate.is_monte_carlo and (gate.level != "transistor" or monte_carlo.runs < 2):
            raise c.fail(f"gates[{i}].metric", f"is {gate.metric!r}, which needs level 'transistor' and "
                         f"'monte_carlo.runs' of at least 2 (got level {gate.level!r}, {monte_carlo.runs} runs): "
                         "set monte_carlo.runs to 2 or more, or leave the gate out (gates=[...])")
        _check_gate_inputs(c, i, gate, inputs)
        gates.append(gate)
    samples_per_run = data.get("samples_per_run", 1)
    if samples_per_run != "auto":
        samples_per_run = c.counted(data, "samples_per_run", COUNT, 1)

    return Flow(
        name=c.typed(data, "name", str, path.stem), path=path, model=model, inputs=inputs, labels=labels,
        batch=c.counted(data, "batch", COUNT, 8), seed=c.counted(data, "seed", SEED, 0), levels=levels,
        pdk=pdk_name, corners=corners, temperature=temperature, supply=supply,
        recalibrate=c.typed(data, "recalibrate", bool, False), points_per_layer=ppl,
        monte_carlo=monte_carlo, scaling={k: float(v) for k, v in scaling.items()}, gates=tuple(gates),
        jobs=c.counted(data, "jobs", COUNT), scheduler=scheduler, cache=cache,
        allow_clipped=c.typed(data, "allow_clipped", bool, False),
        refine_steps=c.counted(data, "refine_steps", REFINE_STEPS),
        cell_area=c.number(data, "cell_area", CELL_AREA) if "cell_area" in data else 1.0,
        allow_out_of_budget=c.typed(data, "allow_out_of_budget", bool, False),
        simulator=_simulator(c, data),
        timeout=c.number(data, "timeout", _TIMEOUT) if "timeout" in data else None, overrides=overrides,
        segmented=c.typed(data, "segmented", bool, False), samples_per_run=samples_per_run,
        behavioural_points_per_layer=c.counted(data, "behavioural_points_per_layer", POINTS_PER_LAYER),
    )


def _simulator(c: _Checker, data: dict) -> str:
    from .backends import SIMULATORS

    return c.choices("simulator", c.typed(data, "simulator", str, "ngspice"), tuple(sorted(SIMULATORS)))


def _inputs(c: _Checker, data: dict, levels: tuple[str, ...]) -> tuple[str | Path | Latent, Path | None]:
    """``inputs``: ``recorded``, ``random``, an .npy path, ``{file: X.npy, labels: Y.npy}`` or
    ``{normal: N, seed: S, levels: {level: n}}``; returns (inputs, labels file)."""
    raw = data.get("inputs", "recorded")
    if not isinstance(raw, dict):
        inputs = c.typed(data, "inputs", str, "recorded")
        return (inputs, None) if inputs in ("recorded", "random") else (c.relative(data, "inputs"), None)
    forms = "recorded, random, an .npy path, {file: X.npy, labels: Y.npy} or {normal: N, seed: S}"
    if "file" in raw or "labels" in raw:
        for key in raw:
            c.choices(f"inputs.{str(key)[:40]}", key, ("file", "labels"))
        if "file" not in raw:
            raise c.fail("inputs.file", "is missing: labels go with the inputs file, {file: X.npy, labels: Y.npy}")
        return c.relative(raw, "file", where="inputs.file"), c.relative(raw, "labels", where="inputs.labels")
    if "normal" not in raw:
        raise c.fail("inputs", f"must be {forms}, got {short(raw)}")
    for key in raw:
        c.choices(f"inputs.{str(key)[:40]}", key, ("normal", "seed", "levels"))
    n = c.counted(raw, "normal", COUNT, where="inputs.normal")
    per_level = []
    for level, count in c.typed(raw, "levels", dict, {}, where="inputs.levels").items():
        key = f"inputs.levels.{str(level)[:40]}"
        if c.choices(key, level, LEVELS) not in levels:
            raise c.fail(key, f"names a level the flow's levels {list(levels)} don't run")
        per_level.append((level, c.counted({"n": count}, "n", Number(1, n, integer=True), where=key)))
    return Latent(n, c.counted(raw, "seed", SEED, 0, where="inputs.seed"), tuple(per_level)), None


def _check_gate_inputs(c: _Checker, i: int, gate: Gate, inputs) -> None:
    """Distribution metrics need latent inputs, at least 2 per level; task metrics need labels, which latents lack."""
    key = f"gates[{i}].metric"
    latent = inputs if isinstance(inputs, Latent) else None
    if gate.metric in SAMPLE_METRICS:
        if latent is None:
            raise c.fail(key, f"is {gate.metric!r}, which compares sample distributions of a generative model: "
                         "it needs 'inputs: {normal: N, seed: S}' (standard-normal latents)")
        if gate.level == "ideal":
            raise c.fail(f"gates[{i}].level", f"is 'ideal', but {gate.metric!r} compares a level's samples with the "
                         "ideal ones: gate a simulated level")
        if latent.count(gate.level) < 2:
            raise c.fail(key, f"is {gate.metric!r}, a distribution metric, which needs at least 2 samples of level "
                         f"{gate.level!r}; it runs {latent.count(gate.level)} (inputs.normal / inputs.levels)")
    if gate.metric in TASK_METRICS and latent is not None:
        raise c.fail(key, f"is {gate.metric!r}, which needs labelled inputs; the latents of 'inputs: {{normal: N}}' "
                     "have none: gate a generative model with sample_mmd_ratio, sample_energy_ratio or "
                     "max_displacement")


def _corners(c: _Checker, data: dict, pdk_name: str | None) -> tuple[str, ...]:
    """``corners``: a list of the PDK's corner names (first: calibration), or ``all`` (``tt`` first)."""
    from .pdk import PDKS

    pdk = PDKS.get(pdk_name or "generic180")
    if pdk is None:
        raise c.fail("pdk", f"must be one of {', '.join(PDKS)}, got {short(pdk_name)}")
    raw = data.get("corners", ["tt"])
    names = list(pdk.corners) if raw == "all" else [str(v) for v in _as_list(raw)]
    for i, name in enumerate(names):
        if name not in pdk.corners:
            raise c.fail(f"corners[{i}]", f"must be one of {', '.join(pdk.corners)} (or 'all'), got {short(name)}")
    return tuple(names)


def _monte_carlo(c: _Checker, mc: dict, levels: tuple[str, ...]) -> MonteCarlo:
    for key in mc:
        c.choices(f"monte_carlo.{str(key)[:40]}", key, ("runs", "seed", "scale", "rank", "top"))
    runs = c.counted(mc, "runs", _RUNS, 0, where="monte_carlo.runs")
    seed = c.counted(mc, "seed", SEED, 1, where="monte_carlo.seed")
    scale = c.number(mc, "scale", NON_NEGATIVE, "monte_carlo.scale") if "scale" in mc else 1.0
    top = c.counted(mc, "top", _TOP, 10, where="monte_carlo.top")
    if runs and "transistor" not in levels:
        raise c.fail("monte_carlo.runs", f"needs the 'transistor' level, which the flow's levels {list(levels)} "
                     "don't run")
    return MonteCarlo(runs, seed, scale, c.typed(mc, "rank", bool, True, where="monte_carlo.rank"), top)
