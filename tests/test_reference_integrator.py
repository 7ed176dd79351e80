"""The NumPy reference: correct right-hand side, converged default tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.knet import make_knet, random_knet
from kcompile.laws import LAWS
from kcompile.reference import integrate, layer_rhs


def _dense_rhs(knet, k, v):
    """KCL written out device by device, the slow obvious way."""
    layer = knet.layers[k]
    law = LAWS[knet.law]
    dv = np.zeros_like(v)
    vg = np.concatenate([np.zeros((v.shape[0], 1)), v], axis=1)
    for s, d, theta in zip(layer.src, layer.dst, layer.theta):
        g = law.current(vg[:, s], vg[:, d], theta)
        if d:
            dv[:, d - 1] += g
        if s:
            dv[:, s - 1] -= g
    return dv / knet.capacitance


@pytest.mark.parametrize("law", list(LAWS))
def test_sparse_rhs_equals_kcl(law):
    knet = random_knet(7, 2, 30, law, seed=5, theta_scale=0.8)
    knet = make_knet(7, law, [(l.src, l.dst, l.theta) for l in knet.layers], knet.t_bounds,
                     capacitance=np.linspace(0.5, 2.0, 7), input_nodes=knet.input_nodes,
                     output_nodes=knet.output_nodes)
    v = np.random.default_rng(1).normal(size=(3, 7))
    for k in range(2):
        np.testing.assert_allclose(layer_rhs(knet, k)(v), _dense_rhs(knet, k, v), rtol=1e-12, atol=1e-12)


def test_rc_discharge_is_exponential():
    # one linear device from node 1 to ground with conductance 2: v(t) = v0 exp(-2t/C)
    knet = make_knet(1, "linear", [([1], [0], [[2.0]])], [0.0, 1.5], capacitance=4.0,
                     input_nodes=[1], output_nodes=[1])
    tr = integrate(knet, np.array([[0.8], [-0.3]]))
    np.testing.assert_allclose(tr.outputs[:, 0], np.array([0.8, -0.3]) * np.exp(-2 * 1.5 / 4.0), rtol=1e-9)


@pytest.mark.parametrize("law", list(LAWS))
def test_default_tolerances_converged(law):
    """Default dopri5 is within 1e-6 of a much tighter run, and RK4 agrees."""
    knet = random_knet(20, 3, 200, law, seed=11, theta_scale=0.1)
    x = np.random.default_rng(2).uniform(-1, 1, (4, 20))
    default = integrate(knet, x)
    tight = integrate(knet, x, rtol=1e-13, atol=1e-14)
    assert np.abs(default.states - tight.states).max() <= 1e-6
    assert np.abs(tight.states).max() > 0.1  # the network does something
    rk4 = integrate(knet, x, method="rk4", dt=2e-3)
    assert np.abs(rk4.states - tight.states).max() <= 1e-6


def test_layers_switch_devices():
    # layer 0 charges node 2 from node 1; layer 1 only discharges node 1
    knet = make_knet(2, "linear", [([1], [2], [[1.0]]), ([1], [0], [[1.0]])], [0.0, 1.0, 3.0],
                     input_nodes=[1], output_nodes=[1, 2])
    tr = integrate(knet, np.array([[1.0]]))
    v1_after_0 = 0.5 + 0.5 * np.exp(-2.0)
    np.testing.assert_allclose(tr.states[0, 1], [v1_after_0, 1 - v1_after_0], rtol=1e-9)
    np.testing.assert_allclose(tr.outputs[0], [v1_after_0 * np.exp(-2.0), 1 - v1_after_0], rtol=1e-9)


def test_time_grid_matches_boundaries():
    knet = random_knet(5, 2, 10, "tanh", seed=2)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5))
    grid = np.linspace(0, 2, 41)
    tr = integrate(knet, x, grid=grid)
    assert tr.grid_states.shape == (2, 41, 5)
    np.testing.assert_allclose(tr.grid_states[:, 0], tr.states[:, 0])
    np.testing.assert_allclose(tr.grid_states[:, 20], tr.states[:, 1], atol=1e-9)
    np.testing.assert_allclose(tr.grid_states[:, -1], tr.states[:, 2], atol=1e-9)
    dense = integrate(knet, x, grid=grid, rtol=1e-12, atol=1e-13)
    assert np.abs(tr.grid_states - dense.grid_states).max() < 1e-4


def test_input_index_maps_features():
    knet = make_knet(3, "linear", [([1], [2], [[0.0]])], [0.0, 1.0], input_nodes=[1, 3], input_index=[1, 0],
                     output_nodes=[1, 3])
    tr = integrate(knet, np.array([[5.0, 7.0]]))
    assert tr.outputs.tolist() == [[7.0, 5.0]]


def test_unknown_method_is_refused():
    knet = random_knet(3, 1, 2, "relu")
    with pytest.raises(ValueError, match="'method' parameter"):
        integrate(knet, np.zeros((1, 3)), method="euler")


@pytest.mark.parametrize("law", ["shift_relu", "tanh"])  # the pair-row and the one-row-per-device forms
def test_threads_split_the_devices_not_the_answer(law):
    """Large layers run their cache-sized chunks of devices in threads; the sum is the same to rounding."""
    from kcompile.reference import _LayerRHS

    knet = random_knet(60, 1, 12_000, law, seed=2, theta_scale=0.3)
    v = np.random.default_rng(1).uniform(-1, 1, (knet.num_nodes, 64))
    one, four = _LayerRHS(knet, 0, np.float64, 1), _LayerRHS(knet, 0, np.float64, 4)
    assert len(four.chunks(64)) >= 2
    np.testing.assert_allclose(four(v), one(v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one(v), _dense_rhs(knet, 0, v.T).T, rtol=1e-9, atol=1e-9)
    x = np.random.default_rng(2).uniform(-1, 1, (64, knet.num_features))
    a, b = (integrate(knet, x, method="rk4", dt=1e-2, threads=t) for t in (1, 2))  # fixed steps: rounding only
    assert np.abs(a.states[:, -1] - a.states[:, 0]).max() > 0.1
    np.testing.assert_allclose(a.states, b.states, rtol=1e-10, atol=1e-10)


def test_absurd_inputs_are_named_as_the_cause():
    from pathlib import Path

    from kcompile.errors import InputError
    from kcompile.knet import load_knet
    knet = load_knet(Path(__file__).resolve().parent.parent / "examples" / "random_relu.npz")
    with pytest.raises(InputError, match=r"start the nodes at \|v\| up to 1e\+300.*scale the inputs"):
        integrate(knet, np.full((1, knet.num_features), 1e300))
    with pytest.raises(InputError) as small:  # a stiff network with sane inputs: no advice about the inputs
        integrate(random_knet(4, 1, 6, "relu", seed=0, theta_scale=1e9), np.ones((1, knet.num_features)),
                  max_steps=2000)
    assert "scale the inputs" not in str(small.value)
