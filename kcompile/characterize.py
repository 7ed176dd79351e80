"""The calibration CLI: characterise a cell on one PDK corner and print its calibration and accuracy.

``python -m kcompile.characterize PDK [CORNER [LAW]]`` prints the figures quoted
in ``docs/cells.md`` for the cell of LAW (default ``relu``: the signed ReLU
cell, with the poster's baseline beside it; also ``tanh1``, the one-stage tanh
of ``kc_gm``). Each registered cell (:mod:`kcompile.cells.registry`) says
which names it reports (:attr:`kcompile.cells.base.Cell.studies`) and prints
its own report; the measurements come from the cells' cached DC sweeps
(:mod:`kcompile.cells.sweep`).
"""

from __future__ import annotations

import sys

from .cells.registry import CELLS
from .errors import InputError, KCompileError


def main(argv: list[str]) -> None:
    """Print the calibration and accuracy of the cells of one study: ``PDK [CORNER [LAW]]``."""
    pdk_name = argv[0] if argv else "generic180"
    corner = argv[1] if len(argv) > 1 else "tt"
    study = argv[2] if len(argv) > 2 else "relu"
    cells = CELLS.for_study(study)
    if not cells:
        raise InputError(f"python -m kcompile.characterize: no cell reports {study!r}; choose one of "
                         f"{', '.join(CELLS.studies)}")
    for cell in cells:
        cell.report(study, pdk_name, corner)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KCompileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
