"""Simulator back ends: a careful tool proxy and a netlist dialect per simulator.

A back end is one :class:`Simulator` subclass in its own module here plus its
Jinja templates in ``templates/<name>/``, registered with :func:`register`
(every module of this package is imported, so nothing else lists it).
The base class owns what every simulator shares: finding the binary (an
environment variable first, then ``PATH``), probing its version, running one
deck in a fresh directory under ``try``/``finally`` (kept after a failure,
with the exact command saved in it as ``command``), reading what the tool
prints as it runs (both pipes at once, so neither fills up) to report the
transient's progress (:mod:`kcompile.progress`), turning the tool's
warnings into Python warnings and its failures into
:class:`~kcompile.errors.SimulatorError` carrying the run directory. A
subclass declares the rest:

==================  ==========================================================
tool                ``executable``, ``env_var``, ``install_hint``, where the
                    project's set-up installs it (:meth:`installed`),
                    ``version_args``/``version_pattern``, :meth:`command`,
                    ``fatal``/``warning`` log patterns, :meth:`parse_raw`,
                    what it prints as a transient runs (:attr:`progress_pattern`,
                    :meth:`transient`),
                    capabilities (:meth:`has_klu`, :meth:`has_osdi`,
                    :meth:`has_batch`: many samples per run)
dialect             :meth:`render_circuit` (in the device forms of ``devices``:
                    behavioural sources, compiled OSDI modules), :meth:`render_deck`
                    (through its templates), :meth:`options`, saved vector names
                    (:meth:`node_vector`, :meth:`current_vector`)
==================  ==========================================================

Callers never write simulator syntax: they ask a back end (``get_simulator(name)``)
for the text, the run and the vector names. The pytest plugin gives every
registered back end its marker and its ``--<name> required|if-available|disabled``
switch. The recipe for a new back end is in ``docs/design.md``.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import os
import pkgutil
import re
import selectors
import shlex
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterator

import jinja2
import numpy as np

from .. import progress
from ..errors import InputError, SimulatorError
from ..resources import TEMPLATE_DIR

if TYPE_CHECKING:
    from ..knet import KNet
    from ..netlist import Tran
    from ..scaling import Scaling


class SimulatorWarning(UserWarning):
    """A warning printed by a simulator, passed on to Python's warnings."""


@dataclass(frozen=True, eq=False)
class RawData:
    """One analysis read back: the sweep (``time`` of a transient) and one array per saved vector."""

    time: np.ndarray
    vectors: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.vectors[name]


