"""``build -o`` never deletes what it did not create (issue: data loss on rebuild).

A build replaces only an empty directory or an earlier kcompile build that
holds nothing but the files its manifest lists; it never touches the current
directory, a parent of it, a symbolic link, or a directory with a foreign
``manifest.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from kcompile.build import build
from kcompile.errors import InputError
from tests.test_cli import _cli, _one_line_error


def _project(tmp_path):
    """A user's project that happens to have its own manifest.json."""
    proj = tmp_path / "project"
    (proj / "src").mkdir(parents=True)
    (proj / "manifest.json").write_text('{"name": "my-app", "version": 3}')
    (proj / "src" / "main.c").write_text("int main(void) { return 0; }")
    return proj


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else b"") for p in root.rglob("*"))


def test_a_project_with_its_own_manifest_is_not_a_build(tmp_path, small_weights):
    proj = _project(tmp_path)
    before = _snapshot(proj)
    line = _one_line_error(_cli("build", small_weights, "-o", proj))
    assert "not a kcompile build directory" in line and "nothing was changed" in line
    assert _snapshot(proj) == before


def test_the_current_directory_is_never_replaced(tmp_path, small_weights, monkeypatch):
    proj = _project(tmp_path)
    before = _snapshot(proj)
    monkeypatch.chdir(proj)
    for target in (".", "src/..", str(proj)):
        line = _one_line_error(_cli("build", small_weights, "-o", target))
        assert "current directory" in line
    monkeypatch.chdir(proj / "src")
    assert "current directory" in _one_line_error(_cli("build", small_weights, "-o", ".."))
    assert _snapshot(proj) == before


def test_a_build_with_user_files_is_not_replaced(tmp_path, small_weights):
    out = tmp_path / "b"
    assert _cli("build", small_weights, "-o", out).exit_code == 0
    (out / "notes.txt").write_text("my measurements")
    (out / "plots").mkdir()
    line = _one_line_error(_cli("build", small_weights, "-o", out))
    assert "notes.txt" in line and "plots" in line
    assert (out / "notes.txt").read_text() == "my measurements" and (out / "plots").is_dir()


def test_a_clean_earlier_build_is_replaced_whole(tmp_path, small_weights):
    out = tmp_path / "b"
    assert _cli("build", small_weights, "-o", out).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())
    assert _cli("build", small_weights, "-o", out, "--points-per-layer", "50").exit_code == 0
    second = json.loads((out / "manifest.json").read_text())
    assert second["tran"] != first["tran"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_symlinked_output_is_refused(tmp_path, small_weights):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep").write_text("x")
    (tmp_path / "link").symlink_to(real)
    assert "symbolic link" in _one_line_error(_cli("build", small_weights, "-o", tmp_path / "link"))
    assert (real / "keep").read_text() == "x"


def test_concurrent_builds_into_one_directory_each_end_whole(tmp_path, small_weights):
    out = tmp_path / "b"
    errors = []

    def one():
        try:
            build(small_weights, out)
        except InputError as exc:  # refused while another build swapped: acceptable, nothing lost
            errors.append(str(exc))

    for _ in range(3):
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        manifest = json.loads((out / "manifest.json").read_text())
        assert set(manifest["files"]) | {"manifest.json"} == {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporaries left behind"
    assert errors == []


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_sigterm_during_build_leaves_no_temporaries(tmp_path, small_weights):
    """What a CI timeout sends: the half-written directory is removed and the exit status is 143."""
    code = ("import importlib, signal, os\n"
            "b = importlib.import_module('kcompile.build')\n"
            "real = b._swap_into_place\n"
            "def slow(tmp, out):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    real(tmp, out)\n"
            "b._swap_into_place = slow\n"
            "from kcompile.cli import main\n"
            f"main(['build', {str(small_weights)!r}, '-o', {str(tmp_path / 'b')!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "small.npz"] == []
