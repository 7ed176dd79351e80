"""The ngspice tool proxy as module functions: a thin view of :mod:`kcompile.backends.ngspice`.

Kept for the callers that predate the back-end seam (``ngspice.run``,
``ngspice.version``, ...); new code asks :func:`kcompile.backends.get_simulator`.
"""

from __future__ import annotations

from pathlib import Path

from .backends import RawData
from .backends.ngspice import ENV_BINARY, INSTALL_HINT, NGSPICE, NgspiceWarning, parse_raw

__all__ = ["ENV_BINARY", "INSTALL_HINT", "NgspiceWarning", "RawData", "available", "binary", "has_klu", "has_osdi",
           "parse_raw", "require", "run", "version"]

binary = NGSPICE.binary
available = NGSPICE.available
require = NGSPICE.require
version = NGSPICE.version
has_klu = NGSPICE.has_klu
has_osdi = NGSPICE.has_osdi


def run(deck: str, *, files: dict[str, Path] | None = None, defines: tuple[str, ...] | list[str] = (),
        timeout: float = 600.0, run_dir: Path | None = None, keep: bool = False) -> RawData:
    """Run one deck in ngspice's batch mode (:meth:`kcompile.backends.Simulator.run`)."""
    return NGSPICE.run(deck, files=files, defines=defines, timeout=timeout, run_dir=run_dir, keep=keep)
