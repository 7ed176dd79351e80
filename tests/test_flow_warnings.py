"""A flow's transistor-level circuit reports what a build of it would warn about (θ misses, compliance)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kcompile.knet import random_knet, save_knet

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.ngspice


def test_a_flow_reports_its_circuits_theta_misses(tmp_path):
    # one device above every PDK's calibrated ceiling: clipped, so it misses its θ (tests/test_scaling_build.py)
    knet = random_knet(4, 2, 6, "relu", theta_scale=0.3, seed=2)
    theta = np.array(knet.layers[0].theta)
    theta[0, 0] = 9.0
    w = tmp_path / "w.npz"
    save_knet(knet.__class__(**{**knet.__dict__, "layers": (knet.layers[0].__class__(
        **{**knet.layers[0].__dict__, "theta": theta}),) + knet.layers[1:]}), w)
    flow = tmp_path / "f.yaml"
    flow.write_text(f"name: w\nmodel: {w}\ninputs: random\nbatch: 4\nlevels: [characterised]\n"
                    "refine_steps: 0\nallow_clipped: true\nallow_out_of_budget: true\n"
                    "gates:\n  - {level: characterised, metric: max_output_error, limit: 1000}\n")
    run = subprocess.run([sys.executable, "-m", "kcompile", "verify", str(flow), "--json"], capture_output=True,
                         text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                       "HOME": str(Path.home()), "COLUMNS": "300"})
    assert run.returncode == 0, run.stderr
    warnings = json.loads(run.stdout)["warnings"]
    assert any("miss their target θ" in w for w in warnings), warnings
    assert "warning (transistor-level circuit):" in run.stderr and "miss their target" in run.stderr
