"""Verification flow files (``flows/*.yaml``): read, validate, normalise.

A flow names a model, the inputs, the levels to run and the gates that
decide the verdict. Unknown keys and wrong types are refused with the file
and the dotted key path, e.g. ``flows/ci.yaml: 'gates[1].limit' must be a
number, got 'abc'``.

Example::

    name: ci
    model: ../examples/random_relu.npz     # relative to the flow file
    inputs: recorded                       # or a .npy path, or "random", or {file: X.npy, labels: y.npy}
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
``points_per_layer`` (transient step cap), ``timeout`` (seconds per ngspice
run, default 600), ``scaling`` (v0, vcm, i0, c_unit
overrides), ``allow_clipped``, ``refine_steps`` (per-device refinement of
the transistor cells, :mod:`kcompile.refine`; default 2 up to 2,000 relu
devices), and ``monte_carlo`` (``runs``, ``seed``,
``scale`` of every σ, ``rank`` the devices, ``top`` devices to report):
mismatch runs at the first corner, temperature and supply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import InputError

LEVELS = ("ideal", "behavioural", "characterised", "transistor")
METRICS = {
    "max_output_error": "largest |level - ideal| over outputs and samples (model units)",
    "accuracy_drop": "ideal accuracy minus level accuracy, in percentage points",
    "mse_ratio": "level MSE / ideal MSE against the labels",
    "mc_percentile_accuracy": "5th-percentile accuracy over Monte Carlo runs, as a floor (percent)",
    "mc_percentile_accuracy_drop": "accuracy of the nominal transistor run minus the 5th-percentile accuracy over "
                                   "the Monte Carlo runs (same corner), in percentage points",
    "mc_p95_output_error": "95th percentile over Monte Carlo runs of the largest |output - ideal| (model units)",
}
_FLOOR_METRICS = {"mc_percentile_accuracy"}
MC_METRICS = {"mc_percentile_accuracy", "mc_percentile_accuracy_drop", "mc_p95_output_error"}


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
    labels: Path | None = None  # .npy labels of an inputs file (one per row), for the accuracy and MSE gates
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
    timeout: float = 600.0  # seconds per ngspice run (a transistor-level MNIST image takes longer)


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
            raise self.fail(where or key, f"must be a {'number' if kind is float else names}, got {value!r}")
        return value

    def choices(self, key: str, value: str, allowed) -> str:
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_flow(path: str | Path) -> Flow:
    """Read and validate a flow file.

    Raises
    ------
    InputError
        Unreadable YAML, unknown keys, wrong types or values, a missing model.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError(f"{path}: no such flow file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a flow file must be a YAML mapping")
    c = _Checker(path)
    known = {"name", "model", "inputs", "batch", "seed", "levels", "pdk", "corners", "temperature", "supply",
             "recalibrate", "points_per_layer", "monte_carlo", "scaling", "gates", "jobs", "scheduler", "cache",
             "allow_clipped", "refine_steps", "timeout"}
    for key in data:
        if key not in known:
            raise c.fail(key, f"is not a flow key (known: {', '.join(sorted(known))})")

    model = (path.parent / c.typed(data, "model", str, required=True)).resolve()
    if not model.is_file():
        raise c.fail("model", f"names {model}, which does not exist")
    labels = None
    if isinstance(data.get("inputs"), dict):  # {file: X.npy, labels: y.npy}
        for key in data["inputs"]:
            c.choices(f"inputs.{key}", key, ("file", "labels"))
        inputs, labels = ((path.parent / c.typed(data["inputs"], key, str, required=True, where=f"inputs.{key}"))
                          .resolve() for key in ("file", "labels"))
    else:
        inputs = c.typed(data, "inputs", str, "recorded")
        if inputs not in ("recorded", "random"):
            inputs = (path.parent / inputs).resolve()
    levels = tuple(c.choices("levels", str(v), LEVELS) for v in _as_list(data.get("levels", ["behavioural"])))
    pdk_name = c.typed(data, "pdk", str, None)
    corners = _corners(c, data, pdk_name)
    temperature = tuple(_number(c, {"t": v}, "t", "temperature") for v in _as_list(data.get("temperature", [27.0])))
    supply = tuple(_number(c, {"v": v}, "v", "supply") for v in _as_list(data.get("supply", [])))
    if any(v <= 0 for v in supply):
        raise c.fail("supply", f"must be positive volts, got {list(supply)}")
    ppl = c.typed(data, "points_per_layer", int, None)
    if ppl is not None and ppl < 10:
        raise c.fail("points_per_layer", f"must be at least 10, got {ppl}")
    monte_carlo = _monte_carlo(c, c.typed(data, "monte_carlo", dict, {}), levels)
    scaling = c.typed(data, "scaling", dict, {})
    for key, value in scaling.items():
        c.choices(f"scaling.{key}", key, ("v0", "vcm", "i0", "c_unit"))
        c.typed(scaling, key, float)

    gates = []
    for i, g in enumerate(c.typed(data, "gates", list, [])):
        if not isinstance(g, dict):
            raise c.fail(f"gates[{i}]", f"must be a mapping with level, metric, limit; got {g!r}")
        for key in g:
            c.choices(f"gates[{i}].{key}", key, ("level", "metric", "limit"))
        gate = Gate(c.choices(f"gates[{i}].level", c.typed(g, "level", str, required=True), LEVELS),
                    c.choices(f"gates[{i}].metric", c.typed(g, "metric", str, required=True), tuple(METRICS)),
                    float(_number(c, g, "limit", f"gates[{i}].limit")))
        if gate.level not in levels and gate.level != "ideal":
            raise c.fail(f"gates[{i}].level", f"is {gate.level!r}, which the flow's levels {list(levels)} don't run")
        if gate.is_monte_carlo and (gate.level != "transistor" or monte_carlo.runs < 2):
            raise c.fail(f"gates[{i}].metric", f"is {gate.metric!r}, which needs level 'transistor' and "
                         f"'monte_carlo.runs' of at least 2 (got level {gate.level!r}, {monte_carlo.runs} runs)")
        gates.append(gate)

    return Flow(
        name=c.typed(data, "name", str, path.stem), path=path, model=model, inputs=inputs, labels=labels,
        batch=c.typed(data, "batch", int, 8), seed=c.typed(data, "seed", int, 0), levels=levels,
        pdk=pdk_name, corners=corners, temperature=temperature, supply=supply,
        recalibrate=c.typed(data, "recalibrate", bool, False), points_per_layer=ppl,
        monte_carlo=monte_carlo, scaling=dict(scaling), gates=tuple(gates),
        jobs=c.typed(data, "jobs", int, None), scheduler=c.typed(data, "scheduler", str, None),
        cache=None if "cache" not in data else (path.parent / c.typed(data, "cache", str)).resolve(),
        allow_clipped=c.typed(data, "allow_clipped", bool, False),
        refine_steps=_non_negative(c, data, "refine_steps"),
        timeout=_timeout(c, data),
    )


