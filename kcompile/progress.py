"""Progress of long steps (calibration, characterised tables, refinement, range analysis, budget), for whoever listens.

Library code opens a :func:`task` around a long step and advances it; the
DC sweeps (:func:`kcompile.cells.sweep.cached`) advance the innermost open
task by one deck each, saying whether the deck came from the cache. A
simulator run reports the inside of its transient the same way: a step
``"operating point"`` while the simulator solves it, then ``"transient"``
measured in seconds of simulated time (``unit="s"``, :meth:`Task.reach`),
read from what the simulator prints as it runs
(:meth:`kcompile.backends.Simulator.run`). Nothing is printed unless a
listener is installed with :func:`listening` (the command line installs one
that draws a bar on stderr, on a terminal only); events carry the step, how
far it is, and how much of it came from the cache. Worker processes send
their events to the listener of the process that started them
(:func:`relay`, :func:`forward`).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class Event:
    """One update of a step: ``kind`` is ``"start"``, ``"advance"`` or ``"end"``.

    ``done``/``total`` count its units (``total`` ``None`` when unknown), ``cached`` how many of the
    done ones came from the cache, ``elapsed`` seconds since it started. ``unit`` is empty for a count,
    else what ``done``/``total`` measure (``"s"``: seconds of simulated time). ``key`` tells apart steps
    open at the same time (in this process or in workers) that share a label. ``summary``: whether the
    step's end is worth a line of its own (a simulator run's inner stages are not: the step around them says).
    """

    kind: str
    label: str
    done: float
    total: float | None
    cached: int
    elapsed: float
    unit: str = ""
    key: str = ""
    summary: bool = True


_listener: contextvars.ContextVar[Callable[[Event], None] | None] = contextvars.ContextVar("kcompile_progress",
                                                                                          default=None)
_open: contextvars.ContextVar[tuple] = contextvars.ContextVar("kcompile_progress_tasks", default=())
_keys = itertools.count()


class Task:
    """An open step (see :func:`task`)."""

    def __init__(self, label: str, total: float | None, unit: str = "", summary: bool = True):
        self.label, self.total, self.unit, self.summary, self.done, self.cached = label, total, unit, summary, 0, 0
        self._t0, self._key = time.perf_counter(), f"{os.getpid()}.{next(_keys)}"

    def _emit(self, kind: str) -> None:
        listener = _listener.get()
        if listener is not None:
            listener(Event(kind, self.label, self.done, self.total, self.cached, time.perf_counter() - self._t0,
                           self.unit, self._key, self.summary))

    def advance(self, n: int = 1, cached: bool = False) -> None:
        """``n`` more units done (``cached``: they came from the cache)."""
        self.done += n
        self.cached += n if cached else 0
        self._emit("advance")

    def reach(self, done: float) -> None:
        """The step has reached ``done`` units (a measure such as simulated time, rather than a count)."""
        self.done = done
        self._emit("advance")


@contextlib.contextmanager
def task(label: str, total: float | None = None, unit: str = "", summary: bool = True) -> Iterator[Task]:
    """Open a step named ``label`` of ``total`` units (``None``: unknown) for the duration of the block;
    ``unit``: what a measured step's units are (``"s"``), empty for a count; ``summary``: see :class:`Event`."""
    t = Task(label, total, unit, summary)
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


@contextlib.contextmanager
def relay() -> Iterator[object | None]:
    """For the block: a pipe end that worker processes pass to :func:`forward` (e.g. as a pool initializer's
    argument, inherited when they start) so that their events reach this process's listener, from a thread;
    ``None`` when no listener is installed. Each event is one small write, which POSIX keeps whole on a pipe
    shared by several writers, so no lock is needed (a worker killed mid-run cannot leave one held)."""
    if _listener.get() is None:
        yield None
        return
    receive, send = multiprocessing.Pipe(duplex=False)
    listener, failed = _listener.get(), []

    def pump() -> None:  # reads to the end even after the listener failed, so that no writer ever blocks
        while (event := receive.recv()) is not None:
            try:
                if not failed:
                    listener(event)
            except Exception as exc:
                failed.append(exc)

    thread = threading.Thread(target=pump, name="kcompile-progress-relay", daemon=True)
    thread.start()
    try:
        yield send
    finally:
        send.send(None)
        thread.join()
        send.close()
        receive.close()
    if failed:
        raise failed[0]


def forward(send: object | None) -> None:
    """In a worker process: send every later event of this thread to the process behind ``send``
    (:func:`relay`; ``None``: none)."""
    if send is not None:
        _listener.set(send.send)
