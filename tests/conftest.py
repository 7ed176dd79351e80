"""Shared fixtures and the ``--ngspice required|if-available|disabled`` switch.

CI passes ``--ngspice required``: a missing ngspice then fails the tests
instead of skipping them. Elsewhere a missing ngspice skips the ngspice
tests with a loud reason.
"""

from __future__ import annotations

import numpy as np
import pytest

from kcompile import ngspice
from kcompile.knet import random_knet, save_knet


def pytest_addoption(parser):
    parser.addoption("--ngspice", choices=("required", "if-available", "disabled"), default="if-available",
                     help="whether tests marked 'ngspice' must run (CI: required)")


def pytest_collection_modifyitems(config, items):
    mode = config.getoption("--ngspice")
    if mode == "required" and not ngspice.available():
        raise pytest.UsageError(f"--ngspice required but ngspice is not installed: {ngspice.INSTALL_HINT}")
    if mode == "required":
        return
    reason = ("ngspice tests disabled by --ngspice disabled" if mode == "disabled"
              else f"NGSPICE NOT FOUND, ngspice tests skipped: {ngspice.INSTALL_HINT}")
    if mode == "disabled" or not ngspice.available():
        for item in items:
            if "ngspice" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_report_header(config):
    if ngspice.available():
        return f"ngspice: {ngspice.version()} at {ngspice.binary()} (mode {config.getoption('--ngspice')})"
    return f"ngspice: NOT FOUND (mode {config.getoption('--ngspice')})"


@pytest.fixture
def small_weights(tmp_path):
    """A valid 6-node, 2-layer relu network written to disk, with its arrays."""
    knet = random_knet(6, 2, 12, "relu", num_inputs=3, theta_scale=0.5, seed=3)
    path = tmp_path / "small.npz"
    save_knet(knet, path, test_inputs=np.random.default_rng(0).uniform(-1, 1, (3, 3)))
    return path
