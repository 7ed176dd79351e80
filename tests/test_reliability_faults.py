"""Fault injection (issue 16, items 4 and 5): broken, killed and hanging simulators, interrupted writes,
unwritable and symlinked output paths, concurrent builds.

The broken simulators are small shell scripts given as ``KCOMPILE_NGSPICE``: they answer ``-v`` like
ngspice and then fail in one chosen way, so that each failure is reproduced exactly and quickly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kcompile.backends.ngspice import NGSPICE
from kcompile.files import atomic_write
from tests.test_cli import _cli
from tests.test_reliability_inputs import IDEAL, _one_line_error

ROOT = Path(__file__).resolve().parents[1]


def _fake(tmp_path, body: str, name: str = "ngspice") -> Path:
    """A fake ngspice: answers ``-v`` and the OSDI probe (``-b -n``, deck on stdin: it has the osdi command),
    then runs ``body`` in the run directory (deck.cir is there)."""
    path = tmp_path / name
    path.write_text(f'#!/bin/sh\ncase "$1" in -v) echo "** ngspice-39 : fake"; exit 0;; esac\n'
                    f'if [ "$#" -eq 2 ]; then cat >/dev/null; exit 0; fi\n{body}\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def built(tmp_path, small_weights):
    out = tmp_path / "b"
    assert _cli("build", small_weights, "-o", out).exit_code == 0
    return out


def _ours(marker: str) -> list[str]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(proc.name)
        except OSError:
            pass
    return found


# ---------------------------------------------------------------- the simulator binary

def test_ngspice_that_is_a_directory(tmp_path, built, monkeypatch):
    monkeypatch.setenv("KCOMPILE_NGSPICE", str(tmp_path))
    line = _one_line_error(_cli("simulate", built), code=3)
    assert f"KCOMPILE_NGSPICE={tmp_path} is not an executable file" in line


def test_ngspice_that_hangs_on_its_version_probe(tmp_path, built, monkeypatch):
    fake = tmp_path / "hang"
    fake.write_text("#!/bin/sh\nexec sleep 61.101\n")
    fake.chmod(0o755)
    monkeypatch.setenv("KCOMPILE_NGSPICE", str(fake))
    monkeypatch.setattr(NGSPICE, "probe_timeout", 1.0)
    t0 = time.perf_counter()
    line = _one_line_error(_cli("simulate", built), code=3)
    # whichever probe comes first (-v for the version, -b -n for OSDI) is the one that times out
    assert "did not answer '-" in line and "within 1 s" in line and time.perf_counter() - t0 < 10
    assert not _ours("61.101")


@pytest.mark.parametrize("body,message", [
    ('echo "error: the fake simulator failed" >&2; exit 1', "ngspice failed"),
    ("kill -9 $$", "exit status -9"),
    ('printf "Title: x\\nNo. Variables: 2\\nNo. Points: 5\\nVariables:\\nBinary:\\n1234" > out.raw',
     "unreadable raw file"),
    ("exit 0", "ngspice wrote no raw file"),
])
def test_failing_simulators_exit_3_with_the_run_directory(tmp_path, built, monkeypatch, body, message):
    """Every exit-3 message carries "[run directory: ...]" intact (plain text, no markup) and the directory
    holds the deck and the command to rerun it by hand."""
    monkeypatch.setenv("KCOMPILE_NGSPICE", str(_fake(tmp_path, body)))
    result = _cli("simulate", built, "--jobs", "1")
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("error:"))
    assert message in line and "[run directory: " in line
    run_dir = Path(line.split("[run directory: ")[1].split("]")[0])
    assert (run_dir / "deck.cir").is_file() and (run_dir / "command").is_file()


def test_a_hanging_run_times_out(tmp_path, built, monkeypatch):
    monkeypatch.setenv("KCOMPILE_NGSPICE", str(_fake(tmp_path, "exec sleep 61.202")))
    t0 = time.perf_counter()
    result = _cli("simulate", built, "--jobs", "1", "--batch", "1", "--timeout", "1")
    assert result.exit_code == 3 and "ngspice timed out after 1 s [run directory: " in result.output
    assert time.perf_counter() - t0 < 10 and not _ours("61.202")


def _inputs_with_one_failure(tmp_path, rows=6, bad_row=1):
    x = np.random.default_rng(0).uniform(-1, 1, (rows, 3))
    x[bad_row, 0] = 0.5123
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy"


def test_one_failed_sample_cancels_the_others(tmp_path, built, monkeypatch):
    """Sample 1 fails at once while the others would run for a minute: exit 3 in seconds, no simulator left
    running, only the failed run's directory kept."""
    body = 'if grep -q "0.5123" deck.cir; then echo "error: sample failed" >&2; exit 1; fi\nexec sleep 61.303'
    monkeypatch.setenv("KCOMPILE_NGSPICE", str(_fake(tmp_path, body)))
    t0 = time.perf_counter()
    result = _cli("simulate", built, "--inputs", _inputs_with_one_failure(tmp_path), "--jobs", "3")
    seconds = time.perf_counter() - t0
    assert result.exit_code == 3 and "error: sample failed" in result.output, result.output
    assert seconds < 20, f"exit 3 took {seconds:.1f} s"
    time.sleep(0.2)
    assert not _ours("61.303"), "a cancelled simulator is still running"
    kept = Path(result.output.split("[run directory: ")[1].split("]")[0])
    assert "0.5123" in (kept / "deck.cir").read_text()
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # the cancelled runs' directories are gone


