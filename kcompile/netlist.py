"""Render ngspice netlists from the IR with the Jinja templates in ``templates/``.

A build is split in two: ``circuit.cir`` (capacitors, layer clocks, one
behavioural current source per device; reused for every input) and a small
per-run deck (``.ic`` for the inputs, ``.tran`` with ``uic``, ``.save``).
Only kcompile-generated names and formatted numbers reach the text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import jinja2
import numpy as np

from . import __version__
from .knet import KNet
from .laws import LAWS

TEMPLATE_DIR = Path(os.environ.get("KCOMPILE_TEMPLATES", Path(__file__).resolve().parent.parent / "templates"))


@dataclass(frozen=True)
class Scaling:
    """Physical scaling: ``V = vcm + v0·v``, ``I = i0·g``, ``C = c_unit·c``.

    The default is the identity (model units are volts, amperes, farads and
    seconds), which is what the behavioural level uses to check the compiler.
    """

    v0: float = 1.0
    vcm: float = 0.0
    i0: float = 1.0
    c_unit: float = 1.0

    @property
    def tau(self) -> float:
        """Seconds per model time unit: ``c_unit·v0/i0``."""
        return self.c_unit * self.v0 / self.i0

    @property
    def is_identity(self) -> bool:
        return self == Scaling()


@dataclass(frozen=True)
class Tran:
    """A transient analysis in model time units and ngspice accuracy options."""

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

    def options(self, scaling: Scaling) -> str:
        abstol = self.abstol * scaling.i0
        vntol = self.vntol * scaling.v0
        return (f"reltol={self.reltol:g} abstol={abstol:g} vntol={vntol:g} trtol={self.trtol:g} "
                f"method={self.method}" + ("" if self.temp is None else f" temp={self.temp:g}"))


def default_tran(knet: KNet, points_per_layer: int = 1000) -> Tran:
    """Analysis spanning every layer window, the step capped at 1/points of the shortest layer.

    ngspice's error here is set by the step cap, not by reltol: ReLU kinks make
    it fall as h² (measured on the shipped example: 7e-4 at 100 points per
    layer, 5e-5 at 400, 1e-5 at 1000, 3e-6 at 1600), so the default of 1000
    points keeps a 10x margin below the 1e-4 gate (docs/foundation.md).
    """
    shortest = float(np.min(np.diff(knet.t_bounds)))
    return Tran(tstop=float(knet.t_bounds[-1]), tstep=shortest / points_per_layer,
                tmax=shortest / points_per_layer)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR / "ngspice"),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
    )


def _num(x: float) -> str:
    return repr(float(x))


def clock_edge(knet: KNet, edge_fraction: float = 1e-6) -> float:
    """Width of a clock crossover, in model time, relative to the shortest layer."""
    return edge_fraction * float(np.min(np.diff(knet.t_bounds)))


def clock_pwl(knet: KNet, k: int, edge: float) -> str:
    """PWL points of layer ``k``'s clock: 1 on ``[t_k, t_k+1]`` with centred edges."""
    return " ".join(f"{_num(t)} {v:g}" for t, v in _clock_points(knet, k, edge))


def _terminal(node: int, scaling: Scaling) -> str:
    if node == 0:
        return "0"
    return f"v(n{node})" if scaling.is_identity else f"((v(n{node})-{_num(scaling.vcm)})/{_num(scaling.v0)})"


def _devices(knet: KNet, k: int, scaling: Scaling) -> Iterator[tuple[str, str, str, str]]:
    law = LAWS[knet.law]
    layer = knet.layers[k]
    prefix = "" if scaling.i0 == 1.0 else f"{_num(scaling.i0)}*"
    terms: dict[int, str] = {}
    for i, (s, d, theta) in enumerate(zip(layer.src.tolist(), layer.dst.tolist(), layer.theta.tolist())):
        for node in (s, d):
            if node not in terms:
                terms[node] = _terminal(node, scaling)
        expr = law.spice(terms[s], terms[d], theta)
        yield f"{k}_{i}", f"n{s}" if s else "0", f"n{d}" if d else "0", f"{prefix}({expr})"


