"""Command line: ``kcompile build | simulate | verify``.

Exit status: 0 success, 1 a fidelity gate failed, 2 bad input or usage,
3 the simulator failed. Errors print one line (plus the simulator log tail
for simulator failures), never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from . import __version__, ngspice, progress
from .build import (MAX_TRANSISTOR_DEVICES, Build, build as build_dir, modified_files, open_build,
                    scaling_lines)
from .checks import COUNT, NON_NEGATIVE, POINTS_PER_LAYER, POSITIVE, REFINE_STEPS, SEED, Number
from .compare import Comparison, compare
from .errors import KCompileError
from .files import atomic_write, check_output_file
from .inputs import load_inputs, random_inputs
from .knet import MAX_FEATURES
from .mapping import transistor_scaling
from .netlist import SOLVERS
from .scaling import Scaling
from .pdk import get_pdk
from .reference import Trajectory, integrate
from .simulate import SpiceResult

# Messages carry file names, flow names and simulator output: printed as plain text, never as rich markup.
console = Console(stderr=True, markup=False, highlight=False)
out = Console(markup=False, highlight=False)


def _tagged(tag: str, style: str, text: str = "") -> Text:
    """``tag`` in ``style``, then ``text`` verbatim."""
    return Text.assemble((tag, style), (" " + text) if text else "")


def _warn(text: str, tag: str = "warning:") -> None:
    console.print(_tagged(tag, "yellow", text), soft_wrap=True)


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


@main.command()
@click.argument("weights", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build directory (default: build/<weights name>).")
@click.option("--cells", type=click.Choice(["behavioural", "transistor"]), default="behavioural", show_default=True,
              help="One behavioural source per device, or one calibrated transistor-level cell per device.")
@click.option("--pdk", default="generic180", show_default=True,
              help="PDK for transistor cells: generic180, sky130, gf180mcu.")
@click.option("--corner", default="tt", show_default=True, help="Process corner for transistor cells.")
@click.option("--allow-clipped", is_flag=True,
              help="Build devices whose θ lies outside the calibrated range, clipped.")
@click.option("--v0", type=_Number(POSITIVE), default=None,
              help="Volts per model voltage unit (transistor default 0.1).")
@click.option("--i0", type=_Number(POSITIVE), default=None,
              help="Amperes per model current unit (transistor default 5e-7).")
@click.option("--c-unit", type=_Number(POSITIVE), default=None,
              help="Farads per model capacitance unit (transistor default 1e-11).")
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
def build(weights: Path, out_dir: Path | None, cells, pdk, corner, allow_clipped, v0, i0, c_unit, points_per_layer,
          refine_steps, solver, scaling_mode, calibration, max_error, allow_out_of_budget, max_devices):
    """Validate WEIGHTS (kcompile.knet/1 .npz) and write netlists and a manifest."""
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
                      allow_out_of_budget=allow_out_of_budget, max_devices=max_devices)
    m = b.manifest
    layers = ", ".join(f"{layer['devices']}" for layer in m["layers"])
    what = "behavioural sources" if cells == "behavioural" else (
        f"{m['cells']['cell']} cells on {pdk}/{corner} (tau = {b.scaling.tau:.3g} s; "
        f"{m['cells']['clipped']} clipped; largest |achieved - target θ| {m['cells']['max_theta_error']:.3g})")
    console.print(f"built {out_dir}: {m['law']} law, {m['num_nodes']} nodes, {m['num_devices']} devices "
                  f"(per layer: {layers}), {len(m['layers'])} layers; {what}", highlight=False)
    if cells == "transistor":
        for line in scaling_lines(m["cells"]):
            console.print(line, highlight=False, soft_wrap=True)
    for w in m.get("warnings", []):
        _warn(w)


@contextlib.contextmanager
def _steps():
    """Show kcompile's long steps (:mod:`kcompile.progress`) on stderr: a bar while each runs, a line when it ends
    (how long, and what came from the cache)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar, progress.listening(_listener(bar)):
        yield


def _listener(bar: Progress):
    """A :mod:`kcompile.progress` listener drawing on ``bar``."""
    bars, said = {}, set()

    def listen(event: progress.Event) -> None:
        key = (event.label, event.total)
        if event.kind == "start":
            bars[key] = bar.add_task(event.label, total=event.total)
        elif event.kind == "advance" and key in bars:
            bar.update(bars[key], completed=event.done)
        elif event.kind == "end" and key in bars:
            bar.remove_task(bars.pop(key))
            if event.elapsed < 1.0 and event.label in said:
                return  # the same quick step again (refinement re-maps and re-measures)
            said.add(event.label)
            cache = ("" if not event.cached else ", from the cache" if event.cached == event.done
                     else f", {event.cached} of {event.done} from the cache")
            console.print(f"{event.label}: {event.elapsed:.1f} s{cache}", highlight=False, soft_wrap=True)

    return listen


