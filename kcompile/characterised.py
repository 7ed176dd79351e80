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

One sweep per instance does not scale: a two-stage tanh cell costs 20-50 ms
of ngspice per instance and grid point (its DC converges slowly), so the
paper's 1,200-device checkpoints would take days. From
:data:`GRID_MIN_INSTANCES` instances on, :func:`characterise` measures a
**table over the cell's θ grid** instead (:func:`theta_grid`: every law
column on a few values across the cell's calibrated box, slopes signed and
geometric, offsets linear; cached like every sweep and shared by every
network on that cell, PDK and corner) and gives each device the ideal law at
the θ its instance achieves plus the grid's measured residual (measured −
ideal), interpolated multilinearly in θ and bilinearly in ``(Δ, m)``. The
residual is **knee-aligned**: each grid instance's residual is read where that
instance's law argument ``z = a·vs + b·vd + c`` equals the device's, not at the
same ``(Δ, m)``, because a cell's residual (its soft knee, its leakage) follows
its argument. Read at the same Δ, with slopes down to 1/16 of the ceiling, an
image classifier's many near-off devices (small θ0, negative θ1) got the
residual of grid instances whose knee lay elsewhere: +0.0025 units per device,
and a node summing 109 of them was off by 0.65 units where its ideal current is
0.77 (the same devices swept one by one: 0.13; mnist14-hw on sky130,
docs/cells.md). A few devices are also swept one by one and compared
(:class:`Validation`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import progress
from .cells.sweep import DIFF_POINTS, DIFF_SPAN, MID_POINTS, MID_SPAN, DiffSweep, measure_diff
from .knet import KNet
from .laws import LAWS
from .mapping import CellMap
from .reference import Trajectory, integrate
from .scaling import rescaling

CHUNK = 150  # instances per DC deck
#: from this many instances on, :func:`characterise` interpolates a table over the cell's θ grid
GRID_MIN_INSTANCES = 150
#: (Δ points over ±8, common-mode points over ±4) of the θ grid's sweeps
GRID_SWEEP = (33, 9)
#: slope magnitudes of the θ grid, as fractions of the calibrated ceiling (both signs)
GRID_SLOPES = (1 / 256, 1 / 64, 1 / 16, 1 / 4, 1.0)
#: offset values of the θ grid across the calibrated box
GRID_OFFSETS = 3
#: dopri5 tolerances of the characterised ODE. Its right-hand side interpolates measured tables whose own error is
#: 1e-3 units and more (:class:`Validation`), and bilinear interpolation has a kink at every grid line, where a
#: tolerance of 1e-9 forces tiny steps: on mnist14-hw (5,954 cells, 20 images) rtol 1e-9 took 48 s and 1e-6 took
#: 3.0 s, the outputs 2e-5 units apart (docs/performance.md). Explicit ``rtol``/``atol`` still win.
CHAR_RTOL, CHAR_ATOL = 1e-6, 1e-8
#: grid instances per DC deck (a deck of two-stage cells takes ~1 s per instance and grid point at this size; DC
#: cost grows faster than the deck: 12 near-off sky130 kc_relu instances took 34-129 s, one deck of 150 minutes)
GRID_CHUNK = 12
#: devices swept one by one to validate the grid table
VALIDATION_SAMPLE = 4


@dataclass(frozen=True, eq=False)
class DeviceTables:
    """Measured currents per layer: ``sink[k][e, i, j]`` out of s, ``source[k][e, i, j]`` into d,
    at ``Δ = delta[i]``, common mode ``m = mid[j]`` (model units, the device's own orientation)."""

    delta: np.ndarray
    mid: np.ndarray
    sink: tuple[np.ndarray, ...]
    source: tuple[np.ndarray, ...]
    validation: Validation | None = None


@dataclass(frozen=True)
class Validation:
    """How a θ-grid table predicts devices swept one by one: largest and rms |predicted − measured| and the mean
    signed error ``bias`` (model units, both copies, ``|vs|, |vd| ≤ 4``) over ``devices`` devices; ``grid``
    instances measured for the table. A node sums its devices' errors: the bias adds up with the fan-in, the
    rest partly averages out."""

    devices: int
    grid: int
    max_error: float
    rms_error: float
    bias: float

    def message(self) -> str:
        return (f"θ-grid table of {self.grid} instances: against {self.devices} devices swept one by one, largest "
                f"error {self.max_error:.3g}, rms {self.rms_error:.3g}, mean {self.bias:+.2g} model units "
                "(|vs|, |vd| <= 4)")


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
    decks = sum(-(-len(lm) // CHUNK) for lm in cellmap.layers)
    n = sum(len(lm) for lm in cellmap.layers)
    with progress.task(f"DC sweeps of {n} {cellmap.cell.name} instances ({dpoints}x{mpoints} points)", decks):
        for k in range(len(cellmap.layers)):
            sw = _sweep(cellmap, cellmap.instances(k), CHUNK, dspan, dpoints, mspan, mpoints, cache)
            delta, mid = sw.delta, sw.mid
            sink.append(sw.sink)
            source.append(sw.source)
    return DeviceTables(delta, mid, tuple(sink), tuple(source))


def _sweep(cellmap: CellMap, params: list, chunk: int, dspan: float, dpoints: int, mspan: float, mpoints: int,
           cache: bool) -> DiffSweep:
    """:func:`kcompile.cells.sweep.measure_diff` of ``params`` in decks of ``chunk`` instances, joined."""
    parts = [measure_diff(cellmap.cell, cellmap.pdk, cellmap.corner, params[start:start + chunk],
                          cellmap.calibration.scaling, dspan, dpoints, mspan, mpoints, cache=cache)
             for start in range(0, len(params), chunk)]
    empty = np.zeros((0, dpoints, mpoints))
    if not parts:
        return DiffSweep(np.linspace(-dspan, dspan, dpoints), np.linspace(-mspan, mspan, mpoints), empty, empty)
    return DiffSweep(parts[0].delta, parts[0].mid, np.concatenate([p.sink for p in parts]),
                     np.concatenate([p.source for p in parts]))


# ---------------------------------------------------------------- the θ-grid table

def theta_grid(law: str, cellmap: CellMap) -> list[np.ndarray]:
    """Per θ column, the grid values (increasing) across the cell's calibrated box
    (:meth:`kcompile.cells.base.Cell.theta_box`): offsets (the columns of the argument's constant,
    :func:`kcompile.scaling.rescaling`) :data:`GRID_OFFSETS` values evenly, every other column both signs of
    :data:`GRID_SLOPES` times its largest magnitude."""
    box, offsets = cellmap.cell.theta_box(law, cellmap.calibration), rescaling(law).offsets
    axes = []
    for j, (lo, hi) in enumerate(box):
        if j in offsets:
            axes.append(np.linspace(lo, hi, GRID_OFFSETS))
        else:
            mags = min(-lo, hi) * np.asarray(GRID_SLOPES)
            axes.append(np.r_[-mags[::-1], mags])
    return axes


def _linear(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left index and fraction of each ``x`` (clamped) on the increasing ``grid``."""
    x = np.clip(x, grid[0], grid[-1])
    i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, grid.size - 2)
    return i, (x - grid[i]) / (grid[i + 1] - grid[i])


def _weights(axes: list[np.ndarray], keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multilinear interpolation on the grid ``axes`` at ``keys`` ``[E, P]`` (clamped into the grid): the flat
    grid indices ``[E, 2^P]`` and their weights."""
    shape = [a.size for a in axes]
    idx, wts = np.zeros((keys.shape[0], 1), dtype=np.int64), np.ones((keys.shape[0], 1))
    for j, a in enumerate(axes):
        i, f = _linear(a, keys[:, j])
        stride = int(np.prod(shape[j + 1:]))
        idx = np.concatenate([idx + (i * stride)[:, None], idx + ((i + 1) * stride)[:, None]], axis=1)
        wts = np.concatenate([wts * (1 - f)[:, None], wts * f[:, None]], axis=1)
    return idx, wts


def _ideal(law: str, theta: np.ndarray, delta: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """The law's current ``[E, D, M]`` on a ``(Δ, m)`` grid for θ rows ``[E, P]``."""
    vs, vd = mid[None, :] + delta[:, None] / 2, mid[None, :] - delta[:, None] / 2
    return LAWS[law].current(vs[None], vd[None], theta[:, None, None, :])


def _predicted(cellmap: CellMap, lm) -> np.ndarray:
    """θ the calibration predicts for a layer's instances (after refinement: for the refined requests)."""
    return cellmap.cell.achieved(cellmap.law, lm.params, cellmap.calibration).reshape(lm.target.shape)


#: devices per block of the knee-aligned residual lookup (memory: block x 2^P x fine grid)
ALIGN_BLOCK = 128


def _aligned(law: str, theta: np.ndarray, grid_theta: np.ndarray, delta: np.ndarray,
             mid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For devices ``theta [E, P]`` and their grid corners ``grid_theta [E, K, P]``: the Δ ``[E, K, D, M]`` at which
    each corner's argument ``z = a·vs + b·vd + c`` equals the device's at every ``(Δ, m)`` of the fine grid, and m
    broadcast alike. Where that Δ would put a terminal beyond the window the cells are measured in (``|vs|, |vd| ≤
    max |m|``: there the corner's residual is its compliance, not its knee) or z hardly depends on Δ, Δ itself."""
    form = LAWS[law].form

    def coeffs(t):
        a, b, c = (np.broadcast_to(np.asarray(x, dtype=float), t.shape[:-1]) for x in
                   form.coefficients([t[..., j] for j in range(t.shape[-1])]))
        return a + b, 0.5 * (a - b), c  # z = (a + b)·m + (a − b)/2·Δ + c

    cm_e, k_e, c_e = (x[:, None, None, None] for x in coeffs(theta))
    cm_g, k_g, c_g = (x[:, :, None, None] for x in coeffs(grid_theta))
    d, m = delta[None, None, :, None], mid[None, None, None, :]
    z = cm_e * m + k_e * d + c_e
    flat = np.abs(k_g) < 1e-9
    d2 = (z - cm_g * m - c_g) / np.where(flat, 1.0, k_g)
    d2 = np.where(flat | (np.abs(d2) > 2.0 * (np.abs(mid).max() - np.abs(m)) + 1e-9), d, d2)
    return d2, np.broadcast_to(m, d2.shape)


def grid_devices(cellmap: CellMap, dspan: float = DIFF_SPAN, dpoints: int = DIFF_POINTS, mspan: float = MID_SPAN,
                 mpoints: int | None = None, cache: bool = True, rng_seed: int = 0) -> DeviceTables:
    """Every device's tables from the θ-grid table (see the module docstring), on the same ``(Δ, m)`` grid as
    :func:`measure_devices`, validated on :data:`VALIDATION_SAMPLE` devices swept one by one."""
    law = cellmap.law
    if mpoints is None:
        mpoints = cellmap.cell.mid_points or MID_POINTS
    axes = theta_grid(law, cellmap)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    gmap = cellmap.cell.map_layer(law, grid, cellmap.calibration)
    gparams = [gmap.instance(i) for i in range(len(gmap))]
    gd, gm = GRID_SWEEP
    with progress.task(f"θ-grid table: {len(grid)} {cellmap.cell.name} instances ({gd}x{gm} points)",
                       -(-len(grid) // GRID_CHUNK)):
        sw = _sweep(cellmap, gparams, GRID_CHUNK, dspan, gd, mspan, gm, cache)
    grid_theta = _predicted(cellmap, gmap)
    ideal = _ideal(law, grid_theta, sw.delta, sw.mid)
    res_sink, res_source = sw.sink - ideal, sw.source - ideal
    delta, mid = np.linspace(-dspan, dspan, dpoints), np.linspace(-mspan, mspan, mpoints)

    def tables(lm, fine: tuple[np.ndarray, np.ndarray]):
        achieved = _predicted(cellmap, lm)
        idx, w = _weights(axes, achieved)
        out = [np.empty((len(achieved), fine[0].size, fine[1].size)) for _ in range(2)]
        for start in range(0, len(achieved), ALIGN_BLOCK):
            part = slice(start, start + ALIGN_BLOCK)
            d2, m2 = _aligned(law, achieved[part], grid_theta[idx[part]], *fine)  # [E, K, D, M]
            corners = idx[part].reshape(-1)  # each (device, corner) pair a column of _bilinear
            at = _bilinear((res_sink[corners], res_source[corners]), sw.delta, sw.mid,
                           d2.reshape(corners.size, -1).T, m2.reshape(corners.size, -1).T)
            exact = _ideal(law, achieved[part], *fine)
            for o, r in zip(out, at):
                o[part] = exact + np.einsum("ek,ekdm->edm", w[part], r.T.reshape(d2.shape))
        return out

    sink, source = zip(*(tables(lm, (delta, mid)) for lm in cellmap.layers)) if cellmap.layers else ((), ())
    return DeviceTables(delta, mid, tuple(sink), tuple(source), _validate(cellmap, sw, tables, len(grid), cache,
                                                                           rng_seed))


def _validate(cellmap: CellMap, sw: DiffSweep, tables, grid: int, cache: bool, seed: int) -> Validation | None:
    """Sweep :data:`VALIDATION_SAMPLE` random devices one by one and compare the grid table's prediction."""
    everyone = [(k, i) for k, lm in enumerate(cellmap.layers) for i in range(len(lm))]
    if not everyone:
        return None
    pick = np.random.default_rng(seed).choice(len(everyone), min(VALIDATION_SAMPLE, len(everyone)), replace=False)
    chosen = [everyone[p] for p in sorted(pick)]
    with progress.task(f"validation: {len(chosen)} devices swept one by one", 1):
        meas = _sweep(cellmap, [cellmap.layers[k].instance(i) for k, i in chosen], GRID_CHUNK, DIFF_SPAN,
                      sw.delta.size, MID_SPAN, sw.mid.size, cache)
    predicted = {k: tables(cellmap.layers[k], (sw.delta, sw.mid)) for k in {k for k, _ in chosen}}
    vs, vd = sw.mid[None, :] + sw.delta[:, None] / 2, sw.mid[None, :] - sw.delta[:, None] / 2
    inside = (np.abs(vs) <= 4 + 1e-9) & (np.abs(vd) <= 4 + 1e-9)
    err = np.concatenate([(predicted[k][side][i] - measured[n])[inside]
                          for n, (k, i) in enumerate(chosen) for side, measured in enumerate((meas.sink, meas.source))])
    return Validation(len(chosen), grid, float(np.abs(err).max()), float(np.sqrt(np.mean(err ** 2))),
                      float(np.mean(err)))


def characterise(cellmap: CellMap, cache: bool = True) -> DeviceTables:
    """The characterised tables of every device: one sweep per instance (:func:`measure_devices`) below
    :data:`GRID_MIN_INSTANCES` instances, else the θ-grid table (:func:`grid_devices`)."""
    if sum(len(lm) for lm in cellmap.layers) < GRID_MIN_INSTANCES:
        return measure_devices(cellmap, cache=cache)
    return grid_devices(cellmap, cache=cache)


def _bilinear(tables: tuple[np.ndarray, ...], g1: np.ndarray, g2: np.ndarray, x1: np.ndarray,
              x2: np.ndarray) -> list[np.ndarray]:
    """Each ``table[e]`` of ``tables`` (all of one shape) at ``(x1[:, e], x2[:, e])`` on uniform grids ``g1``,
    ``g2``; outside them the edge values hold. The cell indices and weights are computed once for all tables,
    and the four corners are gathered from the flattened tables (one index each, not three)."""
    h1, h2 = g1[1] - g1[0], g2[1] - g2[0]
    f1 = np.clip((x1 - g1[0]) / h1, 0.0, g1.size - 1 - 1e-9)
    f2 = np.clip((x2 - g2[0]) / h2, 0.0, g2.size - 1 - 1e-9)
    i, j = f1.astype(np.int64), f2.astype(np.int64)
    a, b = f1 - i, f2 - j
    n2 = tables[0].shape[2]
    flat = (np.arange(tables[0].shape[0]) * (tables[0].shape[1] * n2))[None, :] + i * n2 + j
    w00, w10, w01, w11 = (1 - a) * (1 - b), a * (1 - b), (1 - a) * b, a * b
    out = []
    for table in tables:
        t = table.reshape(-1)
        out.append(w00 * t[flat] + w10 * t[flat + n2] + w01 * t[flat + 1] + w11 * t[flat + n2 + 1])
    return out


def table_rhs(tables: DeviceTables):
    """A right-hand-side factory for :func:`kcompile.reference.integrate` using the tables."""

    def factory(knet: KNet, k: int, dtype=np.float64):
        layer = knet.layers[k]
        n, e = knet.num_nodes, layer.num_devices
        cinv = sp.diags(1.0 / knet.capacitance)
        into = (cinv @ sp.csr_matrix((np.ones(e), (layer.dst, np.arange(e))), shape=(n + 1, e))[1:]).tocsr()
        out = (cinv @ sp.csr_matrix((np.ones(e), (layer.src, np.arange(e))), shape=(n + 1, e))[1:]).tocsr()
        sink, source = np.ascontiguousarray(tables.sink[k]), np.ascontiguousarray(tables.source[k])

        def rhs(v: np.ndarray) -> np.ndarray:
            vg = np.concatenate([np.zeros((v.shape[0], 1)), v], axis=1)
            vs, vd = vg[:, layer.src], vg[:, layer.dst]
            delta, mid = vs - vd, 0.5 * (vs + vd)
            i_sink, i_source = _bilinear((sink, source), tables.delta, tables.mid, delta, mid)
            return (into @ i_source.T - out @ i_sink.T).T

        return rhs

    return factory


def integrate_characterised(knet: KNet, tables: DeviceTables, inputs: np.ndarray, alpha: float = 1.0,
                            **kwargs) -> Trajectory:
    """The characterised reference trajectory (:func:`kcompile.reference.integrate` and its options; dopri5 at
    :data:`CHAR_RTOL`/:data:`CHAR_ATOL` unless ``rtol``/``atol`` are given).

    ``knet`` is the network the circuit realises; with ``alpha`` ≠ 1 it is the rescaled ``u = v/α``
    (:mod:`kcompile.scaling`), ``inputs`` are in the original units and so is the result.
    """
    kwargs = {"rtol": CHAR_RTOL, "atol": CHAR_ATOL, **kwargs}
    traj = integrate(knet, np.asarray(inputs, dtype=float) / alpha, rhs=table_rhs(tables), **kwargs)
    if alpha == 1.0:
        return traj
    return dataclasses.replace(traj, states=traj.states * alpha, outputs=traj.outputs * alpha,
                               grid_states=None if traj.grid_states is None else traj.grid_states * alpha)
