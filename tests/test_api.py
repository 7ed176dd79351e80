"""The Python API: lazy top-level names, build of a path or a KNet, Build.simulate's defaults, one-line reprs."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kcompile
from kcompile.errors import InputError
from kcompile.flow import load_flow
from kcompile.knet import make_knet, random_knet, save_knet
from kcompile.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent


def test_import_loads_nothing_until_a_name_is_used():
    code = ("import sys, kcompile\n"
            "print(sorted(m for m in sys.modules if m == 'numpy' or m.startswith('kcompile.')))\n"
            "print(' '.join(dir(kcompile)))\n"
            "kcompile.integrate\n"
            "print(sorted(m for m in sys.modules if m == 'numpy' or m.startswith('kcompile.')))\n")
    before, names, after = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                                          check=True).stdout.splitlines()
    assert before == "[]"
    assert {"load", "build", "open_build", "integrate", "compare", "verify", "KNet", "Build", "Trajectory",
            "SpiceResult", "FlowResult", "InputError"} <= set(names.split())
    assert "'kcompile.reference'" in after and "'numpy'" in after


def test_stage_modules_of_the_same_name_do_not_replace_the_functions():
    from kcompile.build import Build  # loads the stage module kcompile.build

    assert kcompile.build.__module__ == "kcompile.api" and kcompile.verify.__module__ == "kcompile.api"
    assert kcompile.compare.__module__ == "kcompile.compare" and callable(kcompile.compare)
    assert importlib.import_module("kcompile.build").Build is Build is kcompile.Build
    from kcompile import ngspice  # a submodule that is not an exported name still imports as a module

    assert ngspice.__name__ == "kcompile.ngspice"
    with pytest.raises(AttributeError):
        getattr(kcompile, "no_such_name")


def test_a_knet_in_memory_builds_the_same_circuit_as_its_file(tmp_path):
    knet = random_knet(6, 2, 12, "relu", num_inputs=3, theta_scale=0.5, seed=3)
    save_knet(knet, tmp_path / "w.npz")
    from_file = kcompile.build(tmp_path / "w.npz", tmp_path / "a")
    from_memory = kcompile.build(knet, tmp_path / "b")
    assert from_memory.circuit.read_bytes() == from_file.circuit.read_bytes()
    assert from_memory.tran == from_file.tran and from_memory.scaling == from_file.scaling
    assert from_memory.recorded("inputs") is None


def test_a_knet_in_memory_that_breaks_the_contract_is_refused_like_a_file(tmp_path):
    loop = make_knet(3, "relu", [([1], [1], [[1.0, 0.0]])], [0.0, 1.0], input_nodes=[1], output_nodes=[2])
    with pytest.raises(InputError, match=r"^the in-memory KNet: key 'layer0_src': device 0 has src == dst"):
        kcompile.build(loop, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_reprs_are_one_short_line(tmp_path, small_weights):
    b = kcompile.build(small_weights, tmp_path / "b")
    x = b.recorded("inputs")
    lines = [repr(b), repr(b.knet), repr(kcompile.integrate(b.knet, x)), repr(kcompile.open_build(tmp_path / "b"))]
    assert lines[0] == lines[3] == f"<Build {tmp_path / 'b'}: behavioural; relu, 6 nodes, 2 layers, 24 devices>"
    assert lines[1] == "<KNet relu: 6 nodes, 2 layers, 24 devices, 3 features -> 2 outputs>"
    assert lines[2].startswith("<Trajectory: 3 samples, 2 layers, 6 nodes, 2 outputs; ")
    assert all("\n" not in line and len(line.replace(str(tmp_path), "")) < 100 for line in lines)


@pytest.mark.ngspice
def test_build_simulate_is_the_stage_call_with_the_builds_settings(tmp_path, small_weights):
    b = kcompile.build(small_weights, tmp_path / "b")
    x = b.recorded("inputs")
    result = b.simulate(x, jobs=1)
    direct = simulate(b.knet, b.circuit, x, b.tran, scaling=b.scaling, jobs=1)
    assert np.array_equal(result.states, direct.states) and result.energy is None
    assert repr(result) == "<SpiceResult: 3 samples, 2 layers, 6 nodes, 2 outputs>"
    assert np.array_equal(b.simulate(x[1]).outputs, result.outputs[1:2])  # one row: [F]
    with pytest.raises(InputError, match="x: inputs have 2 columns but the network takes 3 features"):
        b.simulate(x[:, :2])


@pytest.mark.ngspice
def test_build_simulate_of_a_transistor_build_uses_its_supply_and_pdk_variables(tmp_path):
    knet = random_knet(4, 1, 6, "relu", num_inputs=2, theta_scale=0.5, seed=3)
    b = kcompile.build(knet, tmp_path / "b", cells="transistor", refine_steps=0, points_per_layer=100)
    x = np.array([[0.5, -0.5]])
    result = b.simulate(x, run_root=tmp_path / "runs")
    assert result.energy.shape == (1,) and result.energy[0] > 0  # the supply 'vdd' was measured
    assert "-D ng_nomodcheck" in (tmp_path / "runs" / "sample_0" / "command").read_text()  # generic180's variable
    assert np.abs(result.outputs - kcompile.integrate(knet, x).outputs).max() < 0.05  # measured 1.7e-3


@pytest.mark.ngspice
def test_verify_runs_a_loaded_flow_with_overrides(tmp_path):
    result = kcompile.verify(load_flow(ROOT / "flows" / "ci.yaml"), jobs=1, work_dir=tmp_path)
    assert result.passed and result.flow.jobs == 1
    assert repr(result) == "<FlowResult ci: PASS, 1/1 gates held; levels ideal, behavioural; 8 samples>"
    assert (tmp_path / "behavioural" / "circuit.cir").is_file()  # the flow's build, kept in work_dir


def test_to_pyspice_without_pyspice_says_how_to_install_it(tmp_path, small_weights, monkeypatch):
    """``kcompile.interop`` imports without PySpice; using it names the extra to install."""
    for name in [m for m in sys.modules if m == "PySpice" or m.startswith("PySpice.")] or ["PySpice"]:
        monkeypatch.setitem(sys.modules, name, None)  # what an environment without PySpice looks like to import
    kcompile.interop._circuit_class.cache_clear()
    try:
        b = kcompile.build(small_weights, tmp_path / "b", devices="bsource")
        with pytest.raises(InputError, match=r"to_pyspice needs PySpice: pip install -e \.\[pyspice\]"):
            kcompile.interop.to_pyspice(b, b.recorded("inputs")[0])
    finally:
        kcompile.interop._circuit_class.cache_clear()
