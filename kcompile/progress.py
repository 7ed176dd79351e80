"""Progress of long steps (calibration, characterised tables, refinement, range analysis, budget), for whoever listens.

Library code opens a :func:`task` around a long step and advances it; the
DC sweeps (:func:`kcompile.cells.sweep.cached`) advance the innermost open
task by one deck each, saying whether the deck came from the cache. Nothing
is printed unless a listener is installed with :func:`listening` (the
command line installs one that draws a bar on stderr); events carry the
step, how far it is, and how much of it came from the cache.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class Event:
    """One update of a step: ``kind`` is ``"start"``, ``"advance"`` or ``"end"``.

    ``done``/``total`` count its units (``total`` ``None`` when unknown), ``cached`` how many of the
    done ones came from the cache, ``elapsed`` seconds since it started.
    """

    kind: str
    label: str
    done: int
    total: int | None
    cached: int
    elapsed: float


_listener: contextvars.ContextVar[Callable[[Event], None] | None] = contextvars.ContextVar("kcompile_progress",
                                                                                          default=None)
_open: contextvars.ContextVar[tuple] = contextvars.ContextVar("kcompile_progress_tasks", default=())


class Task:
    """An open step (see :func:`task`)."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total, self.done, self.cached, self._t0 = label, total, 0, 0, time.perf_counter()

    def _emit(self, kind: str) -> None:
        listener = _listener.get()
        if listener is not None:
            listener(Event(kind, self.label, self.done, self.total, self.cached, time.perf_counter() - self._t0))

    def advance(self, n: int = 1, cached: bool = False) -> None:
        """``n`` more units done (``cached``: they came from the cache)."""
        self.done += n
        self.cached += n if cached else 0
        self._emit("advance")


@contextlib.contextmanager
def task(label: str, total: int | None = None) -> Iterator[Task]:
    """Open a step named ``label`` of ``total`` units (``None``: unknown) for the duration of the block."""
    t = Task(label, total)
    token = _open.set(_open.get() + (t,))
    t._emit("start")
    try:
        yield t
    finally:
        _open.reset(token)
        t._emit("end")


def deck(cached: bool) -> None:
    """One DC deck of the innermost open step finished (or was read from the cache)."""
    tasks = _open.get()
    if tasks:
        tasks[-1].advance(1, cached)


@contextlib.contextmanager
def listening(listener: Callable[[Event], None]) -> Iterator[None]:
    """Send every :class:`Event` to ``listener`` for the duration of the block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
