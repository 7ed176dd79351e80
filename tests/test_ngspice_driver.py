"""The ngspice proxy fails loudly, with the run directory, deck and log."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from kcompile import ngspice, progress
from kcompile import simulate as simulate_mod
from kcompile.backends.ngspice import Ngspice
from kcompile.errors import SimulatorError
from kcompile.knet import random_knet
from kcompile.netlist import default_tran, write_circuit

pytestmark = pytest.mark.ngspice

RC = """* rc
C1 n1 0 1
B1 n1 0 I=v(n1)
.ic v(n1)=1
.tran 1e-3 1 0 1e-3 uic
.end
"""


def test_version_and_run():
    assert ngspice.available() and ngspice.version()[0].isdigit()
    raw = ngspice.run(RC)
    v = raw["v(n1)"]
    assert raw.time[-1] == pytest.approx(1.0)
    assert v[-1] == pytest.approx(np.exp(-1.0), rel=1e-3)


def test_missing_binary_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(ngspice.ENV_BINARY, str(tmp_path / "no-ngspice-here"))
    assert not ngspice.available()
    with pytest.raises(SimulatorError, match="apt-get install ngspice"):
        ngspice.run(RC)


def _script(path, body: str) -> str:
    """An executable shell script at ``path`` (a stand-in binary for ``KCOMPILE_NGSPICE``)."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_env_var_names_the_binary_that_runs(monkeypatch, tmp_path):
    """``KCOMPILE_NGSPICE`` is what runs, not the ngspice on PATH: a wrapper of the real binary records its
    calls, and a broken one makes the run fail although a working ngspice is on PATH."""
    real = ngspice.binary()
    wrapper = _script(tmp_path / "my-ngspice", f'echo "$@" >> "{tmp_path}/calls"\nexec "{real}" "$@"')
    monkeypatch.setenv(ngspice.ENV_BINARY, wrapper)
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    assert ngspice.binary() == wrapper and ngspice.version()[0].isdigit()
    raw = ngspice.run(RC, run_dir=tmp_path / "run", keep=True)
    assert raw["v(n1)"][-1] == pytest.approx(np.exp(-1.0), rel=1e-3)
    assert (tmp_path / "run" / "command").read_text().startswith(f"OMP_THREAD_LIMIT=1 {wrapper} -b -n")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "-v" and calls[-1].endswith("deck.cir")
    monkeypatch.setenv(ngspice.ENV_BINARY, _script(tmp_path / "broken-ngspice", "exit 0"))
    assert shutil.which("ngspice") and ngspice.available()
    with pytest.raises(SimulatorError, match="ngspice wrote no raw file"):
        ngspice.run(RC)


def test_ngspice_runs_one_openmp_thread_unless_the_caller_says(monkeypatch, tmp_path):
    """An OpenMP ngspice (Debian's 46) would load its devices on 8 spinning threads: each run gets
    ``OMP_THREAD_LIMIT=1``, the caller's own value wins, and the saved command repeats it."""
    real = ngspice.binary()
    wrapper = _script(tmp_path / "ng", f'echo "limit=$OMP_THREAD_LIMIT" >> "{tmp_path}/limits"\nexec "{real}" "$@"')
    monkeypatch.setenv(ngspice.ENV_BINARY, wrapper)
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    ngspice.run(RC, run_dir=tmp_path / "default", keep=True)
    monkeypatch.setenv("OMP_THREAD_LIMIT", "3")
    ngspice.run(RC, run_dir=tmp_path / "caller", keep=True)
    assert (tmp_path / "limits").read_text().splitlines()[-2:] == ["limit=1", "limit=3"]
    assert (tmp_path / "default" / "command").read_text().startswith(f"OMP_THREAD_LIMIT=1 {wrapper} ")
    assert (tmp_path / "caller" / "command").read_text().startswith(f"OMP_THREAD_LIMIT=3 {wrapper} ")


def test_binary_that_is_a_directory_or_hangs_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv(ngspice.ENV_BINARY, str(tmp_path))
    assert not ngspice.available()
    with pytest.raises(SimulatorError, match=f"KCOMPILE_NGSPICE={tmp_path} is not an executable file"):
        ngspice.version()
    monkeypatch.setenv(ngspice.ENV_BINARY, _script(tmp_path / "hangs", f"exec {sys.executable} -c "
                                                   "'import time; time.sleep(60)'"))
    monkeypatch.setattr(Ngspice, "probe_timeout", 0.5)
    with pytest.raises(SimulatorError, match="did not answer '-v' within 0.5 s"):
        ngspice.version()


def test_capability_probes(monkeypatch):
    """Debian 12's ngspice 39 has neither KLU nor OSDI; Debian backports' ngspice 46 (scripts/ngspice_klu.sh,
    ``KCOMPILE_NGSPICE_KLU`` in CI) has both."""
    assert isinstance(ngspice.has_klu(), bool) and isinstance(ngspice.has_osdi(), bool)
    if ngspice.version() == "39":
        assert not ngspice.has_klu() and not ngspice.has_osdi()
    if os.environ.get("KCOMPILE_NGSPICE_KLU"):
        monkeypatch.setenv(ngspice.ENV_BINARY, os.environ["KCOMPILE_NGSPICE_KLU"])
        assert ngspice.version() == "46" and ngspice.has_klu() and ngspice.has_osdi()


