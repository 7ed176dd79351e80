"""pytest plugin for users' own CI: a marker and a switch per simulator back end.

Installed with kcompile (entry point ``pytest11``). Every registered back end
(:data:`kcompile.backends.SIMULATORS`; ngspice today) gets a marker of its name
and a ``--<name>`` switch. Mark tests that need ngspice with
``@pytest.mark.ngspice`` and choose, per run::

    pytest --ngspice required      # a missing ngspice is an error (CI)
    pytest --ngspice if-available  # skip loudly when it is missing (default)
    pytest --ngspice disabled      # skip them all

The ``kcompile_verify`` fixture runs a flow file and returns its result.
"""

from __future__ import annotations

import pytest

from .backends import SIMULATORS

MODES = ("required", "if-available", "disabled")


def pytest_addoption(parser):
    for name in SIMULATORS:
        parser.addoption(f"--{name}", choices=MODES, default="if-available",
                         help=f"kcompile: whether tests marked '{name}' must run (CI: required)")


def pytest_configure(config):
    for name in SIMULATORS:
        config.addinivalue_line("markers", f"{name}: the test runs the real {name} simulator")


def pytest_collection_modifyitems(config, items):
    for name, sim in SIMULATORS.items():
        mode = config.getoption(f"--{name}")
        if mode == "required":
            if not sim.available():
                raise pytest.UsageError(f"--{name} required but {name} is not installed: {sim.install_hint}")
            continue
        if mode == "disabled":
            reason = f"{name} tests disabled by --{name} disabled"
        elif not sim.available():
            reason = f"{name.upper()} NOT FOUND, {name} tests skipped: {sim.install_hint}"
        else:
            continue
        for item in items:
            if name in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_report_header(config):
    lines = []
    for name, sim in SIMULATORS.items():
        mode = config.getoption(f"--{name}")
        found = f"{sim.version()} at {sim.binary()}" if sim.available() else "NOT FOUND"
        lines.append(f"kcompile: {name} {found} (--{name} {mode})")
    return lines


@pytest.fixture
def kcompile_verify():
    """``kcompile_verify(path) -> FlowResult``: run a flow file; assert on ``.passed`` and ``.gates``."""
    from .flow import load_flow
    from .verify import run_flow

    return lambda path: run_flow(load_flow(path))