@lru_cache(maxsize=None)
def _probe(argv: tuple[str, ...], timeout: float, stdin: str | None = None) -> str:
    """Output (stdout + stderr) of one probe of a binary, cached per command line."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin,
                             stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SimulatorError(f"{argv[0]} did not answer '{shlex.join(argv[1:])}' within {timeout:g} s: "
                             f"point the back end's variable at a working binary") from None
    except OSError as exc:
        raise SimulatorError(f"{argv[0]} cannot be run ({exc.strerror}): point the back end's variable "
                             f"at a working binary") from None
    return out.stdout + out.stderr


class Simulator(abc.ABC):
    """One simulator: the tool proxy (shared here) and its dialect (the abstract methods).

    Instances are stateless singletons held by the registry (:func:`get_simulator`);
    everything a run needs is in its arguments, so they travel to worker processes by name.
    """

    #: registry key, template folder ``templates/<name>/``, pytest marker and ``--<name>`` switch
    name: ClassVar[str]
    #: looked up on ``PATH`` when :attr:`env_var` is unset
    executable: ClassVar[str]
    #: environment variable naming a specific binary; it wins over ``PATH`` (no fallback when it is wrong)
    env_var: ClassVar[str]
    #: how to install the simulator, appended to "not found" messages
    install_hint: ClassVar[str]
    #: arguments that make the binary print its version, and the pattern whose group 1 is the version
    version_args: ClassVar[tuple[str, ...]] = ("--version",)
    version_pattern: ClassVar[re.Pattern] = re.compile(r"(\d+(?:\.\d+)*)")
    #: a match anywhere in the log fails the run even when the exit status is 0
    fatal: ClassVar[re.Pattern]
    #: each distinct match becomes one Python warning of :attr:`warning_category`
    warning: ClassVar[re.Pattern]
    warning_category: ClassVar[type[Warning]] = SimulatorWarning
    #: file names inside a run directory
    deck_name: ClassVar[str] = "deck.cir"
    circuit_name: ClassVar[str] = "circuit.cir"
    raw_name: ClassVar[str] = "out.raw"
    #: where a batched deck writes its samples' results (:meth:`render_batch_deck`)
    batch_raw_name: ClassVar[str] = "batch.raw"
    log_name: ClassVar[str] = "simulator.log"
    #: seconds a version or capability probe may take before the binary is declared broken
    probe_timeout: ClassVar[float] = 30.0
    #: device forms :meth:`render_circuit` writes (:data:`kcompile.osdi.DEVICES`), its default first
    devices: ClassVar[tuple[str, ...]] = ("bsource",)
    #: environment variables a run's process gets unless the caller's environment sets them
    process_env: ClassVar[dict[str, str]] = {}
    #: one record of what the simulator prints as a transient runs, group 1 the simulated time reached in seconds
    #: (records end with ``\r`` or ``\n``; they are left out of the log); ``None``: it prints none
    progress_pattern: ClassVar[re.Pattern | None] = None

    def __repr__(self) -> str:
        return f"<{self.name} back end ({type(self).__module__})>"

    # ---- tool proxy -------------------------------------------------------------------------------------------

    def installed(self) -> str | None:
        """The binary that ``scripts/setup.sh`` installed outside ``PATH`` (``None``: none, or not looked for)."""
        return None

    def binary(self) -> str | None:
        """Path of the binary: ``$<env_var>`` if set (even when wrong), else the one ``scripts/setup.sh``
        installed (:meth:`installed`), else the first on ``PATH``, else ``None``."""
        return os.environ.get(self.env_var) or self.installed() or shutil.which(self.executable)

    def describe(self) -> str:
        """``"ngspice 46 (/path/ngspice; KLU, OSDI)"``: which binary runs and what it can do."""
        caps = [name for name, has in (("KLU", self.has_klu()), ("OSDI", self.has_osdi())) if has]
        return f"{self.name} {self.version()} ({self.binary()}; {', '.join(caps) or 'no KLU, no OSDI'})"

    def available(self) -> bool:
        """Whether :meth:`binary` names an executable file."""
        path = self.binary()
        return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)

    def require(self) -> str:
        """The binary's path, or a :class:`SimulatorError` that says what is wrong and how to install it."""
        if self.available():
            return self.binary()
        given = os.environ.get(self.env_var)
        where = f"{self.env_var}={given} is not an executable file" if given else f"'{self.executable}' is not on PATH"
        raise SimulatorError(f"{self.name} not found: {where}; {self.install_hint}")

    def banner(self) -> str:
        """What the binary prints for :attr:`version_args` (probed once per binary)."""
        exe = self.require()
        return _probe((exe, *self.version_args), self.probe_timeout)

    def version(self) -> str:
        """The version string, e.g. ``"39"``; ``"unknown"`` when the banner does not say."""
        m = self.version_pattern.search(self.banner())
        return m.group(1) if m else "unknown"

    def has_klu(self) -> bool:
        """Whether the binary factors with KLU (``Tran.solver == "klu"``)."""
        return False

    def has_osdi(self) -> bool:
        """Whether the binary loads OSDI device libraries (Verilog-A compiled by OpenVAF)."""
        return False

    def has_batch(self) -> bool:
        """Whether the back end writes batched decks: one run, one transient per sample of a behavioural circuit
        (:meth:`render_batch_deck`, :meth:`parse_batch`)."""
        return False

    def render_batch_deck(self, initials: np.ndarray, tran: Tran, scaling: Scaling, layer: int | None) -> str:
        """A deck that reads the circuit (or its part ``layer``) once and runs ``tran`` from each row of
        ``initials`` (model units, ``[K, N]``), writing one result per row; only where :meth:`has_batch`."""
        raise SimulatorError(f"the {self.name} back end runs one sample per deck (it has no batched decks)")

    def parse_batch(self, path: Path) -> list[RawData]:
        """The results of a batched deck, one per sample, in order."""
        raise SimulatorError(f"the {self.name} back end runs one sample per deck (it has no batched decks)")

    @abc.abstractmethod
    def command(self, exe: str, defines: tuple[str, ...]) -> list[str]:
        """Command line that runs :attr:`deck_name` in the run directory and writes :attr:`raw_name`
        and :attr:`log_name` there; ``defines`` are ``name[=value]`` variables set before the deck is read."""

    @abc.abstractmethod
    def parse_raw(self, path: Path) -> RawData:
        """Read the result file; ``ValueError``/``KeyError``/``IndexError`` when it is unreadable or truncated."""

    def run(self, deck: str, *, files: dict[str, Path] | None = None, defines: tuple[str, ...] | list[str] = (),
            timeout: float = 600.0, run_dir: Path | None = None, keep: bool = False,
            batch: bool = False) -> RawData | list[RawData]:
        """Run one deck in batch mode and return its raw data.

        Parameters
        ----------
        deck : str
            Netlist text; it may include the names given in ``files``.
        files : dict, optional
            ``name -> path``: linked into the run directory under ``name``.
        defines : sequence of str
            ``name[=value]`` variables set before the deck is read, e.g. a PDK's
            ``ngbehavior=hsa`` (:meth:`kcompile.pdk.Pdk.ngspice_defines`).
        timeout : float
            Seconds before the run is killed.
        run_dir : Path, optional
            Where to run (created; must be empty). A fresh temporary directory otherwise.
        keep : bool
            Keep the run directory after success (it is always kept after a failure).
        batch : bool
            ``deck`` is a batched deck (:meth:`render_batch_deck`): its results, one per sample, are read from
            :attr:`batch_raw_name` with :meth:`parse_batch`.

        Raises
        ------
        SimulatorError
            The simulator is missing, timed out, failed, or left an unreadable result; it
            carries the run directory, which holds the deck, the log and the ``command``.
        """
        exe = self.require()
        run_dir = Path(tempfile.mkdtemp(prefix=f"kcompile-{self.name}-")) if run_dir is None else Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        ok = False
        try:
            for name, target in (files or {}).items():
                os.symlink(Path(target).resolve(), run_dir / name)
            (run_dir / self.deck_name).write_text(deck)
            cmd = self.command(exe, tuple(defines))
            env = self.run_environment()
            settings = [f"{k}={env[k]}" for k in self.process_env]
            (run_dir / "command").write_text(shlex.join(settings + cmd) + "\n")  # to re-run a kept directory by hand
            returncode, printed = self._stream(cmd, run_dir, env, timeout, self.transient(deck))
            log = printed + self._log(run_dir)  # the log file last: its end is the error's tail
            if not (run_dir / self.log_name).is_file():  # a simulator that only prints: keep what it printed
                (run_dir / self.log_name).write_text(log)
            if returncode is None:
                raise SimulatorError(f"{self.name} timed out after {timeout:g} s", run_dir, deck, log)
            fatal = self.fatal.search(log)
            if returncode != 0 or fatal:
                why = _line(log, fatal.end() - 1) if fatal else f"exit status {returncode}"
                raise SimulatorError(f"{self.name} failed: {why}", run_dir, deck, log)
            for line in dict.fromkeys(m.group(0).strip() for m in self.warning.finditer(log)):
                warnings.warn(f"{self.name}: {line}", self.warning_category, stacklevel=3)
            raw_path = run_dir / (self.batch_raw_name if batch else self.raw_name)
            if not raw_path.is_file():
                raise SimulatorError(f"{self.name} wrote no raw file", run_dir, deck, log)
            try:
                raw = (self.parse_batch if batch else self.parse_raw)(raw_path)
            except (ValueError, KeyError, IndexError) as exc:
                raise SimulatorError(f"unreadable raw file: {exc}", run_dir, deck, log) from None
            ok = True
            return raw
        finally:
            if ok and not keep:
                shutil.rmtree(run_dir, ignore_errors=True)

    def transient(self, deck: str) -> tuple[float, bool] | None:
        """``(stop time in seconds, whether an operating point is solved first)`` of the transient that ``deck``
        runs, for its progress; ``None`` when it runs none, or several (a batched deck)."""
        return None

    def _stream(self, cmd: list[str], run_dir: Path, env: dict[str, str], timeout: float,
                transient: tuple[float, bool] | None) -> tuple[int | None, str]:
        """Run ``cmd`` and read its stdout and stderr as they come (both at once: neither pipe fills up and
        blocks it); report the transient's progress while it runs (:mod:`kcompile.progress`: ``"operating
        point"`` until the first time point, then ``"transient"`` in seconds of simulated time). Returns the exit
        status (``None``: killed after ``timeout`` seconds) and what it printed (stdout, then stderr; newlines
        as ``text=True`` reads them; progress records left out)."""
        deadline = time.monotonic() + timeout
        report = _Progress(self.progress_pattern, *transient) if transient and self.progress_pattern else None
        with contextlib.ExitStack() as steps, selectors.DefaultSelector() as selector, \
                subprocess.Popen(cmd, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env) as proc:
            read = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
            try:
                if report:
                    report.start(steps)
                for pipe in (proc.stdout, proc.stderr):
                    selector.register(pipe, selectors.EVENT_READ)
                while selector.get_map() and time.monotonic() < deadline:
                    for key, _ in selector.select(deadline - time.monotonic()):
                        chunk = os.read(key.fd, 1 << 16)
                        if not chunk:
                            selector.unregister(key.fileobj)
                        read[key.fd].append(chunk)
                        if report:
                            report.feed(key.fd, chunk, steps)
                returncode = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                proc.kill()  # nothing once it exited; after a timeout, Ctrl-C or any error it is not left running
        text = "".join(b"".join(chunks).decode(errors="replace") for chunks in read.values())
        if self.progress_pattern is not None:
            text = self.progress_pattern.sub("", text)
        return returncode, text.replace("\r\n", "\n").replace("\r", "\n")

    def run_environment(self) -> dict[str, str]:
        """The environment of a run's process: :attr:`process_env` under the caller's own variables."""
        return {**self.process_env, **os.environ}

    def _log(self, run_dir: Path) -> str:
        log = run_dir / self.log_name
        return log.read_text(errors="replace") if log.is_file() else ""

    # ---- dialect ----------------------------------------------------------------------------------------------

    def environment(self) -> jinja2.Environment:
        """Jinja environment of ``templates/<name>/`` (strict: an unknown variable is an error)."""
        return _environment(TEMPLATE_DIR / self.name)

    @abc.abstractmethod
    def node_vector(self, node: int) -> str:
        """Name of node ``node``'s voltage, as saved in the deck and read from :class:`RawData`."""

    @abc.abstractmethod
    def current_vector(self, source: str) -> str:
        """Name of the current through voltage source ``source``, as saved and read back."""

    @abc.abstractmethod
    def options(self, tran: Tran, scaling: Scaling) -> str:
        """The accuracy and solver options of ``tran`` (tolerances scaled to volts and amperes)."""

    @abc.abstractmethod
    def render_circuit(self, knet: KNet, scaling: Scaling, edge_fraction: float, segmented: bool,
                       devices: str) -> Iterator[str]:
        """Stream the behavioural circuit file (:attr:`circuit_name`) of ``knet``: clocked, or ``segmented``
        (one part per layer, simulated one after another; :data:`kcompile.netlist.SEGMENTED_MARK` on line 1),
        its devices in the form ``devices`` (one of :attr:`devices`; ``"osdi"``: instances of the law's compiled
        module, :mod:`kcompile.osdi`, and :data:`kcompile.netlist.OSDI_MARK` on line 1)."""

    def check_devices(self, devices: str) -> str:
        """``devices`` if this back end writes that form, else an :class:`InputError` naming the ones it does."""
        if devices not in self.devices:
            raise InputError(f"{self.name} cannot simulate --devices {devices}: it takes "
                             f"{' or '.join(self.devices)}")
        return devices

    @abc.abstractmethod
    def render_deck(self, initial: np.ndarray, tran: Tran, scaling: Scaling, supply: str | None,
                    layer: int | None) -> str:
        """The per-run deck that includes :attr:`circuit_name` (or its part ``layer`` of a segmented circuit),
        starts the nodes at ``initial`` (model units, ``[N]``), runs ``tran`` and saves every
        :meth:`node_vector` (and ``supply``'s :meth:`current_vector`)."""


