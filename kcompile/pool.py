"""Local worker processes for simulator runs, cancelled as one on the first failure.

A plain ``ProcessPoolExecutor`` cannot stop a running task: after one
sample failed, ``shutdown(cancel_futures=True)`` still waited for every
running simulation (up to its timeout, 600 s by default) before the error
reached the user. Here each worker is the leader of its own process group,
so the simulators it starts belong to that group, and :func:`local_pool`
kills the groups at once when anything goes wrong (a failed sample, Ctrl-C,
SIGTERM). The workers' run directories live under one temporary folder,
removed with them; only the failed run's directory, which the error names,
is kept. The workers' progress events (a transient as it runs) reach the
listener of the process that opened the pool (:func:`kcompile.progress.relay`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

from . import progress


def _init(tmp: str, events) -> None:
    os.setpgrp()  # the worker and the simulators it starts form one process group
    tempfile.tempdir = tmp  # and their run directories live under the pool's folder
    progress.forward(events)


def kill(pool: ProcessPoolExecutor) -> None:
    """Kill every worker of ``pool`` together with the simulator runs it started (its process group)."""
    for pid in list(getattr(pool, "_processes", None) or ()):  # CPython keeps the live workers there
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # not yet its own group leader (still starting): the worker alone
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        except PermissionError:
            pass


@contextlib.contextmanager
def local_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """``jobs`` local worker processes; on any exception every running sample is killed at once.

    The run directory of a failed run (the ``run_dir`` of the
    :class:`~kcompile.errors.SimulatorError` raised) is kept; the others are removed.
    """
    runs = Path(tempfile.mkdtemp(prefix="kcompile-runs-"))
    with progress.relay() as events:
        pool = ProcessPoolExecutor(jobs, initializer=_init, initargs=(str(runs), events))
        try:
            yield pool
        except BaseException as exc:
            kill(pool)
            pool.shutdown(cancel_futures=True)
            keep = getattr(exc, "run_dir", None)
            keep = None if keep is None else Path(keep).resolve()
            for d in runs.iterdir():
                if keep is None or not (keep == d.resolve() or d.resolve() in keep.parents):
                    shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                runs.rmdir()  # unless it holds the failed run
            raise
        pool.shutdown()
    shutil.rmtree(runs, ignore_errors=True)
