"""The netlist stage: analyses and the entry points that render a network as simulator text.

What to simulate is decided here and is the same for every simulator: a
build is split in two, the circuit (capacitors, layer clocks, one
behavioural current source per device; reused for every input) and a small
per-run deck (initial node voltages, the transient, the saved vectors);
:class:`Tran` holds the analysis, :func:`default_tran`/:func:`transistor_tran`
choose it, :func:`clock_points` the layer clocks. How it is written (syntax,
vector names, options, sections) belongs to a simulator back end
(:mod:`kcompile.backends`, ngspice unless ``simulator=`` names another):
:func:`render_circuit`, :func:`render_deck` and :func:`write_circuit` hand
the work to it. Only kcompile-generated names and formatted numbers reach
the text.

Large networks (:data:`SEGMENTED_MIN_DEVICES` devices and up) are written
*segmented*: no clocks, one part per layer, and one transient per
layer, each starting from the previous one's final voltages. A clocked
circuit evaluates every layer's sources at every Newton iteration (the
inactive ones times a zero clock) and each source also differentiates
against its clock; the segmented form evaluates only the active layer's
devices, against two nodes each: 4.9x less ngspice CPU at 10^4 devices
(docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import jinja2
import numpy as np

from . import __version__
from .checks import CELSIUS, POSITIVE, short
from .errors import InputError
from .knet import KNet
from .scaling import Scaling


@dataclass(frozen=True)
class Tran:
    """A transient analysis in model time units and the simulator's accuracy options."""

    tstop: float
    tstep: float
    tmax: float
    reltol: float = 1e-6
    abstol: float = 1e-15
    vntol: float = 1e-9
    method: str = "trap"
    trtol: float = 7.0
    uic: bool = True  # False: start from an operating point with the node voltages held at .ic
    temp: float | None = None  # circuit temperature in °C (ngspice default 27)
    segmented: bool = False  # one transient per layer on a segmented circuit (write_circuit(segmented=True))
    solver: str = "sparse"  # "klu": '.options klu' (ngspice >= 40 built with KLU; older ones ignore it)

    def __post_init__(self):
        """Every field reaches a deck as text: only known words and finite positive numbers pass."""
        for name, allowed in (("method", TRAN_METHODS), ("solver", SOLVERS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"The '{name}' parameter of Tran must be one of {', '.join(allowed)}. "
                                 f"Got {short(getattr(self, name))} instead.")
        for name in ("tstop", "tstep", "tmax", "reltol", "abstol", "vntol", "trtol"):
            problem = POSITIVE.problem(getattr(self, name))
            if problem:
                raise InputError(f"The '{name}' parameter of Tran {problem}.")
        if self.temp is not None and CELSIUS.problem(self.temp):
            raise InputError(f"The 'temp' parameter of Tran {CELSIUS.problem(self.temp)}.")
        for name in ("uic", "segmented"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"The '{name}' parameter of Tran must be true or false. "
                                 f"Got {short(getattr(self, name))} instead.")

    def options(self, scaling: Scaling, simulator: str = "ngspice") -> str:
        """The options line in ``simulator``'s dialect (:meth:`kcompile.backends.Simulator.options`)."""
        from .backends import get_simulator

        return get_simulator(simulator).options(self, scaling)


#: networks with at least this many devices are built segmented, with :data:`LARGE_POINTS_PER_LAYER`
SEGMENTED_MIN_DEVICES = 10_000
#: step cap of the segmented transient for large networks (1/points of the shortest layer); ngspice's
#: error on the MNIST checkpoint falls as the square of the step: 0.021 at 100 points (docs/performance.md)
LARGE_POINTS_PER_LAYER = 500
#: LTE tolerance factor for large networks: the step cap, not the LTE estimate, sets the step
LARGE_TRTOL = 1000.0
#: Newton tolerances for large networks: 30 % fewer iterations than 1e-6 at the same error (MNIST, 100 points)
LARGE_RELTOL, LARGE_VNTOL, LARGE_ABSTOL = 1e-3, 1e-6, 1e-12
#: linear solver for large networks: KLU halves ngspice's CPU on the MNIST checkpoint (docs/performance.md)
LARGE_SOLVER = "klu"
SOLVERS = ("sparse", "klu")
#: ngspice's integration methods
TRAN_METHODS = ("trap", "gear")


def is_large(knet: KNet) -> bool:
    """Whether ``knet`` gets the large-network netlist and analysis (segmented, looser step control)."""
    return knet.num_devices >= SEGMENTED_MIN_DEVICES


def default_tran(knet: KNet, points_per_layer: int | None = None, *, segmented: bool | None = None) -> Tran:
    """Analysis spanning every layer window, the step capped at 1/points of the shortest layer.

    ngspice's error here is set by the step cap, not by reltol: ReLU kinks make
    it fall as h² (measured on the shipped example: 7e-4 at 100 points per
    layer, 5e-5 at 400, 1e-5 at 1000, 3e-6 at 1600), so the default of 1000
    points keeps a 10x margin below the 1e-4 gate (docs/foundation.md).

    Large networks (:func:`is_large`; ``segmented`` overrides) get one
    transient per layer (:func:`render_circuit`), :data:`LARGE_POINTS_PER_LAYER`
    points per layer, ``trtol`` = :data:`LARGE_TRTOL` so that the cap rather
    than the local-error estimate sets the step, and Newton tolerances
    :data:`LARGE_RELTOL`/:data:`LARGE_VNTOL`/:data:`LARGE_ABSTOL`, and the KLU
    solver where ngspice has it (:data:`LARGE_SOLVER`). Measured on the MNIST
    checkpoint (460k devices) in docs/performance.md.
    """
    large = is_large(knet) if segmented is None else segmented
    points = points_per_layer or (LARGE_POINTS_PER_LAYER if large else 1000)
    shortest = float(np.min(np.diff(knet.t_bounds)))
    step = dict(tstop=float(knet.t_bounds[-1]), tstep=shortest / points, tmax=shortest / points)
    if not large:
        return Tran(**step)
    return Tran(**step, reltol=LARGE_RELTOL, vntol=LARGE_VNTOL, abstol=LARGE_ABSTOL, trtol=LARGE_TRTOL,
                segmented=True, solver=LARGE_SOLVER)


def _environment() -> jinja2.Environment:
    """The ngspice back end's templates (the transistor-level circuit is written in its dialect)."""
    from .backends import get_simulator

    return get_simulator("ngspice").environment()


def _num(x: float) -> str:
    return repr(float(x))


def clock_edge(knet: KNet, edge_fraction: float = 1e-6) -> float:
    """Width of a clock crossover, in model time, relative to the shortest layer."""
    return edge_fraction * float(np.min(np.diff(knet.t_bounds)))


#: first line of a segmented circuit file (:func:`simulate` checks it against the analysis)
SEGMENTED_MARK = "segmented behavioural circuit"
#: first line of a circuit whose devices are compiled Verilog-A modules (:func:`simulate` loads them)
OSDI_MARK = "compiled devices"


def render_circuit(knet: KNet, scaling: Scaling = Scaling(), edge_fraction: float = 1e-6,
                   segmented: bool | None = None, *, simulator: str = "ngspice",
                   devices: str | None = None) -> Iterator[str]:
    """Stream the behavioural circuit file (text chunks) for ``knet`` in ``simulator``'s dialect.

    ``segmented`` (default: :func:`is_large`): no clocks, one part with the
    capacitors and one per layer (ngspice: ``.lib`` sections ``nodes`` and
    ``layer{k}``), for one transient per layer (:class:`Tran` with ``segmented=True``).
    ``devices``: ``"bsource"`` (one behavioural source per device) or ``"osdi"``
    (one instance of the law's compiled Verilog-A module, :mod:`kcompile.osdi`);
    default: the back end's first (ngspice: ``bsource``; VACASK has only ``osdi``).
    """
    from .backends import get_simulator

    sim = get_simulator(simulator)
    segmented = is_large(knet) if segmented is None else bool(segmented)
    return sim.render_circuit(knet, scaling, edge_fraction, segmented, sim.check_devices(devices or sim.devices[0]))


def render_deck(initial: np.ndarray, tran: Tran, scaling: Scaling = Scaling(), supply: str | None = None,
                layer: int | None = None, *, simulator: str = "ngspice") -> str:
    """The per-run deck in ``simulator``'s dialect: node voltages at t = 0 (model units, ``[N]``) and the analysis.

    ``supply`` names a voltage source whose current is saved too (energy).
    ``layer``: a segmented run's deck for that layer (its parts of the
    circuit; ``tran.tstop`` is then the layer's duration).
    """
    from .backends import get_simulator

    return get_simulator(simulator).render_deck(initial, tran, scaling, supply, layer)


def write_circuit(knet: KNet, path: Path, scaling: Scaling = Scaling(), edge_fraction: float = 1e-6,
                  segmented: bool | None = None, *, simulator: str = "ngspice", devices: str | None = None) -> None:
    """Render the circuit to ``path`` in blocks of 64k template chunks (a few MB), never whole.

    Joining the chunks before writing saves one ``write`` call per chunk: about
    15% of the CPU time of an MNIST-size build (docs/performance.md).
    ``segmented``, ``devices``: see :func:`render_circuit` (default: by size, like
    :func:`default_tran`; the back end's first device form). A circuit of compiled
    devices gets its law's Verilog-A module beside it (:func:`kcompile.osdi.write_modules`).
    """
    from .backends import get_simulator

    sim = get_simulator(simulator)
    devices = sim.check_devices(devices or sim.devices[0])
    segmented = is_large(knet) if segmented is None else bool(segmented)
    chunks = render_circuit(knet, scaling, edge_fraction, segmented, simulator=simulator, devices=devices)
    with open(path, "w") as f:
        while block := "".join(islice(chunks, 1 << 16)):
            f.write(block)
    if devices == "osdi":
        from .osdi import write_modules

        write_modules(knet, Path(path).parent, segmented)


def circuit_form(circuit: Path) -> tuple[bool, bool]:
    """``(segmented, osdi)`` of a circuit file written by :func:`write_circuit`, from its first line."""
    with open(circuit, errors="replace") as f:
        first = f.readline()
    return SEGMENTED_MARK in first, OSDI_MARK in first


def _node(n: int, ground: str) -> str:
    return f"n{n}" if n else ground


def _cells(knet: KNet, cellmap, k: int) -> Iterator[tuple[str, str, str, str, str]]:
    layer = knet.layers[k]
    for i, (s, d, p) in enumerate(zip(layer.src.tolist(), layer.dst.tolist(), cellmap.instances(k))):
        a, b = _node(s, "vref"), _node(d, "vref")
        if p.swap:
            a, b = b, a
        yield f"{k}_{i}", a, b, cellmap.cell.subckt(p.signs), p.spice()


def enable_pwl(knet: KNet, k: int, edge: float, tau: float, high: float, invert: bool = False) -> str:
    """PWL points of layer ``k``'s enable (``high`` volts while on; ``invert``: the complement)."""
    on, off = (0.0, high) if invert else (high, 0.0)
    return " ".join(f"{_num(t)} {on if v else off:g}" for t, v in
                    ((float(t) * tau, float(v)) for t, v in clock_points(knet, k, edge)))


def clock_points(knet: KNet, k: int, edge: float) -> list[tuple[float, float]]:
    """``(t, level)`` corners of layer ``k``'s clock in model time: 1 on ``[t_k, t_k+1]``, edges of width
    ``edge`` centred on the boundaries, so that neighbouring clocks always sum to 1."""
    t0, t1 = knet.t_bounds[k], knet.t_bounds[k + 1]
    points = [(0.0, 1.0 if k == 0 else 0.0)]
    if k > 0:
        points += [(t0 - edge / 2, 0.0), (t0 + edge / 2, 1.0)]
    if k < knet.num_layers - 1:
        points += [(t1 - edge / 2, 1.0), (t1 + edge / 2, 0.0)]
    return points


def render_transistor_circuit(knet: KNet, cellmap, edge_seconds: float = 1e-9, *, supply: float | None = None,
                              mismatch=None, model_lines: list[str] | None = None) -> Iterator[str]:
    """Stream the transistor-level circuit: PDK models, cell subcircuits, enables, one cell per device.

    ``supply`` overrides the PDK's nominal supply (volts; the enables swing to it too).
    ``mismatch`` (a :class:`kcompile.mismatch.MismatchDraw`) renders the cells with a
    threshold and current-factor parameter per transistor and sets every instance's drawn
    values; without it the text is the nominal circuit. ``model_lines`` replace the PDK's own
    (:meth:`kcompile.pdk.Pdk.model_lines`, absolute paths): a portable build includes its bundled copy.
    """
    sc = cellmap.scaling
    edge = edge_seconds / sc.tau
    cell = cellmap.cell
    varied = mismatch is not None
    subckts = "\n".join(cell.render(cellmap.pdk, v, sc, mismatch=varied) for v in cell.variants)
    supply = cellmap.pdk.supply if supply is None else supply
    cells = (lambda k: _cells(knet, cellmap, k)) if not varied else (lambda k: _varied(_cells(knet, cellmap, k), k,
                                                                                     cellmap, mismatch))
    return _environment().get_template("transistor.cir.j2").generate(
        version=__version__, law=knet.law, num_nodes=knet.num_nodes, num_layers=knet.num_layers,
        num_devices=knet.num_devices, cell=cell.name, pdk=cellmap.pdk.name, corner=cellmap.corner,
        vcm=sc.vcm, v0=sc.v0, i0=sc.i0, c_unit=sc.c_unit, tau=sc.tau,
        model_lines=cellmap.pdk.model_lines(cellmap.corner) if model_lines is None else model_lines,
        subckts=subckts, supply=f"{supply:g}",
        capacitors=((n, _num(c * sc.c_unit)) for n, c in enumerate(knet.capacitance.tolist(), 1)),
        clocks=((k, enable_pwl(knet, k, edge, sc.tau, supply), enable_pwl(knet, k, edge, sc.tau, supply, True))
                for k in range(knet.num_layers)),
        layers=((k, cells(k)) for k in range(knet.num_layers)),
    )


def _varied(rows, k: int, cellmap, mismatch) -> Iterator[tuple[str, str, str, str, str]]:
    """``_cells`` rows of layer ``k`` with each instance's drawn mismatch appended to its parameters (σ from the
    mapped cell's own sizes)."""
    cell = cellmap.cell
    transistors = {cell.subckt(signs): cell.transistors(cellmap.pdk, signs) for signs in cell.variants}
    for i, (name, a, b, subckt, params) in enumerate(rows):
        yield name, a, b, subckt, f"{params} {mismatch.params(k, i, transistors[subckt])}"


#: transistor circuits of at least this many cells factor with KLU (:data:`LARGE_SOLVER`, where ngspice has it):
#: the paper's twomoon checkpoint (600 kc_atanh cells, 22,800 MOSFETs) took 176 s of ngspice CPU for one latent
#: instead of 270 s with Sparse 1.3, the same states to 4e-11 V (docs/transistor.md); smaller circuits keep Sparse
TRANSISTOR_KLU_MIN_CELLS = 150


def transistor_tran(knet: KNet, points_per_layer: int = 400) -> Tran:
    """Transient for transistor-level cells: gear, reltol 1e-4, step cap 1/points of a layer.

    No ``uic``: ngspice first solves an operating point with the node
    capacitors held at their ``.ic`` voltages, so every cell starts biased
    (with ``uic`` the cells' internal nodes would start at 0 V and their
    start-up transient would kick the node voltages). From
    :data:`TRANSISTOR_KLU_MIN_CELLS` cells on the KLU solver.
    """
    shortest = float(np.min(np.diff(knet.t_bounds)))
    solver = LARGE_SOLVER if knet.num_devices >= TRANSISTOR_KLU_MIN_CELLS else "sparse"
    return Tran(tstop=float(knet.t_bounds[-1]), tstep=shortest / points_per_layer,
                tmax=shortest / points_per_layer, reltol=1e-4, abstol=1e-6, vntol=1e-4, method="gear", uic=False,
                solver=solver)


#: the default seconds per simulator run (``kcompile simulate/verify --timeout``)
RUN_TIMEOUT = 600.0
#: a transistor-level run's timeout per cell and time step: ten times the ngspice CPU that the twomoon checkpoint's
#: 600 kc_atanh cells took per cell and step (0.35 ms: 176 s for 841 steps, KLU, docs/transistor.md), for a loaded
#: machine; the paper's 1,200-cell checkpoints took longer than a flat 600 s per latent
TRANSISTOR_SECONDS_PER_CELL_STEP = 3.5e-3


def run_timeout(knet: KNet, tran: Tran, transistor: bool) -> float:
    """Seconds one simulator run of ``knet`` may take by default: :data:`RUN_TIMEOUT`, and for a transistor-level
    circuit at least :data:`TRANSISTOR_SECONDS_PER_CELL_STEP` per cell and step (``tran.tstop / tran.tmax`` steps)."""
    if not transistor:
        return RUN_TIMEOUT
    steps = tran.tstop / tran.tmax
    return max(RUN_TIMEOUT, float(np.ceil(TRANSISTOR_SECONDS_PER_CELL_STEP * knet.num_devices * steps)))

