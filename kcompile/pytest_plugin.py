"""pytest plugin for users' own CI: the ``ngspice`` marker and ``--ngspice`` switch.

Installed with kcompile (entry point ``pytest11``). Mark tests that need
the simulator with ``@pytest.mark.ngspice`` and choose, per run::

    pytest --ngspice required      # a missing ngspice is an error (CI)
    pytest --ngspice if-available  # skip loudly when it is missing (default)
    pytest --ngspice disabled      # skip them all

The ``kcompile_verify`` fixture runs a flow file and returns its result.
"""

from __future__ import annotations

import pytest

from . import ngspice


def pytest_addoption(parser):
    parser.addoption("--ngspice", choices=("required", "if-available", "disabled"), default="if-available",
                     help="kcompile: whether tests marked 'ngspice' must run (CI: required)")


def pytest_configure(config):
    config.addinivalue_line("markers", "ngspice: the test runs the real ngspice simulator")


def pytest_collection_modifyitems(config, items):
    mode = config.getoption("--ngspice")
    if mode == "required":
        if not ngspice.available():
            raise pytest.UsageError(f"--ngspice required but ngspice is not installed: {ngspice.INSTALL_HINT}")
        return
    if mode == "disabled":
        reason = "ngspice tests disabled by --ngspice disabled"
    elif not ngspice.available():
        reason = f"NGSPICE NOT FOUND, ngspice tests skipped: {ngspice.INSTALL_HINT}"
    else:
        return
    for item in items:
        if "ngspice" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_report_header(config):
    mode = config.getoption("--ngspice")
    if ngspice.available():
        return f"kcompile: ngspice {ngspice.version()} at {ngspice.binary()} (--ngspice {mode})"
    return f"kcompile: ngspice NOT FOUND (--ngspice {mode})"


@pytest.fixture
def kcompile_verify():
    """``kcompile_verify(path) -> FlowResult``: run a flow file; assert on ``.passed`` and ``.gates``."""
    from .flow import load_flow
    from .verify import run_flow

    return lambda path: run_flow(load_flow(path))