class _Progress:
    """The progress of one run's transient, from the records its simulator prints (:meth:`Simulator._stream`)."""

    def __init__(self, pattern: re.Pattern, stop: float, operating_point: bool):
        self.pattern, self.stop, self.operating_point = pattern, stop, operating_point
        self.tails: dict[int, str] = {}  # per pipe: what follows its last complete record (one may be split)
        self.task: progress.Task | None = None

    def start(self, steps: contextlib.ExitStack) -> None:
        if self.operating_point:
            steps.enter_context(progress.task("operating point", summary=False))
        else:
            self._transient(steps)

    def _transient(self, steps: contextlib.ExitStack) -> None:
        self.task = steps.enter_context(progress.task("transient", self.stop, unit="s", summary=False))

    def feed(self, fd: int, chunk: bytes, steps: contextlib.ExitStack) -> None:
        text = self.tails.get(fd, "") + chunk.decode(errors="replace")
        matches = list(self.pattern.finditer(text))
        self.tails[fd] = text[matches[-1].end() if matches else 0:][-200:]
        for m in matches:
            try:
                t = float(m.group(1))
            except ValueError:
                continue
            if self.task is None:  # the first time point: the operating point is solved
                steps.close()
                self._transient(steps)
            self.task.reach(min(t, self.stop))


