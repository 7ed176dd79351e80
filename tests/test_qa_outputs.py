"""Output paths a user can get wrong (outside-in QA, session 10): refused up front, one line, exit 2.

Before: ``build -o /proc/x`` or ``-o FILE/sub`` ended with exit 3 ("the environment failed") naming a
temporary name (``/proc/.x.d97axr3a``), and ``simulate -o /proc/r.npz`` ran the whole simulation first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import _cli, _one_line_error

#: a directory no process can create files in, root included (Linux)
UNWRITABLE = Path("/proc")


@pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs Linux /proc")
def test_build_into_a_directory_that_refuses_files_is_bad_input(tmp_path, small_weights):
    line = _one_line_error(_cli("build", small_weights, "-o", UNWRITABLE / "kcompile-qa"))
    assert line.startswith(f"error: {UNWRITABLE / 'kcompile-qa'}: the build directory cannot be written there")
    assert "choose another path" in line and ".kcompile-qa." not in line


def test_build_below_a_file_is_bad_input(tmp_path, small_weights):
    (tmp_path / "afile").write_text("mine")
    line = _one_line_error(_cli("build", small_weights, "-o", tmp_path / "afile" / "sub"))
    assert "is not a directory, so the build directory cannot be written there" in line
    assert (tmp_path / "afile").read_text() == "mine"


def test_build_onto_a_file_is_one_line(tmp_path, small_weights):
    (tmp_path / "afile").write_text("mine")
    line = _one_line_error(_cli("build", small_weights, "-o", tmp_path / "afile"))
    assert "exists and is not a directory; choose another -o" in line
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs Linux /proc")
def test_results_that_cannot_be_written_are_refused_before_the_run(tmp_path, small_weights):
    assert _cli("build", small_weights, "-o", tmp_path / "b", "-q").exit_code == 0
    # one line: no "reference: ..." progress before it, so nothing ran
    line = _one_line_error(_cli("simulate", tmp_path / "b", "--reference-only", "-o", UNWRITABLE / "r.npz"))
    assert "the results file cannot be written there" in line
