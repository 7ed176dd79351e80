"""The HTML report opens in a real (headless) browser and shows every section.

Needs Chromium (Debian package ``chromium``; .ci/run installs it). Without it
the test is skipped with a loud reason.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kcompile.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.ngspice,
              pytest.mark.skipif(CHROMIUM is None, reason="CHROMIUM NOT FOUND: apt-get install chromium to test the "
                                                          "HTML report in a browser")]


def test_report_renders_in_headless_chromium(tmp_path):
    html = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["verify", str(ROOT / "flows" / "ci.yaml"), "--report", str(html)])
    assert result.exit_code == 0, result.output
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for heading in ("Gates", "Levels and task metrics", "Waveforms", "Error at each layer boundary",
                    "Monte Carlo", "Corners"):
        assert heading in dom
    assert dom.count("<img") >= 2 and "PASS" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1200,1800", f"--screenshot={shot}", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1800) and len(data) > 50_000  # a page with plots, not a blank one
