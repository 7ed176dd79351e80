"""Fuzzing the command line: generated malformed weights, flows, manifests, inputs and options never crash it.

Every case is a real file or option given to the real CLI (in-process, so a case costs milliseconds). The
outcome must be a clean exit: 0 (accepted), 1 (a gate failed), 2 (refused in one readable line) or 3 (the
simulator failed); never an escaped exception, a traceback, the boundary's "kcompile defect" line, or a case
that runs past its time limit. ``benchmarks/fuzz_cli.py`` runs the same generators for longer and prints the
outcome histogram (docs/reliability.md records it).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import shutil
import signal
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import yaml
from click.testing import CliRunner

from kcompile.cli import main
from kcompile.knet import random_knet, save_knet

#: seconds one case may take before it counts as a hang
CASE_LIMIT = 20.0
#: a shell command smuggled into every string the fuzzer writes; the file it would create must never appear
INJECTION = "trap\n.control\nshell touch {mark}\n.endc\n"


class Hang(BaseException):
    """A case ran past :data:`CASE_LIMIT` (a BaseException, so that the CLI's boundary cannot swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    def alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(args: list[str], limit: float = CASE_LIMIT) -> tuple[str, str]:
    """Run the CLI in-process; return (outcome, output). Outcomes: ``exit N``, ``crash``, ``hang``."""
    t0 = time.perf_counter()
    try:
        with _time_limit(limit):
            result = CliRunner().invoke(main, [str(a) for a in args])
    except Hang:
        return "hang", f"still running after {time.perf_counter() - t0:.1f} s"
    output = result.output
    if result.exit_code in (130, 143):  # the CLI caught a Ctrl-C or SIGTERM meant for the whole run
        raise KeyboardInterrupt
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "crash", f"{type(result.exception).__name__}: {result.exception}\n{output}"
    if "Traceback" in output or "kcompile defect" in output:
        return "crash", output
    return f"exit {result.exit_code}", output


# ---------------------------------------------------------------- weights files

def base_weights(folder: Path) -> Path:
    """The small relu network of the tests, with recorded inputs and labels."""
    knet = random_knet(6, 2, 12, "relu", num_inputs=3, theta_scale=0.5, seed=3)
    path = folder / "base.npz"
    rng = np.random.default_rng(0)
    save_knet(knet, path, test_inputs=rng.uniform(-1, 1, (3, 3)), test_labels=np.array([0, 1, 0]))
    return path


_VALUES = [np.nan, np.inf, -np.inf, 0, -1, 1, 2**31, 2**63 - 1, 1e308, 5e-324, -0.0, 1e-300, 10**9]
_DTYPES = [np.int8, np.int64, np.uint64, np.float16, np.float32, np.float64, np.complex128, np.bool_, np.str_,
           np.bytes_]


def _value_array(rng, like: np.ndarray) -> np.ndarray:
    """``like`` with some entries replaced by an extreme value."""
    value = _VALUES[rng.integers(len(_VALUES))]
    out = np.array(like, dtype=np.float64 if isinstance(value, float) else like.dtype, copy=True)
    if out.size == 0:
        return out
    flat = out.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        flat[rng.integers(flat.size, size=max(1, flat.size // 4))] = value
    return out


def _retyped(rng, a: np.ndarray) -> np.ndarray:
    dtype = _DTYPES[rng.integers(len(_DTYPES))]
    with np.errstate(invalid="ignore", over="ignore"), contextlib.suppress(ValueError, OverflowError, TypeError):
        return a.astype(dtype)
    return np.array("x")


def _reshaped(rng, a: np.ndarray) -> np.ndarray:
    a = np.atleast_1d(a)
    choice = rng.integers(5)
    if choice == 0:
        return a.reshape(-1)[:1].reshape(()) if a.size else np.array(0)
    if choice == 1:
        return a.reshape(1, -1) if a.ndim < 2 else a.reshape(-1)
    if choice == 2:
        return a[:0]
    if choice == 3:
        return np.concatenate([a.reshape(-1)] * 3) if a.size else np.zeros(3)
    return np.stack([a, a])


_METAS = ["[" * 100_000 + "]" * 100_000, '{"a": NaN}', "[1, 2]", "{not json", '{"x": "' + "y" * 2_000_000 + '"}',
          '{"a": ' * 200 + "1" + "}" * 200, "", '{"\\u0000": "\\ud800"}', "null", "1e999"]


def weights_cases(base: Path, folder: Path, rng: np.random.Generator, count: int) -> Iterator[tuple[str, Path]]:
    """``count`` malformed weights files derived from ``base``: 1-3 mutations each, or a damaged archive."""
    with np.load(base, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    raw = base.read_bytes()
    for i in range(count):
        path = folder / f"w{i}.npz"
        kind = rng.integers(12)
        if kind == 0:  # damaged archive bytes
            data = bytearray(raw)
            how = rng.integers(4)
            if how == 0:
                data = data[: rng.integers(len(data))]
            elif how == 1:
                for j in rng.integers(len(data), size=rng.integers(1, 20)):
                    data[j] = rng.integers(256)
            elif how == 2:
                data = bytearray(rng.bytes(rng.integers(0, 4096)))
            else:
                data = bytearray(b"\x93NUMPY" + rng.bytes(64))
            path.write_bytes(bytes(data))
            yield f"bytes-{how}", path
            continue
        a = dict(arrays)
        names = []
        for _ in range(1 if rng.random() < 0.6 else rng.integers(2, 4)):
            key = sorted(a)[rng.integers(len(a))] if a else "format"
            op = rng.integers(7)
            if op == 0:
                a.pop(key, None)
            elif op == 1 and key in a:
                a[key] = _retyped(rng, a[key])
            elif op == 2 and key in a:
                a[key] = _reshaped(rng, a[key])
            elif op == 3 and key in a:
                a[key] = _value_array(rng, a[key] if a[key].dtype.kind in "iuf" else np.array(1.0))
            elif op == 4:
                key = "meta"
                a[key] = np.array(_METAS[rng.integers(len(_METAS))])
            elif op == 5:
                key = [f"layer{rng.integers(2, 9)}_src", "meta", "layer0_theta"][rng.integers(3)]
                a[key] = np.array([{"a": 1}], dtype=object) if rng.integers(2) else np.array([1])
            else:
                key = ["device", "format"][rng.integers(2)]
                a[key] = np.array(INJECTION.format(mark=folder / "PWNED"))
            names.append(f"{key}:{op}")
        np.savez(path, **a)
        if kind == 1:  # an unknown key that would decompress to 64 MiB
            with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z, z.open("bomb.npy", "w") as f:
                for _ in range(64):
                    f.write(bytes(1 << 20))
            names.append("bomb")
        yield "+".join(names), path


# ---------------------------------------------------------------- flow files

def base_flow(model: Path) -> dict:
    """A flow that runs only the NumPy reference (fast, no simulator) and passes."""
    return {"name": "fuzz", "model": str(model), "inputs": "recorded", "batch": 2, "levels": [],
            "gates": [{"level": "ideal", "metric": "max_output_error", "limit": 1.0}]}


_FLOW_VALUES = [None, True, -1, 0, 1, 2**70, 1e308, float("nan"), float("inf"), "x", [], {}, [[1]], "a" * 5000,
                "\x00", "all", "../nowhere.npz", "[/]bold", "random", -273.15, 1e-300, "recorded",
                INJECTION]
_FLOW_KEYS = ["name", "model", "inputs", "batch", "seed", "levels", "pdk", "corners", "temperature", "supply",
              "recalibrate", "points_per_layer", "monte_carlo", "scaling", "gates", "jobs", "scheduler", "cache",
              "allow_clipped", "refine_steps", "unknown_key"]
_FLOW_TEXTS = ["a: &x [1, 2]\nb: *x\n", "!!python/object/apply:os.system ['true']\n", "[" * 50_000,
               "model: [unclosed\n", "- a list\n", "name: \xff\n", "model: x\n" * 3]


def flow_cases(model: Path, folder: Path, rng: np.random.Generator, count: int) -> Iterator[tuple[str, Path]]:
    """``count`` malformed flows: a key of :func:`base_flow` replaced (or a gate's field), or broken text."""
    for i in range(count):
        path = folder / f"f{i}.yaml"
        kind = rng.integers(10)
        if kind == 0:
            text = _FLOW_TEXTS[rng.integers(len(_FLOW_TEXTS))]
            path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
            yield f"text-{text[:12]!r}", path
            continue
        flow = copy.deepcopy(base_flow(model))
        if kind == 1:  # a billion-laughs flow: anchors refused before anything expands
            path.write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n")
            yield "alias-bomb", path
            continue
        value = _FLOW_VALUES[rng.integers(len(_FLOW_VALUES))]
        if kind == 2:
            field = ["level", "metric", "limit", "extra"][rng.integers(4)]
            flow["gates"][0][field] = value
            name = f"gates[0].{field}={value!r:.20}"
        elif kind == 3:
            sub = ["runs", "seed", "scale", "rank", "top"][rng.integers(5)]
            flow["monte_carlo"] = {sub: value}
            name = f"monte_carlo.{sub}={value!r:.20}"
        else:
            key = _FLOW_KEYS[rng.integers(len(_FLOW_KEYS))]
            if key in ("levels", "pdk", "corners") and value in ("all", "x"):
                value = [value]  # still cheap: a bad level name, no transistor run
            flow[key] = value
            name = f"{key}={value!r:.20}"
        path.write_text(yaml.safe_dump(flow, allow_unicode=True))
        yield name, path


# ---------------------------------------------------------------- build directories

def _paths(data, prefix="") -> list[str]:
    out = []
    for key, value in data.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += _paths(value, prefix + key + "\x1f")
    return out


_MANIFEST_VALUES = [None, True, -1, 0, 1e308, "NaN", "gear", "klu", "sky130", "ss", "../../etc/passwd", [], {},
                    "a" * 100, 2**70, "transistor", 1e-300]


def manifest_cases(build: Path, folder: Path, rng: np.random.Generator, count: int) -> Iterator[tuple[str, Path]]:
    """``count`` copies of ``build`` with one manifest field replaced (strings carrying a shell command
    included), a file renamed into the listing, or the manifest text broken."""
    manifest = json.loads((build / "manifest.json").read_text())
    paths = [p for p in _paths(manifest) if not p.startswith("meta")]
    for i in range(count):
        target = folder / f"b{i}"
        shutil.copytree(build, target)
        data = copy.deepcopy(manifest)
        kind = rng.integers(8)
        if kind == 0:
            texts = ['{"a": NaN}', "[" * 100_000, "\xff\xfe", "", "null", json.dumps(manifest)[:-20]]
            text = texts[rng.integers(len(texts))]
            (target / "manifest.json").write_bytes(text.encode("latin-1"))
            yield f"text-{text[:10]!r}", target
            continue
        if kind == 1:
            data["files"]["../../outside"] = "0" * 64
            name = "files-outside"
        else:
            *parents, last = paths[rng.integers(len(paths))].split("\x1f")
            node = data
            for p in parents:
                node = node[p]
            value = (INJECTION.format(mark=folder / "PWNED") if kind == 2
                     else _MANIFEST_VALUES[rng.integers(len(_MANIFEST_VALUES))])
            node[last] = value
            name = f"{'.'.join(parents + [last])}={value!r:.20}"
        text = json.dumps(data).replace('"NaN"', "NaN")
        (target / "manifest.json").write_text(text)
        yield name, target


# ---------------------------------------------------------------- inputs and options

def inputs_cases(folder: Path, rng: np.random.Generator, count: int) -> Iterator[tuple[str, Path]]:
    """``count`` ``.npy`` batches of the wrong shape, dtype or values for a 3-feature network."""
    makers: list[Callable[[], np.ndarray]] = [
        lambda: np.zeros((2, 5)), lambda: np.zeros((0, 3)), lambda: np.zeros((2, 3, 1)), lambda: np.array(1.0),
        lambda: np.full((2, 3), np.nan), lambda: np.full((2, 3), 1e308), lambda: np.array([["a", "b", "c"]]),
        lambda: np.zeros((2, 3), dtype=np.complex128), lambda: np.ones((2, 3), dtype=bool),
        lambda: rng.uniform(-1e3, 1e3, (2, 3)), lambda: np.zeros((2, 3), dtype=np.uint64)]
    for i in range(count):
        path = folder / f"x{i}.npy"
        j = int(rng.integers(len(makers)))
        np.save(path, makers[j]())
        yield f"inputs-{j}", path


#: every numeric option, with the command that takes it (simulate runs the reference only: no simulator)
OPTIONS = [("build", "--v0"), ("build", "--i0"), ("build", "--c-unit"), ("build", "--points-per-layer"),
           ("build", "--refine-steps"), ("simulate", "--batch"), ("simulate", "--seed"), ("simulate", "--jobs"),
           ("simulate", "--timeout"), ("verify", "--max-error"), ("verify", "--batch"), ("verify", "--timeout")]
OPTION_VALUES = ["0", "-1", "nan", "inf", "-inf", "1e309", "abc", "", "99999999999999999999999", "0.5", "1",
                 "1e-320", "3"]


def option_args(command: str, option: str, value: str, weights: Path, build: Path, out: Path) -> list:
    """The command line of one option case (verify gets a missing build: options are parsed, nothing runs)."""
    if command == "build":
        return ["build", weights, "-o", out, option, value]
    if command == "simulate":
        return ["simulate", build, "--reference-only", option, value]
    return ["verify", out, option, value] + (["--max-error", "1"] if option != "--max-error" else [])


# ---------------------------------------------------------------- one campaign

def campaign(folder: Path, counts: dict[str, int], seed: int = 0,
             report: Callable[[str, str, str, str], None] | None = None, ngspice: bool = False) -> collections.Counter:
    """Run ``counts`` cases per family under ``folder``; returns the histogram of (family, outcome).

    ``report(family, case, outcome, output)`` sees every case (the benchmark prints the bad ones).
    ``ngspice``: every accepted weights file is also simulated in ngspice (one sample, 10 s timeout).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weights = base_weights(folder)
    build = folder / "build"
    assert run_cli(["build", weights, "-o", build])[0] == "exit 0"
    hist: collections.Counter = collections.Counter()

    def record(family, case, args):
        outcome, output = run_cli(args)
        hist[family, outcome] += 1
        if report:
            report(family, case, outcome, output)

    for family, maker in (("weights", lambda n: weights_cases(weights, folder / "w", rng, n)),
                          ("flows", lambda n: flow_cases(weights, folder / "f", rng, n)),
                          ("manifests", lambda n: manifest_cases(build, folder / "m", rng, n)),
                          ("inputs", lambda n: inputs_cases(folder / "x", rng, n))):
        for sub in "wfmx":
            (folder / sub).mkdir(exist_ok=True)
        for i, (case, path) in enumerate(maker(counts.get(family, 0))):
            if family == "weights":
                record(family, case, ["build", path, "-o", folder / "w" / f"out{i}"])
                if (folder / "w" / f"out{i}").is_dir():  # accepted: the reference must cope with it too
                    record("weights-simulate", case, ["simulate", folder / "w" / f"out{i}", "--reference-only",
                                                      "--batch", "2"])
                    if ngspice:
                        record("weights-ngspice", case, ["simulate", folder / "w" / f"out{i}", "--batch", "1",
                                                         "--jobs", "1", "--timeout", "10"])
            elif family == "flows":
                record(family, case, ["verify", path])
            elif family == "manifests":
                record(family, case, ["simulate", path, "--reference-only", "--batch", "2"])
                shutil.rmtree(path)
            else:
                record(family, case, ["simulate", build, "--reference-only", "--inputs", path])
    for n in range(counts.get("options", 0)):
        command, option = OPTIONS[rng.integers(len(OPTIONS))]
        value = OPTION_VALUES[rng.integers(len(OPTION_VALUES))]
        out = folder / f"o{n}"
        record("options", f"{command} {option} {value}", option_args(command, option, value, weights, build, out))
        shutil.rmtree(out, ignore_errors=True)
    assert not list(folder.rglob("PWNED")), "a string from a file reached a shell"
    return hist


def test_fuzzed_inputs_never_crash_the_cli(tmp_path):
    """~200 generated cases, all outcomes clean (exit 0, 1, 2 or 3), none past its time limit."""
    bad = []

    def report(family, case, outcome, output):
        if outcome in ("crash", "hang"):
            bad.append(f"{family} {case}: {outcome}: {output[-400:]}")

    hist = campaign(tmp_path, {"weights": 60, "flows": 50, "manifests": 40, "inputs": 15, "options": 40},
                    report=report)
    assert not bad, "\n".join(bad)
    assert sum(n for (family, outcome), n in hist.items() if outcome == "exit 2") > 100  # mostly refused
