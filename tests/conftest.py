"""Shared fixtures. The ``ngspice`` marker and ``--ngspice required|if-available|disabled``
come from kcompile's pytest plugin (``kcompile/pytest_plugin.py``); CI passes
``--ngspice required`` so that a missing ngspice fails instead of skipping."""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.knet import random_knet, save_knet


@pytest.fixture
def small_weights(tmp_path):
    """A valid 6-node, 2-layer relu network written to disk, with its arrays."""
    knet = random_knet(6, 2, 12, "relu", num_inputs=3, theta_scale=0.5, seed=3)
    path = tmp_path / "small.npz"
    save_knet(knet, path, test_inputs=np.random.default_rng(0).uniform(-1, 1, (3, 3)))
    return path
