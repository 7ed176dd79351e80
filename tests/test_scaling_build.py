"""Automatic scaling in transistor builds: the plan, the advice in volts, θ misses, the budget and the size limit.

The networks are the shipped examples/autoscale_relu.npz (relu, θ uniform in [-1, 1]; its nodes swing to
±18 model units on the recorded inputs, the cells' window is ±4 at the default scaling) and small random
ones. Builds use the cells' cached calibrations; most skip per-device refinement (``refine_steps=0``)
to stay quick, the characterised-level test refines as a build does by default.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kcompile.build import build, open_build
from kcompile.errors import InputError
from kcompile.knet import random_knet, save_knet
from kcompile.mapping import FILL
from kcompile.reference import integrate

ROOT = Path(__file__).resolve().parent.parent
WIDE = ROOT / "examples" / "autoscale_relu.npz"

pytestmark = pytest.mark.ngspice


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kcompile", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                               "COLUMNS": "200"})


def test_auto_scaling_fits_a_wide_network_into_the_window(tmp_path):
    b = build(WIDE, tmp_path / "b", cells="transistor", refine_steps=0, allow_out_of_budget=True)
    plan = b.manifest["cells"]["scaling_plan"]
    (lo, hi), (w0, w1) = plan["volts"], plan["window_volts"]
    assert plan["mode"] == "auto" and plan["alpha"] > 4 and plan["beta"] >= 1
    assert w0 <= lo and hi <= w1  # the circuit's nodes fit the window on the calibration inputs
    # FILL of the window on the binding side, around vcm
    vcm = b.scaling.vcm
    assert max((vcm - lo) / (vcm - w0), (hi - vcm) / (w1 - vcm)) == pytest.approx(FILL, rel=1e-6)
    # the recorded scaling maps the ORIGINAL units: 0.1 V per circuit unit is 0.1/α V per original unit
    assert b.scaling.v0 == pytest.approx(0.1 / plan["alpha"])
    assert b.scaling.i0 == pytest.approx(0.5e-6 * plan["beta"] / plan["alpha"])
    assert not [w for w in b.manifest["warnings"] if "outside cell" in w]
    again = open_build(b.path)
    assert again.scaling == b.scaling and again.alpha == plan["alpha"]


def test_a_tampered_plan_is_refused(tmp_path):
    b = build(WIDE, tmp_path / "b", cells="transistor", refine_steps=0, allow_out_of_budget=True)
    manifest = json.loads((b.path / "manifest.json").read_text())
    manifest["cells"]["scaling_plan"]["alpha"] *= 2
    (b.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="disagrees with cells.scaling_plan"):
        open_build(b.path)


def test_manual_scaling_advice_in_volts_removes_the_warning_when_followed(tmp_path):
    args = ("build", str(WIDE), "--cells", "transistor", "--refine-steps", "0", "--allow-out-of-budget")
    first = _cli(*args, "-o", str(tmp_path / "a"), "--v0", "0.1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    advice = re.search(r"Suggest --v0 ([0-9.e+-]+)", first.stderr)
    assert advice, first.stderr
    second = _cli(*args, "-o", str(tmp_path / "b"), "--v0", advice.group(1), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "outside cell" in first.stderr and "outside cell" not in second.stderr, second.stderr


def test_theta_beyond_the_box_counts_as_a_theta_miss(tmp_path):
    knet = random_knet(4, 2, 6, "relu", theta_scale=0.3, seed=2)
    theta = np.array(knet.layers[0].theta)
    theta[0, 0] = 9.0  # above every PDK's calibrated ceiling
    w = tmp_path / "w.npz"
    save_knet(knet.__class__(**{**knet.__dict__, "layers": (knet.layers[0].__class__(
        **{**knet.layers[0].__dict__, "theta": theta}),) + knet.layers[1:]}), w)
    with pytest.raises(InputError, match="cannot be realised within tolerance"):
        build(w, tmp_path / "refused", cells="transistor", refine_steps=0)
    b = build(w, tmp_path / "b", cells="transistor", refine_steps=0, allow_clipped=True, allow_out_of_budget=True)
    misses = b.manifest["cells"]["theta_misses"]
    assert misses["count"] >= 1 and misses["law"] == "relu" and misses["cell"] == "kc_relu"
    assert [0, 0] in misses["examples"]
    assert any("miss their target θ" in w for w in b.manifest["warnings"])


def test_budget_refusal_names_a_capacitance_that_meets_the_gate_and_following_it_builds(tmp_path):
    # refined cells 4x as large: their parasitic capacitance (x4) dominates the estimate, so a larger
    # capacitance per unit meets the default gate (the estimate 0.326 against 0.321, 0.204 at 2x: measured)
    model = ROOT / "examples" / "zoo" / "moons-hw-robust.npz"
    args = ("build", str(model), "--cells", "transistor", "--cell-area", "4")
    refused = _cli(*args, "-o", str(tmp_path / "a"), cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and not (tmp_path / "a").exists()
    advice = re.search(r"pass --c-unit (\S+) \(2x the capacitance per unit.*brings the estimate to (\S+), within",
                       refused.stderr)
    assert advice, refused.stderr
    ok = _cli(*args, "--c-unit", advice.group(1), "-o", str(tmp_path / "b"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    budget = json.loads((tmp_path / "b" / "manifest.json").read_text())["cells"]["budget"]
    assert budget["nominal"] <= budget["gate"] and f"{budget['nominal']:.3g}" == advice.group(2)


def test_budget_gate_refuses_and_the_flag_proceeds(tmp_path):
    refused = _cli("build", str(WIDE), "-o", str(tmp_path / "a"), "--cells", "transistor", "--refine-steps", "0",
                   "--max-error", "1e-6", cwd=tmp_path)
    assert refused.returncode == 2
    assert "expected output error" in refused.stderr and "--allow-out-of-budget" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "a").exists()
    # the cells' offsets dominate this estimate: no capacitance is offered as the remedy
    assert "even 4x the capacitance per unit leaves it at" in refused.stderr and "--c-unit" not in refused.stderr
    ok = _cli("build", str(WIDE), "-o", str(tmp_path / "b"), "--cells", "transistor", "--refine-steps", "0",
              "--max-error", "1e-6", "--allow-out-of-budget", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    budget = json.loads((tmp_path / "b" / "manifest.json").read_text())["cells"]["budget"]
    assert budget["gate"] == 1e-6 and budget["nominal"] > 0 and budget["relative"] > 0
    assert "% of the swing" in ok.stdout  # the build's summary (stdout) states the budget


def test_size_limit_refuses_with_a_reason(tmp_path):
    run = _cli("build", str(WIDE), "-o", str(tmp_path / "a"), "--cells", "transistor", "--max-devices", "10",
               cwd=tmp_path)
    assert run.returncode == 2 and "too many for a transistor-level build" in run.stderr
    assert "--cells behavioural" in run.stderr


def test_characterised_level_reads_back_in_original_units(tmp_path):
    b = build(WIDE, tmp_path / "b", cells="transistor", allow_out_of_budget=True)
    assert b.alpha > 4
    x = b.recorded("inputs")[:2]
    char, ideal = b.characterised(x), integrate(b.knet, x)
    swing = b.manifest["cells"]["scaling_plan"]["peak"]
    # the cells' DC law after refinement, in the ORIGINAL units: a few % of the swing (measured 1.2 %),
    # not the α-times-smaller circuit units
    assert np.abs(char.states - ideal.states).max() < 0.05 * swing
    assert np.abs(ideal.states).max() > 4


def test_progress_names_each_long_step_and_what_came_from_the_cache(tmp_path):
    from kcompile import progress

    build(WIDE, tmp_path / "warm", cells="transistor", allow_out_of_budget=True)  # every sweep now cached
    events = []
    with progress.listening(events.append):
        build(WIDE, tmp_path / "b", cells="transistor", allow_out_of_budget=True)
    ended = {e.label: e for e in events if e.kind == "end"}
    assert any(label.startswith("range analysis on") for label in ended)
    assert "dynamic-range budget" in ended
    calibration = ended["calibration of kc_relu on generic180/tt"]
    assert calibration.done >= 1 and calibration.cached == calibration.done
    sweeps = [e for label, e in ended.items() if label.startswith("DC sweeps of 24 kc_relu instances")]
    assert sweeps and all(e.cached == e.done == e.total for e in sweeps)
    run = _cli("build", str(WIDE), "-o", str(tmp_path / "c"), "--cells", "transistor", "--allow-out-of-budget",
               cwd=tmp_path)
    assert run.returncode == 0 and "from the cache" in run.stderr and "range analysis on" in run.stderr


def test_cell_area_is_built_recorded_and_refused_where_it_does_not_apply(tmp_path, small_weights):
    """``--cell-area 4``: the manifest records the area and the gate area (about 4× the drawn cells'), the netlist
    draws the larger devices, and a reopened build maps onto them again; behavioural cells and areas below 1 are
    refused with exit 2."""
    args = ("build", str(small_weights), "--cells", "transistor", "--refine-steps", "0", "--allow-out-of-budget")
    one = _cli(*args, "-o", str(tmp_path / "a1"), cwd=tmp_path)
    four = _cli(*args, "-o", str(tmp_path / "a4"), "--cell-area", "4", cwd=tmp_path)
    assert one.returncode == 0 and four.returncode == 0, four.stderr
    cells1, cells4 = (open_build(tmp_path / d).manifest["cells"] for d in ("a1", "a4"))
    assert cells1["area"] == 1.0 and cells4["area"] == 4.0
    assert 3.0 * cells1["gate_area_um2"] < cells4["gate_area_um2"] < 4.0 * cells1["gate_area_um2"]
    circuit = (tmp_path / "a4" / "circuit.cir").read_text()
    assert " w=16u l=2u" in circuit and " w=16u l=2u" not in (tmp_path / "a1" / "circuit.cir").read_text()
    b = open_build(tmp_path / "a4")
    assert b.characterised(b.recorded("inputs")[:1]) is not None
    for extra, why in ((("--cells", "behavioural", "--cell-area", "4"), "--cell-area does not apply"),
                       (("--cells", "transistor", "--cell-area", "0.5"), "at least 1")):
        bad = _cli("build", str(small_weights), "-o", str(tmp_path / "bad"), *extra, cwd=tmp_path)
        assert bad.returncode == 2 and why in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()