def _timeout(c: _Checker, data: dict) -> float:
    if "timeout" not in data:
        return 600.0
    value = _number(c, data, "timeout", "timeout")
    if not value > 0:
        raise c.fail("timeout", f"must be positive seconds, got {value!r}")
    return value


def _non_negative(c: _Checker, data: dict, key: str) -> int | None:
    value = c.typed(data, key, int, None)
    if value is not None and value < 0:
        raise c.fail(key, f"must be 0 or more, got {value}")
    return value


def _corners(c: _Checker, data: dict, pdk_name: str | None) -> tuple[str, ...]:
    """``corners``: a list of the PDK's corner names (first: calibration), or ``all`` (``tt`` first)."""
    from .pdk import PDKS

    pdk = PDKS.get(pdk_name or "generic180")
    if pdk is None:
        raise c.fail("pdk", f"must be one of {', '.join(PDKS)}, got {pdk_name!r}")
    raw = data.get("corners", ["tt"])
    names = list(pdk.corners) if raw == "all" else [str(v) for v in _as_list(raw)]
    for i, name in enumerate(names):
        if name not in pdk.corners:
            raise c.fail(f"corners[{i}]", f"must be one of {', '.join(pdk.corners)} (or 'all'), got {name!r}")
    return tuple(names)


def _monte_carlo(c: _Checker, mc: dict, levels: tuple[str, ...]) -> MonteCarlo:
    for key in mc:
        c.choices(f"monte_carlo.{key}", key, ("runs", "seed", "scale", "rank", "top"))
    runs = c.typed(mc, "runs", int, 0, where="monte_carlo.runs")
    seed = c.typed(mc, "seed", int, 1, where="monte_carlo.seed")
    scale = _number(c, mc, "scale", "monte_carlo.scale") if "scale" in mc else 1.0
    top = c.typed(mc, "top", int, 10, where="monte_carlo.top")
    for key, value, low in (("runs", runs, 0), ("seed", seed, 0), ("scale", scale, 0), ("top", top, 1)):
        if value < low:
            raise c.fail(f"monte_carlo.{key}", f"must be at least {low}, got {value!r}")
    if runs and "transistor" not in levels:
        raise c.fail("monte_carlo.runs", f"needs the 'transistor' level, which the flow's levels {list(levels)} "
                     "don't run")
    return MonteCarlo(runs, seed, scale, c.typed(mc, "rank", bool, True, where="monte_carlo.rank"), top)


def _number(c: _Checker, data: dict, key: str, where: str) -> float:
    if key not in data:
        raise c.fail(where, "is missing")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise c.fail(where, f"must be a number, got {value!r}")
    return float(value)
