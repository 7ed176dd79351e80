"""Monte Carlo mismatch (issue #4 items 3-5): seeded mismatch decks, σ = 0 against nominal, the Monte Carlo
gates and their reports, corner/supply/recalibration keys, and the device attribution's sensitivities.

The ngspice tests run the shipped example (10 nodes, 3 × 30 signed ReLU cells, generic180) on one recorded
input at 100 points per layer (≈ 4-5 s of ngspice CPU a run, docs/verification.md).
"""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kcompile.cells.kc_relu import CELL as SIGNED_RELU
from kcompile.cli import main
from kcompile.errors import InputError
from kcompile.flow import load_flow
from kcompile.knet import load_knet, random_knet
from kcompile.mapping import map_knet
from kcompile.mismatch import MismatchDraw, relu_form, sensitivities, sensitivity_step
from kcompile.netlist import render_transistor_circuit, transistor_tran
from kcompile.pdk import PDKS, get_pdk
from kcompile.reference import integrate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "random_relu.npz"
G180 = get_pdk("generic180")


def _example():
    knet = load_knet(EXAMPLE)
    with np.load(EXAMPLE) as z:
        x = z["test_inputs"][:1]
    return knet, x, map_knet(knet, "generic180", "tt")


def _text(knet, cellmap, draw=None, **kw) -> str:
    return "".join(render_transistor_circuit(knet, cellmap, mismatch=draw, **kw))


def test_mismatch_deck_differs_from_nominal_and_is_reproducible():
    knet, _, cellmap = _example()
    nominal = _text(knet, cellmap)
    run0 = _text(knet, cellmap, MismatchDraw(G180.mismatch, 1, 0))
    assert "delvto" not in nominal and "vt_" not in nominal
    assert run0 != nominal and run0.count("delvto={vt_") == 2 * 16  # every transistor of both variants
    assert run0 == _text(knet, cellmap, MismatchDraw(G180.mismatch, 1, 0))  # same seed and run: same deck
    assert run0 != _text(knet, cellmap, MismatchDraw(G180.mismatch, 1, 1))
    assert run0 != _text(knet, cellmap, MismatchDraw(G180.mismatch, 2, 0))
    # each instance line carries one threshold and one β value per transistor of its cell
    line = next(ln for ln in run0.splitlines() if ln.startswith("X0_0 "))
    assert len(re.findall(r"\bvt_\w+=", line)) == len(re.findall(r"\bbt_\w+=", line)) == 16
    # the nominal subcircuits are untouched, and the varied ones only add the parameters
    assert SIGNED_RELU.render(G180) in nominal
    assert "+ vt_pb=0 bt_pb=0" in SIGNED_RELU.render(G180, mismatch=True)


def test_larger_cells_draw_smaller_mismatch_in_the_deck(tmp_path):
    """A map onto cells drawn 4× as large: the same seeded draws, every threshold shift of a grown transistor half as
    large (σ ∝ 1/√area); the switches keep theirs."""
    knet, _, cellmap = _example()
    big = map_knet(knet, "generic180", "tt", area=4.0)
    assert big.cell.area == 4.0 and big.cell.sizes != cellmap.cell.sizes
    draw = MismatchDraw(G180.mismatch, 1, 0)
    shifts = [np.array([float(v) for v in re.findall(r"\bvt_\w+=(\S+)", line)])
              for text in (_text(knet, cellmap, draw), _text(knet, big, draw))
              for line in text.splitlines() if line.startswith("X0_0 ")]
    signs = cellmap.layers[0].instance(0).signs
    ratio = [((t.w * t.l) / (u.w * u.l)) ** 0.5 for t, u in zip(cellmap.cell.transistors(G180, signs),
                                                                 big.cell.transistors(G180, signs))]
    assert shifts[0].size == 16 and sorted(set(np.round(ratio, 9))) == [0.5, 1.0]  # the switches stay minimal
    assert np.allclose(shifts[1], shifts[0] * ratio, rtol=1e-4, atol=1e-9)
    flow = tmp_path / "f.yaml"
    flow.write_text(f"model: {EXAMPLE}\nlevels: [transistor]\ncell_area: 4\n")
    assert load_flow(flow).cell_area == 4.0


