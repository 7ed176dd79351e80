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
from .mapping import CellMap, map_knet, theta_tolerance

WINDOW = 4.0  # |Δ| fitted (model units): the cells' compliance window
MID_WINDOW = 2.0  # |common mode| fitted
MAX_RATIO, MAX_SHIFT = 1.4, 0.5  # bounds of one secant step
# Two steps: on the moons classifier the largest θ miss fell 0.115 -> 0.014 -> 0.003 units and the
# characterised level's largest output error vs the ideal model 2.54 -> 0.58 -> 0.41 (docs/transistor.md).
DEFAULT_STEPS = 2
# ... and up to this many more while a device still misses its θ beyond the cell's accuracy: a two-pair ReLU cell
# on sky130 at the edge of its slope box missed by 0.63, by 0.22 after the two bounded (x/÷ 1.4) steps, and one
# such device moved an internal node of its network by 6 units (a quarter of the swing)
EXTRA_STEPS = 2


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


def secant(law: str, target: np.ndarray, request: np.ndarray, achieved: np.ndarray, usable: np.ndarray,
           previous: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The next requested θ: ``request`` moved by the miss ``target − achieved`` (bounded), the law's slope columns
    multiplicatively and its offset columns additively (:meth:`~kcompile.cells.base.Cell.refine_columns`). A slope
    column moves only where its target is at least :data:`MIN_SLOPE` and the fit has its sign (a ratio of a slope
    the cell barely expresses is noise).

    ``previous`` (the request and achieved θ of the step before): each column moves by the secant through the last
    two iterates instead, where they differ and the cell's response rose with the request (a two-pair ReLU cell on
    sky130 answered a request of −1.2 with −1.40 and one of −1.35 with −1.79: proportional steps overshoot there
    and oscillate), within the same bounds."""
    slopes, offsets = cell_for_law(law).refine_columns(law)
    nxt = np.array(request, dtype=float)

    def through(j: int) -> np.ndarray | None:
        """The request at which the line through the last two iterates of column ``j`` meets the target."""
        if previous is None:
            return None
        dreq, dach = request[:, j] - previous[0][:, j], achieved[:, j] - previous[1][:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            guess = request[:, j] + (target[:, j] - achieved[:, j]) * dreq / dach
        return np.where((dreq * dach > 0) & (np.abs(dach) > 1e-9) & np.isfinite(guess), guess, np.nan)

    for j in slopes:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = target[:, j] / achieved[:, j]
            line = through(j)
            if line is not None:
                ratio = np.where(np.isnan(line), ratio, line / request[:, j])
        ratio = np.clip(ratio, 1 / MAX_RATIO, MAX_RATIO)
        ok = usable & (np.abs(target[:, j]) >= MIN_SLOPE) & (target[:, j] * achieved[:, j] > 0)
        nxt[ok, j] = request[ok, j] * ratio[ok]
    for j in offsets:
        shift = target[:, j] - achieved[:, j]
        line = through(j)
        if line is not None:
            shift = np.where(np.isnan(line), shift, line - request[:, j])
        shift = np.clip(shift, -MAX_SHIFT, MAX_SHIFT)
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


def _missing(law: str, cellmap: CellMap, fits: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Usable fits whose θ misses the target beyond :func:`kcompile.mapping.theta_tolerance` (what
    :func:`kcompile.mapping.theta_misses` will count)."""
    acc, scaling = cellmap.cell.accuracy(cellmap.pdk), cellmap.calibration.scaling
    return sum(int((usable & (np.abs(achieved - lm.target) > theta_tolerance(law, lm.target, acc, scaling)).any(axis=1)
                    ).sum()) for lm, (achieved, usable) in zip(cellmap.layers, fits))


def refine(knet: KNet, cellmap: CellMap, steps: int = DEFAULT_STEPS, cache: bool = True,
           extra: int = EXTRA_STEPS) -> CellMap:
    """The map after ``steps`` measured steps per device (``cellmap`` itself for 0), and up to ``extra`` more,
    along the secant through the last two iterates, while a device still misses its θ beyond the cell's calibrated
    accuracy.

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
    fits = [fit_law(law, layer.theta, tables, k) for k, layer in enumerate(knet.layers)]
    before = [None] * len(knet.layers)
    for step in range(steps + extra):
        if step >= steps and not _missing(law, cellmap, fits):
            break
        # the extra steps follow the secant through the last two iterates (the first ones: proportional)
        nxt = [secant(law, layer.theta, request, *fit, previous=last if step >= steps else None)
               for layer, request, fit, last in zip(knet.layers, requests, fits, before)]
        before = [(request, achieved) for request, (achieved, _) in zip(requests, fits)]
        requests = nxt
        mapped = map_knet(_with_theta(knet, requests), cellmap.pdk.name, cellmap.corner, cellmap.scaling, cache=cache,
                          area=cellmap.cell.area)
        tables = measure(mapped, cache=cache)
        fits = [fit_law(law, layer.theta, tables, k) for k, layer in enumerate(knet.layers)]
    layers = []
    for old, new, (achieved, usable) in zip(cellmap.layers, mapped.layers, fits):
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
