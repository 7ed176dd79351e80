"""A wheel of kcompile works on its own: installed into a fresh environment, run from another directory.

The wheel is built from a copy of this checkout's package files (so nothing is written into the checkout),
without network (``--no-deps --no-build-isolation``), and installed into a virtual environment that borrows
the dependencies from this interpreter (``--system-site-packages``) but not kcompile: the test checks that
the kcompile it runs is the wheel's, and that its templates and model cards are the wheel's package data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("kcompile", "templates", "pdk_models", "setup.py", "setup.cfg", "pyproject.toml", "README.md")

pytestmark = pytest.mark.ngspice


def _run(args: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    start = time.perf_counter()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", dist, src], src, os.environ.copy())
    print(f"wheel built in {time.perf_counter() - start:.1f} s")
    (path,) = dist.glob("kcompile-*.whl")
    return path


def test_wheel_carries_templates_and_model_cards(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("templates", "pdk_models"):
        shipped = {f"kcompile/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / folder).rglob("*") if p.is_file()}
        assert shipped and shipped <= names, sorted(shipped - names)
    assert "kcompile/backends/ngspice.py" in names


def test_installed_wheel_builds_and_simulates_from_elsewhere(wheel, tmp_path):
    venv, work = tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KCOMPILE_TEMPLATES")}
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], work, env)
    python, kcompile = venv / "bin" / "python", venv / "bin" / "kcompile"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall", wheel], work, env)
    probe = "import kcompile, kcompile.resources as r; print(kcompile.__file__, r.TEMPLATE_DIR, r.PDK_MODELS_DIR)"
    where = _run([python, "-c", probe], work, env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    _run([kcompile, "build", ROOT / "examples" / "random_relu.npz", "-o", "b"], work, env)
    out = _run([kcompile, "simulate", "b", "--ngspice"], work, env).stdout
    m = re.search(r"largest \|spice - reference\| at the outputs: (\S+)", out)
    assert m and float(m.group(1)) < 1e-4, out