def test_draws_follow_pelgrom_and_the_seed_stream():
    devices = SIGNED_RELU.transistors(G180)
    draws = np.stack([MismatchDraw(G180.mismatch, 7, 3).values(0, i, devices) for i in range(4000)])
    sigma = np.array([G180.mismatch.sigma(t.kind, t.w, t.l) for t in devices])
    assert np.allclose(draws.std(axis=0) / sigma, 1.0, atol=0.06)
    assert np.abs(draws.mean(axis=0) / sigma).max() < 0.06
    # instance (k, i) of run r does not depend on which other instances or runs are drawn
    first = MismatchDraw(G180.mismatch, 7, 3).values(2, 5, devices)
    assert np.array_equal(first, MismatchDraw(G180.mismatch, 7, 3).values(2, 5, devices))
    assert np.array_equal(MismatchDraw(G180.mismatch, 7, 3, scale=0.0).values(2, 5, devices), np.zeros_like(first))
    # smaller devices vary more: σ_VT = A_VT/√(W·L)
    s_small, _ = G180.mismatch.sigma("n", 0.5, 0.18)
    s_big, _ = G180.mismatch.sigma("n", 2.0, 2.0)
    assert s_small == pytest.approx(3.5e-3 / np.sqrt(0.09)) and s_big == pytest.approx(3.5e-3 / 2.0)


def test_every_pdk_declares_mismatch_and_varies_through_mos():
    for pdk in PDKS.values():
        assert pdk.mismatch is not None and pdk.mismatch.source
        line = pdk.mos("m1", "d", "g", "s", "b", "n", 2.0, 1.0, vary="m1")
        if pdk.subckt_devices:  # vendor subcircuits: a series gate source and a scaled width
            assert line.startswith("Vvtm1 g gvtm1 {vt_m1}\n") and "*(1+bt_m1)}" in line
        else:
            assert line.endswith("delvto={vt_m1} mulu0={1+bt_m1}")
        assert pdk.mos("m1", "d", "g", "s", "b", "n", 2.0, 1.0) in line or pdk.subckt_devices


def test_supply_override_reaches_the_supply_and_the_enables():
    knet, _, cellmap = _example()
    text = _text(knet, cellmap, supply=1.62)
    assert "Vdd vdd 0 1.62" in text and " 1.62 " in next(ln for ln in text.splitlines() if ln.startswith("Ven0 "))
    assert _text(knet, cellmap, supply=G180.supply) == _text(knet, cellmap)


def test_sensitivities_are_those_of_the_reference():
    knet = random_knet(5, 2, 6, "shift_relu", num_outputs=2, theta_scale=0.4, seed=4)
    x = np.random.default_rng(1).uniform(-1, 1, (3, knet.num_features))
    sens = sensitivities(knet, x)
    assert sens.shape == (3, 2, knet.num_devices, 4)
    assert np.allclose(sensitivities(knet, x, block=5), sens, atol=1e-3)  # blocks of devices: the same numbers
    # moving θ of the sink and the source side together is moving the device's θ (relu form) in the reference
    k, i, step = 1, 2, 1e-5
    a, b, t0, t1 = relu_form(knet)[k]
    layer = knet.layers[k]
    theta = np.array(layer.theta)
    theta[i, 0] += step
    moved = dataclasses.replace(knet, layers=tuple(dataclasses.replace(lay, theta=theta) if n == k else lay
                                                   for n, lay in enumerate(knet.layers)))
    numeric = (integrate(moved, x).outputs - integrate(knet, x).outputs) / step
    g = sum(lay.num_devices for lay in knet.layers[:k]) + i
    swap = a[i] != layer.src[i]
    # shift_relu θ1·max(Δ − θ0, 0) in relu form: intercept ∓θ1·θ0 (− unswapped, + swapped), d/dθ0 = ∓θ1
    d_t1 = (1.0 if swap else -1.0) * float(layer.theta[i, 1])
    predicted = (sens[:, :, g, 1] + sens[:, :, g, 3]) * d_t1
    assert np.allclose(predicted, numeric, atol=2e-3 * max(1.0, np.abs(numeric).max())), (predicted, numeric)


