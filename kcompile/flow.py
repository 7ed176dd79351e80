"""Verification flow files (``flows/*.yaml``): read, validate, normalise.

A flow names a model, the inputs, the levels to run and the gates that
decide the verdict. Unknown keys and wrong types are refused with the file
and the dotted key path, e.g. ``flows/ci.yaml: 'gates[1].limit' must be a
number, got 'abc'``.

Example::

    name: ci
    model: ../examples/random_relu.npz     # relative to the flow file
    inputs: recorded                       # or a .npy path, or "random"
    batch: 8
    levels: [behavioural]
    gates:
      - {level: behavioural, metric: max_output_error, limit: 1.0e-4}
    jobs: 2                                # local ngspice processes (default: all cores)
    scheduler: tcp://127.0.0.1:8786        # optional: run samples on a Dask cluster
    cache: ../.kcompile-cache              # optional: reuse finished runs by deck hash

Transistor-level keys: ``pdk`` (generic180, sky130, gf180mcu), ``corners``
(the first is the calibration corner; ``all``: every corner of the PDK),
``temperature`` (°C, list), ``supply`` (volts, list; default the PDK's
nominal), ``recalibrate`` (also run every other corner calibrated there),
``points_per_layer`` (transient step cap), ``scaling`` (v0, vcm, i0, c_unit
overrides; without v0, i0 and vcm the network is scaled automatically into
the cells' window, :func:`kcompile.mapping.plan_scaling`), ``allow_clipped``,
``allow_out_of_budget`` (run even when the estimated output error exceeds the
transistor ``max_output_error`` gate), ``refine_steps`` (per-device refinement of
the transistor cells, :mod:`kcompile.refine`; default 2 up to 2,000 relu
devices), and ``monte_carlo`` (``runs``, ``seed``,
``scale`` of every σ, ``rank`` the devices, ``top`` devices to report):
mismatch runs at the first corner, temperature and supply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .checks import CELSIUS, COUNT, FINITE, NON_NEGATIVE, POINTS_PER_LAYER, REFINE_STEPS, SCALING, SEED, Number, short
from .errors import InputError
from .files import read_yaml

LEVELS = ("ideal", "behavioural", "characterised", "transistor")
METRICS = {
    "max_output_error": "largest |level - ideal| over outputs and samples (model units)",
    "accuracy_drop": "ideal accuracy minus level accuracy, in percentage points",
    "mse_ratio": "level MSE / ideal MSE against the labels",
    "mc_percentile_accuracy": "5th-percentile accuracy over Monte Carlo runs, as a floor (percent)",
    "mc_p95_output_error": "95th percentile over Monte Carlo runs of the largest |output - ideal| (model units)",
}
_FLOOR_METRICS = {"mc_percentile_accuracy"}
MC_METRICS = {"mc_percentile_accuracy", "mc_p95_output_error"}


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
class Flow:
    """A validated flow; paths are absolute."""

    name: str
    path: Path
    model: Path
    inputs: str | Path = "recorded"
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
    allow_out_of_budget: bool = False


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(f"{self.path}: '{key}' {problem}")

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

    def relative(self, data: dict, key: str, default=None) -> Path | None:
        """A path relative to the flow file, made absolute."""
        value = self.typed(data, key, str, default)
        if value is None:
            return None
        try:
            path = (self.path.parent / value).resolve()
            path.exists()  # a name the file system refuses (too long, ...) fails here, not later
        except (OSError, ValueError) as exc:
            raise self.fail(key, f"is not a usable path ({getattr(exc, 'strerror', None) or exc}), "
                            f"got {short(value)}") from None
        return path


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: a Dask scheduler address, e.g. tcp://127.0.0.1:8786
SCHEDULER = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://[^\s/]+$")
#: what a gate's limit may be, per metric: errors and ratios are never negative, accuracies are percentages
_LIMITS = {"max_output_error": NON_NEGATIVE, "mse_ratio": NON_NEGATIVE, "mc_p95_output_error": NON_NEGATIVE,
           "accuracy_drop": Number(-100, 100), "mc_percentile_accuracy": Number(0, 100)}
#: Monte Carlo runs per flow, and devices reported
_RUNS = Number(0, 100_000, integer=True)
_TOP = Number(1, 1_000_000, integer=True)
#: supply volts
_VOLTS = Number(0, 100, low_open=True)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_flow(path: str | Path) -> Flow:
    """Read and validate a flow file.

    The file is untrusted: it is read as UTF-8 of at most 1 MiB without YAML
    anchors or aliases (:func:`kcompile.files.read_yaml`), every number must be
    finite and within its range, and every string free of control characters.

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
    c = _Checker(path)
    known = {"name", "model", "inputs", "batch", "seed", "levels", "pdk", "corners", "temperature", "supply",
             "recalibrate", "points_per_layer", "monte_carlo", "scaling", "gates", "jobs", "scheduler", "cache",
             "allow_clipped", "refine_steps", "allow_out_of_budget"}
    for key in data:
        if key not in known:
            raise c.fail(str(key)[:40], f"is not a flow key (known: {', '.join(sorted(known))})")

    if "model" not in data:
        raise c.fail("model", "is missing")
    model = c.relative(data, "model")
    if not model.is_file():
        raise c.fail("model", f"names {model}, which does not exist")
    inputs = c.typed(data, "inputs", str, "recorded")
    if inputs not in ("recorded", "random"):
        inputs = c.relative(data, "inputs")
    levels = tuple(c.choices("levels", str(v), LEVELS) for v in _as_list(data.get("levels", ["behavioural"])))
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
        if gate.is_monte_carlo and (gate.level != "transistor" or monte_carlo.runs < 2):
            raise c.fail(f"gates[{i}].metric", f"is {gate.metric!r}, which needs level 'transistor' and "
                         f"'monte_carlo.runs' of at least 2 (got level {gate.level!r}, {monte_carlo.runs} runs)")
        gates.append(gate)

    return Flow(
        name=c.typed(data, "name", str, path.stem), path=path, model=model, inputs=inputs,
        batch=c.counted(data, "batch", COUNT, 8), seed=c.counted(data, "seed", SEED, 0), levels=levels,
        pdk=pdk_name, corners=corners, temperature=temperature, supply=supply,
        recalibrate=c.typed(data, "recalibrate", bool, False), points_per_layer=ppl,
        monte_carlo=monte_carlo, scaling={k: float(v) for k, v in scaling.items()}, gates=tuple(gates),
        jobs=c.counted(data, "jobs", COUNT), scheduler=scheduler, cache=cache,
        allow_clipped=c.typed(data, "allow_clipped", bool, False),
        refine_steps=c.counted(data, "refine_steps", REFINE_STEPS),
        allow_out_of_budget=c.typed(data, "allow_out_of_budget", bool, False),
    )


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
