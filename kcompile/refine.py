"""Per-device refinement: correct every mapped cell from its own measured DC I–V.

The calibration (:mod:`kcompile.cells`) inverts a table measured on a
handful of degeneration resistors and one injection point, and fits only the
s-side copy; each instance then misses its target θ by its own amount (a few
% of slope, up to ~0.09 units of intercept on the moons classifier: the pair's
offset at that r, the injection gain away from the calibration point, the
d-side copy). :func:`refine` measures every instance (:func:`measure`: the
characterised level's sweeps, or the cell's coarser refinement grid, cached),
fits the law's θ to the mean of the two copies inside the compliance window
(the cell's :meth:`~kcompile.cells.base.Cell.refine_fit`), takes a secant step
on the requested θ (slope-like parameters multiplicatively, offsets
additively, both bounded), re-maps and measures again, ``steps`` times: the
refined map's ``achieved`` θ are then measured, not predicted, and a device
the calibration mispredicts shows up as a θ miss
(:func:`kcompile.mapping.theta_misses`). Each step costs one more DC sweep of
every instance, so :func:`steps_for` turns it on by default only up to the
cell's :attr:`~kcompile.cells.base.Cell.refine_devices`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .cells import CELLS, cell_for_law
from .cells.base import MIN_SLOPE
from .characterised import DeviceTables, measure_devices
from .errors import InputError
from .knet import KNet
from .mapping import CellMap, map_knet

WINDOW = 4.0  # |Δ| fitted (model units): the cells' compliance window
MID_WINDOW = 2.0  # |common mode| fitted
MAX_RATIO, MAX_SHIFT = 1.4, 0.5  # bounds of one secant step
# Two steps: on the moons classifier the largest θ miss fell 0.115 -> 0.014 -> 0.003 units and the
# characterised level's largest output error vs the ideal model 2.54 -> 0.58 -> 0.41 (docs/transistor.md).
DEFAULT_STEPS = 2


def refinable_laws() -> tuple[str, ...]:
    """The laws whose cells are refinable."""
    return tuple(law for cell in CELLS if cell.refinable for law in cell.laws)


def fit_law(law: str, theta: np.ndarray, tables: DeviceTables, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Law-form θ each instance of layer ``k`` achieves, and whether the fit is usable.

    The law's cell fits the mean of the sink and source currents over the window
    (``|Δ| ≤`` :data:`WINDOW`, ``|m| ≤`` :data:`MID_WINDOW`; the signed ReLU cell:
    :func:`kcompile.cells.kc_relu.fit_relu` in relu form; the two-pair cells: their plane fits).
    """
    rows = np.abs(tables.delta) <= WINDOW
    cols = np.abs(tables.mid) <= MID_WINDOW
    delta = np.repeat(tables.delta[rows][:, None], cols.sum(), axis=1)
    mid = np.repeat(tables.mid[cols][None, :], rows.sum(), axis=0)
    mean = 0.5 * (tables.sink[k] + tables.source[k])[:, rows][:, :, cols]
    return cell_for_law(law).refine_fit(law, theta, delta, mid, mean)


def secant(law: str, target: np.ndarray, request: np.ndarray, achieved: np.ndarray,
           usable: np.ndarray) -> np.ndarray:
    """The next requested θ: ``request`` moved by the miss ``target − achieved`` (bounded), the law's slope columns
    multiplicatively and its offset columns additively (:meth:`~kcompile.cells.base.Cell.refine_columns`). A slope
    column moves only where its target is at least :data:`MIN_SLOPE` and the fit has its sign (a ratio of a slope
    the cell barely expresses is noise)."""
    slopes, offsets = cell_for_law(law).refine_columns(law)
    nxt = np.array(request, dtype=float)
    for j in slopes:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.clip(target[:, j] / achieved[:, j], 1 / MAX_RATIO, MAX_RATIO)
        ok = usable & (np.abs(target[:, j]) >= MIN_SLOPE) & (target[:, j] * achieved[:, j] > 0)
        nxt[ok, j] = request[ok, j] * ratio[ok]
    for j in offsets:
        shift = np.clip(target[:, j] - achieved[:, j], -MAX_SHIFT, MAX_SHIFT)
        nxt[usable, j] = request[usable, j] + shift[usable]
    return nxt


def measure(cellmap: CellMap, cache: bool = True) -> DeviceTables:
    """Every instance of ``cellmap`` DC-swept on its cell's refinement grid
    (:attr:`~kcompile.cells.base.Cell.refine_grid`; the characterised level's grid when it has none)."""
    grid = cellmap.cell.refine_grid
    return measure_devices(cellmap, cache=cache) if grid is None else measure_devices(cellmap, *grid, cache=cache)


def _with_theta(knet: KNet, thetas: list[np.ndarray]) -> KNet:
    layers = tuple(dataclasses.replace(layer, theta=theta) for layer, theta in zip(knet.layers, thetas))
    return dataclasses.replace(knet, layers=layers)


def refine(knet: KNet, cellmap: CellMap, steps: int = DEFAULT_STEPS, cache: bool = True) -> CellMap:
    """The map after ``steps`` measured secant steps per device (``cellmap`` itself for 0).

    Targets and clip flags stay those of ``cellmap`` (the trained θ); the
    instance parameters realise the corrected requests, and ``achieved`` is
    fitted to the refined instances' measured I–V (unusable fits: as mapped).
    """
    if steps <= 0:
        return cellmap
    law = knet.law
    if not cell_for_law(law).refinable:
        raise InputError(f"per-device refinement covers the {' and '.join(refinable_laws())} laws, not {law!r}; "
                         "build with --refine-steps 0")
    requests = [layer.theta for layer in knet.layers]
    mapped, tables = cellmap, measure(cellmap, cache=cache)
    for _ in range(steps):
        requests = [secant(law, layer.theta, request, *fit_law(law, layer.theta, tables, k))
                    for k, (layer, request) in enumerate(zip(knet.layers, requests))]
        mapped = map_knet(_with_theta(knet, requests), cellmap.pdk.name, cellmap.corner, cellmap.scaling, cache=cache)
        tables = measure(mapped, cache=cache)
    layers = []
    for k, (old, new) in enumerate(zip(cellmap.layers, mapped.layers)):
        achieved, usable = fit_law(law, knet.layers[k].theta, tables, k)
        achieved[~usable] = old.achieved[~usable]
        layers.append(dataclasses.replace(new, target=old.target, achieved=achieved, clipped=old.clipped))
    return dataclasses.replace(mapped, layers=tuple(layers))


def steps_for(knet: KNet, refine_steps: int | None) -> int:
    """Refinement steps to run: ``refine_steps``, or when ``None`` :data:`DEFAULT_STEPS` for a network of a
    refinable cell's law with at most the cell's :attr:`~kcompile.cells.base.Cell.refine_devices` devices."""
    if refine_steps is None:
        cell = CELLS.find(knet.law)
        return DEFAULT_STEPS if cell is not None and cell.refinable and knet.num_devices <= cell.refine_devices else 0
    return refine_steps