def test_sensitivities_of_a_stiff_network_take_smaller_steps_and_converge():
    knet = random_knet(5, 2, 6, "relu", num_outputs=2, theta_scale=0.4, seed=4)
    assert sensitivity_step(knet) == 1e-2
    # conducting devices only (θ0 > 0, θ1 = 0: a stable network) with time constants 300x shorter
    layers = tuple(dataclasses.replace(lay, theta=np.abs(lay.theta) * [1.0, 0.0]) for lay in knet.layers)
    stiff = dataclasses.replace(knet, layers=layers, capacitance=knet.capacitance / 300)
    assert sensitivity_step(stiff) < 1e-3
    x = np.random.default_rng(2).uniform(-1, 1, (4, knet.num_features))
    sens, fine = sensitivities(stiff, x), sensitivities(stiff, x, dt=sensitivity_step(stiff) / 2)
    assert np.abs(sens - fine).max() < 1e-3 * np.abs(fine).max()
    coarse = sensitivities(stiff, x, dt=1e-2)  # RK4 at the default step on this network: far off
    assert np.abs(coarse - fine).max() > 0.5 * np.abs(fine).max()


@pytest.mark.parametrize("text,message", [
    ("monte_carlo: {{runs: -1}}\nlevels: [transistor]\n", "'monte_carlo.runs' must be at least 0"),
    ("monte_carlo: {{runs: 2, sigma: 1}}\nlevels: [transistor]\n", "'monte_carlo.sigma' must be one of"),
    ("monte_carlo: {{runs: many}}\nlevels: [transistor]\n", "'monte_carlo.runs' must be a int, got 'many'"),
    ("monte_carlo: {{runs: 2, rank: maybe}}\nlevels: [transistor]\n", "'monte_carlo.rank' must be a bool"),
    ("monte_carlo: {{runs: 2}}\nlevels: [behavioural]\n", "'monte_carlo.runs' needs the 'transistor' level"),
    ("levels: [transistor]\ngates:\n  - {{level: transistor, metric: mc_percentile_accuracy, limit: 90}}\n",
     "'gates[0].metric' is 'mc_percentile_accuracy', which needs level 'transistor' and 'monte_carlo.runs'"),
    ("levels: [transistor]\ncorners: [tt, xx]\n", "'corners[1]' must be one of tt, ff, ss, fs, sf"),
    ("levels: [transistor]\nsupply: [1.8, -1]\n", "'supply' must be positive volts"),
    ("levels: [transistor]\nsupply: [high]\n", "'supply' must be a number"),
    ("levels: [transistor]\npoints_per_layer: 3\n", "'points_per_layer' must be at least 10"),
    ("levels: [transistor]\nrecalibrate: sometimes\n", "'recalibrate' must be a bool"),
    ("levels: [transistor]\ncell_area: 0.5\n", "'cell_area' must be at least 1"),
])
def test_monte_carlo_and_corner_keys_are_validated(tmp_path, text, message):
    path = tmp_path / "f.yaml"
    path.write_text(f"model: {EXAMPLE}\n" + text.format())
    with pytest.raises(InputError) as info:
        load_flow(path)
    assert message in str(info.value) and str(path) in str(info.value)
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_all_corners_expand_to_the_pdk_corners(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(f"model: {EXAMPLE}\nlevels: [transistor]\npdk: sky130\ncorners: all\n")
    assert load_flow(path).corners == get_pdk("sky130").corners


@pytest.mark.ngspice
def test_zero_sigma_mismatch_reproduces_the_nominal_run_exactly(tmp_path):
    from kcompile.simulate import simulate

    knet, x, cellmap = _example()
    tran = transistor_tran(knet, 100)
    out = {}
    for name, draw in (("nominal", None), ("zero", MismatchDraw(G180.mismatch, 1, 0, scale=0.0)),
                       ("run0", MismatchDraw(G180.mismatch, 1, 0))):
        circuit = tmp_path / f"{name}.cir"
        circuit.write_text(_text(knet, cellmap, draw))
        out[name] = simulate(knet, circuit, x, tran, scaling=cellmap.scaling, jobs=1, supply=("vdd", 1.8))
    assert np.array_equal(out["zero"].states, out["nominal"].states)
    assert out["zero"].energy[0] == out["nominal"].energy[0]
    assert np.abs(out["run0"].outputs - out["nominal"].outputs).max() > 1e-3  # mismatch moves the outputs


def _mc_flow(tmp_path: Path, limit: float, cache: Path) -> Path:
    path = tmp_path / "mc.yaml"
    path.write_text(f"""name: mc-test
model: {EXAMPLE}
batch: 1
levels: [transistor]
pdk: generic180
corners: [tt, ff]
points_per_layer: 100
monte_carlo: {{runs: 2, seed: 1, top: 3}}
jobs: 2
cache: {cache}
gates:
  - {{level: transistor, metric: max_output_error, limit: 0.5}}
  - {{level: transistor, metric: mc_p95_output_error, limit: {limit}}}
""")
    return path


@pytest.mark.ngspice
def test_monte_carlo_gate_exit_codes_and_reports(tmp_path):
    cache = tmp_path / "cache"
    junit, html = tmp_path / "out.xml", tmp_path / "out.html"
    ok = CliRunner().invoke(main, ["verify", str(_mc_flow(tmp_path, 5.0, cache)), "--json", "--junit", str(junit),
                                   "--report", str(html)])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout.strip().splitlines()[-1])
    mc = data["monte_carlo"]
    assert mc["runs"] == 2 and len(mc["output_error"]["values"]) == 2 and mc["task_metric"] is None
    assert 0 < mc["output_error"]["p95"] <= mc["output_error"]["worst"]
    a = mc["attribution"]
    assert a["devices"] == 90 and len(a["top_devices"]) == 3
    assert a["top_devices"][0]["share"] >= a["top_devices"][1]["share"] >= a["top_devices"][2]["share"]
    assert a["correlation"] > 0.5  # the linear attribution explains the runs' deviations (measured 0.95)
    assert [c["label"] for c in data["corners"]] == ["tt 27C", "ff 27C"]
    assert data["corners"][0]["max_change_vs_nominal"] == 0.0 < data["corners"][1]["max_change_vs_nominal"]
    assert data["timing"]["compute"]["reference"]["wall_s_per_inference"] > 0
    assert "torch" in data["timing"]["compute"]
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"max_output_error[tt 27C]", "max_output_error[ff 27C]", "mc_p95_output_error[mc tt 27C]"}
    page = html.read_text()
    for needle in ('id="montecarlo"', "Devices whose mismatch dominates", "layer", 'id="corners"', "ff 27C",
                   "Energy and latency against software", "torchdiffeq"):
        assert needle in page, needle
    assert page.count("data:image/png;base64,") >= 3
    # the same runs (from the cache) against a limit below the measured p95: exit 1, the gate named
    fail = CliRunner().invoke(main, ["verify", str(_mc_flow(tmp_path, 1e-3, cache)), "--junit", str(junit)])
    assert fail.exit_code == 1, fail.output
    assert "transistor.mc_p95_output_error" in fail.output
    failure = next(c for c in ET.parse(junit).getroot().iter("testcase")
                   if c.get("name").startswith("mc_p95")).find("failure")
    assert failure is not None and "2 runs" in failure.get("message")


