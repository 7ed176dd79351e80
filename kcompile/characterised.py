"""The characterised reference: the ideal ODE with each cell's measured DC I–V.

Every mapped device's instance is DC-swept in ngspice on a grid of
``Δ = vs − vd`` (fine: 0.125 units over ±8) and common mode ``m = (vs + vd)/2``
(coarse: 1 unit over ±4), both the current it sinks from ``s`` and the one it
sources into ``d``; the integrator then uses bilinear interpolation of those
tables in place of the ideal law. (A square 17×17 ``(vs, vd)`` grid put the
ReLU kink diagonally across 0.5-unit cells: its interpolation error moved the
shipped example's internal nodes by 0.1 units, as much as the transistor
level's own error; see docs/transistor.md.) The gap ideal → characterised is the cells' DC error
(calibration, offset, copy mismatch); characterised → transistor is
dynamics, parasitics and switching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .cells.sweep import DIFF_POINTS, DIFF_SPAN, MID_POINTS, MID_SPAN, measure_diff
from .knet import KNet
from .mapping import CellMap
from .reference import Trajectory, integrate

CHUNK = 150  # instances per DC deck


@dataclass(frozen=True, eq=False)
class DeviceTables:
    """Measured currents per layer: ``sink[k][e, i, j]`` out of s, ``source[k][e, i, j]`` into d,
    at ``Δ = delta[i]``, common mode ``m = mid[j]`` (model units, the device's own orientation)."""

    delta: np.ndarray
    mid: np.ndarray
    sink: tuple[np.ndarray, ...]
    source: tuple[np.ndarray, ...]


def measure_devices(cellmap: CellMap, dspan: float = DIFF_SPAN, dpoints: int = DIFF_POINTS,
                    mspan: float = MID_SPAN, mpoints: int | None = None, cache: bool = True) -> DeviceTables:
    """DC-sweep every mapped instance on the ``(Δ, m)`` grid (cached per deck, ``CHUNK`` instances a deck).

    A port-swapped instance is wired swapped between the sweep terminals, so
    the tables are always in the device's own (s, d) orientation. ``mpoints``
    defaults to the cell's :attr:`~kcompile.cells.base.Cell.mid_points`, else ``MID_POINTS``.
    """
    if mpoints is None:
        mpoints = cellmap.cell.mid_points or MID_POINTS
    sink, source = [], []
    delta, mid = np.linspace(-dspan, dspan, dpoints), np.linspace(-mspan, mspan, mpoints)
    for k in range(len(cellmap.layers)):
        params = cellmap.instances(k)
        s_parts, d_parts = [], []
        for start in range(0, len(params), CHUNK):
            sw = measure_diff(cellmap.cell, cellmap.pdk, cellmap.corner, params[start:start + CHUNK],
                              cellmap.calibration.scaling, dspan, dpoints, mspan, mpoints, cache=cache)
            delta, mid = sw.delta, sw.mid
            s_parts.extend(sw.sink)
            d_parts.extend(sw.source)
        empty = np.zeros((0, dpoints, mpoints))
        sink.append(np.array(s_parts) if s_parts else empty)
        source.append(np.array(d_parts) if d_parts else empty)
    return DeviceTables(delta, mid, tuple(sink), tuple(source))


def _bilinear(table: np.ndarray, g1: np.ndarray, g2: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """``table[e]`` at ``(x1[:, e], x2[:, e])`` on uniform grids ``g1``, ``g2``; outside them the edge values hold."""
    h1, h2 = g1[1] - g1[0], g2[1] - g2[0]
    f1 = np.clip((x1 - g1[0]) / h1, 0.0, g1.size - 1 - 1e-9)
    f2 = np.clip((x2 - g2[0]) / h2, 0.0, g2.size - 1 - 1e-9)
    i, j = f1.astype(np.int64), f2.astype(np.int64)
    a, b = f1 - i, f2 - j
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
            delta, mid = vs - vd, 0.5 * (vs + vd)
            i_sink = _bilinear(sink, tables.delta, tables.mid, delta, mid)
            i_source = _bilinear(source, tables.delta, tables.mid, delta, mid)
            return (into @ i_source.T - out @ i_sink.T).T

        return rhs

    return factory


def integrate_characterised(knet: KNet, tables: DeviceTables, inputs: np.ndarray, **kwargs) -> Trajectory:
    """The characterised reference trajectory (same solver and options as the ideal one)."""
    return integrate(knet, inputs, rhs=table_rhs(tables), **kwargs)
