"""The cell registry: every cell family kcompile knows, and which law each one realises.

Adding a cell is one module in ``kcompile/cells/`` (a :class:`kcompile.cells.base.Cell`
subclass and its instance ``CELL``), one template in ``templates/cells/``, and
one line below. Names are unique and a law has at most one cell; both are
checked when the registry is built. ``tests/test_cells_contract.py`` runs the
same contract over every registered cell.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..errors import InputError
from . import kc_arelu, kc_atanh, kc_gm, kc_relu, kc_tanh2, poster_relu
from .base import Cell


class NoCellError(InputError):
    """A law has no transistor-level cell (exit status 2; the message names the fix)."""


class Registry:
    """Cells by name, and the cell of each law.

    Raises
    ------
    ValueError
        Two cells share a name, or two cells claim one law.
    """

    def __init__(self, cells: Iterable[Cell] = ()):
        self._cells: dict[str, Cell] = {}
        self._laws: dict[str, Cell] = {}
        for cell in cells:
            self.register(cell)

    def register(self, cell: Cell) -> Cell:
        """Add ``cell``; duplicate names and laws claimed twice are refused."""
        if cell.name in self._cells:
            raise ValueError(f"cell name {cell.name!r} is registered twice ({type(self._cells[cell.name]).__name__} "
                             f"and {type(cell).__name__}); give the new cell a name of its own")
        for law in cell.laws:
            if law in self._laws:
                raise ValueError(f"law {law!r} has two cells, {self._laws[law].name} and {cell.name}; a law maps "
                                 "onto one cell")
        self._cells[cell.name] = cell
        self._laws.update({law: cell for law in cell.laws})
        return cell

    def __getitem__(self, name: str) -> Cell:
        return self._cells[name]

    def __contains__(self, name: str) -> bool:
        return name in self._cells

    def __iter__(self) -> Iterator[Cell]:
        return iter(self._cells.values())

    def __len__(self) -> int:
        return len(self._cells)

    @property
    def laws(self) -> tuple[str, ...]:
        """Every law with a cell, sorted."""
        return tuple(sorted(self._laws))

    def find(self, law: str) -> Cell | None:
        """The cell realising ``law``, or ``None``."""
        return self._laws.get(law)

    def for_law(self, law: str) -> Cell:
        """The cell realising ``law``.

        Raises
        ------
        NoCellError
            No registered cell realises it; the message names the laws that have one and the fix.
        """
        cell = self._laws.get(law)
        if cell is None:
            raise NoCellError(f"law {law!r} has no transistor-level cell (cells exist for the laws "
                              f"{', '.join(self.laws)}); build it with --cells behavioural, or add a cell for it "
                              "(docs/cells.md, 'Adding a cell')")
        return cell

    def variant(self, subckt: str) -> tuple[Cell, str]:
        """The cell and sign variant whose subcircuit is named ``subckt``."""
        for cell in self:
            for signs in cell.variants:
                if cell.subckt(signs) == subckt:
                    return cell, signs
        raise KeyError(f"no registered cell renders a subcircuit named {subckt!r}")

    def for_study(self, study: str) -> list[Cell]:
        """The cells whose :meth:`~kcompile.cells.base.Cell.report` prints ``study`` (registry order)."""
        return [cell for cell in self if study in (cell.laws if cell.studies is None else cell.studies)]

    @property
    def studies(self) -> tuple[str, ...]:
        """Every name :meth:`for_study` knows."""
        return tuple(dict.fromkeys(s for cell in self for s in (cell.laws if cell.studies is None else cell.studies)))


CELLS = Registry([
    kc_relu.CELL,
    kc_gm.CELL,
    kc_tanh2.CELL,
    kc_arelu.CELL,
    kc_atanh.CELL,
    poster_relu.CELL,
])


def cell_for_law(law: str, area: float = 1.0) -> Cell:
    """The registered cell realising ``law`` (:meth:`Registry.for_law`: refused with the fix when there is none),
    drawn ``area`` times as large (:meth:`~kcompile.cells.base.Cell.with_area`)."""
    return CELLS.for_law(law).with_area(area)
