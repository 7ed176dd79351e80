"""The ngspice back end: batch-mode runs and the ngspice dialect of every netlist and deck.

Why batch mode (``ngspice -b -n -r out.raw deck.cir``) rather than the
shared library (PySpice/InSpice): a trial measured the same cost per run
(≈0.56 s for 100 nodes / 1,000 devices), and a subprocess gives what a
verification tool needs most: a crash, a hang or a leak in the simulator
cannot take the Python process with it, runs get a hard timeout, samples
run in parallel as plain processes, and every run leaves a directory a
person can re-run by hand with the same command (saved in it as ``command``).
``-n``: no ``.spiceinit`` or ``spinit`` is read from the working directory.
ngspice exits 0 even on parse errors, so its log is searched for fatal notes.
No ``-o`` log file: with one, ngspice prints no progress. Without it, every
0.25 s of CPU it prints `` Reference value : 1.2e-06`` ending in ``\r`` (the
transient's time; 46 on stdout, 39 on stderr), which the run turns into a
fraction of the stop time (:meth:`Ngspice.transient`) and leaves out of the
log; the log (``ngspice.log`` in the run directory) is what it printed.

The dialect, and only here: node ``n`` is ``n{n}`` and its saved vector
``v(n{n})``; a source's current is ``i(name)``; devices are B-sources
``I=<law expression>`` (:meth:`kcompile.laws.Law.spice`, ReLUs as ``uramp``);
a segmented circuit is one ``.lib`` section ``nodes`` plus one ``layer{k}``
per layer; ``.ic`` with ``uic``; tolerances, method, temperature and
``klu`` on one ``.options`` line. The text comes from ``templates/ngspice/``.

Batched decks (:meth:`Ngspice.render_batch_deck`) run many samples in one
process: a ``.control`` loop enters each sample's own run deck line by line
(``circbyline``), runs it and appends its plot to the raw file, bit for bit
what the deck gives alone; no process start per sample. Measured alternatives
(benchmarks/bench_batched.py, docs/generation.md): K copies of the circuit as
subcircuit instances in one netlist are slower per sample (ngspice's cost per
source grows with the number of sources); ``alter c<n> ic`` starts Newton from
0 V (the first point moves by ~1e-7); ``alterparam`` + ``reset``, and
``remcirc``, crash Debian's ngspice 46 in batch mode (39 runs them), so the
loop keeps the parsed circuits until the run ends: :func:`kcompile.simulate.batch_size`
bounds the devices per batch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import __version__
from ..files import cache_dir
from ..knet import KNet
from ..laws import LAWS
from ..netlist import OSDI_MARK, SEGMENTED_MARK, Tran, clock_edge, clock_points
from ..osdi import instances, module_card
from ..scaling import Scaling
from . import SIMULATORS, RawData, Simulator, SimulatorWarning, _probe, register

ENV_BINARY = "KCOMPILE_NGSPICE"
INSTALL_HINT = ("run 'bash scripts/setup.sh' (ngspice 46 with KLU and OSDI, no root needed), or 'apt-get install "
                "ngspice' (Debian 12's 39: behavioural sources only), or set KCOMPILE_NGSPICE to the binary")
#: where scripts/ngspice_klu.sh (run by scripts/setup.sh) unpacks Debian backports' ngspice, under the cache
INSTALLED = Path("ngspice-klu", "root", "usr", "bin", "ngspice")


class NgspiceWarning(SimulatorWarning):
    """A warning printed by ngspice, passed on to Python's warnings."""


def number(x: float) -> str:
    """A float as ngspice reads it back exactly (``repr``: 17 significant digits at most)."""
    return repr(float(x))


def parse_raw(path: Path) -> RawData:
    """Read a real-valued ngspice raw file (binary or ASCII); its first plot when it holds several."""
    return _parse_plot(path.read_bytes(), 0)[0]


def parse_raw_plots(path: Path) -> list[RawData]:
    """Every plot of a raw file that holds several, one after another (``set appendwrite``), in order."""
    data, plots, at = path.read_bytes(), [], 0
    while data[at:].strip():
        raw, at = _parse_plot(data, at)
        plots.append(raw)
    return plots


