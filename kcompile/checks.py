"""One rule for every number a person or a file hands kcompile: finite, of the right kind, within bounds.

The command line (click types), flow files, build manifests and the
:class:`~kcompile.netlist.Tran` analysis all check their numbers with
:class:`Number`, so "finite, positive where physical, integer ranges" means
the same everywhere and every message reads ``must be <rule>, got <value>``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass


def short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message never echoes a whole hostile input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Number:
    """What a numeric parameter may be: always finite; optionally an integer, and within bounds.

    Parameters
    ----------
    low, high : float, optional
        Inclusive bounds (``low`` exclusive with ``low_open``).
    integer : bool
        Only integers (``True``/``False`` are never numbers).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None and not self.low_open:
            return f"{kind} from {_fmt(self.low)} to {_fmt(self.high)}"
        bounds = [f"{'>' if self.low_open else '>='} {_fmt(self.low)}"] if self.low is not None else []
        bounds += [f"<= {_fmt(self.high)}"] if self.high is not None else []
        return " ".join([kind, " and ".join(bounds)]) if bounds else kind

    def problem(self, value) -> str | None:
        """``None`` if ``value`` is acceptable, else what is wrong: ``"must be at least 1, got 0"``."""
        if not isinstance(value, numbers.Integral if self.integer else numbers.Real) or isinstance(value, bool):
            return f"must be {'an integer' if self.integer else 'a number'}, got {short(value)}"
        try:
            finite = self.integer or math.isfinite(value)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            return f"must be finite, got {short(value)}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'more than' if self.low_open else 'at least'} {_fmt(self.low)}, got {short(value)}"
        if self.high is not None and value > self.high:
            return f"must be at most {_fmt(self.high)}, got {short(value)}"
        return None


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


#: common rules
FINITE = Number()
POSITIVE = Number(0, low_open=True)
NON_NEGATIVE = Number(0)
#: how many of something the input may ask for (samples, runs, processes)
COUNT = Number(1, 1_000_000, integer=True)
#: seeds of NumPy's generators
SEED = Number(0, 2**63 - 1, integer=True)
#: degrees Celsius a simulator accepts (ngspice models are fitted from -55 to 150 °C at best)
CELSIUS = Number(-273.15, 1000.0, low_open=True)
#: physical scaling (:class:`kcompile.scaling.Scaling`): volts, amperes and farads per model unit, offset in volts
SCALING = {"v0": POSITIVE, "vcm": FINITE, "i0": POSITIVE, "c_unit": POSITIVE}


def scaling_problem(scaling) -> str | None:
    """What is wrong with a :class:`~kcompile.scaling.Scaling` (each field, and the time unit
    ``tau = c_unit·v0/i0`` they imply), or ``None``."""
    for name, rule in SCALING.items():
        if rule.problem(getattr(scaling, name)):
            return f"'{name}' {rule.problem(getattr(scaling, name))}"
    with contextlib.suppress(ArithmeticError):
        if not POSITIVE.problem(scaling.tau):
            return None
    return (f"c_unit·v0/i0 = {scaling.c_unit:g}·{scaling.v0:g}/{scaling.i0:g} is not a finite positive time unit "
            "(tau, seconds per model time unit)")
#: transient step cap, 1/N of the shortest layer
POINTS_PER_LAYER = Number(10, 10_000_000, integer=True)
#: per-device refinement steps of transistor cells
REFINE_STEPS = Number(0, 100, integer=True)
#: a cell's gate area relative to its drawn sizes (:meth:`kcompile.cells.base.Cell.with_area`): 64 = 8 × 8 as large
CELL_AREA = Number(1, 64)
