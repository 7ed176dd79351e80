"""docs/api.md runs: its Python blocks, in order, in one namespace, and each prints what the page shows after it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "api.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for every ``python`` block; output: the ``text`` block right after."""
    text = PAGE.read_text()
    found = [(m.group(1), m.group(2), m.start(), m.end()) for m in _BLOCK.finditer(text)]
    pairs = []
    for i, (lang, body, _, end) in enumerate(found):
        if lang != "python":
            continue
        after = found[i + 1] if i + 1 < len(found) else None
        adjacent = after is not None and after[0] == "text" and not text[end:after[2]].strip()
        pairs.append((body, after[1] if adjacent else None))
    return pairs


def _needs_pyspice(code: str) -> bool:
    return "to_pyspice" in code


@pytest.mark.ngspice
@pytest.mark.parametrize("part", ["core", "pyspice"])
def test_api_page_runs_and_prints_what_it_shows(part, tmp_path, monkeypatch):
    if part == "pyspice" and importlib.util.find_spec("PySpice") is None:
        pytest.skip("PYSPICE NOT INSTALLED: the page's PySpice block did not run (pip install -e .[pyspice])")
    (tmp_path / "examples").mkdir()
    (tmp_path / "flows").mkdir()
    shutil.copy(ROOT / "examples" / "random_relu.npz", tmp_path / "examples")
    shutil.copy(ROOT / "flows" / "ci.yaml", tmp_path / "flows")
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert len(blocks) >= 5 and any(_needs_pyspice(code) for code, _ in blocks)
    namespace: dict = {}
    for code, expected in blocks:
        if part == "core" and _needs_pyspice(code):
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(PAGE), "exec"), namespace)
        if expected is not None:
            assert out.getvalue().strip() == expected.strip(), code