def test_percentile_accuracy_gate_is_a_floor_on_the_fifth_percentile():
    from kcompile.flow import Gate
    from kcompile.verify import MonteCarloResult, _mc_gate

    acc = np.array([100.0, 98.0, 96.0, 90.0, 99.0])
    mc = MonteCarloResult("tt 27C", 5, 1, 1.0, np.zeros((5, 2, 2)), acc, np.full(5, 0.1), np.zeros((2, 2)), 1.0,
                          np.zeros((5, 2)))
    p5 = float(np.percentile(acc, 5))  # 91.2: between the two worst runs
    held = _mc_gate(Gate("transistor", "mc_percentile_accuracy", 91.0), mc, "classification")
    broken = _mc_gate(Gate("transistor", "mc_percentile_accuracy", 92.0), mc, "classification")
    assert held.passed and not broken.passed and held.value == broken.value == pytest.approx(p5)
    assert "not >= 92" in broken.detail and held.corner == "mc tt 27C"
    unlabelled = _mc_gate(Gate("transistor", "mc_percentile_accuracy", 50.0), mc, None)
    assert not unlabelled.passed and "classification" in unlabelled.detail
    assert mc.percentile_metric("classification") == pytest.approx(p5) and mc.worst_metric("classification") == 90.0


def test_compute_timing_labels_the_forward_it_timed(monkeypatch):
    pytest.importorskip("torch")
    from kcompile.timing import compute_timing, rk4_forward

    knet = load_knet(EXAMPLE)
    with np.load(EXAMPLE) as z:
        x = z["test_inputs"][:2]
    assert np.abs(rk4_forward(knet, x) - integrate(knet, x).outputs).max() < 1e-4
    monkeypatch.setitem(__import__("sys").modules, "torchdiffeq", None)  # as if not installed
    t = compute_timing(knet, x, repeat=1)
    assert t["reference"]["wall_s_per_inference"] > 0 and t["samples"] == 2
    assert t["torch"]["label"].startswith("torchdiffeq is not installed: kcompile's torch RK4 forward")
    assert t["torch"]["max_output_error_vs_reference"] < 1e-4


