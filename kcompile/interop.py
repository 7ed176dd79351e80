"""Bridges to other circuit tools: a build as a PySpice circuit (``pip install -e .[pyspice]``).

:func:`to_pyspice` returns a PySpice ``Circuit`` that carries the compiled
``circuit.cir`` verbatim, the initial node voltages of one input row and
the build's accuracy options, with the transient that kcompile runs::

    circuit, analysis = to_pyspice("build/example", x[0])
    simulator = circuit.simulator(simulator="ngspice-subprocess")
    waves = getattr(simulator, analysis["kind"])(**analysis["args"])
    waves["n9"][-1]   # node n9 at t_L, in volts

The netlist is carried as text rather than parsed into PySpice elements:
PySpice's parser drops statements it does not know without a word, and
the text is exactly what kcompile's own ngspice run includes.

PySpice 1.5 (its latest release) cannot read what ngspice 39 prints in
server mode (a ``Note:`` line before the header, PySpice issue #352) and
reads the binary data with ``numpy.fromstring``, which NumPy 2 removed. The
circuit's ``simulator()`` therefore gives PySpice's ngspice-subprocess
simulator a reader without those two faults, running the ngspice that
kcompile runs (``KCOMPILE_NGSPICE``, else the ngspice 46 of
``scripts/setup.sh``, else the one on ``PATH``) unless
``spice_command`` names another; ngspice's warnings become
:class:`kcompile.ngspice.NgspiceWarning`. It runs ngspice as kcompile does
(``-n``, the same environment) and with ``norefvalue``: ngspice 46 prints
its progress on stdout, which in server mode is the data's stream, and a
reader that took it for data shifted every later column (the reader now
refuses data of the wrong length).

Limits: behavioural builds in one transient only. A segmented build (10,000
devices and more) runs one transient per layer, chained by kcompile; a
transistor-level build needs its PDK's ngspice variables (``-D``), which
PySpice's simulator interface has no place for. Both are refused with an
:class:`~kcompile.errors.InputError`.
"""

from __future__ import annotations

import functools
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np

from . import ngspice
from .build import Build, modified_files, open_build
from .errors import InputError, SimulatorError
from .inputs import check_inputs
from .netlist import render_deck

#: lines of ngspice's server-mode output that PySpice 1.5's header reader expects
_HEADER = (b"Circuit:", b"Doing analysis", b"Title:", b"Date:", b"Plotname:", b"Flags:", b"No. Variables:",
           b"No. Points:", b"Variables:", b"No. of Data Columns", b"\t")
_WARNING = re.compile(rb"^\s*warning\b", re.IGNORECASE)


def to_pyspice(build: str | Path | Build, x) -> tuple[object, dict]:
    """A PySpice circuit and analysis that reproduce kcompile's ngspice run of one input row.

    Parameters
    ----------
    build : str, Path or Build
        A behavioural build directory (or the opened build).
    x : array ``[F]`` or ``[1, F]``
        One input row.

    Returns
    -------
    circuit : PySpice.Spice.Netlist.Circuit
        The compiled circuit, the ``.ic`` of ``x`` and the build's ``.options``.
    analysis : dict
        ``{"kind": "transient", "args": {...}}``: ``getattr(simulator, analysis["kind"])(**analysis["args"])``
        runs the build's transient (seconds, ``uic``). Node voltages are volts:
        model units are ``(V - vcm) / v0`` with the build's ``scaling``.

    Raises
    ------
    InputError
        PySpice missing; a transistor-level, OSDI or segmented build; files changed
        since the build; not exactly one valid input row.
    """
    b = build if isinstance(build, Build) else open_build(build)
    if b.transistor:
        raise InputError(f"{b.path}: a transistor-level build needs its PDK's ngspice variables (-D), which "
                         "PySpice's ngspice-subprocess simulator cannot pass; to_pyspice takes behavioural builds "
                         "(simulate this one with Build.simulate or 'kcompile simulate')")
    if b.tran.segmented:
        raise InputError(f"{b.path}: a segmented circuit ({b.knet.num_devices} devices) runs as one transient per "
                         "layer, chained by kcompile; to_pyspice takes circuits of one transient (fewer than "
                         "10,000 devices): simulate this one with Build.simulate or 'kcompile simulate'")
    if b.manifest["cells"].get("devices", "bsource") != "bsource":
        raise InputError(f"{b.path}: its devices are compiled Verilog-A modules (OSDI), which ngspice loads with "
                         "'pre_osdi' in a control block that PySpice's ngspice-subprocess mode does not run; "
                         "rebuild with --devices bsource for PySpice")
    changed = modified_files(b)
    if changed:
        raise InputError(f"{b.path}: {', '.join(changed)} changed since the build; rebuild it with 'kcompile build'")
    x = check_inputs(np.asarray(x), b.knet, "x")
    if x.shape[0] != 1:
        raise InputError(f"x: to_pyspice takes one input row, got {x.shape[0]}; call it once per row")
    circuit = _circuit_class()(f"kcompile {b.knet.law} network, {b.knet.num_nodes} nodes, "
                               f"{b.knet.num_devices} devices, one input row")
    circuit.raw_spice = b.circuit.read_text() + _ic_and_options(render_deck(b.knet.initial_state(x)[0], b.tran,
                                                                            b.scaling))
    tau = b.scaling.tau
    args = {"step_time": b.tran.tstep * tau, "end_time": b.tran.tstop * tau, "max_time": b.tran.tmax * tau,
            "use_initial_condition": b.tran.uic}
    return circuit, {"kind": "transient", "args": args}