def test_timestep_too_small_is_an_error():
    deck = "* blow-up: dv/dt = v^2 reaches infinity at t = 1\nC1 n1 0 1\nB1 0 n1 I=v(n1)*v(n1)\n" \
           ".ic v(n1)=1\n.tran 1e-3 2 0 1e-3 uic\n.end\n"
    with pytest.raises(SimulatorError, match="(?i)timestep too small") as info:
        ngspice.run(deck)
    err = info.value
    assert err.run_dir is not None and (err.run_dir / "deck.cir").read_text() == deck
    assert "Timestep too small" in err.log
    shutil.rmtree(err.run_dir)


def test_parse_error_is_an_error_despite_exit_zero():
    with pytest.raises(SimulatorError, match="(?i)error"):
        ngspice.run("* bad\nC1 n1 0 1\nB1 n1 0 I=frobnicate(v(n1))\n.tran 1e-3 1 0 1e-3 uic\n.end\n")


def test_timeout():
    deck = "* slow\nC1 n1 0 1\nB1 n1 0 I=sin(v(n1))\n.ic v(n1)=1\n.tran 1e-9 10 0 1e-9 uic\n.end\n"
    with pytest.raises(SimulatorError, match="timed out after 0.5 s") as err:
        ngspice.run(deck, timeout=0.5)
    assert "Circuit: * slow" in err.value.log  # what it printed until then
    assert "Circuit: * slow" in (err.value.run_dir / "ngspice.log").read_text()


def test_progress_of_a_transient_as_it_runs():
    """A run reports its transient while ngspice runs it (from the records ngspice prints every 0.25 s of CPU):
    first the operating point (no 'uic'), then the simulated time reached, increasing towards the stop time; the
    records stay out of the log."""
    deck = "* progress\nC1 n1 0 1\nB1 n1 0 I=tanh(v(n1))\n.ic v(n1)=1\n.tran 1e-6 0.6 0 1e-6\n.end\n"
    assert ngspice.NGSPICE.transient(deck) == (0.6, True) and ngspice.NGSPICE.transient(RC) == (1.0, False)
    events: list[progress.Event] = []
    with progress.listening(events.append):
        raw = ngspice.run(deck)
    assert raw.time[-1] == pytest.approx(0.6)
    labels = [(e.kind, e.label) for e in events if e.kind != "advance"]
    assert labels == [("start", "operating point"), ("end", "operating point"), ("start", "transient"),
                      ("end", "transient")]
    times = [e.done for e in events if e.kind == "advance"]
    assert all(e.total == 0.6 and e.unit == "s" for e in events if e.label == "transient")
    fractions = np.array(times) / 0.6
    assert len(fractions) >= 3 and np.all(np.diff(fractions) > 0) and 0.0 <= fractions[0]
    assert 0.6 < fractions[-1] <= 1.0


def test_full_pipes_do_not_block_a_run(monkeypatch, tmp_path):
    """A simulator that prints megabytes on both stdout and stderr finishes (both pipes are read at once):
    the run fails for what it did (no raw file), not on its timeout, and keeps what it printed in the log."""
    flood = 'head -c 3000000 /dev/zero | tr "\\0" o\nhead -c 3000000 /dev/zero | tr "\\0" e >&2'
    monkeypatch.setenv(ngspice.ENV_BINARY, _script(tmp_path / "ng", flood))
    with pytest.raises(SimulatorError, match="wrote no raw file") as err:
        ngspice.run(RC, timeout=60)
    assert err.value.log.count("o") >= 3000000 and err.value.log.endswith("e" * 100)


def test_spiceinit_in_run_dir_is_not_executed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".spiceinit").write_text("shell touch pwned\n")
    ngspice.run(RC, run_dir=run_dir, keep=True)
    assert not (run_dir / "pwned").exists()


def test_defines_reach_ngspice_and_the_saved_command(tmp_path):
    """A PDK's ``-D`` variables are set before the deck is read, and a kept run can be repeated by hand."""
    run_dir = tmp_path / "run"
    ngspice.run(RC, defines=("ngbehavior=hsa",), run_dir=run_dir, keep=True)
    command = (run_dir / "command").read_text()
    assert "-D ngbehavior=hsa" in command and command.rstrip().endswith("deck.cir")
    assert "Compatibility modes selected: hs a" in (run_dir / "ngspice.log").read_text()
    ngspice.run(RC, run_dir=tmp_path / "plain", keep=True)
    assert "-D" not in (tmp_path / "plain" / "command").read_text()
    assert "No compatibility mode selected" in (tmp_path / "plain" / "ngspice.log").read_text()


def test_truncated_raw_file_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    ngspice.run(RC, run_dir=run_dir, keep=True)
    data = (run_dir / "out.raw").read_bytes()
    (tmp_path / "cut.raw").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        ngspice.parse_raw(tmp_path / "cut.raw")
    (tmp_path / "head.raw").write_bytes(data[:200])
    with pytest.raises(ValueError):
        ngspice.parse_raw(tmp_path / "head.raw")


def test_ignored_initial_conditions_are_caught(tmp_path, monkeypatch):
    """A deck whose initial conditions do not take effect (here: the .ic line is lost)."""
    knet = random_knet(4, 2, 6, "relu", seed=1)
    write_circuit(knet, tmp_path / "circuit.cir")
    real = Ngspice.render_deck

    def without_ic(*args, **kwargs):
        return "\n".join(ln for ln in real(*args, **kwargs).splitlines() if not ln.startswith((".ic", "+ v(")))

    monkeypatch.setattr(Ngspice, "render_deck", without_ic)
    with pytest.raises(SimulatorError, match="initial conditions not applied"):
        simulate_mod.simulate(knet, tmp_path / "circuit.cir", np.full((1, 4), 0.7), default_tran(knet), jobs=1)
