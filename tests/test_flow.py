"""Flow files: validation messages, gates, JUnit/HTML reports, the pytest fixture."""

from __future__ import annotations

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
