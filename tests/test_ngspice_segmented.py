"""Segmented behavioural circuits (large networks: one transient per layer) agree with the reference."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kcompile import ngspice
from kcompile.compare import compare
from kcompile.errors import InputError
from kcompile.knet import random_knet
from kcompile.laws import LAWS
from kcompile.netlist import SEGMENTED_MIN_DEVICES, default_tran, is_large, render_circuit, write_circuit
from kcompile.scaling import Scaling
from kcompile.reference import integrate
from kcompile.simulate import simulate

pytestmark = pytest.mark.ngspice


@pytest.mark.parametrize("law", [law for law in LAWS if "gelu" not in law])  # gelu: ~130x tanh's ngspice cost
def test_segmented_law_matches_reference(tmp_path, law):
    knet = random_knet(20, 3, 70, law, seed=21, theta_scale=0.3)
    x = np.random.default_rng(4).uniform(-1, 1, (3, knet.num_features))
    write_circuit(knet, tmp_path / "circuit.cir", segmented=True)
    tran = default_tran(knet, 1000, segmented=True)
    assert tran.segmented and tran.trtol > 7
    spice = simulate(knet, tmp_path / "circuit.cir", x, tran, jobs=2, waveforms=True)
    ref = integrate(knet, x)
    c = compare(ref.states, spice.states, knet.output_nodes)
    assert np.abs(ref.states[:, -1] - ref.states[:, 0]).max() > 0.05
    assert c.max_output_error <= 1e-4, c.boundary_error
    assert c.boundary_error.max() <= 1e-4
    t, v = spice.waveforms[0]
    assert t[0] == 0.0 and t[-1] == pytest.approx(knet.t_bounds[-1]) and v.shape == (t.size, knet.num_nodes)


def test_segmented_text_has_sections_and_no_clocks():
    knet = random_knet(5, 2, 6, "shift_relu", seed=1)
    text = "".join(render_circuit(knet, segmented=True))
    assert "segmented" in text.splitlines()[0] and "clk" not in text
    assert text.count(".lib layer") == 2 and text.count(".endl") == 3
    assert text.count("\nB") == knet.num_devices


def test_size_rule_picks_segmented_for_large_networks(tmp_path):
    small = random_knet(6, 2, 12, "relu", seed=3)
    assert not is_large(small) and not default_tran(small).segmented and default_tran(small).tmax == pytest.approx(1e-3)
    big = random_knet(200, 2, SEGMENTED_MIN_DEVICES // 2, "shift_relu", seed=3)
    assert is_large(big) and default_tran(big).segmented
    write_circuit(big, tmp_path / "big.cir")
    assert "segmented" in (tmp_path / "big.cir").open().readline()


def test_circuit_and_analysis_must_agree(tmp_path):
    knet = random_knet(5, 2, 6, "relu", seed=2)
    x = np.zeros((1, knet.num_features))
    write_circuit(knet, tmp_path / "clocked.cir", segmented=False)
    write_circuit(knet, tmp_path / "segmented.cir", segmented=True)
    with pytest.raises(InputError, match="clocked circuit but a segmented analysis"):
        simulate(knet, tmp_path / "clocked.cir", x, default_tran(knet, segmented=True))
    with pytest.raises(InputError, match="segmented circuit but a clocked analysis"):
        simulate(knet, tmp_path / "segmented.cir", x, default_tran(knet, segmented=False))


def test_segmented_cache_reuses_runs(tmp_path):
    knet = random_knet(6, 2, 12, "relu", seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, (2, knet.num_features))
    write_circuit(knet, tmp_path / "circuit.cir", segmented=True)
    tran = default_tran(knet, 200, segmented=True)
    first = simulate(knet, tmp_path / "circuit.cir", x, tran, jobs=1, cache_dir=tmp_path / "cache")
    again = simulate(knet, tmp_path / "circuit.cir", x, tran, jobs=1, cache_dir=tmp_path / "cache")
    assert again.cached == 2 and np.array_equal(first.states, again.states)


def test_large_networks_ask_for_klu_and_small_ones_do_not():
    knet = random_knet(5, 2, 6, "relu", seed=1)
    assert default_tran(knet).solver == "sparse" and "klu" not in default_tran(knet).options(Scaling())
    large = default_tran(knet, segmented=True)
    assert large.solver == "klu" and large.options(Scaling()).split()[-1] == "klu"


KLU_NGSPICE = os.environ.get("KCOMPILE_NGSPICE_KLU")


@pytest.mark.skipif(not KLU_NGSPICE, reason="NO ngspice WITH KLU: set KCOMPILE_NGSPICE_KLU to one "
                    "('bash scripts/ngspice_klu.sh' fetches it; .ci/run does)")
def test_klu_solver_matches_reference(tmp_path, monkeypatch):
    """ngspice >= 40 built with KLU really factors with it, and the segmented run still matches the reference."""
    monkeypatch.setenv(ngspice.ENV_BINARY, KLU_NGSPICE)
    assert ngspice.has_klu()
    knet = random_knet(20, 3, 70, "shift_relu", seed=21, theta_scale=0.3)
    x = np.random.default_rng(4).uniform(-1, 1, (2, knet.num_features))
    write_circuit(knet, tmp_path / "circuit.cir", segmented=True)
    tran = default_tran(knet, 1000, segmented=True)
    spice = simulate(knet, tmp_path / "circuit.cir", x, tran, jobs=1, run_root=tmp_path / "runs")
    assert "Using KLU" in (tmp_path / "runs" / "sample_0" / "layer0" / "ngspice.log").read_text()
    ref = integrate(knet, x)
    c = compare(ref.states, spice.states, knet.output_nodes)
    assert np.abs(ref.states[:, -1] - ref.states[:, 0]).max() > 0.05
    assert c.max_output_error <= 1e-4 and c.boundary_error.max() <= 1e-4, c.boundary_error
