"""What a new user hits (issue 17): classes and accuracy, the reference's settings, phases, physical
conditions, options that do not apply, one CLI vocabulary, reports and portable builds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from kcompile import ngspice
from kcompile.build import MODELS, bundle_models, open_build
from kcompile.compare import LARGE_RTOL, reference_settings, task_scores
from kcompile.knet import random_knet, save_knet
from kcompile.pdk import CORNERS, PDKS
from tests.test_cli import _cli

ROOT = Path(__file__).resolve().parents[1]
MOONS = ROOT / "examples" / "zoo" / "moons-hw-transistor.npz"  # a classifier: 300 recorded inputs and labels
HOUSING = ROOT / "examples" / "zoo" / "housing-small.npz"  # a regression: 152 recorded inputs and targets
EXAMPLE = ROOT / "examples" / "random_relu.npz"


def _error(result, code=2) -> str:
    """The one error line of a refused command (what came before it is progress; "Error:" is click's usage
    error, for values the option's type refuses)."""
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.lower().startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def moons(tmp_path_factory):
    out = tmp_path_factory.mktemp("moons") / "b"
    assert _cli("build", MOONS, "-o", out).exit_code == 0
    return out


# ---------------------------------------------------------------- 1. classes, accuracy, MSE

@pytest.mark.ngspice
def test_readme_first_command_shows_class_agreement_and_accuracy(tmp_path):
    """The README's first line, as a new user runs it (the build's default cells)."""
    assert _cli("build", MOONS, "-o", tmp_path / "moons").exit_code == 0
    result = _cli("simulate", tmp_path / "moons", "--ngspice")
    assert result.exit_code == 0, result.output
    assert "class ref" in result.output and "class spice" in result.output and "label" in result.output
    assert "behavioural (ngspice): class agreement 8/8, accuracy 100.0 % (reference 100.0 %)" in result.output
    assert "showing" not in result.output  # all 8 rows are in the table


@pytest.mark.ngspice
def test_scores_cover_the_whole_batch_not_the_rows_shown(moons, tmp_path):
    result = _cli("simulate", moons, "--batch", "12", "--out", tmp_path / "r.npz")
    assert result.exit_code == 0, result.output
    assert "showing 8 of 12 samples (-v shows all); the figures below cover all 12" in result.output
    assert "class agreement 12/12" in result.output and "reference: accuracy 100.0 % over 12 labelled" in result.output
    with np.load(tmp_path / "r.npz") as r:
        assert r["labels"].shape == (12,) and r["spice_classes"].shape == (12,)
        assert int(r["spice_class_agreement"]) == 12 and float(r["reference_accuracy"]) == 100.0
        summary = json.loads(str(r["summary"]))
    assert summary["task"] == "classification" and summary["scores"][1]["class_agreement"] == 12
    verbose = _cli("simulate", moons, "--batch", "12", "--reference-only", "-v")
    assert "showing" not in verbose.output and len(re.findall(r"^│\s+11 ", verbose.output, re.M)) == 1


def test_json_carries_the_same_figures(moons):
    result = _cli("simulate", moons, "--batch", "20", "--reference-only", "--json", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["samples"] == 20 and data["labels"] and data["scores"][0]["accuracy"] == 100.0
    devices = json.loads((moons / "manifest.json").read_text())["cells"]["devices"]  # osdi where ngspice loads it
    assert data["reference"]["rtol"] == 1e-9 and data["conditions"]["cells"] == {"osdi": "osdi"}.get(devices,
                                                                                                   "behavioural")


@pytest.mark.ngspice
def test_regression_gets_mse_per_level(tmp_path):
    assert _cli("build", HOUSING, "-o", tmp_path / "h").exit_code == 0
    result = _cli("simulate", tmp_path / "h", "--batch", "3")
    assert result.exit_code == 0, result.output
    mse = re.search(r"reference: MSE (\S+) against the labels over 3 samples", result.output)
    assert mse and re.search(r"behavioural \(ngspice\): MSE \S+ \(reference " + re.escape(mse.group(1)),
                             result.output)


def test_task_scores_from_meta_without_labels():
    out = {"reference": np.array([[1.0, 0.0], [0.0, 1.0]]), "transistor": np.array([[1.0, 0.0], [1.0, 0.5]])}
    ref, tr = task_scores("classification", out, None)
    assert ref.agreement is None and tr.agreement == 1 and tr.accuracy is None
    assert task_scores(None, out, None) == []


# ---------------------------------------------------------------- 2. the reference from the command line

def test_reference_options_are_used_and_printed(moons):
    result = _cli("simulate", moons, "--reference-only", "--rtol", "1e-4", "--precision", "float32")
    assert result.exit_code == 0, result.output
    assert "reference: 8 sample(s), dopri5, rtol 0.0001, atol 1e-06, float32 (as given)" in result.output
    rk4 = _cli("simulate", moons, "--reference-only", "--method", "rk4", "--dt", "0.05", "--json")
    assert json.loads(rk4.stdout.splitlines()[-1])["reference"]["dt"] == 0.05
    default = _cli("simulate", moons, "--reference-only")
    assert "rtol 1e-09, atol 1e-11, float64 (the default below 10,000 devices)" in default.output


@pytest.mark.parametrize("args,message", [
    (["--method", "rk4", "--rtol", "1e-3"], "--rtol does not apply to --method rk4"),
    (["--dt", "0.1"], "--dt does not apply to --method dopri5"),
    (["--precision", "float32", "--rtol", "1e-9"], "is below what --precision float32 can meet"),
    (["--rtol", "2"], "must be at most 1"),
])
def test_reference_options_that_do_not_fit_exit_2(moons, args, message):
    assert message in _error(_cli("simulate", moons, "--reference-only", *args))


def test_large_networks_get_a_tolerance_from_the_gate():
    big = random_knet(40, 2, 5000, "shift_relu", num_inputs=8, theta_scale=0.3, seed=5)  # 10,000 devices
    small = random_knet(6, 2, 12, "relu", num_inputs=3, seed=1)
    assert reference_settings(small, 1e-3).rtol == 1e-9
    assert reference_settings(big).rtol == LARGE_RTOL
    gated = reference_settings(big, 1e-3)
    assert gated.rtol == 1e-6 and "from the gate 0.001" in gated.describe()
    assert reference_settings(big, 1e-9).rtol == 1e-9 and reference_settings(big, 1.0).rtol == 1e-4
    assert reference_settings(big, precision="float32").rtol == 1e-5
    assert reference_settings(big, rtol=3e-2, precision="float32").why == "as given"


# ---------------------------------------------------------------- 3-4. phases, conditions, errors, warnings

@pytest.mark.ngspice
def test_phases_errors_and_the_builds_warnings(tmp_path, small_weights):
    out = tmp_path / "b"
    assert _cli("build", small_weights, "-o", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["warnings"] = ["node voltages reach ±9 model units on these inputs (a test)"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = _cli("simulate", out)
    assert result.exit_code == 0, result.output
    assert "warning (from the build): node voltages reach ±9" in result.output
    assert re.search(r"^reference: 3 sample\(s\), dopri5, .*: [0-9.]+ s$", result.output, re.M)
    assert re.search(r"^ngspice \S+ \(.*\): 3 sample\(s\) in [0-9.]+ s$", result.output, re.M)
    assert re.search(r"over every node: \S+ at n\d, end of layer [01] \(t = [12]\)", result.output)
    assert re.search(r"at the end of each layer: layer 0 \S+ \(n\d\), layer 1 \S+ \(n\d\)", result.output)
    assert "t0=" not in result.output and "all nodes per boundary" not in result.output
    quiet = _cli("simulate", out, "-q")
    assert "reference: 3 sample" not in quiet.output and "over every node" in quiet.output
    assert "warning (from the build)" in quiet.output


def test_conditions_of_a_transistor_build(tmp_path):
    result = _cli("build", EXAMPLE, "-o", tmp_path / "t", "--cells", "transistor", "--json")
    assert result.exit_code == 0, result.output
    c = json.loads(result.stdout)["conditions"]
    assert (c["pdk"], c["corners"], c["supplies_v"], c["volts_per_unit"]) == ("generic180", ["tt"], [1.8], 0.1)
    assert c["tau_s"] == pytest.approx(6e-6) and c["latency_s"] == pytest.approx(18e-6)
    ref = _cli("simulate", tmp_path / "t", "--reference-only", "--batch", "1")
    assert ref.exit_code == 0, ref.output
    assert ("transistor-level kc_relu cells on generic180, corner tt, 27 °C, supply 1.8 V; 1 model unit = "
            "100 mV around vcm 600 mV, 500 nA, 30 pF per node; τ = 6 µs per model time unit") in ref.output
    assert "latency t_L·τ = 18 µs" in ref.output and "ideal -> characterised" in ref.output
    area = json.loads(result.stdout)["conditions"]["gate_area_um2"]
    assert area > 0 and f"{area:,.0f} µm² of transistor gates" in ref.output


def test_si_prefixes():
    from kcompile.report import si

    assert [si(1.34e-9, "J"), si(6e-6, "s"), si(2.2e-4, "W"), si(999.7e-9, "J"), si(None, "J")] == [
        "1.34 nJ", "6 µs", "220 µW", "1 µJ", "—"]


# ---------------------------------------------------------------- 5-6. options that do not apply; vocabulary

@pytest.mark.parametrize("args,message", [
    (["verify", ROOT / "flows" / "ci.yaml", "--batch", "1", "--max-error", "1"],
     "--max-error, --batch do not apply to a flow"),
    (["verify", ROOT / "flows" / "ci.yaml", "--rtol", "1e-3"], "--rtol does not apply to a flow"),
    (["verify", "{build}", "--max-error", "1", "--junit", "j.xml"], "--junit does not apply to a build directory"),
    (["verify", "{build}", "--max-error", "1", "--set", "batch=1"], "--set does not apply to a build directory"),
    (["verify", "{build}"], "--max-error is required when verifying a build directory"),
    (["build", "{weights}", "-o", "{tmp}/x", "--pdk", "sky130"], "--pdk does not apply to behavioural cells"),
    (["build", "{weights}", "-o", "{tmp}/x", "--corner", "ss", "--refine-steps", "1"],
     "--corner, --refine-steps do not apply to behavioural cells: add --cells transistor"),
    (["simulate", "{build}", "--reference-only", "--jobs", "2"], "--jobs does not apply with --reference-only"),
    (["simulate", "{build}", "--inputs", "{tmp}/x.npy", "--batch", "2"], "--batch does not apply with --inputs"),
    (["simulate", "{build}", "--seed", "3"], "--seed does not apply to this build: it records test inputs"),
    (["verify", ROOT / "flows" / "ci.yaml", "--set", "batch=many"], "with --set batch=many: 'batch' must be"),
    (["verify", ROOT / "flows" / "ci.yaml", "--set", "batch"], "--set 'batch': must be KEY=VALUE"),
])
def test_options_that_do_not_apply_exit_2(tmp_path, small_weights, args, message):
    build = tmp_path / "b"
    assert _cli("build", small_weights, "-o", build).exit_code == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    args = [str(a).format(build=build, weights=small_weights, tmp=tmp_path) for a in args]
    assert message in _error(_cli(*args))
    assert not (tmp_path / "x").exists()


@pytest.mark.ngspice
def test_flow_keys_from_the_command_line(tmp_path):
    junit = tmp_path / "ci.xml"
    result = _cli("verify", ROOT / "flows" / "ci.yaml", "--set", "batch=1", "--set", "levels=[behavioural]",
                  "--json", "--junit", junit)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.splitlines()[-1])
    assert data["samples"] == 1 and data["overrides"] == ["batch=1", "levels=[behavioural]"]
    assert re.search(r"^ideal reference \(dopri5.*\): [0-9.]+ s$", result.output, re.M)
    assert re.search(r"^behavioural \(ngspice\): [0-9.]+ s$", result.output, re.M)  # one run: no count
    suite = ET.parse(junit).getroot().find("testsuite")
    assert float(suite.get("time")) > 0 and all(float(c.get("time")) > 0 for c in suite.iter("testcase"))


@pytest.mark.ngspice
def test_a_classifier_flow_reports_class_agreement(tmp_path):
    result = _cli("verify", ROOT / "flows" / "ci.yaml", "--set", "model=../examples/zoo/moons-hw-transistor.npz",
                  "--json", "--report", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    levels = {lv["level"]: lv for lv in json.loads(result.stdout.splitlines()[-1])["levels"]}
    assert levels["behavioural"]["class_agreement"] == 8 and levels["behavioural"]["task_metric"] == 100.0
    assert "<td>8/8</td>" in (tmp_path / "r.html").read_text()


def test_one_vocabulary_across_commands():
    for command, options in {"build": ("-o, --out", "--json", "-q, --quiet", "-v, --verbose"),
                             "simulate": ("-o, --out", "--json", "-q, --quiet", "-v, --verbose"),
                             "verify": ("--json", "-q, --quiet", "-v, --verbose"),
                             "import-reference": ("-o, --out", "--json", "-q, --quiet")}.items():
        text = _cli(command, "--help").output
        assert all(o in text for o in options), (command, text)
    build = _cli("build", "--help").output
    assert f"[{'|'.join(PDKS)}]" in build and f"[{'|'.join(CORNERS)}]" in build
    bad = _cli("build", "w.npz", "--pdk", "tsmc7")
    assert bad.exit_code == 2 and "'tsmc7' is not one of 'generic180', 'sky130', 'gf180mcu'" in bad.output
    both = _cli("simulate", "b", "-q", "-v")
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_train_marks_its_output_required():
    pytest.importorskip("torch")
    text = _cli("train", "--help").output
    assert re.search(r"-o, --out FILE\s+Weights file .*\[required\]", text, re.S) and "-q, --quiet" in text


# ---------------------------------------------------------------- 7. reports

@pytest.mark.ngspice
def test_report_names_the_conditions_and_draws_every_level_and_corner(tmp_path):
    """A small transistor-level flow (1 sample, 2 corners, 100 points per layer): the HTML names the PDK and
    the corners with their supply, plots each level in its own style with a legend on every panel, physical
    units on secondary axes, every corner, integer count axes; JUnit cases carry their time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kcompile.flow import load_flow
    from kcompile.report import LEVEL_STYLES, figures, overlaid, waveform_panel, write_html, write_junit
    from kcompile.verify import run_flow

    flow = load_flow(ROOT / "flows" / "ci-transistor.yaml",
                     ["batch=1", "corners=[tt, ff]", "monte_carlo.runs=0", "levels=[characterised, transistor]",
                      "gates=[{level: transistor, metric: max_output_error, limit: 0.15}]"])
    result = run_flow(flow)
    assert [r.level for r in overlaid(result)] == ["characterised", "transistor"]
    fig, ax = plt.subplots()
    waveform_panel(ax, result, 0)
    styles = {line.get_label().split()[0]: line.get_linestyle() for line in ax.get_lines()
              if not line.get_label().startswith("_")}
    assert styles == {"ideal": "-", "characterised": ":", "transistor": "-."} and ax.get_legend() is not None
    assert len({LEVEL_STYLES[k]["ls"] for k in LEVEL_STYLES}) == 4
    plt.close(fig)
    html = tmp_path / "r.html"
    write_html(result, html)
    text = html.read_text()
    assert "transistor-level kc_relu cells on generic180, corner tt, ff" in text and "1.8 V" in text
    assert "<th>supply</th>" in text and "worst node (all nodes)" in text and text.count("<img") == 3
    write_junit(result, tmp_path / "j.xml")
    cases = list(ET.parse(tmp_path / "j.xml").getroot().iter("testcase"))
    assert len(cases) == 2 and all(float(c.get("time")) > 0 for c in cases)

    figs = figures(result)  # the panels themselves: legends, secondary axes, integer ticks, every corner
    assert set(figs) == {"waveforms", "errors", "corners"}
    for fig in figs.values():
        assert all(ax.get_legend() is not None for ax in fig.axes), fig
    wave = figs["waveforms"].axes[0]
    labels = {a.get_xlabel() for a in wave.child_axes} | {a.get_ylabel() for a in wave.child_axes}
    assert labels - {""} == {"t (µs)", "V"} and wave.get_xlabel() == "t (model units)"
    hist = next(a for a in figs["errors"].axes if a.get_ylabel() == "count")
    assert all(float(t).is_integer() for t in hist.get_yticks())
    assert all(float(t).is_integer() for t in figs["errors"].axes[0].get_xticks())
    assert len(figs["corners"].axes[0].patches) == 4  # 2 corners x (error, change)
    plt.close("all")


# ---------------------------------------------------------------- 9. portable builds

@pytest.mark.parametrize("pdk", list(PDKS))
def test_bundled_models_hold_no_path(pdk):
    try:
        lines = PDKS[pdk].model_lines("tt")
    except Exception as exc:  # a PDK package that is not installed here
        pytest.skip(f"{pdk}: {exc}")
    text = bundle_models(lines, f"{pdk} corner tt")
    assert not re.search(r"^\s*\.(include|inc|lib)\b", text, re.I | re.M)
    assert "/" not in "".join(ln for ln in text.splitlines() if not ln.startswith("*") and '"' in ln)
    assert re.search(r"^\.model|^\s*\.subckt|^\.MODEL|^\.SUBCKT", text, re.M)


@pytest.mark.ngspice
def test_a_transistor_build_moves_and_its_testbench_runs_anywhere(tmp_path):
    here = tmp_path / "a" / "b"
    assert _cli("build", EXAMPLE, "-o", here, "--cells", "transistor", "--points-per-layer", "50",
                "--testbench", "-q").exit_code == 0
    circuit = (here / "circuit.cir").read_text()
    assert f'.include "{MODELS}"' in circuit and str(Path.home()) not in circuit and str(ROOT) not in circuit
    moved = tmp_path / "elsewhere"
    shutil.move(here, moved)
    b = open_build(moved)
    assert {MODELS, "tb.cir"} <= set(b.manifest["files"])
    tb = (moved / "tb.cir").read_text()
    ref = {int(n): float(v) for n, v in re.findall(r"n(\d+) = (\S+?)[,\n]", tb.splitlines()[3] + "\n")}
    away = tmp_path / "cwd"
    away.mkdir()
    assert "ngspice -b -D ng_nomodcheck path/to/tb.cir" in tb
    run = subprocess.run([ngspice.binary(), "-b", "-D", "ng_nomodcheck", str(moved / "tb.cir")], cwd=away,
                         capture_output=True, text=True, timeout=600)
    got = {int(n): float(v) for n, v in re.findall(r"^y_n(\d+)\s+=\s+(\S+)", run.stdout, re.M)}
    assert set(got) == set(ref) == {9, 10}, run.stdout + run.stderr
    assert max(abs(got[n] - ref[n]) for n in ref) < 0.15  # the transistor level's known gap, not a broken deck
    sim = b.simulate(b.recorded("inputs")[:1], jobs=1)
    assert np.abs(sim.outputs[0] - np.array([got[9], got[10]])).max() < 1e-3


def test_no_testbench_for_a_segmented_build(tmp_path):
    big = tmp_path / "big.npz"
    save_knet(random_knet(40, 2, 5000, "shift_relu", num_inputs=8, theta_scale=0.3, seed=5), big)
    assert "a testbench (tb.cir) needs a clocked circuit" in _error(
        _cli("build", big, "-o", tmp_path / "o", "--testbench"))
    assert not (tmp_path / "o").exists() and os.listdir(tmp_path) == ["big.npz"]
