"""Generative KirchhoffNets: latent inputs, batched ngspice decks, distribution gates, sample reports (issue 14).

The small flow here is a random 2-node tanh_affine network (3 layers x 8 devices) that transforms its latents
strongly enough that a corruption of one layer's θ by 1.5 moves its sample distribution far above the noise floor
(MMD ratio ~12 at N = 96 in the reference), so the gates can be shown to have power in a second of ngspice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kcompile.backends import get_simulator
from kcompile.backends.ngspice import parse_raw_plots
from kcompile.build import build
from kcompile.cli import main
from kcompile.errors import InputError
from kcompile.flow import load_flow
from kcompile.generation import compare_level, is_generative, latent_batch, pool_latents
from kcompile.knet import load_knet, random_knet, save_knet
from kcompile.netlist import default_tran, write_circuit
from kcompile.reference import integrate
from kcompile.simulate import batch_size, simulate
from kcompile.verify import run_flow

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = Path(os.environ.get("KCOMPILE_REFERENCE_CHECKPOINTS",
                                  ROOT.parent / "shared" / "reference-checkpoints"))


def _flow_knet(**meta):
    return random_knet(2, 3, 8, "tanh_affine", num_outputs=2, theta_scale=1.0, t_layer=2.0, seed=2,
                       meta={"generative": True, **meta})


@pytest.fixture
def flow_weights(tmp_path):
    path = tmp_path / "flow.npz"
    save_knet(_flow_knet(), path)
    return path


def _write_flow(tmp_path, text: str, weights: Path) -> Path:
    path = tmp_path / "gen.yaml"
    path.write_text(text.format(m=weights))
    return path


GEN_FLOW = """name: gen
model: {m}
inputs: {{normal: 96, seed: 1}}
levels: [behavioural]
segmented: true
samples_per_run: auto
jobs: 2
gates:
  - {{level: behavioural, metric: sample_mmd_ratio, limit: 1.5}}
  - {{level: behavioural, metric: sample_energy_ratio, limit: 1.5}}
  - {{level: behavioural, metric: max_displacement, limit: 1.0e-4}}
