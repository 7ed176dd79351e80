"""Progress events: measured steps, events from worker processes, and how the command line draws them."""

from __future__ import annotations

import os

from rich.progress import Progress, TextColumn

from kcompile import cli, progress
from kcompile.pool import local_pool


def _work(n: int) -> int:
    """In a worker: one measured step, as a simulator run reports its transient."""
    with progress.task("transient", 2.0, unit="s", summary=False) as t:
        for k in range(1, n + 1):
            t.reach(2.0 * k / n)
    return os.getpid()


def test_workers_events_reach_the_listener_of_the_process_that_started_them():
    events: list[progress.Event] = []
    with progress.listening(events.append), local_pool(2) as pool:
        pids = {f.result() for f in [pool.submit(_work, 5) for _ in range(4)]}
    by_key: dict[str, list[progress.Event]] = {}
    for e in events:
        by_key.setdefault(e.key, []).append(e)
    assert len(by_key) == 4 and {int(k.split(".")[0]) for k in by_key} == pids != {os.getpid()}
    for run in by_key.values():
        assert [e.kind for e in run] == ["start"] + ["advance"] * 5 + ["end"]
        assert [e.done for e in run[1:-1]] == [0.4, 0.8, 1.2, 1.6, 2.0]
        assert all(e.unit == "s" and e.total == 2.0 and not e.summary for e in run)


def test_no_listener_no_relay():
    with progress.relay() as events:
        assert events is None
    with local_pool(1) as pool:  # the workers' steps go nowhere
        assert pool.submit(_work, 3).result() != os.getpid()


def test_command_line_draws_a_transient_as_a_fraction_of_its_stop_time(capsys, monkeypatch):
    monkeypatch.setitem(cli._verbosity, "quiet", False)  # as a command without -q leaves it
    bar = Progress(disable=True)
    listen = cli._listener(bar)
    listen(progress.Event("start", "operating point", 0, None, 0, 0.0, key="7.0", summary=False))
    listen(progress.Event("end", "operating point", 0, None, 0, 95.0, key="7.0", summary=False))
    listen(progress.Event("start", "transient", 0, 3.2e-6, 0, 0.0, "s", "7.1", False))
    listen(progress.Event("start", "transient", 0, 3.2e-6, 0, 0.0, "s", "8.0", False))  # a second run
    listen(progress.Event("advance", "transient", 1.2e-6, 3.2e-6, 0, 41.0, "s", "7.1", False))
    tasks = {t.description: t for t in bar.tasks}
    assert len(bar.tasks) == 2 and set(tasks) == {"transient"}
    assert [t.fields["amount"] for t in bar.tasks] == ["38 % (t = 1.2 µs of 3.2 µs)", None]
    listen(progress.Event("end", "transient", 3.2e-6, 3.2e-6, 0, 80.0, "s", "7.1", False))
    listen(progress.Event("start", "range analysis", 0, None, 0, 0.0, key="7.2"))
    listen(progress.Event("end", "range analysis", 0, None, 0, 2.0, key="7.2"))
    assert capsys.readouterr().err == "range analysis: 2 s\n"  # a run's inner stages leave no line


def test_bars_say_how_long_is_left_once_their_pace_is_known():
    """A slow count (transistor-level samples of minutes each) still gets a pace: it is taken over an hour."""
    now = [0.0]
    bar = cli._progress(TextColumn("{task.description}"), get_time=lambda: now[0])
    left = cli._Remaining()
    task_id = bar.add_task("ngspice", total=10)
    bar.add_task("range analysis", total=None)
    task = bar.tasks[0]
    assert str(left.render(task)) == ""  # no pace yet
    for done, t in ((1, 300.0), (2, 600.0)):  # a sample every 5 minutes
        now[0] = t
        bar.update(task_id, completed=done)
    assert str(left.render(task)) == "about 40.0 min left"
    assert str(left.render(bar.tasks[1])) == ""  # a step of unknown length says nothing
    bar.update(task_id, completed=10)
    assert str(left.render(task)) == ""  # finished