def _ic_and_options(deck: str) -> str:
    """The ``.ic`` (with its continuation lines) and ``.options`` statements of a run deck."""
    kept, keep = [], False
    for line in deck.splitlines():
        if not line.startswith("+"):
            keep = line.startswith((".ic ", ".options "))
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n"


@functools.cache
def _circuit_class() -> type:
    """PySpice's ``Circuit`` with a simulator that reads ngspice 39 under NumPy 2 (module docstring)."""
    try:
        from PySpice.Spice.Netlist import Circuit
        from PySpice.Spice.NgSpice.RawFile import RawFile
        from PySpice.Spice.NgSpice.Server import SpiceServer
        from PySpice.Spice.NgSpice.Simulation import NgSpiceSubprocessCircuitSimulator
    except ImportError:
        raise InputError("to_pyspice needs PySpice: pip install -e .[pyspice]") from None

    class _RawFile(RawFile):
        def _read_variable_data(self, raw_data):
            columns = self.number_of_variables * (2 if self.flags == "complex" else 1)
            if len(raw_data) != 8 * columns * self.number_of_points:  # text in the data would shift every column
                raise SimulatorError(f"ngspice's server output has {len(raw_data)} bytes of data, not the "
                                     f"{8 * columns * self.number_of_points} of {self.number_of_points} points of "
                                     f"{columns} values; something other than the data was printed into it")
            data = np.frombuffer(raw_data, dtype="f8", count=columns * self.number_of_points)
            data = data.reshape(self.number_of_points, columns).T
            if self.flags == "complex":
                data = data[0::2] + 1j * data[1::2]
            for variable in self.variables.values():
                variable.data = data[variable.index]

    class _Server(SpiceServer):
        def __call__(self, spice_input):
            # -n as kcompile's own runs; norefvalue: ngspice 46 prints its progress on stdout, into the data
            command = [self._spice_command, "-n", "-D", "norefvalue", "-s"]
            proc = subprocess.run(command, input=str(spice_input).encode(), capture_output=True, check=False,
                                  env=ngspice.NGSPICE.run_environment())
            stderr = proc.stderr.decode(errors="replace")
            self._parse_stdout(proc.stdout)
            points = self._parse_stderr(stderr)
            if points is None:
                raise SimulatorError(f"'{self._spice_command} -s' printed no result", log=stderr)
            header, mark, data = proc.stdout.partition(b"Binary:\n")
            lines = header.splitlines()
            for line in lines + proc.stderr.splitlines():
                if _WARNING.match(line):
                    warnings.warn(f"ngspice: {line.decode(errors='replace').strip()}", ngspice.NgspiceWarning,
                                  stacklevel=2)
            return _RawFile(b"\n".join(line for line in lines if line.startswith(_HEADER)) + b"\n" + mark + data,
                            points)

    class KCompileCircuit(Circuit):
        """A PySpice circuit whose ngspice-subprocess simulator runs kcompile's ngspice and reads it reliably."""

        def simulator(self, *args, **kwargs):
            simulator = super().simulator(*args, **kwargs)
            if isinstance(simulator, NgSpiceSubprocessCircuitSimulator):
                simulator._spice_server = _Server(spice_command=kwargs.get("spice_command") or ngspice.require())
            return simulator

    return KCompileCircuit