def _line(text: str, pos: int) -> str:
    """The whole line of ``text`` that holds position ``pos``, stripped."""
    end = text.find("\n", pos)
    return text[text.rfind("\n", 0, pos) + 1:None if end < 0 else end].strip()


@lru_cache(maxsize=None)
def _environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


#: registered back ends by name (:func:`register`)
SIMULATORS: dict[str, Simulator] = {}
#: the back end used when none is named
DEFAULT = "ngspice"


def register(cls: type[Simulator]) -> type[Simulator]:
    """Class decorator: add one instance of ``cls`` to :data:`SIMULATORS` (a second one of that name is refused)."""
    if cls.name in SIMULATORS:
        raise ValueError(f"a simulator back end named {cls.name!r} is already registered "
                         f"({type(SIMULATORS[cls.name]).__module__})")
    SIMULATORS[cls.name] = cls()
    return cls


def get_simulator(name: str | Simulator = DEFAULT) -> Simulator:
    """The registered back end ``name`` (a :class:`Simulator` is returned as it is)."""
    if isinstance(name, Simulator):
        return name
    try:
        return SIMULATORS[name]
    except KeyError:
        raise InputError(f"unknown simulator {name!r}: choose one of {', '.join(sorted(SIMULATORS))}") from None


def _discover() -> None:
    """Import every module of this package: each registers its back end (they import the base above)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_discover()