def test_one_failed_sample_cancels_a_flow(tmp_path, small_weights, monkeypatch):
    body = 'if grep -q "0.5123" deck.cir; then echo "error: sample failed" >&2; exit 1; fi\nexec sleep 61.404'
    monkeypatch.setenv("KCOMPILE_NGSPICE", str(_fake(tmp_path, body)))
    flow = tmp_path / "f.yaml"
    flow.write_text(f"model: {small_weights}\ninputs: {_inputs_with_one_failure(tmp_path)}\njobs: 3\n"
                    "levels: [behavioural]\ngates:\n  - {level: behavioural, metric: max_output_error, limit: 1}\n")
    t0 = time.perf_counter()
    result = _cli("verify", flow)
    assert result.exit_code == 3 and "[run directory: " in result.output, result.output
    assert time.perf_counter() - t0 < 20
    time.sleep(0.2)
    assert not _ours("61.404")


# ---------------------------------------------------------------- writes: whole or not at all

def test_an_exception_during_a_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "r.npz"
    target.write_bytes(b"previous, valid")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous, valid"
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_results_write_keeps_the_previous_file(tmp_path, built, signum, code):
    """What a CI timeout or Ctrl-C does to ``simulate --out``: the old results survive, no temporary stays."""
    out = tmp_path / "r.npz"
    out.write_bytes(b"previous results")
    script = ("import os, numpy as np\n"
              "real = np.savez\n"
              "def interrupted(f, **arrays):\n"
              "    f.write(b'partial')\n"
              f"    os.kill(os.getpid(), {int(signum)})\n"
              "    real(f, **arrays)\n"
              "np.savez = interrupted\n"
              "from kcompile.cli import main\n"
              f"main(['simulate', {str(built)!r}, '--reference-only', '--out', {str(out)!r}])\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_bytes() == b"previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "r.npz", "small.npz"]


def test_a_killed_writer_leaves_the_previous_file(tmp_path):
    """SIGKILL cannot be handled: the previous file is still whole (only a hidden temporary remains)."""
    target = tmp_path / "big.bin"
    target.write_bytes(b"previous")
    script = ("import sys, time\nfrom kcompile.files import atomic_write\n"
              f"with atomic_write({str(target)!r}) as f:\n"
              "    f.write(b'x' * 1000)\n    f.flush()\n    print('writing', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    assert target.read_bytes() == b"previous"
    assert all(p.name == "big.bin" or p.name.startswith(".big.bin.") for p in tmp_path.iterdir())


# ---------------------------------------------------------------- output paths

def test_write_protected_and_symlinked_outputs_are_refused_before_any_work(tmp_path, built):
    protected = tmp_path / "protected.npz"
    protected.write_bytes(b"keep")
    protected.chmod(0o444)
    line = _one_line_error(_cli("simulate", built, "--reference-only", "--out", protected))
    assert "write-protected" in line and protected.read_bytes() == b"keep"
    (tmp_path / "real.npz").write_bytes(b"keep too")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    result = _cli("simulate", built, "--reference-only", "--out", tmp_path / "link.npz")
    assert "symbolic link" in _one_line_error(result) and "inputs:" not in result.output  # refused up front
    assert (tmp_path / "real.npz").read_bytes() == b"keep too"
    (tmp_path / "dir.npz").mkdir()
    result = _cli("simulate", built, "--reference-only", "--out", tmp_path / "dir.npz")
    assert result.exit_code == 2 and "is a directory" in result.output
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in _one_line_error(_cli("simulate", built, "--reference-only", "--out",
                                                        tmp_path / "file" / "r.npz"))


def test_an_output_the_file_system_refuses_is_bad_input(built):
    line = _one_line_error(_cli("simulate", built, "--reference-only", "--out", "/proc/kcompile/r.npz"))
    assert line.startswith("error: /proc/kcompile/r.npz: the results file cannot be written there (/proc refuses")


def test_reports_go_into_missing_folders_and_replace_old_ones_whole(tmp_path, small_weights):
    flow = tmp_path / "f.yaml"
    flow.write_text(f"model: {small_weights}\n" + IDEAL)
    junit, html = tmp_path / "new" / "deeper" / "out.xml", tmp_path / "new" / "out.html"
    for _ in range(2):
        result = _cli("verify", flow, "--junit", junit, "--report", html)
        assert result.exit_code == 0, result.output
    assert junit.read_text().startswith("<?xml") and html.read_text().rstrip().endswith("</html>")
    assert sorted(p.name for p in junit.parent.iterdir()) == ["out.xml"]
    assert oct(junit.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- concurrent builds, as separate processes

def test_concurrent_build_processes_each_end_whole(tmp_path, small_weights):
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "kcompile", "build", str(small_weights), "-o", str(out)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 or (proc.returncode == 2 and "changed during the build" in err), err
        assert "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) | {"manifest.json"} == {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert _cli("simulate", out, "--reference-only").exit_code == 0
