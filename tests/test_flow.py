"""Flow files: validation messages, gates, JUnit/HTML reports, the pytest fixture."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from kcompile.cli import main
from kcompile.errors import InputError
from kcompile.flow import load_flow

ROOT = Path(__file__).resolve().parents[1]


def _flow(tmp_path, text: str) -> Path:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("model: absent.npz\n", "'model' names"),
    ("model: {m}\nlevels: [transistorz]\n", "'levels' must be one of"),
    ("model: {m}\nfoo: 1\n", "'foo' is not a flow key"),
    ("model: {m}\nbatch: many\n", "'batch' must be a int, got 'many'"),
    ("model: {m}\ngates:\n  - {{level: behavioural, metric: max_output_error, limit: abc}}\n", "'gates[0].limit' must be a number"),
    ("model: {m}\ngates:\n  - {{level: behavioural, metric: nope, limit: 1}}\n", "'gates[0].metric' must be one of"),
    ("model: {m}\nlevels: [behavioural]\ngates:\n  - {{level: transistor, metric: max_output_error, limit: 1}}\n",
     "which the flow's levels"),
    ("model: [unclosed\n", "not valid YAML"),
    ("- just a list\n", "must be a YAML mapping"),
])
def test_flow_validation(tmp_path, small_weights, text, message):
    path = _flow(tmp_path, text.format(m=small_weights))
    with pytest.raises(InputError) as info:
        load_flow(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_bad_flow_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["verify", str(_flow(tmp_path, "model: nothing.npz\n"))])
    assert result.exit_code == 2 and "Traceback" not in result.output and "'model' names" in result.output


@pytest.mark.ngspice
def test_shipped_ci_flow_passes_with_reports(tmp_path):
    junit, html = tmp_path / "out.xml", tmp_path / "out.html"
    result = CliRunner().invoke(main, ["verify", str(ROOT / "flows" / "ci.yaml"), "--junit", str(junit),
                                       "--report", str(html), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["passed"] and summary["gates"][0]["value"] <= 1e-4
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    page = html.read_text()
    for section in ('id="gates"', 'id="waveforms"', 'id="errors"', 'id="montecarlo"', 'id="corners"'):
        assert section in page
    assert page.count("data:image/png;base64,") >= 2


@pytest.mark.ngspice
def test_too_tight_gate_fails_and_names_it(tmp_path):
    text = (ROOT / "flows" / "ci.yaml").read_text().replace("limit: 1.0e-4", "limit: 1.0e-12")
    text = text.replace("../examples/", f"{ROOT}/examples/")
    path = _flow(tmp_path, text)
    junit, html = tmp_path / "out.xml", tmp_path / "out.html"
    result = CliRunner().invoke(main, ["verify", str(path), "--junit", str(junit), "--report", str(html)])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "behavioural.max_output_error" in result.output
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and "behavioural.max_output_error" in failure.get("message")
    assert re.search(r"behavioural\.max_output_error.*FAIL", html.read_text(), re.S)


@pytest.mark.ngspice
def test_fixture_runs_a_flow(kcompile_verify):
    result = kcompile_verify(ROOT / "flows" / "ci.yaml")
    assert result.passed and result.gates[0].value <= 1e-4


def test_flow_runs_share_the_command_lines_timeout_default(tmp_path, small_weights):
    """Without 'timeout', a flow's runs get what 'kcompile simulate' would (netlist.run_timeout: at least 3.5 ms per
    cell and time step at transistor level); a flow's own 'timeout' (or --set timeout=) wins."""
    from kcompile.knet import load_knet
    from kcompile.netlist import run_timeout, transistor_tran

    knet = load_knet(small_weights)
    tran = dataclasses.replace(transistor_tran(knet, 400), tstop=4000.0)  # long enough to pass the 600 s floor
    flow = load_flow(_flow(tmp_path, f"model: {small_weights}\nlevels: [behavioural, transistor]\n"))
    assert flow.timeout is None and run_timeout(knet, tran, True) > 600.0
    for transistor in (False, True):
        assert flow.run_timeout(knet, tran, transistor) == run_timeout(knet, tran, transistor)
    timed = load_flow(_flow(tmp_path, f"model: {small_weights}\nlevels: [transistor]\ntimeout: 5\n"))
    assert timed.run_timeout(knet, tran, True) == timed.run_timeout(knet, tran, False) == 5.0
    assert load_flow(tmp_path / "f.yaml", ("timeout=7",)).run_timeout(knet, tran, True) == 7.0


@pytest.mark.ngspice
def test_flow_timeout_reaches_the_transistor_runs():
    """A flow's own timeout reaches its transistor-level runs (calibration and refinement come from the cache)."""
    result = CliRunner().invoke(main, ["verify", str(ROOT / "flows" / "ci-transistor.yaml"),
                                       "--set", "levels=[transistor]",
                                       "--set", "gates=[{level: transistor, metric: max_output_error, limit: 1}]",
                                       "--set", "monte_carlo.runs=0", "--set", "timeout=0.001"])
    assert result.exit_code == 3 and "ngspice timed out after 0.001 s" in result.output, result.output
