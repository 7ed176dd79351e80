"""Range analysis (kcompile.ranges): node ranges over whole trajectories, and where the calibration inputs come from."""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.inputs import random_inputs
from kcompile.knet import make_knet, random_knet
from kcompile.ranges import calibration_inputs, node_ranges, time_grid
from kcompile.reference import integrate


def test_ranges_cover_every_node_over_a_dense_grid():
    knet = random_knet(6, 2, 12, "relu", theta_scale=1.0, seed=0)
    x = random_inputs(knet, 16, 3)
    r = node_ranges(knet, x, "test")
    fine = integrate(knet, x, grid=np.linspace(0, knet.t_bounds[-1], 4001)).grid_states
    np.testing.assert_allclose(r.lo, fine.min(axis=(0, 1)), atol=0.02 * r.peak)
    np.testing.assert_allclose(r.hi, fine.max(axis=(0, 1)), atol=0.02 * r.peak)
    assert r.peak == pytest.approx(max(-r.low, r.high))
    assert r.samples == 16 and r.source == "test" and r.current > 0


def test_a_peak_inside_a_layer_window_is_seen():
    # node 1 charges quickly from input node 2 and leaks slowly to ground in the same layer: it peaks inside
    # the window, above both boundary values
    knet = make_knet(2, "linear", [([2, 1], [1, 0], [[3.0], [1.5]]), ([1], [0], [[0.0]])], [0.0, 1.0, 2.0],
                     input_nodes=[2], output_nodes=[1])
    x = np.array([[1.0]])
    r = node_ranges(knet, x)
    boundaries = integrate(knet, x).states
    assert r.hi[0] > np.abs(boundaries[..., 0]).max() + 0.05


def test_time_grid_holds_every_boundary_once():
    knet = random_knet(3, 3, 4, "relu", seed=1)
    g = time_grid(knet, 10)
    assert g.size == 31 and np.all(np.diff(g) > 0) and set(knet.t_bounds) <= set(g)


def test_calibration_inputs_prefer_a_file_then_recorded_then_random(tmp_path):
    knet = random_knet(4, 2, 5, "relu", num_inputs=2, seed=0)
    recorded = np.arange(200, dtype=float).reshape(100, 2) / 100
    path = tmp_path / "cal.npy"
    np.save(path, np.ones((3, 2)))
    x, source = calibration_inputs(knet, recorded, path)
    assert x.shape == (3, 2) and str(path) in source
    x, source = calibration_inputs(knet, recorded)
    assert x.shape == (64, 2) and "recorded" in source
    x, source = calibration_inputs(knet)
    assert x.shape == (64, 2) and "random" in source and np.abs(x).max() <= 1
