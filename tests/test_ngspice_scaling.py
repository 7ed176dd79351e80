"""A behavioural circuit in physical units (volts, amperes, farads, seconds) computes the same as in model units."""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.compare import compare
from kcompile.knet import random_knet
from kcompile.netlist import default_tran, write_circuit
from kcompile.reference import integrate
from kcompile.scaling import Scaling
from kcompile.simulate import simulate

pytestmark = pytest.mark.ngspice


@pytest.mark.parametrize("segmented", [False, True])
def test_scaled_behavioural_circuit_matches_reference(tmp_path, segmented):
    """The layer clocks switch at the boundaries in seconds (t·τ; they were left in model time before)."""
    knet = random_knet(8, 3, 40, "tanh", seed=2, theta_scale=0.5)
    x = np.random.default_rng(0).uniform(-1, 1, (2, knet.num_features))
    scaling = Scaling(v0=0.1, vcm=0.6, i0=1e-6, c_unit=1e-12)
    write_circuit(knet, tmp_path / "circuit.cir", scaling, segmented=segmented)
    spice = simulate(knet, tmp_path / "circuit.cir", x, default_tran(knet, segmented=segmented), scaling=scaling,
                     jobs=1)
    ref = integrate(knet, x)
    assert np.abs(ref.states[:, -1] - ref.states[:, 0]).max() > 0.05
    assert compare(ref.states, spice.states, knet.output_nodes).max_output_error <= 1e-4
