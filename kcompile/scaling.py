"""Physical scaling between model units and volts, amperes, farads and seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scaling:
    """Physical scaling: ``V = vcm + v0·v``, ``I = i0·g``, ``C = c_unit·c``.

    The default is the identity (model units are volts, amperes, farads and
    seconds), which is what the behavioural level uses to check the compiler.
    """

    v0: float = 1.0
    vcm: float = 0.0
    i0: float = 1.0
    c_unit: float = 1.0

    @property
    def tau(self) -> float:
        """Seconds per model time unit: ``c_unit·v0/i0``."""
        return self.c_unit * self.v0 / self.i0

    @property
    def is_identity(self) -> bool:
        return self == Scaling()
