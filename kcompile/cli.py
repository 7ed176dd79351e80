"""Command line: ``kcompile build | simulate | verify | import-reference | train``.

Exit status: 0 success, 1 a fidelity gate failed, 2 bad input or usage,
3 the simulator failed. Errors print one line (plus the simulator log tail
for simulator failures), never a traceback.

One vocabulary across commands: ``-o/--out`` what the command writes,
``--json`` a summary on stdout, ``-q`` only results and problems, ``-v``
every row and detail. Results go to stdout; what the command is doing
(phases, progress, timings) and warnings to stderr. An option that does
not apply to what the command was given stops it with exit 2 instead of
being ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from click.core import ParameterSource
import numpy as np
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn)
from rich.progress import Task as BarTask
from rich.table import Table
from rich.text import Text

from . import __version__, progress
from .backends import DEFAULT, SIMULATORS, get_simulator
from .build import (MAX_TRANSISTOR_DEVICES, Build, build as build_dir, modified_files, open_build,
                    scaling_lines)
from .checks import CELL_AREA, COUNT, NON_NEGATIVE, POINTS_PER_LAYER, POSITIVE, REFINE_STEPS, SEED, Number
from .characterised import CHAR_ATOL, CHAR_RTOL
from .compare import (FLOAT32_RTOL, METHODS, PRECISIONS, Comparison, ReferenceSettings, TaskScore, compare,
                      meta_task, reference_settings, task_of, task_scores)
from .errors import InputError, KCompileError
from .files import atomic_write, check_output_file
from .generation import check_latent_use, latent_batch
from .inputs import load_inputs, random_inputs
from .knet import MAX_FEATURES
from .mapping import transistor_scaling
from .netlist import RUN_TIMEOUT, SOLVERS, run_timeout
from .osdi import DEVICES
from .scaling import Scaling
from .pdk import CORNERS, PDKS, get_pdk
from .reference import Trajectory
from .simulate import SpiceResult, batch_size

# Messages carry file names, flow names and simulator output: printed as plain text, never as rich markup.
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
out = Console(markup=False, highlight=False, soft_wrap=True)


def _tagged(tag: str, style: str, text: str = "") -> Text:
    """``tag`` in ``style``, then ``text`` verbatim."""
    return Text.assemble((tag, style), (" " + text) if text else "")


def _warn(text: str, tag: str = "warning:") -> None:
    console.print(_tagged(tag, "yellow", text), soft_wrap=True)


# ---------------------------------------------------------------- -q / -v, and options that do not apply

#: ``-q``: only results and problems; ``-v``: every row and detail (set by each command's options)
_verbosity = {"quiet": False, "verbose": False}


def _set_verbosity(ctx, param, value):
    _verbosity[param.name] = bool(value)
    if _verbosity["quiet"] and _verbosity["verbose"]:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")


_VERBOSITY = [
    click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
                 help="Only results, warnings and errors: no phases, progress or timings."),
    click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbosity,
                 help="Every sample's row and every detail."),
]


def _decorated(options):
    """Apply a list of click decorators (shared option groups) in order."""
    def apply(f):
        for decorator in reversed(options):
            f = decorator(f)
        return f
    return apply


def _info(text: str) -> None:
    """What the command is doing, on stderr; silent under ``-q``."""
    if not _verbosity["quiet"]:
        console.print(text, highlight=False, soft_wrap=True)


class _Amount(MofNCompleteColumn):
    """How far a bar is: ``done/total``, or its own ``amount`` field (a transient's ``37 % (t = 1.2 µs of 3.2 µs)``;
    empty for a step of unknown length)."""

    def render(self, task: BarTask) -> Text:
        amount = task.fields.get("amount")
        return super().render(task) if amount is None else Text(amount, style="progress.download")


class _Remaining(ProgressColumn):
    """What is left of a bar at its pace so far (``about 12 min left``), once that pace is known; else empty."""

    def render(self, task: BarTask) -> Text:
        left = task.time_remaining
        if task.finished or not task.total or left is None:
            return Text("")
        return Text(f"about {_seconds(left)} left", style="progress.remaining")


#: seconds of a bar's history its pace is taken over: a transistor-level sample may take tens of minutes
PACE_WINDOW = 3600.0


def _progress(*columns, get_time=None) -> Progress:
    """Bars on stderr, on a terminal only (off one, e.g. in CI, the steps' end lines are all that is printed)."""
    return Progress(*columns, BarColumn(), _Amount(), TimeElapsedColumn(), _Remaining(), console=console,
                    transient=True, disable=_verbosity["quiet"] or not console.is_terminal,
                    speed_estimate_period=PACE_WINDOW, get_time=get_time)


def _seconds(s: float) -> str:
    return f"{s:.2g} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


@contextlib.contextmanager
def _phase(text: str):
    """Say what a long step does while it runs (a spinner), then how long it took (one line)."""
    t0 = time.perf_counter()
    if _verbosity["quiet"]:
        yield
        return
    with console.status(text + " ..."):
        yield
    _info(f"{text}: {_seconds(time.perf_counter() - t0)}")


def _given(*names: str) -> list[str]:
    """The options among ``names`` (parameter names) that were set on the command line, as their flags."""
    ctx = click.get_current_context()
    return [max(p.opts, key=len) for p in ctx.command.params if p.name in names and ctx.get_parameter_source(
        p.name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)]


def _refuse(names: tuple[str, ...], why: str) -> None:
    """Exit 2 naming the given options among ``names`` that do not apply, and ``why``."""
    flags = _given(*names)
    if flags:
        raise InputError(f"{', '.join(flags)} {'does' if len(flags) == 1 else 'do'} not apply {why}")


def _verdict(ok: bool, word: str = "PASS") -> Text:
    """``word`` in green when ``ok``, else FAIL in bold red (in the gate table too: a failed gate reads FAIL)."""
    return Text(word, style="green") if ok else Text("FAIL", style="bold red")


class _Terminated(BaseException):
    """SIGTERM (what a CI timeout sends) or SIGHUP: unwinds like Ctrl-C so that temporaries are removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + signum


def _raise_terminated(signum, frame):
    raise _Terminated(signum)


def _debug() -> bool:
    return os.environ.get("KCOMPILE_DEBUG", "") not in ("", "0")


class _Number(click.ParamType):
    """A number on the command line, checked by a :class:`~kcompile.checks.Number` rule (finite, integer,
    bounds): ``--batch 0`` or ``--timeout nan`` stop with click's usage error (exit 2)."""

    def __init__(self, rule: Number):
        self.rule, self.name = rule, "integer" if rule.integer else "number"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                value = int(value) if self.rule.integer else float(value)
            except ValueError:
                self.fail(f"{value[:40]!r} is not {'an integer' if self.rule.integer else 'a number'}", param, ctx)
        problem = self.rule.problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


def _address(value: str | None) -> str | None:
    from .flow import SCHEDULER

    if value is not None and not SCHEDULER.match(value):
        raise click.BadParameter(f"must be a Dask scheduler address like tcp://HOST:PORT, got {value[:60]!r}")
    return value


#: seconds an ngspice run may take (at most 11 days: a bound the OS timers accept)
_TIMEOUT = Number(0, 1e6, low_open=True)


class _Group(click.Group):
    """The one error boundary: every failure ends in one readable line and an exit status.

    0 success, 1 a gate failed, 2 bad input or usage, 3 the simulator or the
    environment failed, 130/143 interrupted or terminated (temporaries
    removed). ``KCOMPILE_DEBUG=1`` re-raises with the traceback.
    """

    def main(self, *args, **kwargs):
        handlers = {}
        if sys.platform != "win32":
            try:
                for sig in (signal.SIGTERM, signal.SIGHUP):
                    handlers[sig] = signal.signal(sig, _raise_terminated)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            return super().main(*args, **kwargs)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KCompileError as exc:
            self._fail(ctx, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted; nothing half-written was kept", 130)
        except _Terminated as exc:
            self._fail(ctx, "terminated by a signal; nothing half-written was kept", exc.exit_code)
        except RecursionError:
            self._fail(ctx, "input nested too deeply to read (a JSON or YAML structure hundreds of levels deep?)", 2)
        except MemoryError:
            self._fail(ctx, "out of memory: the input asks for more than this machine has; use a smaller batch "
                       "or network", 2)
        except OSError as exc:
            if _debug():
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            self._fail(ctx, f"{where}{exc.strerror or exc} (the file system or the environment refused; "
                       "check the path and its permissions)", 3)
        except Exception as exc:  # a defect of kcompile's: still one line, the traceback on request
            if _debug():
                raise
            self._fail(ctx, f"unexpected {type(exc).__name__}: {exc} (a kcompile defect: rerun with "
                       "KCOMPILE_DEBUG=1 for the traceback and report it)", 2)

    @staticmethod
    def _fail(ctx, message: str, code: int):
        console.print(_tagged("error:", "bold red", message), soft_wrap=True)
        ctx.exit(code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="kcompile")
def main():
    """Compile KirchhoffNet weights into ngspice circuits and verify them."""
    _verbosity.update(quiet=False, verbose=False)
    out.width = None if out.is_terminal else 200  # piped or captured: tables whole, never cut to 80 columns


#: options of ``build`` that only transistor-level cells take
_TRANSISTOR_ONLY = ("pdk", "corner", "allow_clipped", "refine_steps", "scaling_mode", "calibration", "max_error",
                    "allow_out_of_budget", "max_devices", "cell_area")


@main.command()
@click.argument("weights", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Build directory (default: build/<weights name>).")
@click.option("--cells", type=click.Choice(["behavioural", "transistor"]), default="behavioural", show_default=True,
              help="One behavioural source per device, or one calibrated transistor-level cell per device.")
@click.option("--pdk", type=click.Choice(list(PDKS)), default="generic180", show_default=True,
              help="PDK of the transistor cells (--cells transistor).")
@click.option("--corner", type=click.Choice(CORNERS), default="tt", show_default=True,
              help="Process corner of the transistor cells (--cells transistor).")
@click.option("--allow-clipped", is_flag=True,
              help="Build devices whose θ lies outside the calibrated range, clipped (--cells transistor).")
@click.option("--v0", type=_Number(POSITIVE), default=None,
              help="Volts per model voltage unit (transistor default 0.1).")
@click.option("--i0", type=_Number(POSITIVE), default=None,
              help="Amperes per model current unit (transistor default 5e-7).")
@click.option("--c-unit", type=_Number(POSITIVE), default=None,
              help="Farads per model capacitance unit (transistor default 3e-11).")
@click.option("--points-per-layer", type=_Number(POINTS_PER_LAYER), default=None,
              help="Transient step cap: 1/N of the shortest layer "
                   "(default 1000 behavioural, 500 from 10,000 devices, 400 transistor).")
@click.option("--refine-steps", type=_Number(REFINE_STEPS), default=None,
              help="Per-device refinement steps of transistor cells from their measured I-V "
                   "(default 2 up to 2,000 devices, else 0).")
@click.option("--solver", type=click.Choice(SOLVERS), default=None,
              help="ngspice linear solver (default klu from 10,000 devices, else sparse; "
                   "an ngspice without KLU, e.g. Debian 12's 39, ignores klu: see scripts/ngspice_klu.sh).")
@click.option("--scaling", "scaling_mode", type=click.Choice(["auto", "manual"]), default=None,
              help="Transistor cells: fit every node into the cells' window by an exact rescaling of the network "
                   "(auto, the default), or use --v0/--i0 as given (manual, the default with them).")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Transistor cells: inputs [B, F] (.npy) for the range analysis and the budget "
                   "(default: the recorded test inputs, else 64 seeded uniform ones).")
@click.option("--max-error", type=_Number(NON_NEGATIVE), default=None,
              help="Transistor cells: the output error (model units) the estimated budget must meet "
                   "(default: 10 % of the network's swing, at least 0.15).")
@click.option("--allow-out-of-budget", is_flag=True,
              help="Build even when the estimated output error exceeds --max-error.")
@click.option("--max-devices", type=_Number(COUNT), default=MAX_TRANSISTOR_DEVICES, show_default=True,
              help="Transistor cells: refuse networks with more devices.")
@click.option("--cell-area", type=_Number(CELL_AREA), default=1.0, show_default=True,
              help="Transistor cells: draw every cell this many times as large (same W/L and currents; mismatch "
                   "sigma / sqrt(area), gate area x area).")
@click.option("--devices", type=click.Choice(DEVICES), default=None,
              help="Behavioural devices as compiled Verilog-A modules (OSDI; the build holds the .va) or ngspice "
                   "B-sources (default osdi where ngspice loads OSDI, e.g. the 46 of scripts/setup.sh; else bsource).")
@click.option("--testbench", is_flag=True,
              help="Also write tb.cir: the first recorded input as a deck that runs with plain "
                   "'ngspice -b BUILD/tb.cir' from any directory and prints the outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary of the build on stdout.")
@_decorated(_VERBOSITY)
def build(weights: Path, out_dir: Path | None, cells, pdk, corner, allow_clipped, v0, i0, c_unit, points_per_layer,
          refine_steps, solver, scaling_mode, calibration, max_error, allow_out_of_budget, max_devices, cell_area,
          devices, testbench, as_json):
    """Validate WEIGHTS (kcompile.knet/1 .npz) and write netlists and a manifest."""
    if cells == "behavioural":
        _refuse(_TRANSISTOR_ONLY, "to behavioural cells: add --cells transistor")
    out_dir = out_dir or Path("build") / weights.stem
    overrides = {k: v for k, v in {"v0": v0, "i0": i0, "c_unit": c_unit}.items() if v is not None}
    if scaling_mode == "auto" and {"v0", "i0"} & set(overrides):
        raise click.UsageError("--v0/--i0 fix the scaling, --scaling auto chooses it: give one or the other")
    if cells == "transistor":
        scaling_mode = scaling_mode or ("manual" if {"v0", "i0"} & set(overrides) else "auto")
    base = transistor_scaling(get_pdk(pdk)) if cells == "transistor" else Scaling()
    with _steps():
        b = build_dir(weights, out_dir, dataclasses.replace(base, **overrides), cells=cells, pdk=pdk, corner=corner,
                      allow_clipped=allow_clipped, points_per_layer=points_per_layer, refine_steps=refine_steps,
                      solver=solver, scaling_mode=scaling_mode, calibration=calibration, max_error=max_error,
                      allow_out_of_budget=allow_out_of_budget, max_devices=max_devices, devices=devices,
                      testbench=testbench, cell_area=cell_area)
    m = b.manifest
    layers = ", ".join(f"{layer['devices']}" for layer in m["layers"])
    for note in m.get("notes", []):
        _warn(note, tag="note:")
    what = ("compiled Verilog-A devices (OSDI; " + ", ".join(f for f in m["files"] if f.endswith(".va")) + ")"
            if m["cells"].get("devices") == "osdi" else "behavioural sources") if cells == "behavioural" else (
        f"{m['cells']['cell']} cells on {pdk}/{corner} (tau = {b.scaling.tau:.3g} s; "
        f"{m['cells']['clipped']} clipped; largest |achieved - target θ| {m['cells']['max_theta_error']:.3g})")
    if as_json:
        click.echo(json.dumps({"build": str(out_dir), "law": m["law"], "num_nodes": m["num_nodes"],
                               "num_devices": m["num_devices"], "layers": [layer["devices"] for layer in m["layers"]],
                               "cells": m["cells"], "conditions": _conditions(b), "files": sorted(m["files"]),
                               "warnings": m.get("warnings", [])}))
    else:
        out.print(f"built {out_dir}: {m['law']} law, {m['num_nodes']} nodes, {m['num_devices']} devices "
                  f"(per layer: {layers}), {len(m['layers'])} layers; {what}", highlight=False, soft_wrap=True)
        if cells == "transistor":
            for line in scaling_lines(m["cells"]):
                out.print(line, highlight=False, soft_wrap=True)
    for w in m.get("warnings", []):
        _warn(w)


@contextlib.contextmanager
def _steps():
    """Show kcompile's long steps (:mod:`kcompile.progress`) on stderr: a bar while each runs, a line when it ends
    (how long, and what came from the cache)."""
    with _progress(TextColumn("{task.description}")) as bar, progress.listening(_listener(bar)):
        yield


def _listener(bar: Progress):
    """A :mod:`kcompile.progress` listener drawing on ``bar``."""
    from .report import si  # the reports' SI formatting; imported here, as cli.py imports report everywhere else

    bars, said = {}, set()

    def listen(event: progress.Event) -> None:
        key = event.key or (event.label, event.total)
        if event.kind == "start":
            bars[key] = bar.add_task(event.label, total=event.total, amount="" if event.total is None else None)
        elif event.kind == "advance" and key in bars:
            amount = None  # a count: done/total; a measure (a transient's simulated time): how much of how much
            if event.unit and event.total:
                amount = (f"{100 * event.done / event.total:.0f} % ({'t = ' if event.unit == 's' else ''}"
                          f"{si(event.done, event.unit)} of {si(event.total, event.unit)})")
            bar.update(bars[key], completed=event.done, amount=amount)
        elif event.kind == "end" and key in bars:
            bar.remove_task(bars.pop(key))
            if not event.summary or event.elapsed < 1.0 and event.label in said:
                return  # a run's inner stage, or the same quick step again (refinement re-maps and re-measures)
            said.add(event.label)
            cache = ("" if not event.cached else ", from the cache" if event.cached == event.done
                     else f", {event.cached} of {event.done} from the cache")
            _info(f"{event.label}: {_seconds(event.elapsed)}{cache}")

    return listen


def _conditions(b: Build, spice: SpiceResult | None = None) -> dict:
    """The build's physical conditions (:func:`kcompile.report.conditions`), with the energy of a run."""
    from .report import conditions

    cells = b.manifest["cells"]
    if not b.transistor:
        return conditions(b.scaling, cells="osdi" if cells.get("devices") == "osdi" else "behavioural")
    energy = None if spice is None or spice.energy is None else float(np.mean(spice.energy))
    return conditions(b.scaling, cells="transistor", cell=cells["cell"], pdk=cells["pdk"], corners=[cells["corner"]],
                      temperatures=[27.0 if b.tran.temp is None else b.tran.temp], supplies=[cells["supply"]],
                      energy=energy, latency=float(b.knet.t_bounds[-1]) * b.scaling.tau,
                      area=cells.get("area", 1.0), gate_area=cells.get("gate_area_um2"))


# ---------------------------------------------------------------- simulate and verify a build

@dataclass(frozen=True, eq=False)
class _Run:
    """One batch through a build: the reference, optionally the characterised ODE and the simulator."""

    build: Build
    inputs: np.ndarray
    source: str
    labels: np.ndarray | None
    settings: ReferenceSettings
    reference: Trajectory
    spice: SpiceResult | None = None
    comparison: Comparison | None = None
    characterised: Trajectory | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def knet(self):
        return self.build.knet

    @property
    def swing(self) -> float | None:
        """Peak |v| of the ideal network on a transistor build's calibration inputs (its scaling plan)."""
        return self.build.manifest["cells"].get("scaling_plan", {}).get("peak")

    def relative(self, error: float) -> str:
        """`` (x % of the swing ±S)`` for a transistor build, else nothing."""
        return "" if not self.swing else f" ({100 * error / self.swing:.3g} % of the swing ±{self.swing:.3g})"

    @property
    def level(self) -> str:
        """What the simulator ran: ``transistor`` or ``behavioural``."""
        return "transistor" if self.build.transistor else "behavioural"

    @property
    def task(self) -> str | None:
        """``classification`` or ``regression`` (labels or the weights' meta), else ``None``."""
        return task_of(self.knet, self.labels) or meta_task(self.knet)

    def outputs(self) -> dict[str, np.ndarray]:
        """``{level: [B, M]}``: reference, characterised, and the simulator's level."""
        levels = {"reference": self.reference.outputs}
        if self.characterised is not None:
            levels["characterised"] = self.characterised.outputs
        if self.spice is not None:
            levels[self.level] = self.spice.outputs
        return levels

    def scores(self) -> list[TaskScore]:
        return task_scores(self.task, self.outputs(), self.labels)


def _characterised(b: Build, x: np.ndarray, settings: ReferenceSettings) -> Trajectory | None:
    """For a transistor build: the ODE with every cell's measured DC I–V (cached sweeps)."""
    if not b.transistor:
        return None
    cells = b.manifest["cells"]
    # the tables' own error is 1e-3 units and more: their ODE needs no tighter tolerance unless one is given
    tol = {"rtol": settings.rtol, "atol": settings.atol} if _given("rtol") or _given("atol") else {
        "rtol": max(settings.rtol, CHAR_RTOL), "atol": max(settings.atol, CHAR_ATOL)}
    step = f"rtol {tol['rtol']:g}, atol {tol['atol']:g}" if settings.method == "dopri5" else f"dt {settings.dt:g}"
    _info(f"characterised reference: every cell's DC I-V on {cells['pdk']}/{cells['corner']} (cached after the "
          f"first run), then the ODE ({settings.method}, {step})")
    with _steps():
        return b.characterised(x, method=settings.method, dt=settings.dt, **tol)


def _inputs(b: Build, path: Path | None, batch: int, seed: int,
            latent: int | None = None) -> tuple[np.ndarray, str, np.ndarray | None]:
    """The batch, where it comes from, and its labels (recorded test inputs only)."""
    if latent is not None:  # a generative model's standard-normal latents
        _refuse(("inputs", "batch"), "with --latent, which draws the batch (standard-normal latents)")
        check_latent_use(b.knet, str(b.path), "--latent", True)
        return latent_batch(b.knet, latent, seed), f"{latent} standard-normal latents (seed {seed})", None
    if path is not None:
        _refuse(("batch", "seed"), "with --inputs, which gives the batch")
        return load_inputs(path, b.knet), str(path), None
    recorded = b.recorded("inputs")
    if recorded is not None:
        _refuse(("seed",), "to this build: it records test inputs, which are used instead of a random batch "
                "(--inputs X.npy for others)")
        labels = b.recorded("labels")
        n = min(batch, len(recorded))
        which = f"all {n}" if n == len(recorded) else f"the first {n} of the {len(recorded)}"
        return recorded[:n], f"{which} test inputs recorded with the model", None if labels is None else labels[:n]
    check_latent_use(b.knet, str(b.path), "--batch (no --inputs, nothing recorded)", False)
    return random_inputs(b.knet, batch, seed), f"a random batch of {batch} (uniform in [-1, 1], seed {seed})", None


def _settings(knet, gate: float | None, method: str, rtol, atol, dt, precision: str) -> ReferenceSettings:
    """The reference's settings from the options; options that do not apply exit 2."""
    if method == "rk4":
        _refuse(("rtol", "atol"), "to --method rk4, a fixed-step method: give its step with --dt")
    else:
        _refuse(("dt",), "to --method dopri5, which chooses its own steps: give --rtol/--atol")
    if precision == "float32" and rtol is not None and rtol < FLOAT32_RTOL:
        raise InputError(f"--rtol {rtol:g} is below what --precision float32 can meet ({FLOAT32_RTOL:g}); use "
                         "--precision float64 or a looser --rtol")
    return reference_settings(knet, gate, method=method, rtol=rtol, atol=atol, dt=dt, precision=precision)


def _run(build_path: Path, inputs: Path | None, use_spice: bool, batch: int, seed: int, jobs: int | None,
         timeout: float, keep_runs: Path | None, reference: dict, gate: float | None = None,
         simulator: str | None = None, latent: int | None = None) -> _Run:
    b = open_build(build_path)
    if not use_spice:
        _refuse(("jobs", "timeout", "keep_runs"), "with --reference-only, which runs no simulator")
    x, source, labels = _inputs(b, inputs, batch, seed, latent)
    settings = _settings(b.knet, gate, **reference)
    for name in modified_files(b):
        _warn(f"{build_path / name} changed since it was built")
    for w in b.manifest.get("warnings", []):
        _warn(w, tag="warning (from the build):")
    _info(f"inputs: {source}")
    seconds = {}
    t0 = time.perf_counter()
    with _phase(f"reference: {len(x)} sample(s), {settings.describe()}"):
        ref = settings.integrate(b.knet, x)
    seconds["reference"] = time.perf_counter() - t0
    outside = _outside_window(b, ref)
    if outside:
        _warn(outside)
    char = _characterised(b, x, settings)
    if not use_spice:
        return _Run(b, x, source, labels, settings, ref, characterised=char, seconds=seconds)
    sim = get_simulator(simulator or DEFAULT)
    if not _given("timeout"):
        timeout = run_timeout(b.knet, b.tran, b.transistor)
    if b.tran.solver == "klu" and not sim.has_klu():
        _warn(f"this {sim.name} has no KLU solver, so it factors with Sparse 1.3 (about half as fast on MNIST-size "
              "networks); scripts/setup.sh installs one that has it", tag="note:")
    t0 = time.perf_counter()
    with _progress(TextColumn("{task.description}")) as bar, progress.listening(_listener(bar)):
        task = bar.add_task(sim.name, total=len(x))  # and one bar per run in flight: its transient
        batched = latent is not None and sim.has_batch() and not b.transistor
        samples_per_run = batch_size(b.knet, len(x), jobs) if batched else 1  # transistor decks: one sample each
        spice = b.simulate(x, jobs=jobs, timeout=timeout, run_root=keep_runs, progress=lambda n: bar.advance(task, n),
                           simulator=sim.name, batch=samples_per_run)
    seconds["spice"] = time.perf_counter() - t0
    _info(f"{sim.describe()}: {len(x)} sample(s) in {_seconds(seconds['spice'])}"
          + (f" ({spice.cached} from the cache)" if spice.cached else ""))
    return _Run(b, x, source, labels, settings, ref, spice, compare(ref.states, spice.states, b.knet.output_nodes),
                char, seconds)


def _outside_window(b: Build, ref: Trajectory) -> str | None:
    """For a transistor build: where this batch's ideal node voltages (layer ends) leave the cells' window further
    than on the inputs the build was scaled for, in volts; else ``None``."""
    plan = b.manifest["cells"].get("scaling_plan") if b.transistor else None
    if not plan:
        return None
    (w0, w1), (p0, p1), sc = plan["window_volts"], plan["volts"], b.scaling
    lo, hi = sc.vcm + sc.v0 * float(ref.states.min()), sc.vcm + sc.v0 * float(ref.states.max())
    if lo >= min(w0, p0) and hi <= max(w1, p1):
        return None
    return (f"on these inputs the ideal node voltages reach {lo:.3g} to {hi:.3g} V at the layer ends, outside cell "
            f"{b.manifest['cells']['cell']}'s window {w0:g} to {w1:g} V (the build was scaled for "
            f"{plan['ranges']['source']}: {p0:.3g} to {p1:.3g} V), so the cells leave their measured range and the "
            "characterised and transistor levels will be inaccurate; rebuild with --calibration X.npy holding "
            "inputs like these")


def _table(run: _Run, rows: int) -> Table:
    """The first ``rows`` samples: outputs per level (up to 4 outputs, or all with -v), classes, error."""
    knet = run.knet
    levels = run.outputs()
    classify = run.task == "classification"
    values = knet.output_nodes.size <= 4 or _verbosity["verbose"] or not classify  # classes stand for many outputs
    short = {"reference": "ref", "characterised": "char", "behavioural": "spice", "transistor": "spice"}
    t = Table(title="outputs at t_L (model units)" + ("; class: the largest output" if classify else ""))
    t.add_column("sample", justify="right")
    if run.labels is not None:
        t.add_column("label", justify="right")
    if values:
        for node in knet.output_nodes.tolist():
            for level in levels:
                t.add_column(f"{short[level]} n{node}", justify="right")
    if classify:
        for level in levels:
            t.add_column(f"class {short[level]}", justify="right")
    if run.comparison is not None:
        t.add_column("max |err|", justify="right")
    classes = {level: np.argmax(o, axis=1) for level, o in levels.items()}
    for b in range(min(rows, len(run.inputs))):
        cells = [str(b)] + ([f"{run.labels[b]:g}"] if run.labels is not None else [])
        if values:
            cells += [f"{levels[level][b, m]:.6f}" for m in range(knet.output_nodes.size) for level in levels]
        if classify:
            ref = classes["reference"][b]
            cells += [Text(str(c[b]), style="" if c[b] == ref else "bold red") for c in classes.values()]
        if run.comparison is not None:
            cells.append(f"{run.comparison.output_error[b].max():.2e}")
        t.add_row(*cells)
    return t


def _score_lines(run: _Run) -> list[str]:
    """The task figures over the whole batch, one line per level."""
    scores = {s.level: s for s in run.scores()}
    if not scores:
        return []
    ref = scores["reference"]
    n = ref.samples
    names = {"characterised": "characterised", "behavioural": "behavioural (ngspice)",
             "transistor": "transistor (ngspice)"}
    if run.task == "classification":
        lines = [f"reference: accuracy {ref.accuracy:.1f} % over {n} labelled samples" if ref.accuracy is not None
                 else f"reference: {n} samples, no labels recorded: class agreement only"]
        for level, s in scores.items():
            if level != "reference":
                acc = "" if s.accuracy is None else f", accuracy {s.accuracy:.1f} % (reference {ref.accuracy:.1f} %)"
                lines.append(f"{names[level]}: class agreement {s.agreement}/{n}{acc}")
        return lines
    lines = [f"reference: MSE {ref.mse:.4g} against the labels over {n} samples"]
    lines += [f"{names[level]}: MSE {s.mse:.4g} (reference {ref.mse:.4g})" for level, s in scores.items()
              if level != "reference"]
    return lines


def _error_lines(run: _Run) -> list[str]:
    """Where the simulator departs from the reference: outputs, the worst node and layer, every layer's end."""
    c = run.comparison
    if c is None:
        return []
    k, node, err = c.worst_node()
    worst_out = int(run.knet.output_nodes[c.worst_output])
    t_bounds = run.knet.t_bounds
    per_layer = ", ".join(f"layer {j - 1} {c.boundary_error[j]:.2e} (n{int(np.argmax(c.node_error[j])) + 1})"
                          for j in range(1, len(c.boundary_error)))
    return [(f"largest |spice - reference| at the outputs: {c.max_output_error:.3e}{run.relative(c.max_output_error)} "
             f"(sample {c.worst_sample}, "
             f"n{worst_out}); over every node: {err:.3e} at n{node}, end of layer {max(k - 1, 0)} "
             f"(t = {t_bounds[k]:g})"),
            f"largest error over all nodes at the end of each layer: {per_layer}"]


def _characterised_lines(run: _Run) -> list[str]:
    if run.characterised is None:
        return []
    outs = run.knet.output_nodes - 1
    gaps = [("ideal -> characterised (cells' DC law)", run.reference.states, run.characterised.states)]
    if run.spice is not None:
        gaps.append(("characterised -> transistor (dynamics, switching)", run.characterised.states, run.spice.states))
    gap = [np.abs(a[:, -1, outs] - b[:, -1, outs]).max() for _, a, b in gaps]
    return [f"{label}: largest output gap {g:.3e}{run.relative(g)}" for (label, _, _), g in zip(gaps, gap)]


def _report(run: _Run) -> None:
    from .report import conditions_lines

    shown = len(run.inputs) if _verbosity["verbose"] else min(8, len(run.inputs))
    out.print(_table(run, shown))
    if shown < len(run.inputs):
        out.print(f"showing {shown} of {len(run.inputs)} samples (-v shows all); the figures below cover all "
                  f"{len(run.inputs)}", highlight=False, soft_wrap=True)
    for line in (_score_lines(run) + _error_lines(run) + _characterised_lines(run)
                 + conditions_lines(_conditions(run.build, run.spice))):
        out.print(line, highlight=False, soft_wrap=True)
    if run.spice is not None and run.spice.energy is not None and _verbosity["verbose"]:
        out.print(f"energy per inference: max {run.spice.energy.max():.3g} J over the batch", highlight=False,
                  soft_wrap=True)


def _summary(run: _Run) -> dict:
    """Plain data of a run, for ``--json`` and ``--out``."""
    data = {"build": str(run.build.path), "inputs": run.source, "samples": len(run.inputs), "task": run.task,
            "labels": run.labels is not None,
            "reference": {**run.settings.as_dict(), "seconds": run.seconds.get("reference")},
            "scores": [s.as_dict() for s in run.scores()], "conditions": _conditions(run.build, run.spice),
            "warnings": run.build.manifest.get("warnings", []), "seconds": run.seconds, "swing": run.swing}
    c = run.comparison
    if c is not None:
        k, node, err = c.worst_node()
        data.update(level=run.level, max_output_error=c.max_output_error, worst_sample=c.worst_sample,
                    worst_node={"node": node, "boundary": k, "t": float(run.knet.t_bounds[k]), "error": err},
                    boundary_error=c.boundary_error.tolist())
    if run.characterised is not None:
        outs = run.knet.output_nodes - 1
        data["characterised_max_output_gap"] = float(
            np.abs(run.characterised.states[:, -1, outs] - run.reference.states[:, -1, outs]).max())
    return data


def _save(path: Path, run: _Run, summary: dict) -> None:
    knet = run.knet
    data = {"inputs": run.inputs, "reference": run.reference.outputs, "reference_states": run.reference.states,
            "t_bounds": np.asarray(knet.t_bounds), "output_nodes": knet.output_nodes,
            "summary": np.array(json.dumps(summary))}
    if run.labels is not None:
        data["labels"] = run.labels
    if run.spice is not None:
        data.update(spice=run.spice.outputs, spice_states=run.spice.states)
        if run.spice.energy is not None:
            data.update(energy=run.spice.energy, latency=float(run.knet.t_bounds[-1]) * run.build.scaling.tau)
    if run.characterised is not None:
        data.update(characterised=run.characterised.outputs, characterised_states=run.characterised.states)
    names = {"reference": "reference", "characterised": "characterised", "behavioural": "spice", "transistor": "spice"}
    if run.task == "classification":
        data.update({f"{names[level]}_classes": np.argmax(o, axis=1) for level, o in run.outputs().items()})
    for s in run.scores():
        for key, value in (("class_agreement", s.agreement), ("accuracy", s.accuracy), ("mse", s.mse)):
            if value is not None:
                data[f"{names[s.level]}_{key}"] = np.array(value)
    with atomic_write(path, what="results file") as f:
        np.savez(f, **data)
    _info(f"wrote {path}")


_INPUT_OPTIONS = [
    click.option("--inputs", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Input batch [B, F] as .npy (default: recorded test inputs, else a seeded random batch)."),
    click.option("--batch", type=_Number(COUNT), default=8, show_default=True,
                 help="Samples when no --inputs is given (the first of the recorded test inputs)."),
    click.option("--seed", type=_Number(SEED), default=0, show_default=True,
                 help="Seed of the random batch (weights without recorded test inputs), or of simulate --latent."),
]
_SIMULATOR_OPTIONS = [
    click.option("--jobs", "-j", type=_Number(COUNT), default=None,
                 help="Parallel ngspice processes (default: all cores)."),
    click.option("--timeout", type=_Number(_TIMEOUT), default=RUN_TIMEOUT, show_default=True,
                 help="Seconds per ngspice run (transistor builds: at least 3.5 ms per cell and time step)."),
    click.option("--keep-runs", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Keep every ngspice run directory under this folder."),
    click.option("--simulator", type=click.Choice(sorted(SIMULATORS)), default=None,
                 help=f"Simulator back end (default {DEFAULT}; vacask: behavioural builds of compiled devices); "
                      "for a FLOW it overrides the flow's 'simulator'."),
]
#: the reference integrator (kcompile.compare.reference_settings chooses what is not given)
_REFERENCE_OPTIONS = [
    click.option("--method", type=click.Choice(METHODS), default="dopri5", show_default=True,
                 help="Reference integrator: adaptive Dormand-Prince 5(4), or fixed-step RK4."),
    click.option("--rtol", type=_Number(Number(0, 1, low_open=True)), default=None,
                 help="dopri5 relative tolerance (default 1e-9 below 10,000 devices; from 10,000 on: "
                      "max-error/1000 for verify, 1e-6 for simulate; printed)."),
    click.option("--atol", type=_Number(POSITIVE), default=None, help="dopri5 absolute tolerance (default rtol/100)."),
    click.option("--dt", type=_Number(POSITIVE), default=None, help="RK4 step in model time units (default 0.01)."),
    click.option("--precision", type=click.Choice(PRECISIONS), default="float64", show_default=True,
                 help="Reference arithmetic: float32 is ~2.5x faster on large networks but cannot meet "
                      f"rtol below {FLOAT32_RTOL:g}."),
]
_REFERENCE_NAMES = ("method", "rtol", "atol", "dt", "precision")


@main.command()
@click.argument("build_path", metavar="BUILD", type=click.Path(file_okay=False, path_type=Path))
@_decorated(_INPUT_OPTIONS + _SIMULATOR_OPTIONS)
@click.option("--ngspice/--reference-only", "use_spice", default=True,
              help="Simulate in ngspice and compare (default), or run only the NumPy reference.")
@_decorated(_REFERENCE_OPTIONS)
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write results (.npz): reference[_states], spice[_states], inputs, labels, classes, scores "
                   "and a JSON 'summary'.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout instead of the table.")
@click.option("--latent", type=_Number(COUNT), default=None,
              help="For a generative model: N standard-normal latent samples (seed --seed), several per ngspice run "
                   "(batched decks).")
@_decorated(_VERBOSITY)
def simulate(build_path, inputs, batch, seed, jobs, timeout, keep_runs, simulator, use_spice, out_path, as_json,
             latent, **reference):
    """Simulate BUILD for a batch of inputs and compare ngspice with the reference.

    Prints each sample's outputs (classes for a classifier), then over the
    whole batch: class agreement and accuracy (or MSE), the largest errors
    and where they occur, and the physical conditions.
    """
    if out_path is not None:
        check_output_file(out_path, "results file")  # before the simulation, not after it
    run = _run(build_path, inputs, use_spice, batch, seed, jobs, timeout, keep_runs, reference, simulator=simulator,
               latent=latent)
    summary = _summary(run)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        _report(run)
    if out_path is not None:
        _save(out_path, run, summary)


#: verify options that only a build directory takes, and those that only a flow takes
_BUILD_ONLY = ("max_error", "inputs", "batch", "seed", "keep_runs") + _REFERENCE_NAMES
_FLOW_ONLY = ("junit", "report", "scheduler", "cache", "overrides")


@main.command()
@click.argument("target", metavar="BUILD|FLOW.yaml", type=click.Path(path_type=Path))
@click.option("--max-error", type=_Number(NON_NEGATIVE), default=None,
              help="For a BUILD: largest allowed |spice - reference| at the outputs.")
@_decorated(_INPUT_OPTIONS + _SIMULATOR_OPTIONS + _REFERENCE_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For a FLOW: write JUnit XML, one test case per gate.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For a FLOW: write a self-contained HTML report.")
@click.option("--scheduler", default=None, callback=lambda ctx, param, value: _address(value),
              help="For a FLOW: run samples on a Dask cluster (tcp://HOST:PORT).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="For a FLOW: reuse finished ngspice runs stored here (keyed by deck hash).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="For a FLOW: replace a key of the flow file (YAML value; dotted for nested keys), e.g. "
                   "--set batch=1 --set monte_carlo.runs=2.")
@_decorated(_VERBOSITY)
def verify(target, max_error, inputs, batch, seed, jobs, timeout, keep_runs, as_json, junit, report, scheduler,
           cache, overrides, simulator, **reference):
    """Check fidelity; exit 0 when every gate holds, 1 when one fails.

    TARGET is a build directory (gate: --max-error against the reference) or
    a flow file (flows/*.yaml: levels, gates, reports; change its keys with
    --set KEY=VALUE).
    """
    if target.suffix in (".yaml", ".yml"):
        _refuse(_BUILD_ONLY, "to a flow, whose keys set inputs, batch, gates and levels: change them with --set, "
                "e.g. --set batch=1")
        _verify_flow(target, jobs, timeout, as_json, junit, report, scheduler, cache, overrides, simulator)
    _refuse(_FLOW_ONLY, "to a build directory (only to a flow file)")
    if max_error is None:
        raise InputError("--max-error is required when verifying a build directory")
    run = _run(target, inputs, True, batch, seed, jobs, timeout, keep_runs, reference, gate=max_error,
               simulator=simulator)
    c = run.comparison
    ok = c.passes(max_error)
    if as_json:
        click.echo(json.dumps({"passed": ok, "max_error": max_error, **_summary(run)}))
    else:
        _report(run)
        out.print(Text.assemble(_verdict(ok), f": largest output error {c.max_output_error:.3e} "
                                f"{'<=' if ok else '>'} max-error {max_error:g}"))
    raise SystemExit(0 if ok else 1)


def _verify_flow(path: Path, jobs: int | None, timeout: float, as_json: bool, junit: Path | None,
                 report: Path | None, scheduler: str | None, cache: Path | None, overrides: tuple[str, ...],
                 simulator: str | None = None):
    from .flow import load_flow
    from .report import conditions_lines, summary, write_html, write_junit
    from .verify import run_flow

    for f, what in ((junit, "JUnit report"), (report, "HTML report")):
        if f is not None:
            check_output_file(f, what)  # before the flow runs, not after it
    flow = load_flow(path, overrides)
    given = {"jobs": jobs, "scheduler": scheduler, "cache": cache, "simulator": simulator,
             "timeout": timeout if _given("timeout") else None}
    flow = dataclasses.replace(flow, **{k: v for k, v in given.items() if v is not None})
    _info(f"flow {flow.name}: levels {', '.join(('ideal',) + flow.levels)}; {len(flow.gates)} gate(s)"
          + (f"; {' '.join(f'--set {o}' for o in overrides)}" if overrides else ""))
    with _progress(TextColumn("{task.description}")) as bar, progress.listening(_listener(bar)):
        tasks = {}

        def samples(label, done, total):
            if label not in tasks:
                tasks[label] = (bar.add_task(label, total=total), time.perf_counter())
            bar.update(tasks[label][0], completed=done)
            if done >= total:
                count = f"{total} runs in " if total > 1 else ""
                bar.console.print(f"{label}: {count}{_seconds(time.perf_counter() - tasks[label][1])}",
                                  highlight=False, soft_wrap=True) if not _verbosity["quiet"] else None

        result = run_flow(flow, progress=samples)
    for w in result.warnings:
        _warn(w, tag="warning (transistor-level circuit):")
    if junit:
        write_junit(result, junit)
    if report:
        write_html(result, report)
    data = summary(result)
    if as_json:
        click.echo(json.dumps(data))
    else:
        _flow_tables(result, data)
        for line in conditions_lines(data["conditions"]):
            out.print(line, highlight=False, soft_wrap=True)
        if data.get("monte_carlo"):
            out.print(_mc_line(data["monte_carlo"], result.task), highlight=False, soft_wrap=True)
        for g in data["gates"]:
            if not g["passed"]:
                out.print(Text.assemble(_verdict(False), " " + g["detail"]), soft_wrap=True)
        out.print(_verdict(result.passed))
    for f in (junit, report):
        if f:
            _info(f"wrote {f}")
    raise SystemExit(0 if result.passed else 1)


def _flow_tables(result, data: dict) -> None:
    """The levels (errors, worst node, task figures) and the gates of a flow, for the terminal."""
    t = Table(title=f"flow {data['flow']}: {data['samples']} samples, {result.inputs_source}")
    metric = {"classification": "accuracy %", "regression": "MSE"}.get(result.task)
    for col in ("level", "corner", "max |output - ideal|", "worst node") + (("class agreement",) if any(
            lv["class_agreement"] is not None for lv in data["levels"]) else ()) + ((metric,) if metric else ()):
        t.add_column(col, justify="right")
    first = next((i for i, lv in enumerate(data["levels"]) if lv["level"] == "transistor"), None)
    rows = [lv for i, lv in enumerate(data["levels"])
            if _verbosity["verbose"] or lv["level"] != "transistor" or i == first]
    for lv in rows:
        w = lv["worst_node"]
        cells = [lv["level"], lv["corner"], f"{lv['max_output_error']:.3e}",
                 "-" if lv["level"] == "ideal" else f"n{w['node']} end of layer {max(w['boundary'] - 1, 0)}"]
        if len(t.columns) > 4 + (metric is not None):
            cells.append("-" if lv["class_agreement"] is None else f"{lv['class_agreement']}/{data['samples']}")
        if metric:
            cells.append("-" if lv["task_metric"] is None else f"{lv['task_metric']:.4g}")
        t.add_row(*cells)
    out.print(t)
    if len(rows) < len(data["levels"]):
        out.print(f"(the nominal transistor run; {len(data['levels']) - len(rows)} more corner runs with -v, and in "
                  "--report / --json)", highlight=False, soft_wrap=True)
    t = Table(title="gates")
    for col in ("gate", "limit", "value", "verdict"):
        t.add_column(col, justify="right")
    for g in data["gates"]:
        t.add_row(Text(g["name"] + ("" if g["corner"] == "-" else f" [{g['corner']}]")), f"{g['limit']:g}",
                  "-" if g["value"] is None else f"{g['value']:.4g}", _verdict(g["passed"], "pass"))
    out.print(t)


def _mc_line(mc: dict, task: str | None) -> str:
    """One paragraph on the Monte Carlo runs for the terminal."""
    e = mc["output_error"]
    text = (f"Monte Carlo: {mc['runs']} mismatch runs at {mc['corner']} (seed {mc['seed']}): largest |output - ideal| "
            f"mean {e['mean']:.3g}, 95th percentile {e['p95']:.3g}, worst {e['worst']:.3g}")
    m = mc.get("task_metric")
    if m:
        tail = f"5th percentile {m['p5']:.4g}" if task == "classification" else f"95th percentile {m['p95']:.4g}"
        text += f"; task metric mean {m['mean']:.4g}, worst {m['worst']:.4g}, {tail}"
    a = mc.get("attribution")
    if a and a["top_devices"]:
        top = ", ".join(f"layer{d['layer']}[{d['index']}] {100 * d['share']:.0f}%" for d in a["top_devices"][:3])
        text += f". Dominant devices: {top} (linear attribution explains {a['explained_variance']:.2f} of the spread)"
    return text


@main.command("import-reference")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights file to write (kcompile.knet/1).")
@click.option("--num-features", type=_Number(Number(1, MAX_FEATURES, integer=True)), default=None,
              help="Input width, when the config's test_bench is unknown.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary of the network on stdout.")
@_decorated(_VERBOSITY)
def import_reference_command(model: Path, config: Path, out_path: Path, num_features: int | None, as_json: bool):
    """Convert a checkpoint of the paper's reference code (MODEL.pth + CONFIG.yaml)."""
    from .importer import import_reference
    from .knet import save_knet

    check_output_file(out_path, "weights file")
    with _phase(f"reading {model}"):
        knet = import_reference(model, config, num_features=num_features)
    save_knet(knet, out_path)  # whole or not at all
    if as_json:
        click.echo(json.dumps({"weights": str(out_path), "law": knet.law, "num_nodes": knet.num_nodes,
                               "num_devices": knet.num_devices, "num_layers": knet.num_layers}))
    else:
        out.print(f"wrote {out_path}: {knet.law} law, {knet.num_nodes} nodes, {knet.num_devices} devices, "
                  f"{knet.num_layers} layers", highlight=False, soft_wrap=True)


def _register_optional_commands() -> None:
    from .train import train_command  # imports neither torch nor scikit-learn until it runs

    main.add_command(train_command)


_register_optional_commands()