@dataclass(frozen=True, eq=False)
class _Run:
    knet: object
    inputs: np.ndarray
    source: str
    reference: Trajectory
    spice: SpiceResult | None
    comparison: Comparison | None
    characterised: Trajectory | None = None
    tau: float = 1.0
    swing: float | None = None  # peak |v| of the ideal network on the build's calibration inputs

    def relative(self, error: float) -> str:
        """`` (x % of the swing ±S)`` for a transistor build, else nothing."""
        return "" if not self.swing else f" ({100 * error / self.swing:.3g} % of the swing ±{self.swing:.3g})"


def _characterised(b: Build, x: np.ndarray) -> Trajectory | None:
    """For a transistor build: the ODE with every cell's measured DC I–V (cached sweeps)."""
    if b.manifest["cells"].get("level") != "transistor":
        return None
    console.print("characterised reference: every cell's DC I-V (cached after the first run)", highlight=False)
    with _steps():
        char = b.characterised(x)
    return char


def _inputs(b: Build, path: Path | None, batch: int, seed: int) -> tuple[np.ndarray, str]:
    if path is not None:
        return load_inputs(path, b.knet), str(path)
    recorded = b.recorded("inputs")
    if recorded is not None:
        return recorded[:batch], f"the {min(batch, len(recorded))} first test inputs recorded with the model"
    return random_inputs(b.knet, batch, seed), f"a random batch of {batch} (uniform in [-1, 1], seed {seed})"


