"""A thin, careful proxy for the ngspice binary in batch mode.

Why batch mode (``ngspice -b -n -r out.raw deck.cir``) rather than the
shared library (PySpice/InSpice): a trial measured the same cost per run
(≈0.56 s for 100 nodes / 1,000 devices), and a subprocess gives what a
verification tool needs most: a crash, a hang or a leak in the simulator
cannot take the Python process with it, runs get a hard timeout, samples
run in parallel as plain processes, and every run leaves a directory a
person can re-run by hand with the same command (saved in it as ``command``).

Each run happens in a fresh directory with ``-n`` (no ``.spiceinit`` or
``spinit`` is read from the working directory), writes a binary raw file,
and is checked: exit status, fatal notes in the log, a complete raw file.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import SimulatorError

ENV_BINARY = "KCOMPILE_NGSPICE"
INSTALL_HINT = "install it with 'apt-get install ngspice' (Debian/Ubuntu) or set KCOMPILE_NGSPICE to the binary"
_FATAL = re.compile(
    r"timestep too small|singular matrix|no convergence|simulation\(s\) aborted|"
    r"^\s*error\b|fatal|unknown (subckt|model|parameter)|could not find|can't find|cannot open",
    re.IGNORECASE | re.MULTILINE,
)
_WARNING = re.compile(r"^\s*warning\b.*$", re.IGNORECASE | re.MULTILINE)


class NgspiceWarning(UserWarning):
    """A warning printed by ngspice, passed on to Python's warnings."""


@dataclass(frozen=True, eq=False)
class RawData:
    """A transient raw file: ``time`` and one array per saved vector."""

    time: np.ndarray
    vectors: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.vectors[name]


def binary() -> str | None:
    """Path of the ngspice binary (``$KCOMPILE_NGSPICE`` first), or ``None``."""
    return os.environ.get(ENV_BINARY) or shutil.which("ngspice")


def available() -> bool:
    """Whether an ngspice binary can be found (an executable file, not a directory)."""
    path = binary()
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


#: seconds ``ngspice -v`` may take before the binary is declared broken
PROBE_TIMEOUT = 30.0


@lru_cache(maxsize=None)
def _banner(path: str) -> str:
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SimulatorError(f"{path} did not answer '-v' within {PROBE_TIMEOUT:g} s: set {ENV_BINARY} to a "
                             "working ngspice") from None
    except OSError as exc:
        raise SimulatorError(f"{path} cannot be run ({exc.strerror}): set {ENV_BINARY} to a working ngspice") \
            from None
    return out.stdout + out.stderr


def version() -> str:
    """ngspice version string, e.g. ``"39"``."""
    m = re.search(r"ngspice-(\S+)", _banner(require()))
    return m.group(1) if m else "unknown"


def has_klu() -> bool:
    """Whether the binary is built with the KLU solver (``.options klu``; ngspice 39 ignores it)."""
    return "KLU" in _banner(require())


def require() -> str:
    """The binary's path, or a :class:`SimulatorError` that says how to install it."""
    if not available():
        given = os.environ.get(ENV_BINARY)
        where = f"{ENV_BINARY}={given} is not an executable file; " if given else ""
        raise SimulatorError(f"ngspice not found: {where}{INSTALL_HINT}")
    return binary()


def parse_raw(path: Path) -> RawData:
    """Read a real-valued ngspice raw file (binary or ASCII)."""
    data = path.read_bytes()
    for marker in (b"Binary:\n", b"Values:\n"):
        head, sep, body = data.partition(marker)
        if sep:
            break
    else:
        raise ValueError("no 'Binary:' or 'Values:' section (truncated raw file?)")
    lines = head.decode("ascii", "replace").splitlines()
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines) if _}
    if "complex" in fields.get("Flags", ""):
        raise ValueError("complex raw files are not supported")
    nvars, npoints = int(fields["No. Variables"]), int(fields["No. Points"])
    start = lines.index("Variables:") + 1
    names = [ln.split()[1] for ln in lines[start:start + nvars]]
    if marker == b"Binary:\n":
        values = np.frombuffer(body[: len(body) // 8 * 8], dtype="<f8")
        if values.size != nvars * npoints:
            raise ValueError(f"raw file holds {values.size} values, expected {nvars} x {npoints} (truncated?)")
    else:
        tokens = body.split()
        values = np.array([t for i, t in enumerate(tokens) if i % (nvars + 1)], dtype=float)
        if values.size != nvars * npoints:
            raise ValueError(f"raw file holds {values.size} values, expected {nvars} x {npoints} (truncated?)")
    table = values.reshape(npoints, nvars)
    return RawData(table[:, 0].copy(), {name: table[:, i].copy() for i, name in enumerate(names) if i})


def run(deck: str, *, files: dict[str, Path] | None = None, defines: tuple[str, ...] | list[str] = (),
        timeout: float = 600.0, run_dir: Path | None = None, keep: bool = False) -> RawData:
    """Run one deck in batch mode and return its raw data.

    Parameters
    ----------
    deck : str
        Netlist text; it may ``.include`` the names given in ``files``.
    files : dict, optional
        ``name -> path``: linked into the run directory under ``name``.
    defines : sequence of str
        ``name[=value]`` variables set before the deck is read (``-D``), e.g. a
        PDK's ``ngbehavior=hsa`` (:meth:`kcompile.pdk.Pdk.ngspice_defines`).
    timeout : float
        Seconds before the run is killed.
    run_dir : Path, optional
        Where to run (created; must be empty). A fresh temporary directory otherwise.
    keep : bool
        Keep the run directory after success (it is always kept after a failure).

    Raises
    ------
    SimulatorError
        ngspice missing, timed out, failed, or left an unreadable raw file.
    """
    exe = require()
    run_dir = Path(tempfile.mkdtemp(prefix="kcompile-ngspice-")) if run_dir is None else Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        for name, target in (files or {}).items():
            os.symlink(Path(target).resolve(), run_dir / name)
        (run_dir / "deck.cir").write_text(deck)
        cmd = [exe, "-b", "-n", *(arg for d in defines for arg in ("-D", d)), "-r", "out.raw", "-o", "ngspice.log",
               "deck.cir"]
        (run_dir / "command").write_text(shlex.join(cmd) + "\n")  # to re-run a kept directory by hand
        try:
            proc = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SimulatorError(f"ngspice timed out after {timeout:g} s", run_dir, deck, _read_log(run_dir)) from None
        log = _read_log(run_dir) + proc.stdout + proc.stderr
        fatal = _FATAL.search(log)
        if proc.returncode != 0 or fatal:
            why = fatal.group(0).strip() if fatal else f"exit status {proc.returncode}"
            raise SimulatorError(f"ngspice failed: {why}", run_dir, deck, log)
        for line in dict.fromkeys(m.group(0).strip() for m in _WARNING.finditer(log)):
            warnings.warn(f"ngspice: {line}", NgspiceWarning, stacklevel=2)
        raw_path = run_dir / "out.raw"
        if not raw_path.is_file():
            raise SimulatorError("ngspice wrote no raw file", run_dir, deck, log)
        try:
            raw = parse_raw(raw_path)
        except (ValueError, KeyError, IndexError) as exc:
            raise SimulatorError(f"unreadable raw file: {exc}", run_dir, deck, log) from None
        ok = True
        return raw
    finally:
        if ok and not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def _read_log(run_dir: Path) -> str:
    log = run_dir / "ngspice.log"
    return log.read_text(errors="replace") if log.is_file() else ""