def _parse_plot(data: bytes, at: int) -> tuple[RawData, int]:
    """The plot whose header starts at byte ``at``, and the offset just after its values."""
    found = [(data.find(m, at), m) for m in (b"Binary:\n", b"Values:\n")]
    found = [(end, m) for end, m in found if end >= 0]
    if not found:
        raise ValueError("no 'Binary:' or 'Values:' section (truncated raw file?)")
    end, marker = min(found)
    lines = data[at:end].decode("ascii", "replace").splitlines()
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines) if _}
    if "complex" in fields.get("Flags", ""):
        raise ValueError("complex raw files are not supported")
    nvars, npoints = int(fields["No. Variables"]), int(fields["No. Points"])
    start = lines.index("Variables:") + 1
    names = [ln.split()[1] for ln in lines[start:start + nvars]]
    body = end + len(marker)
    if marker == b"Binary:\n":
        stop = min(len(data), body + 8 * nvars * npoints)
        values = np.frombuffer(data[body: body + (stop - body) // 8 * 8], dtype="<f8")
    else:
        nxt = data.find(b"Title:", body)
        stop = len(data) if nxt < 0 else nxt
        tokens = data[body:stop].split()
        values = np.array([t for i, t in enumerate(tokens) if i % (nvars + 1)], dtype=float)
    if values.size != nvars * npoints:
        raise ValueError(f"raw file holds {values.size} values, expected {nvars} x {npoints} (truncated?)")
    table = values.reshape(npoints, nvars)
    return RawData(table[:, 0].copy(), {name: table[:, i].copy() for i, name in enumerate(names) if i}), stop


@register
class Ngspice(Simulator):
    """ngspice in batch mode (Debian 12 ships 39; ``scripts/ngspice_klu.sh`` fetches 46 with KLU)."""

    name = "ngspice"
    executable = "ngspice"
    env_var = ENV_BINARY
    install_hint = INSTALL_HINT
    version_args = ("-v",)
    version_pattern = re.compile(r"ngspice-(\S+)")
    fatal = re.compile(
        r"timestep too small|singular matrix|no convergence|simulation\(s\) aborted|"
        r"^\s*error\b|fatal|unknown (subckt|model|parameter)|could not find|can't find|cannot open",
        re.IGNORECASE | re.MULTILINE,
    )
    warning = re.compile(r"^\s*warning\b.*$", re.IGNORECASE | re.MULTILINE)
    warning_category = NgspiceWarning
    log_name = "ngspice.log"
    devices = ("bsource", "osdi")
    #: ngspice built with OpenMP (Debian's 46) loads BSIM3/BSIM4 devices on ``num_threads`` threads, 8 as its
    #: spinit sets, whose idle waits spin: on 2 busy cores a sky130 DC sweep of 12 cells ran 24-42 s instead of
    #: 1.8 s, and its spinning took the CPU other runs needed (docs/performance.md). kcompile runs decks in
    #: parallel instead, so each ngspice gets one thread (a caller's own OMP_THREAD_LIMIT wins).
    process_env = {"OMP_THREAD_LIMIT": "1"}
    progress_pattern = re.compile(r" ?Reference value :\s*(\S+)\r")
    #: the analysis line of a run deck (``deck.cir.j2``): ``.tran tstep tstop 0 tmax [uic]``
    _tran = re.compile(r"^\.tran\s+\S+\s+(\S+)[^\n]*?(\suic)?\s*$", re.IGNORECASE | re.MULTILINE)

    # ---- tool proxy -------------------------------------------------------------------------------------------

    def installed(self) -> str | None:
        """The ngspice 46 that ``scripts/setup.sh`` unpacked under the cache (:data:`INSTALLED`), if any."""
        path = cache_dir() / INSTALLED
        return str(path) if os.access(path, os.X_OK) else None

    def has_klu(self) -> bool:
        """Whether the binary is built with KLU (``.options klu``; ngspice 39 ignores the option)."""
        return "KLU" in self.banner()

    def has_osdi(self) -> bool:
        """Whether the binary has the ``osdi`` command (``--enable-osdi``: Debian's 46 has, its 39 has not)."""
        probe = "* kcompile osdi probe\n.control\nosdi\n.endc\n.end\n"
        return "osdi: no such command" not in _probe((self.require(), "-b", "-n"), self.probe_timeout, probe)

    def command(self, exe: str, defines: tuple[str, ...]) -> list[str]:
        return [exe, "-b", "-n", *(arg for d in defines for arg in ("-D", d)), "-r", self.raw_name, self.deck_name]

    def transient(self, deck: str) -> tuple[float, bool] | None:
        found = self._tran.findall(deck)
        if len(found) != 1:
            return None
        stop, uic = found[0]
        try:
            return float(stop), not uic
        except ValueError:  # a hand-written deck's '1u'
            return None

    def parse_raw(self, path: Path) -> RawData:
        return parse_raw(path)

    # ---- dialect ----------------------------------------------------------------------------------------------

    def node_vector(self, node: int) -> str:
        return f"v(n{node})"

    def current_vector(self, source: str) -> str:
        return f"i({source})"

    def options(self, tran: Tran, scaling: Scaling) -> str:
        """The ``.options`` line. A transient that starts from an operating point (``uic`` off: the transistor
        level) skips gmin stepping (``gminsteps=0``). Where direct Newton fails, as on every large transistor
        circuit, ngspice then tries source stepping and its transient operating point (``optran``, ngspice 39
        and 46), which reached the same operating point bit for bit in 2,034 Newton iterations where dynamic
        and then true gmin stepping took 5,451 (800 sky130 kc_relu cells: 112 s of CPU instead of 247 s,
        docs/performance.md §6)."""
        return (f"reltol={tran.reltol:g} abstol={tran.abstol * scaling.i0:g} vntol={tran.vntol * scaling.v0:g} "
                f"trtol={tran.trtol:g} method={tran.method}" + ("" if tran.temp is None else f" temp={tran.temp:g}")
                + (" klu" if tran.solver == "klu" else "") + ("" if tran.uic else " gminsteps=0"))

    def render_circuit(self, knet: KNet, scaling: Scaling, edge_fraction: float, segmented: bool,
                       devices: str) -> Iterator[str]:
        card = module_card(knet, segmented, scaling, OSDI_MARK, number) if devices == "osdi" else None
        rows = (lambda knet, k, scaling: instances(knet, k, scaling, number, card["slots"])) if card else self._devices
        common = dict(
            version=__version__, law=knet.law, num_nodes=knet.num_nodes, num_layers=knet.num_layers,
            num_devices=knet.num_devices, vcm=scaling.vcm, v0=scaling.v0, i0=scaling.i0, c_unit=scaling.c_unit,
            tau=scaling.tau,
            capacitors=((n, number(c * scaling.c_unit)) for n, c in enumerate(knet.capacitance.tolist(), 1)),
            layers=((k, rows(knet, k, scaling)) for k in range(knet.num_layers)),
            osdi=card,
        )
        if segmented:
            return self.environment().get_template("segmented.cir.j2").generate(mark=SEGMENTED_MARK, **common)
        edge, tau = clock_edge(knet, edge_fraction), scaling.tau
        clocks = ((k, " ".join(f"{number(t * tau)} {v:g}" for t, v in clock_points(knet, k, edge)))
                  for k in range(knet.num_layers))
        return self.environment().get_template("circuit.cir.j2").generate(clocks=clocks, **common)

    def render_deck(self, initial: np.ndarray, tran: Tran, scaling: Scaling, supply: str | None,
                    layer: int | None) -> str:
        volts = scaling.vcm + scaling.v0 * np.asarray(initial, dtype=float)
        tau = scaling.tau
        return self.environment().get_template("deck.cir.j2").render(
            version=__version__, circuit=self.circuit_name, layer=None if layer is None else int(layer),
            initial=[(self.node_vector(n), number(v)) for n, v in enumerate(volts.tolist(), 1)],
            options=self.options(tran, scaling),
            tstep=number(tran.tstep * tau), tstop=number(tran.tstop * tau), tmax=number(tran.tmax * tau),
            uic=tran.uic, extra_saves=[self.current_vector(supply)] if supply else [],
            saved=[self.node_vector(n) for n in range(1, volts.size + 1)],
        )

    def has_batch(self) -> bool:
        return True

    def render_batch_deck(self, initials: np.ndarray, tran: Tran, scaling: Scaling, layer: int | None) -> str:
        """One ngspice run for every row of ``initials``: a ``.control`` loop enters each sample's own run deck
        (:meth:`render_deck`, its title aside) with ``circbyline``, runs it and appends its plot to the raw file
        (``set appendwrite``), then frees the plot. The circuit file is parsed once per sample, in the same
        process; each sample's numbers are those of its own deck, bit for bit."""
        decks = []
        for j, row in enumerate(np.atleast_2d(np.asarray(initials, dtype=float))):
            lines = [line for line in self.render_deck(row, tran, scaling, None, layer).splitlines()[1:]
                     if line.strip()]
            # the analysis as a command: 'run' would write the -r raw file (batch mode), 'tran' keeps the plot
            analysis = next(line for line in lines if line.startswith(".tran "))
            decks.append(([f"kcompile batched sample {j}", *(line for line in lines if line != analysis)],
                          analysis[1:]))
        return self.environment().get_template("batch.cir.j2").render(version=__version__, decks=decks,
                                                                       raw=self.batch_raw_name)

    def parse_batch(self, path: Path) -> list[RawData]:
        return parse_raw_plots(path)

    def _terminal(self, node: int, scaling: Scaling) -> str:
        if node == 0:
            return "0"
        v = self.node_vector(node)
        return v if scaling.is_identity else f"(({v}-{number(scaling.vcm)})/{number(scaling.v0)})"

    def _devices(self, knet: KNet, k: int, scaling: Scaling) -> Iterator[tuple[str, str, str, str]]:
        """``(name, s, d, current expression)`` of every device of layer ``k``."""
        law = LAWS[knet.law]
        layer = knet.layers[k]
        prefix = "" if scaling.i0 == 1.0 else f"{number(scaling.i0)}*"
        terms: dict[int, str] = {}
        for i, (s, d, theta) in enumerate(zip(layer.src.tolist(), layer.dst.tolist(), layer.theta.tolist())):
            for node in (s, d):
                if node not in terms:
                    terms[node] = self._terminal(node, scaling)
            expr = law.spice(terms[s], terms[d], theta)
            yield f"{k}_{i}", f"n{s}" if s else "0", f"n{d}" if d else "0", f"{prefix}({expr})"



#: the registered instance
NGSPICE: Ngspice = SIMULATORS[Ngspice.name]
