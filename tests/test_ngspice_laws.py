"""Behavioural netlists in real ngspice agree with the reference for every law."""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.compare import compare
from kcompile.knet import random_knet
from kcompile.laws import LAWS
from kcompile.netlist import default_tran, write_circuit
from kcompile.reference import integrate
from kcompile.simulate import simulate

pytestmark = pytest.mark.ngspice

#: nodes, layers, devices per layer, samples; gelu's expression costs ngspice ~100x tanh's
#: (no erf: a 21-term polynomial, docs/design.md), so its network and batch are smaller
SIZES = {"gelu": (10, 2, 20, 1), "gelu_affine": (10, 2, 20, 1)}


@pytest.mark.parametrize("law", list(LAWS))
def test_law_matches_reference(tmp_path, law):
    nodes, layers, devices, samples = SIZES.get(law, (20, 3, 70, 3))
    knet = random_knet(nodes, layers, devices, law, seed=21, theta_scale=0.3)
    thetas = np.concatenate([layer.theta.ravel() for layer in knet.layers])
    assert knet.num_devices == layers * devices >= 40 and (thetas < 0).any() and (thetas > 0).any()
    x = np.random.default_rng(4).uniform(-1, 1, (samples, knet.num_features))
    write_circuit(knet, tmp_path / "circuit.cir")
    spice = simulate(knet, tmp_path / "circuit.cir", x, default_tran(knet), jobs=2)
    ref = integrate(knet, x)
    c = compare(ref.states, spice.states, knet.output_nodes)
    assert np.abs(ref.states[:, -1] - ref.states[:, 0]).max() > 0.05  # the circuit did move
    assert c.max_output_error <= 1e-4, c.boundary_error
    assert c.boundary_error.max() <= 1e-4
