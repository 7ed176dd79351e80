"""Exceptions meant for people: each says what is wrong, where, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class KCompileError(Exception):
    """Base class: the CLI prints the message on one line and exits with ``exit_code``."""

    exit_code = 2


class WeightsError(KCompileError):
    """A weights file breaks the ``kcompile.knet/1`` contract."""

    def __init__(self, path: str | Path, key: str | None, problem: str, fix: str = ""):
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{self.path}: key '{key}'" if key else self.path
        super().__init__(f"{where}: {problem}" + (f" ({fix})" if fix else ""))


class InputError(KCompileError):
    """Inputs, options or a build directory are unusable."""


class SimulatorError(KCompileError):
    """ngspice failed; carries everything needed to reproduce the run by hand."""

    exit_code = 3

    def __init__(self, message: str, run_dir: str | Path | None = None, deck: str = "", log: str = ""):
        self.run_dir, self.deck, self.log = run_dir, deck, log
        tail = "\n".join(log.strip().splitlines()[-8:])
        text = message
        if run_dir is not None:
            text += f" [run directory: {run_dir}]"
        if tail:
            text += "\n--- ngspice log (last lines) ---\n" + tail
        super().__init__(text)