def render_circuit(knet: KNet, scaling: Scaling = Scaling(), edge_fraction: float = 1e-6) -> Iterator[str]:
    """Stream the behavioural circuit file (text chunks) for ``knet``."""
    edge = clock_edge(knet, edge_fraction)
    template = _environment().get_template("circuit.cir.j2")
    return template.generate(
        version=__version__, law=knet.law, num_nodes=knet.num_nodes, num_layers=knet.num_layers,
        num_devices=knet.num_devices, vcm=scaling.vcm, v0=scaling.v0, i0=scaling.i0,
        c_unit=scaling.c_unit, tau=scaling.tau,
        capacitors=((n, _num(c * scaling.c_unit)) for n, c in enumerate(knet.capacitance.tolist(), 1)),
        clocks=((k, clock_pwl(knet, k, edge * scaling.tau)) for k in range(knet.num_layers)),
        layers=((k, _devices(knet, k, scaling)) for k in range(knet.num_layers)),
    )


def render_deck(initial: np.ndarray, tran: Tran, scaling: Scaling = Scaling(), supply: str | None = None) -> str:
    """The per-run deck: node voltages at t = 0 (model units, ``[N]``) and the analysis.

    ``supply`` names a voltage source whose current is saved too (energy).
    """
    volts = scaling.vcm + scaling.v0 * np.asarray(initial, dtype=float)
    tau = scaling.tau
    return _environment().get_template("deck.cir.j2").render(
        version=__version__,
        initial=[(n, _num(v)) for n, v in enumerate(volts.tolist(), 1)],
        options=tran.options(scaling),
        tstep=_num(tran.tstep * tau), tstop=_num(tran.tstop * tau), tmax=_num(tran.tmax * tau),
        uic=" uic" if tran.uic else "",
        saved=range(1, volts.size + 1), extra_saves=[f"i({supply})"] if supply else [],
    )


def write_circuit(knet: KNet, path: Path, scaling: Scaling = Scaling(), edge_fraction: float = 1e-6) -> None:
    """Render the circuit to ``path`` in blocks of 64k template chunks (a few MB), never whole.

    Joining the chunks before writing saves one ``write`` call per chunk: about
    15% of the CPU time of an MNIST-size build (docs/performance.md).
    """
    chunks = render_circuit(knet, scaling, edge_fraction)
    with open(path, "w") as f:
        while block := "".join(islice(chunks, 1 << 16)):
            f.write(block)


def _node(n: int, ground: str) -> str:
    return f"n{n}" if n else ground


def _cells(knet: KNet, cellmap, k: int) -> Iterator[tuple[str, str, str, str, str]]:
    from .cells import SIGNED_RELU, CellParams, subckt_name

    layer, lm = knet.layers[k], cellmap.layers[k]
    for i, (s, d) in enumerate(zip(layer.src.tolist(), layer.dst.tolist())):
        a, b = _node(s, "vref"), _node(d, "vref")
        if lm.swap[i]:
            a, b = b, a
        p = CellParams(bool(lm.negative[i]), float(lm.r[i]), float(lm.ib[i]), float(lm.ipos[i]), float(lm.ineg[i]))
        yield f"{k}_{i}", a, b, subckt_name(SIGNED_RELU, p.negative), p.spice()


def enable_pwl(knet: KNet, k: int, edge: float, tau: float, high: float, invert: bool = False) -> str:
    """PWL points of layer ``k``'s enable (``high`` volts while on; ``invert``: the complement)."""
    on, off = (0.0, high) if invert else (high, 0.0)
    return " ".join(f"{_num(t)} {on if v else off:g}" for t, v in
                    ((float(t) * tau, float(v)) for t, v in _clock_points(knet, k, edge)))