@pytest.mark.ngspice
@pytest.mark.parametrize("name", list(PDKS))
def test_varied_transistor_moves_as_drawn_in_ngspice(name):
    """One NMOS (2/1 µm) per PDK, at DC: zero draws give the nominal current (exactly, for model devices),
    +10 mV of threshold lowers it, +5 % of β raises it by about 5 % (delvto/mulu0, or sky130's gate source
    and width)."""
    from kcompile import ngspice
    from kcompile.pdk import PdkError

    pdk = get_pdk(name)
    try:
        lines = [f"* {name}", *pdk.model_lines("tt")]
    except PdkError as exc:
        pytest.skip(str(exc))
    lines += [".subckt dut d g s b vt_m=0 bt_m=0", pdk.mos("m", "d", "g", "s", "b", "n", 2.0, 1.0, vary="m"), ".ends",
              f"vg g 0 {0.35 * pdk.supply:.3g}"]
    for k, draw in enumerate([None, (0, 0), (0.01, 0), (0, 0.05)]):
        lines.append(f"v{k} d{k} 0 {pdk.supply / 2:g}")
        lines.append(pdk.mos(f"n{k}", f"d{k}", "g", "0", "0", "n", 2.0, 1.0) if draw is None
                     else f"x{k} d{k} g 0 0 dut vt_m={draw[0]} bt_m={draw[1]}")
    raw = ngspice.run("\n".join(lines + [".op", ".end"]) + "\n")
    i = np.array([-raw[f"i(v{k})"][0] for k in range(4)])
    if pdk.subckt_devices:  # the 0 V gate source adds a node: the same current to rounding
        assert i[1] == pytest.approx(i[0], rel=1e-12)
    else:
        assert i[1] == i[0]
    assert 0.5 < i[2] / i[0] < 0.99
    assert 1.03 < i[3] / i[0] < 1.07


def test_torchdiffeq_forward_counts_rhs_and_matches_reference():
    pytest.importorskip("torchdiffeq",
                        reason="torchdiffeq NOT INSTALLED (pip install -e .[bench]): paper-forward timing untested")
    from kcompile.timing import torchdiffeq_forward

    knet = load_knet(EXAMPLE)
    with np.load(EXAMPLE) as z:
        x = z["test_inputs"][:2]
    y, nfe = torchdiffeq_forward(knet, x)
    assert nfe >= 12 and y.shape == (2, len(knet.output_nodes))
    assert np.abs(y - integrate(knet, x).outputs).max() < 0.05  # rtol = atol = 1e-3, float32


def test_theta_deviations_report_their_decks_as_progress(tmp_path, monkeypatch):
    """The δθ sweeps (``--mismatch``'s table, the attribution) run their decks on threads; each deck still
    advances the one step they open, first measured, then read from the cache."""
    from kcompile import progress
    from kcompile.mismatch import draws, theta_deviations

    cellmap = map_knet(random_knet(3, 1, 2, "relu", theta_scale=0.3, seed=1), "generic180", "tt")
    monkeypatch.setenv("KCOMPILE_CACHE", str(tmp_path))  # the sweeps' cache (the calibration's is read above)
    monkeypatch.setattr("kcompile.mismatch.CHUNK", 3)  # 2 instances x 3 draws: two decks, on two threads
    mc = draws(G180.mismatch, 1, 2)
    runs = []
    for _ in range(2):
        events: list[progress.Event] = []
        with progress.listening(events.append):
            runs.append(theta_deviations(cellmap, mc, jobs=2))
        assert [e.kind for e in events] == ["start", "advance", "advance", "end"]
        assert events[0].label.startswith("mismatch DC sweeps: 2 kc_relu instances x 3 draws on generic180/tt")
        assert events[-1].done == events[-1].total == 2
        runs[-1] = (runs[-1], events[-1].cached)
    (first, measured_cached), (second, cached) = runs
    assert measured_cached == 0 and cached == 2
    np.testing.assert_array_equal(first, second)
    assert first.shape == (2, 2, 4) and np.abs(first).max() > 0  # the draws move the fitted θ