"""


# ------------------------------------------------------------ batched decks


@pytest.mark.ngspice
@pytest.mark.parametrize("segmented", [False, True])
def test_batched_decks_give_the_per_sample_results(tmp_path, segmented):
    """One ngspice run per batch (each sample's own deck entered with circbyline) gives each sample's own deck's
    numbers bit for bit, each transient checked as a run of its own."""
    knet = _flow_knet()
    circuit = tmp_path / "c.cir"
    write_circuit(knet, circuit, segmented=segmented)
    tran = dataclasses.replace(default_tran(knet, 200), segmented=segmented)
    x = latent_batch(knet, 5, 3)
    one = simulate(knet, circuit, x, tran, jobs=1, waveforms=True)
    many = simulate(knet, circuit, x, tran, jobs=2, waveforms=True, batch=2, run_root=tmp_path / "runs")
    assert np.array_equal(one.states, many.states)
    for (t1, v1), (t2, v2) in zip(one.waveforms, many.waveforms):
        assert np.array_equal(t1, t2) and np.array_equal(v1, v2)
    assert np.abs(many.states - integrate(knet, x).states).max() < 1e-4
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["batch_0", "batch_1", "batch_2"]  # 2 + 2 + 1 samples
    deck = (tmp_path / "runs" / "batch_0" / ("layer1" if segmented else "run") / "deck.cir")
    text = deck.read_text()
    assert text.count("\ntran ") == 2 and text.count("circbyline .ic v(n1)=") == 2 and "\nquit" not in text
    plots = parse_raw_plots(deck.parent / get_simulator("ngspice").batch_raw_name)
    assert len(plots) == 2 and all(p.time[-1] > 0 for p in plots)


@pytest.mark.ngspice
def test_batched_decks_are_cached_and_refused_where_they_cannot_run(tmp_path):
    knet = _flow_knet()
    circuit = tmp_path / "c.cir"
    write_circuit(knet, circuit)
    tran, x = default_tran(knet, 100), latent_batch(knet, 3, 0)
    first = simulate(knet, circuit, x, tran, batch=3, cache_dir=tmp_path / "cache")
    again = simulate(knet, circuit, x, tran, batch=3, cache_dir=tmp_path / "cache")
    assert first.cached == 0 and again.cached == 3 and np.array_equal(first.states, again.states)
    with pytest.raises(InputError, match="transistor-level circuit"):
        simulate(knet, circuit, x, dataclasses.replace(tran, uic=False), batch=2)
    with pytest.raises(InputError, match="must be an integer of at least 1"):
        simulate(knet, circuit, x, tran, batch=0)
    assert batch_size(knet, 2000, 2) == 50 and batch_size(knet, 8, 2) == 1 and batch_size(knet, 64, 2) == 8
    assert batch_size(load_knet(ROOT / "examples" / "flows2d" / "potential1.npz"), 2000, 2) == 31  # 60,000 devices


def test_parse_raw_plots_reads_appended_plots(tmp_path):
    """Several plots in one raw file, binary or ASCII, each checked for truncation."""
    head = ("Title: t\nDate: now\nPlotname: Transient Analysis\nFlags: real\nNo. Variables: 2\nNo. Points: {n}\n"
            "Variables:\n\t0\ttime\ttime\n\t1\tv(n1)\tvoltage\n")
    data = b""
    for n in (2, 3):
        values = np.arange(2 * n, dtype="<f8") + n
        data += head.format(n=n).encode() + b"Binary:\n" + values.tobytes()
    data += head.format(n=1).encode() + b"Values:\n 0\t0.5\n\t7.0\n"
    (tmp_path / "a.raw").write_bytes(data)
    plots = parse_raw_plots(tmp_path / "a.raw")
    assert [p.time.tolist() for p in plots] == [[2.0, 4.0], [3.0, 5.0, 7.0], [0.5]]
    assert plots[1]["v(n1)"].tolist() == [4.0, 6.0, 8.0] and plots[2]["v(n1)"].tolist() == [7.0]
    (tmp_path / "cut.raw").write_bytes(data[:-60])
    with pytest.raises(ValueError, match="truncated"):
        parse_raw_plots(tmp_path / "cut.raw")
    assert get_simulator("ngspice").has_batch()


# ------------------------------------------------------------ flows and gates


@pytest.mark.ngspice
def test_generative_flow_passes_and_a_corrupted_circuit_fails_the_same_gate(tmp_path, flow_weights):
    flow = load_flow(_write_flow(tmp_path, GEN_FLOW, flow_weights))
    result = run_flow(flow)
    assert result.passed, [g.detail for g in result.gates]
    behavioural = result.level("behavioural")[0]
    assert behavioural.samples.n == 96 and behavioural.samples.displacement_max < 1e-4
    # the same gate against a circuit whose layer 1 θ is 1.5x: far above the noise floor
    knet = load_knet(flow_weights)
    bad = dataclasses.replace(knet, layers=tuple(dataclasses.replace(lay, theta=lay.theta * 1.5) if k == 1 else lay
                                                 for k, lay in enumerate(knet.layers)))
    circuit = tmp_path / "bad.cir"
    write_circuit(bad, circuit, segmented=True)
    spice = simulate(bad, circuit, result.inputs, dataclasses.replace(default_tran(bad), segmented=True), batch=48)
    pool = integrate(knet, pool_latents(96, 2, flow.latent.seed)).outputs
    corrupt = compare_level(result.ideal.outputs, spice.outputs, pool)
    gate = flow.gates[0]
    assert gate.metric == "sample_mmd_ratio" and not gate.holds(corrupt.mmd_ratio)
    assert corrupt.mmd_ratio > 5 and corrupt.energy_ratio > 1.5, corrupt


@pytest.mark.slow
@pytest.mark.ngspice
def test_the_paper_circle_passes_and_its_corrupted_circuit_fails_the_shipped_gate(tmp_path):
    """The same on the shipped circle flow (flows/generation.yaml, 48 latents): its behavioural samples pass the
    sample_mmd_ratio gate, the circuit of the model whose layer 1 θ is 1.5x fails it (docs/generation.md measures
    both at N = 2,000: ratios 2e-8 and 145)."""
    flow = load_flow(ROOT / "flows" / "generation.yaml")
    result = run_flow(flow)
    assert result.passed, [g.detail for g in result.gates]
    knet = result.knet
    bad = dataclasses.replace(knet, layers=tuple(dataclasses.replace(lay, theta=lay.theta * 1.5) if k == 1 else lay
                                                 for k, lay in enumerate(knet.layers)))
    circuit = tmp_path / "bad.cir"
    write_circuit(bad, circuit, segmented=True)
    n = len(result.inputs)
    spice = simulate(bad, circuit, result.inputs, dataclasses.replace(default_tran(bad), segmented=True),
                     batch=batch_size(bad, n, 2), jobs=2)
    pool = integrate(knet, pool_latents(n, 2, flow.latent.seed)).outputs
    corrupt = compare_level(result.ideal.outputs, spice.outputs, pool)
    gate = next(g for g in flow.gates if g.metric == "sample_mmd_ratio")
    assert not gate.holds(corrupt.mmd_ratio) and corrupt.displacement_max > 0.5, corrupt


@pytest.mark.ngspice
def test_generative_flow_reports(tmp_path, flow_weights):
    """JSON per-level distribution metrics, JUnit one case per gate, HTML with the samples section; the
    transistor level of this flow runs only the first latents (inputs.levels)."""
    text = GEN_FLOW.replace("inputs: {{normal: 96, seed: 1}}", "inputs: {{normal: 40, seed: 1}}")
    path = _write_flow(tmp_path, text, flow_weights)
    junit, page = tmp_path / "g.xml", tmp_path / "g.html"
    result = CliRunner().invoke(main, ["verify", str(path), "--json", "--junit", str(junit), "--report", str(page)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["generative"] == {"latents": 40, "seed": 1, "per_level": {}}
    d = summary["levels"][1]["distribution"]
    assert summary["levels"][0]["distribution"] is None and d["n"] == 40 and d["sample_mmd_ratio"] <= 1.5
    assert {"sample_energy_ratio", "max_displacement", "floor_mmd2", "bandwidth"} <= set(d)
    names = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    assert names == ["sample_mmd_ratio", "sample_energy_ratio", "max_displacement"]
    html = page.read_text()
    assert 'id="samples"' in html and "Displacement per latent" in html and html.count("data:image/png") >= 4


def test_latent_flow_keys_are_validated(tmp_path, flow_weights, small_weights):
    cases = [
        ("inputs: {{normal: 1}}\ngates:\n  - {{level: behavioural, metric: sample_mmd_ratio, limit: 1}}\n",
         "needs at least 2 samples"),
        ("gates:\n  - {{level: behavioural, metric: sample_energy_ratio, limit: 1}}\n", "inputs: {normal: N"),
        ("inputs: {{normal: 8}}\ngates:\n  - {{level: behavioural, metric: accuracy_drop, limit: 1}}\n",
         "needs labelled inputs"),
        ("inputs: {{normal: 8}}\ngates:\n  - {{level: ideal, metric: max_displacement, limit: 1}}\n",
         "gate a simulated level"),
        ("inputs: {{normal: 8, levels: {{transistor: 2}}}}\n", "'inputs.levels.transistor' names a level"),
        ("inputs: {{normal: 8, levels: {{behavioural: 9}}}}\n", "'inputs.levels.behavioural' must be at most 8"),
        ("inputs: {{normal: 8, sigma: 2}}\n", "'inputs.sigma' must be one of"),
        ("inputs: {{file: x.npy, seed: 2}}\n", "'inputs.seed' must be one of file, labels"),
        ("samples_per_run: 0\n", "'samples_per_run' must be at least 1"),
        ("behavioural_points_per_layer: 5\n", "'behavioural_points_per_layer' must be at least 10"),
    ]
    for extra, message in cases:
        path = _write_flow(tmp_path, "model: {m}\n" + extra, flow_weights)
        with pytest.raises(InputError) as info:
            load_flow(path)
        assert message in str(info.value), (extra, str(info.value))
    # the model decides: latents for a model that is not generative, a uniform batch for one that is
    for weights, inputs, message in ((small_weights, "{normal: 4}", "is not generative"),
                                     (flow_weights, "random", "is a generative model")):
        path = tmp_path / "m.yaml"
        path.write_text(f"model: {weights}\ninputs: {inputs}\ngates:\n"
                        "  - {level: behavioural, metric: max_output_error, limit: 1}\n")
        result = CliRunner().invoke(main, ["verify", str(path)])
        assert result.exit_code == 2 and message in result.output and str(weights) in result.output, result.output


@pytest.mark.ngspice
def test_flow_inputs_from_a_file_with_labels(tmp_path, small_weights):
    x = np.random.default_rng(1).uniform(-1, 1, (4, 3))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0, 1, 1, 0]))
    path = tmp_path / "f.yaml"
    path.write_text(f"model: {small_weights}\ninputs: {{file: x.npy, labels: y.npy}}\nlevels: [behavioural]\n"
                    "gates:\n  - {level: behavioural, metric: accuracy_drop, limit: 0.0}\n")
    result = run_flow(load_flow(path))
    assert result.task == "classification" and result.labels.tolist() == [0, 1, 1, 0] and result.passed
    assert np.array_equal(result.inputs, x)


# ------------------------------------------------------------ the command line


@pytest.mark.ngspice
def test_simulate_latent(tmp_path, flow_weights, small_weights):
    runner = CliRunner()
    build(flow_weights, tmp_path / "gen")
    build(small_weights, tmp_path / "plain")
    out = tmp_path / "r.npz"
    result = runner.invoke(main, ["simulate", str(tmp_path / "gen"), "--latent", "6", "--seed", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as r:
        assert np.array_equal(r["inputs"], np.random.default_rng(5).standard_normal((6, 2)))
        assert np.abs(r["spice"] - r["reference"]).max() < 1e-4
    for args, message in (([str(tmp_path / "plain"), "--latent", "3"], "--latent draws standard-normal latents"),
                          ([str(tmp_path / "gen")], "is a generative model"),
                          ([str(tmp_path / "gen"), "--latent", "1", "--inputs", "x.npy"], "--inputs does not apply with --latent"),
                          ([str(tmp_path / "gen"), "--latent", "0"], "at least 1")):
        result = runner.invoke(main, ["simulate", *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert "plain" in runner.invoke(main, ["simulate", str(tmp_path / "plain"), "--latent", "3"]).output


# ------------------------------------------------------------ the shipped flows and the importer


def test_shipped_2d_flows_are_generative_with_provenance():
    for name in ("circle", "8gaussians", "potential1"):
        knet = load_knet(ROOT / "examples" / "flows2d" / f"{name}.npz")
        prov = knet.meta["provenance"]
        assert is_generative(knet) and knet.meta["task"] == name and knet.output_nodes.tolist() == [1, 2]
        assert prov["source_dir"] == name and len(prov["model_sha256"]) == 64
    flow = load_flow(ROOT / "flows" / "generation.yaml")
    assert flow.latent is not None and flow.gates[0].metric == "sample_mmd_ratio"
    assert load_flow(ROOT / "flows" / "generation-circle.yaml").behavioural_points_per_layer == 4000
    for path in sorted((ROOT / "flows").glob("generation*.yaml")):  # every one loads; genmnist's model is not shipped
        if "genmnist" not in path.name:
            assert load_flow(path).latent is not None, path
    hw = load_flow(ROOT / "flows" / "generation-transistor.yaml")  # the hardware-aware model's reproducing command
    assert hw.model.name == "8gaussians-gen-hw.npz" and is_generative(load_knet(hw.model))
    assert hw.latent.n >= 256 and hw.latent.count("transistor") >= 64 and hw.gates[-1].limit == 2.0


@pytest.mark.parametrize("name,outputs", [("circle", 2), ("genmnist", 784), ("twomoon", 2), ("mnist", None)])
def test_importer_marks_normalising_flows_generative(name, outputs):
    pytest.importorskip("torch")
    folder = CHECKPOINTS / name
    if not (folder / "model.pth").is_file():
        pytest.skip(f"REFERENCE CHECKPOINT MISSING: {folder} (set KCOMPILE_REFERENCE_CHECKPOINTS)")
    from kcompile.importer import import_reference

    knet = import_reference(folder / "model.pth", folder / "config.yaml")
    if outputs is None:  # a classifier keeps its projector
        assert not is_generative(knet) and "generative" not in knet.meta
    else:  # a flow's sample is every node (genmnist's projector: last10 is not applied)
        assert is_generative(knet) and knet.output_nodes.size == outputs == knet.num_nodes
