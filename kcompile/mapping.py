"""Technology mapping: every device of a KNet onto a calibrated transistor-level cell.

``map_knet`` takes a network, a PDK corner and a scaling, asks the cell
registry (:mod:`kcompile.cells.registry`) for the law's cell, characterises and
calibrates it there (cached DC sweeps), and returns a :class:`CellMap`: per
layer a :class:`kcompile.cells.base.LayerMap` with the instances' parameters,
target θ, the θ the calibration predicts each instance achieves, and a flag
where the two differ beyond tolerance (the cell's
:meth:`~kcompile.cells.base.Cell.clip_reason` says why). A law without a cell is
refused with the laws that have one and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .cells import Cell, LayerMap, cell_for_law, default_scaling
from .knet import KNet
from .pdk import Pdk, get_pdk
from .scaling import Scaling

# 10 pF per model capacitance unit: tau = 2 µs at 0.5 µA. What sets the transistor level's error is not
# tau but the ratio of the node capacitance to the charge each cell moves on its own: ~8 fC of switch charge
# at every enable edge and ~150 fF of effective (delay) capacitance per enabled cell, independent of i0 and
# θ0 (docs/transistor.md). At 1 pF they moved the shipped example's nodes by up to 0.25 units per layer
# boundary; at 10 pF by 0.025. ngspice's cost does not depend on C (its steps follow the layer windows).
DEFAULT_C_UNIT = 10e-12


@dataclass(frozen=True, eq=False)
class CellMap:
    """The mapped circuit: which cell, PDK, corner, scaling, calibration, and per-layer instances."""

    pdk: Pdk
    corner: str
    scaling: Scaling
    calibration: object
    layers: tuple[LayerMap, ...]
    cell: Cell

    def instances(self, k: int) -> list:
        """Every instance of layer ``k`` (the cell's own parameter objects)."""
        lm = self.layers[k]
        return [lm.instance(i) for i in range(len(lm))]

    @property
    def clipped(self) -> list[tuple[int, int]]:
        """``(layer, index)`` of every device realised with clipped θ."""
        return [(k, int(i)) for k, lm in enumerate(self.layers) for i in np.flatnonzero(lm.clipped)]

    def clip_reason(self, law: str, k: int, i: int) -> str | None:
        """Why device ``i`` of layer ``k`` is flagged (the cell's reason), or ``None``."""
        lm = self.layers[k]
        return self.cell.clip_reason(law, lm.target[i], lm.instance(i), self.calibration)


def transistor_scaling(pdk: Pdk, **overrides: float) -> Scaling:
    """Default transistor-level scaling: 0.1 V and 0.5 µA per unit, 10 pF, vcm a third of the supply."""
    return dataclasses.replace(default_scaling(pdk), **{"c_unit": DEFAULT_C_UNIT, **overrides})


def map_knet(knet: KNet, pdk_name: str = "generic180", corner: str = "tt", scaling: Scaling | None = None,
             cache: bool = True) -> CellMap:
    """Map every device of ``knet`` onto the calibrated cell of its law.

    Raises
    ------
    kcompile.cells.NoCellError
        No cell realises the law (an :class:`~kcompile.errors.InputError`; the message names the fix).
    """
    cell = cell_for_law(knet.law)
    pdk = get_pdk(pdk_name)
    scaling = scaling or transistor_scaling(pdk)
    # the cell's I-V in model units does not depend on the capacitance; calibrate at the cells' own scaling
    cal_scaling = dataclasses.replace(scaling, c_unit=default_scaling(pdk).c_unit)
    cal = cell.calibration(pdk_name, corner, cal_scaling, cache=cache)
    layers = tuple(cell.map_layer(knet.law, layer.theta, cal) for layer in knet.layers)
    return CellMap(pdk, corner, scaling, cal, layers, cell)