def _run(build_path: Path, inputs: Path | None, use_spice: bool, batch: int, seed: int, jobs: int | None,
         timeout: float, keep_runs: Path | None) -> _Run:
    b = open_build(build_path)
    for name in modified_files(b):
        _warn(f"{build_path / name} changed since it was built")
    x, source = _inputs(b, inputs, batch, seed)
    console.print(f"inputs: {source}", highlight=False)
    ref = integrate(b.knet, x)
    char = _characterised(b, x)
    swing = b.manifest["cells"].get("scaling_plan", {}).get("peak")
    if not use_spice:
        return _Run(b.knet, x, source, ref, None, None, char, b.scaling.tau, swing)
    console.print(f"ngspice {ngspice.version()} ({ngspice.binary()}), {len(x)} sample(s)", highlight=False)
    if b.tran.solver == "klu" and not ngspice.has_klu():
        _warn("this ngspice has no KLU solver, so it factors with Sparse 1.3 (about half as fast on MNIST-size "
              "networks); scripts/ngspice_klu.sh fetches one that has it", tag="note:")
    with Progress(TextColumn("ngspice"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("", total=len(x))
        spice = b.simulate(x, jobs=jobs, timeout=timeout, run_root=keep_runs, progress=lambda n: bar.advance(task, n))
    return _Run(b.knet, x, source, ref, spice, compare(ref.states, spice.states, b.knet.output_nodes), char,
                b.scaling.tau, swing)


def _table(run: _Run, rows: int = 8) -> Table:
    knet = run.knet
    t = Table(title="outputs at t_L (model units)")
    t.add_column("sample", justify="right")
    for m, node in enumerate(knet.output_nodes.tolist()):
        t.add_column(f"ref n{node}", justify="right")
        if run.spice is not None:
            t.add_column(f"spice n{node}", justify="right")
    if run.spice is not None:
        t.add_column("max |err|", justify="right")
    for b in range(min(rows, len(run.inputs))):
        cells = [str(b)]
        for m in range(len(knet.output_nodes)):
            cells.append(f"{run.reference.outputs[b, m]:.6f}")
            if run.spice is not None:
                cells.append(f"{run.spice.outputs[b, m]:.6f}")
        if run.comparison is not None:
            cells.append(f"{run.comparison.output_error[b].max():.2e}")
        t.add_row(*cells)
    return t


def _report(run: _Run) -> None:
    out.print(_table(run))
    c = run.comparison
    if c is not None:
        per_layer = "  ".join(f"t{k}={e:.1e}" for k, e in enumerate(c.boundary_error))
        out.print(f"largest |spice - reference| at the outputs: {c.max_output_error:.3e}"
                  f"{run.relative(c.max_output_error)} (sample {c.worst_sample}); all nodes per boundary: {per_layer}",
                  highlight=False)
    if run.spice is not None and run.spice.energy is not None:
        latency = float(run.knet.t_bounds[-1]) * run.tau
        out.print(f"physical latency t_L·tau = {latency:.3g} s; energy per inference (supply) "
                  f"mean {run.spice.energy.mean():.3g} J, max {run.spice.energy.max():.3g} J", highlight=False)
    if run.characterised is not None:
        outs = run.knet.output_nodes - 1
        gaps = [("ideal -> characterised (cells' DC law)", run.reference.states, run.characterised.states)]
        if run.spice is not None:
            gaps.append(("characterised -> transistor (dynamics, switching)", run.characterised.states,
                         run.spice.states))
        for label, a, b in gaps:
            gap = np.abs(a[:, -1, outs] - b[:, -1, outs]).max()
            out.print(f"{label}: largest output gap {gap:.3e}{run.relative(gap)}", highlight=False)


def _save(path: Path, run: _Run) -> None:
    knet = run.knet
    data = {"inputs": run.inputs, "reference": run.reference.outputs, "reference_states": run.reference.states,
            "t_bounds": np.asarray(knet.t_bounds), "output_nodes": knet.output_nodes}
    if run.spice is not None:
        data.update(spice=run.spice.outputs, spice_states=run.spice.states)
        if run.spice.energy is not None:
            data.update(energy=run.spice.energy, latency=float(run.knet.t_bounds[-1]) * run.tau)
    if run.characterised is not None:
        data.update(characterised=run.characterised.outputs, characterised_states=run.characterised.states)
    with atomic_write(path, what="results file") as f:
        np.savez(f, **data)
    console.print(f"wrote {path}", highlight=False)


_common = [
    click.argument("build_path", metavar="BUILD", type=click.Path(file_okay=False, path_type=Path)),
    click.option("--inputs", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Input batch [B, F] as .npy (default: recorded test inputs, else a seeded random batch)."),
    click.option("--batch", type=_Number(COUNT), default=8, show_default=True,
                 help="Samples when no --inputs is given."),
    click.option("--seed", type=_Number(SEED), default=0, show_default=True, help="Seed of the random batch."),
    click.option("--jobs", "-j", type=_Number(COUNT), default=None,
                 help="Parallel ngspice processes (default: all cores)."),
    click.option("--timeout", type=_Number(_TIMEOUT), default=600.0, show_default=True,
                 help="Seconds per ngspice run."),
    click.option("--keep-runs", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Keep every ngspice run directory under this folder."),
]


def _with_common(f):
    for decorator in reversed(_common):
        f = decorator(f)
    return f


@main.command()
@_with_common
@click.option("--ngspice/--reference-only", "use_spice", default=True,
              help="Simulate in ngspice and compare (default), or run only the NumPy reference.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write results (.npz): reference[_states], spice[_states], inputs.")
def simulate(build_path, inputs, batch, seed, jobs, timeout, keep_runs, use_spice, out_path):
    """Simulate BUILD for a batch of inputs and compare ngspice with the reference."""
    if out_path is not None:
        check_output_file(out_path, "results file")  # before the simulation, not after it
    run = _run(build_path, inputs, use_spice, batch, seed, jobs, timeout, keep_runs)
    _report(run)
    if out_path is not None:
        _save(out_path, run)


@main.command()
@click.argument("target", metavar="BUILD|FLOW.yaml", type=click.Path(path_type=Path))
@click.option("--max-error", type=_Number(NON_NEGATIVE), default=None,
              help="For a BUILD: largest allowed |spice - reference| at the outputs.")
@click.option("--inputs", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For a BUILD: input batch [B, F] as .npy.")
@click.option("--batch", type=_Number(COUNT), default=8, show_default=True,
              help="For a BUILD: samples when no --inputs is given.")
@click.option("--seed", type=_Number(SEED), default=0, show_default=True, help="For a BUILD: seed of the random batch.")
@click.option("--jobs", "-j", type=_Number(COUNT), default=None,
              help="Parallel ngspice processes (default: all cores).")
@click.option("--timeout", type=_Number(_TIMEOUT), default=600.0, show_default=True,
              help="Seconds per ngspice run.")
@click.option("--keep-runs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="For a BUILD: keep every ngspice run directory under this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For a FLOW: write JUnit XML, one test case per gate.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For a FLOW: write a self-contained HTML report.")
@click.option("--scheduler", default=None, callback=lambda ctx, param, value: _address(value),
              help="For a FLOW: run samples on a Dask cluster (tcp://HOST:PORT).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="For a FLOW: reuse finished ngspice runs stored here (keyed by deck hash).")
def verify(target, max_error, inputs, batch, seed, jobs, timeout, keep_runs, as_json, junit, report, scheduler,
           cache):
    """Check fidelity; exit 0 when every gate holds, 1 when one fails.

    TARGET is a build directory (gate: --max-error against the reference) or
    a flow file (flows/*.yaml: levels, gates, reports).
    """
    if target.suffix in (".yaml", ".yml"):
        _verify_flow(target, jobs, as_json, junit, report, scheduler, cache)
    if max_error is None:
        raise click.UsageError("--max-error is required when verifying a build directory")
    run = _run(target, inputs, True, batch, seed, jobs, timeout, keep_runs)
    c = run.comparison
    ok = c.passes(max_error)
    if as_json:
        click.echo(json.dumps({"passed": ok, "max_output_error": c.max_output_error, "max_error": max_error,
                               "worst_sample": c.worst_sample, "samples": len(run.inputs),
                               "boundary_error": c.boundary_error.tolist(), "inputs": run.source}))
    else:
        _report(run)
        out.print(Text.assemble(_verdict(ok), f": largest output error {c.max_output_error:.3e} "
                                f"{'<=' if ok else '>'} max-error {max_error:g}"))
    raise SystemExit(0 if ok else 1)


def _verify_flow(path: Path, jobs: int | None, as_json: bool, junit: Path | None, report: Path | None,
                 scheduler: str | None, cache: Path | None):
    from .flow import load_flow
    from .report import summary, write_html, write_junit
    from .verify import run_flow

    for f, what in ((junit, "JUnit report"), (report, "HTML report")):
        if f is not None:
            check_output_file(f, what)  # before the flow runs, not after it
    flow = load_flow(path)
    overrides = {"jobs": jobs, "scheduler": scheduler, "cache": cache}
    flow = dataclasses.replace(flow, **{k: v for k, v in overrides.items() if v is not None})
    console.print(f"flow {flow.name}: levels {', '.join(('ideal',) + flow.levels)}; {len(flow.gates)} gate(s)",
                  highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar, progress.listening(_listener(bar)):
        tasks = {}

        def samples(label, done, total):
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        result = run_flow(flow, progress=samples)
    if junit:
        write_junit(result, junit)
    if report:
        write_html(result, report)
    data = summary(result)
    if as_json:
        click.echo(json.dumps(data))
    else:
        t = Table(title=f"flow {flow.name}: {data['samples']} samples, {result.inputs_source}")
        for col in ("gate", "limit", "value", "verdict"):
            t.add_column(col, justify="right")
        for g in data["gates"]:
            t.add_row(Text(g["name"] + ("" if g["corner"] == "-" else f" [{g['corner']}]")), f"{g['limit']:g}",
                      "-" if g["value"] is None else f"{g['value']:.4g}", _verdict(g["passed"], "pass"))
        out.print(t)
        if data.get("monte_carlo"):
            out.print(_mc_line(data["monte_carlo"], result.task), highlight=False)
        for g in data["gates"]:
            if not g["passed"]:
                out.print(Text.assemble(_verdict(False), " " + g["detail"]), soft_wrap=True)
        out.print(_verdict(result.passed))
    for f in (junit, report):
        if f:
            console.print(f"wrote {f}", highlight=False)
    raise SystemExit(0 if result.passed else 1)


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
def import_reference_command(model: Path, config: Path, out_path: Path, num_features: int | None):
    """Convert a checkpoint of the paper's reference code (MODEL.pth + CONFIG.yaml)."""
    from .importer import import_reference
    from .knet import save_knet

    check_output_file(out_path, "weights file")
    knet = import_reference(model, config, num_features=num_features)
    save_knet(knet, out_path)  # whole or not at all
    console.print(f"wrote {out_path}: {knet.law} law, {knet.num_nodes} nodes, {knet.num_devices} devices, "
                  f"{knet.num_layers} layers", highlight=False)


def _register_optional_commands() -> None:
    from .train import train_command  # imports neither torch nor scikit-learn until it runs

    main.add_command(train_command)


_register_optional_commands()
