"""The characterised reference: the ideal ODE with each cell's measured DC I–V.

Every mapped device's instance is DC-swept in ngspice on a ``(vs, vd)`` grid
(both the current it sinks from ``s`` and the one it sources into ``d``);
the integrator then uses bilinear interpolation of those tables in place of
the ideal law. The gap ideal → characterised is the cells' DC error
(calibration, offset, copy mismatch); characterised → transistor is
dynamics, parasitics and switching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .cells import SIGNED_RELU, CellParams
from .characterize import measure
from .knet import KNet
from .mapping import CellMap
from .reference import Trajectory, integrate

SPAN = 4.0  # model units around vcm, as the calibration sweeps
POINTS = 17
CHUNK = 150  # instances per DC deck


@dataclass(frozen=True, eq=False)
class DeviceTables:
    """Measured currents per layer: ``sink[k][e, i, j]`` out of s, ``source[k][e, i, j]`` into d,
    at ``vs = grid[i]``, ``vd = grid[j]`` (model units, the device's own orientation)."""

    grid: np.ndarray
    sink: tuple[np.ndarray, ...]
    source: tuple[np.ndarray, ...]


def _instances(cellmap: CellMap, k: int) -> list[CellParams]:
    lm = cellmap.layers[k]
    return [CellParams(bool(lm.negative[i]), float(lm.r[i]), float(lm.ib[i]), float(lm.ipos[i]),
                       float(lm.ineg[i]), bool(lm.swap[i])) for i in range(lm.r.size)]


def measure_devices(cellmap: CellMap, span: float = SPAN, points: int = POINTS) -> DeviceTables:
    """DC-sweep every mapped instance (cached per deck, ``CHUNK`` instances a deck).

    A port-swapped instance is wired swapped between the sweep terminals, so
    the tables are always in the device's own (s, d) orientation.
    """
    sink, source, grid = [], [], None
    for k in range(len(cellmap.layers)):
        params = _instances(cellmap, k)
        s_parts, d_parts = [], []
        for start in range(0, len(params), CHUNK):
            sw = measure(SIGNED_RELU, cellmap.pdk, cellmap.corner, params[start:start + CHUNK],
                         _cal_scaling(cellmap), span, points)
            grid = sw.vs
            s_parts.extend(sw.sink)
            d_parts.extend(sw.source)
        empty = np.zeros((0, points, points))
        sink.append(np.array(s_parts) if s_parts else empty)
        source.append(np.array(d_parts) if d_parts else empty)
    if grid is None:
        grid = np.linspace(-span, span, points)
    return DeviceTables(grid, tuple(sink), tuple(source))


def _cal_scaling(cellmap: CellMap):
    return cellmap.calibration.scaling


def _bilinear(table: np.ndarray, grid: np.ndarray, vs: np.ndarray, vd: np.ndarray) -> np.ndarray:
    """``table[e]`` at ``(vs[:, e], vd[:, e])``; outside the grid the edge values hold."""
    h = grid[1] - grid[0]
    n = grid.size
    fs = np.clip((vs - grid[0]) / h, 0.0, n - 1 - 1e-9)
    fd = np.clip((vd - grid[0]) / h, 0.0, n - 1 - 1e-9)
    i, j = fs.astype(np.int64), fd.astype(np.int64)
    a, b = fs - i, fd - j
    e = np.arange(table.shape[0])[None, :]
    return ((1 - a) * (1 - b) * table[e, i, j] + a * (1 - b) * table[e, i + 1, j]
            + (1 - a) * b * table[e, i, j + 1] + a * b * table[e, i + 1, j + 1])


def table_rhs(tables: DeviceTables):
    """A right-hand-side factory for :func:`kcompile.reference.integrate` using the tables."""

    def factory(knet: KNet, k: int, dtype=np.float64):
        layer = knet.layers[k]
        n, e = knet.num_nodes, layer.num_devices
        cinv = sp.diags(1.0 / knet.capacitance)
        into = (cinv @ sp.csr_matrix((np.ones(e), (layer.dst, np.arange(e))), shape=(n + 1, e))[1:]).tocsr()
        out = (cinv @ sp.csr_matrix((np.ones(e), (layer.src, np.arange(e))), shape=(n + 1, e))[1:]).tocsr()
        sink, source = tables.sink[k], tables.source[k]

        def rhs(v: np.ndarray) -> np.ndarray:
            vg = np.concatenate([np.zeros((v.shape[0], 1)), v], axis=1)
            vs, vd = vg[:, layer.src], vg[:, layer.dst]
            i_sink = _bilinear(sink, tables.grid, vs, vd)
            i_source = _bilinear(source, tables.grid, vs, vd)
            return (into @ i_source.T - out @ i_sink.T).T

        return rhs

    return factory


def integrate_characterised(knet: KNet, tables: DeviceTables, inputs: np.ndarray, **kwargs) -> Trajectory:
    """The characterised reference trajectory (same solver and options as the ideal one)."""
    return integrate(knet, inputs, rhs=table_rhs(tables), **kwargs)