def _clock_points(knet: KNet, k: int, edge: float) -> list[tuple[float, float]]:
    t0, t1 = knet.t_bounds[k], knet.t_bounds[k + 1]
    points = [(0.0, 1.0 if k == 0 else 0.0)]
    if k > 0:
        points += [(t0 - edge / 2, 0.0), (t0 + edge / 2, 1.0)]
    if k < knet.num_layers - 1:
        points += [(t1 - edge / 2, 1.0), (t1 + edge / 2, 0.0)]
    return points


def render_transistor_circuit(knet: KNet, cellmap, edge_seconds: float = 1e-9, *, supply: float | None = None,
                              mismatch=None) -> Iterator[str]:
    """Stream the transistor-level circuit: PDK models, cell subcircuits, enables, one cell per device.

    ``supply`` overrides the PDK's nominal supply (volts; the enables swing to it too).
    ``mismatch`` (a :class:`kcompile.mismatch.MismatchDraw`) renders the cells with a
    threshold and current-factor parameter per transistor and sets every instance's drawn
    values; without it the text is the nominal circuit.
    """
    from .cells import SIGNED_RELU, render_cell

    sc = cellmap.scaling
    edge = edge_seconds / sc.tau
    varied = mismatch is not None
    subckts = "\n".join(render_cell(SIGNED_RELU, cellmap.pdk, neg, sc, mismatch=varied) for neg in (False, True))
    supply = cellmap.pdk.supply if supply is None else supply
    cells = (lambda k: _cells(knet, cellmap, k)) if not varied else (lambda k: _varied(_cells(knet, cellmap, k), k,
                                                                                     cellmap.pdk, mismatch))
    return _environment().get_template("transistor.cir.j2").generate(
        version=__version__, law=knet.law, num_nodes=knet.num_nodes, num_layers=knet.num_layers,
        num_devices=knet.num_devices, cell=SIGNED_RELU.name, pdk=cellmap.pdk.name, corner=cellmap.corner,
        vcm=sc.vcm, v0=sc.v0, i0=sc.i0, c_unit=sc.c_unit, tau=sc.tau,
        model_lines=cellmap.pdk.model_lines(cellmap.corner), subckts=subckts, supply=f"{supply:g}",
        capacitors=((n, _num(c * sc.c_unit)) for n, c in enumerate(knet.capacitance.tolist(), 1)),
        clocks=((k, enable_pwl(knet, k, edge, sc.tau, supply), enable_pwl(knet, k, edge, sc.tau, supply, True))
                for k in range(knet.num_layers)),
        layers=((k, cells(k)) for k in range(knet.num_layers)),
    )


def _varied(rows, k: int, pdk, mismatch) -> Iterator[tuple[str, str, str, str, str]]:
    """``_cells`` rows of layer ``k`` with each instance's drawn mismatch appended to its parameters."""
    from .cells import CELLS, cell_transistors, subckt_name

    variants = {subckt_name(c, neg): (c, neg) for c in CELLS.values() for neg in (False, True)}
    for i, (name, a, b, subckt, params) in enumerate(rows):
        cell, negative = variants[subckt]
        yield name, a, b, subckt, f"{params} {mismatch.params(k, i, cell_transistors(cell, pdk, negative))}"


def transistor_tran(knet: KNet, points_per_layer: int = 400) -> Tran:
    """Transient for transistor-level cells: gear, reltol 1e-4, step cap 1/points of a layer.

    No ``uic``: ngspice first solves an operating point with the node
    capacitors held at their ``.ic`` voltages, so every cell starts biased
    (with ``uic`` the cells' internal nodes would start at 0 V and their
    start-up transient would kick the node voltages).
    """
    shortest = float(np.min(np.diff(knet.t_bounds)))
    return Tran(tstop=float(knet.t_bounds[-1]), tstep=shortest / points_per_layer,
                tmax=shortest / points_per_layer, reltol=1e-4, abstol=1e-6, vntol=1e-4, method="gear", uic=False)
