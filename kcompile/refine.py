"""Per-device refinement: correct every mapped cell from its own measured DC I–V.

The calibration (:mod:`kcompile.cells`) inverts a table measured on a
handful of degeneration resistors and one injection point, and fits only the
s-side copy; each instance then misses its target θ by its own amount (a few
% of slope, up to ~0.09 units of intercept on the moons classifier: the pair's
offset at that r, the injection gain away from the calibration point, the
d-side copy). :func:`refine` measures every instance
(:func:`kcompile.characterised.measure_devices`, cached), fits the law's θ to
the mean of the two copies inside the compliance window (the cell's
:meth:`~kcompile.cells.base.Cell.refine_fit`), takes a secant step on the
requested θ (slope-like parameters multiplicatively, offsets additively, both
bounded), re-maps and measures again, ``steps`` times: the refined map's
``achieved`` θ are then measured, not predicted. Each step costs one more DC
sweep of every instance, so :func:`steps_for` turns it on by default only for
small networks, and only for cells that are refinable
(:attr:`~kcompile.cells.base.Cell.refinable`: the signed ReLU cell's laws).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .cells import CELLS, cell_for_law
from .characterised import DeviceTables, measure_devices
from .errors import InputError
from .knet import KNet
from .mapping import CellMap, map_knet

# Refinement runs by default up to this many devices. Each sweep is one ngspice DC deck per 150
# instances (about a minute of wall time per step for the 84-device moons classifier at load ~13,
# generic180); the MNIST checkpoint would need ~3,000 decks per sweep.
AUTO_MAX_DEVICES = 2000
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
    :func:`kcompile.cells.kc_relu.fit_relu` in relu form).
    """
    rows = np.abs(tables.delta) <= WINDOW
    cols = np.abs(tables.mid) <= MID_WINDOW
    delta = np.repeat(tables.delta[rows][:, None], cols.sum(), axis=1)
    mean = 0.5 * (tables.sink[k] + tables.source[k])[:, rows][:, :, cols]
    return cell_for_law(law).refine_fit(law, theta, delta, mean)


def secant(law: str, target: np.ndarray, request: np.ndarray, achieved: np.ndarray,
           usable: np.ndarray) -> np.ndarray:
    """The next requested θ: ``request`` moved by the miss ``target − achieved`` (bounded), the law's slope column
    multiplicatively and its offset column additively (:meth:`~kcompile.cells.base.Cell.refine_columns`)."""
    slope, offset = cell_for_law(law).refine_columns(law)
    nxt = np.array(request, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.clip(target[:, slope] / achieved[:, slope], 1 / MAX_RATIO, MAX_RATIO)
    shift = np.clip(target[:, offset] - achieved[:, offset], -MAX_SHIFT, MAX_SHIFT)
    nxt[usable, slope] = request[usable, slope] * ratio[usable]
    nxt[usable, offset] = request[usable, offset] + shift[usable]
    return nxt


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
    mapped, tables = cellmap, measure_devices(cellmap, cache=cache)
    for _ in range(steps):
        requests = [secant(law, layer.theta, request, *fit_law(law, layer.theta, tables, k))
                    for k, (layer, request) in enumerate(zip(knet.layers, requests))]
        mapped = map_knet(_with_theta(knet, requests), cellmap.pdk.name, cellmap.corner, cellmap.scaling, cache=cache)
        tables = measure_devices(mapped, cache=cache)
    layers = []
    for k, (old, new) in enumerate(zip(cellmap.layers, mapped.layers)):
        achieved, usable = fit_law(law, knet.layers[k].theta, tables, k)
        achieved[~usable] = old.achieved[~usable]
        layers.append(dataclasses.replace(new, target=old.target, achieved=achieved, clipped=old.clipped))
    return dataclasses.replace(mapped, layers=tuple(layers))


def steps_for(knet: KNet, refine_steps: int | None) -> int:
    """Refinement steps to run: ``refine_steps``, or :data:`DEFAULT_STEPS` for small networks of a refinable law
    (:func:`refinable_laws`) when ``None``."""
    if refine_steps is None:
        return DEFAULT_STEPS if knet.num_devices <= AUTO_MAX_DEVICES and knet.law in refinable_laws() else 0
    return refine_steps
