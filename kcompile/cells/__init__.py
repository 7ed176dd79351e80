"""Transistor-level cells: one cell family per module, one protocol, one registry.

=================  ====================================  ============================
module             cell                                  laws
=================  ====================================  ============================
``kc_relu``        signed current-mode ReLU              ``relu``, ``shift_relu``
``kc_gm``          signed transconductance (one pair)    ``linear``
``kc_tanh2``       two-stage tanh                        ``tanh``
``kc_arelu``       two-pair ReLU                         ``relu_affine``
``kc_atanh``       two-pair two-stage tanh               ``tanh_affine``
``poster_relu``    the poster's baseline (measured only)  none
=================  ====================================  ============================

Every family implements :class:`kcompile.cells.base.Cell` (template and ports,
instance parameters, characterisation sweep, calibration, θ → parameter arrays,
achieved θ, clip reasons, the transistors mismatch varies, and refinement,
mismatch attribution and a training surrogate where it has them, a clear
refusal where it has not). Shared machinery: :mod:`kcompile.cells.base` (scaling,
bias rules, table lookups, the mapped layer) and :mod:`kcompile.cells.sweep`
(benches, ngspice runs, the cache keyed by deck content). Stages ask
:data:`CELLS` (:mod:`kcompile.cells.registry`) for a law's cell; a law without
one is refused with the fix. docs/cells.md says how to add a cell.
"""

from .base import COMPLIANCE_SPAN, Accuracy, Cell, LayerMap, Transistor, default_scaling
from .registry import CELLS, NoCellError, Registry, cell_for_law

__all__ = ["COMPLIANCE_SPAN", "CELLS", "Accuracy", "Cell", "LayerMap", "NoCellError", "Registry", "Transistor",
           "cell_for_law", "default_scaling"]
