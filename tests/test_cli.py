"""The command line end to end: build, simulate, verify, and how it refuses bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from kcompile.cli import main
from tests.test_knet_loader import CASES, _arrays, _broken


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def _one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_build_writes_manifest_and_netlist(tmp_path, small_weights):
    result = _cli("build", small_weights, "-o", tmp_path / "b", "--devices", "bsource")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["num_nodes"] == 6 and manifest["num_devices"] == 24 and manifest["law"] == "relu"
    assert [layer["devices"] for layer in manifest["layers"]] == [12, 12]
    assert set(manifest["files"]) == {"circuit.cir", "weights.npz", "inputs.npy"}
    assert manifest["kcompile_version"]
    circuit = (tmp_path / "b" / "circuit.cir").read_text()
    assert circuit.count("\nB") == 24 and circuit.count("\nC") == 6 and circuit.count("\nVclk") == 2


@pytest.mark.ngspice
def test_solver_choice_reaches_the_manifest_and_the_run(tmp_path, small_weights):
    """``--solver klu`` is recorded and used; an ngspice without KLU runs it anyway and the CLI says so."""
    from kcompile import ngspice

    assert _cli("build", small_weights, "-o", tmp_path / "s").exit_code == 0
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["tran"]["solver"] == "sparse"
    assert _cli("build", small_weights, "-o", tmp_path / "b", "--solver", "klu").exit_code == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["tran"]["solver"] == "klu"
    result = _cli("simulate", tmp_path / "b", "--batch", "1", "--keep-runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert re.search(r"^\.options .* klu$", (tmp_path / "runs" / "sample_0" / "deck.cir").read_text(), re.M)
    assert ("has no KLU solver" in result.output) != ngspice.has_klu()
    bad = _cli("build", small_weights, "-o", tmp_path / "x", "--solver", "magic")
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("case", ["missing key", "wrong dtype", "node out of range", "nan", "src == dst",
                                  "non-increasing t_bounds", "unknown law", "unknown format"])
def test_bad_weights_exit_2_and_leave_nothing(tmp_path, small_weights, case):
    change, message = CASES[case]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **_broken(_arrays(small_weights), change))
    line = _one_line_error(_cli("build", bad, "-o", tmp_path / "out"))
    assert message in line
    assert not (tmp_path / "out").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"bad.npz", "small.npz"}  # no half-written build


def test_not_an_npz_and_pickles(tmp_path, small_weights):
    (tmp_path / "junk.npz").write_bytes(b"\x00\x01garbage")
    _one_line_error(_cli("build", tmp_path / "junk.npz", "-o", tmp_path / "o1"))
    arrays = _arrays(small_weights)
    arrays["meta"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "pickle.npz", **arrays)
    assert "pickle" in _one_line_error(_cli("build", tmp_path / "pickle.npz", "-o", tmp_path / "o2"))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    _one_line_error(_cli("build", tmp_path / "absent.npz", "-o", tmp_path / "o3"))


def test_refuses_to_overwrite_a_foreign_directory(tmp_path, small_weights):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    line = _one_line_error(_cli("build", small_weights, "-o", tmp_path / "precious"))
    assert "not a kcompile build directory" in line
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"


def test_reference_only(tmp_path, small_weights):
    _cli("build", small_weights, "-o", tmp_path / "b")
    result = _cli("simulate", tmp_path / "b", "--reference-only", "--out", tmp_path / "r.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "r.npz") as r:
        assert r["reference"].shape == (3, 2) and r["reference_states"].shape == (3, 3, 6)
        assert "spice" not in r.files
    assert "test inputs recorded with the model" in result.output


@pytest.mark.parametrize("bad,message", [
    (np.zeros((2, 5)), "have 5 columns but the network takes 3"),
    (np.array([[0.1, np.nan, 0.2]]), "row 0 contains NaN"),
    (np.array([["a", "b", "c"]]), "must be numeric"),
])
def test_bad_inputs_exit_2(tmp_path, small_weights, bad, message):
    _cli("build", small_weights, "-o", tmp_path / "b")
    np.save(tmp_path / "x.npy", bad)
    assert message in _one_line_error(_cli("simulate", tmp_path / "b", "--reference-only",
                                           "--inputs", tmp_path / "x.npy"))


def test_not_a_build_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "not a kcompile build directory" in _one_line_error(_cli("simulate", tmp_path / "empty", "--reference-only"))


@pytest.mark.ngspice
def test_simulate_with_ngspice(tmp_path, small_weights):
    _cli("build", small_weights, "-o", tmp_path / "b")
    x = np.random.default_rng(3).uniform(-1, 1, (4, 3))
    np.save(tmp_path / "x.npy", x)
    result = _cli("simulate", tmp_path / "b", "--ngspice", "--inputs", tmp_path / "x.npy", "--out", tmp_path / "r.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "r.npz") as r:
        assert r["spice"].shape == r["reference"].shape == (4, 2)
        assert r["spice_states"].shape == r["reference_states"].shape == (4, 3, 6)
        assert np.abs(r["spice"] - r["reference"]).max() <= 1e-4
        np.testing.assert_array_equal(r["inputs"], x)


@pytest.mark.ngspice
def test_verify_passes_then_fails_on_a_tampered_netlist(tmp_path, small_weights):
    _cli("build", small_weights, "-o", tmp_path / "b")
    good = _cli("verify", tmp_path / "b", "--max-error", "1e-4", "--json")
    assert good.exit_code == 0, good.output
    summary = json.loads(good.stdout.strip().splitlines()[-1])
    assert summary["passed"] and summary["max_output_error"] <= 1e-4 and summary["samples"] == 3
    circuit = tmp_path / "b" / "circuit.cir"
    # scale every device's first parameter by 1.5, as a broken compiler would (B-sources or compiled devices)
    text = re.sub(r"uramp\((-?[0-9.e+-]+)\*", lambda m: f"uramp({float(m.group(1)) * 1.5!r}*", circuit.read_text())
    text = re.sub(r"theta0_(\d)=(-?[0-9.e+-]+)", lambda m: f"theta0_{m.group(1)}={float(m.group(2)) * 1.5!r}", text)
    circuit.write_text(text)
    bad = _cli("verify", tmp_path / "b", "--max-error", "1e-4")
    assert bad.exit_code == 1, bad.output
    assert "FAIL" in bad.output and "changed since it was built" in bad.output


def test_seeded_random_batch_when_nothing_recorded(tmp_path):
    from kcompile.knet import random_knet, save_knet
    save_knet(random_knet(5, 1, 6, "tanh", seed=2), tmp_path / "w.npz")
    _cli("build", tmp_path / "w.npz", "-o", tmp_path / "b")
    result = _cli("simulate", tmp_path / "b", "--reference-only", "--batch", "5", "--seed", "9")
    assert result.exit_code == 0 and "random batch of 5" in result.output and "seed 9" in result.output
