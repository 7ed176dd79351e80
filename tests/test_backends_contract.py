"""One contract for every registered simulator back end: a new back end is covered the moment it is registered.

Each case carries the back end's own marker, so ``--<name> required|if-available|disabled`` decides whether it
runs (kcompile's pytest plugin).
"""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.backends import SIMULATORS, RawData, SimulatorWarning, get_simulator
from kcompile.compare import compare
from kcompile.errors import InputError, SimulatorError
from kcompile.knet import random_knet
from kcompile.netlist import SEGMENTED_MARK, default_tran, write_circuit
from kcompile.reference import integrate
from kcompile.resources import TEMPLATE_DIR
from kcompile.scaling import Scaling
from kcompile.simulate import device_libraries, simulate

BACKENDS = [pytest.param(name, marks=getattr(pytest.mark, name), id=name) for name in sorted(SIMULATORS)]


@pytest.mark.parametrize("name", BACKENDS)
def test_tool_proxy(name):
    sim = get_simulator(name)
    assert sim.name == name and (TEMPLATE_DIR / name).is_dir() and issubclass(sim.warning_category, SimulatorWarning)
    assert sim.available() and sim.version() not in ("", "unknown")
    assert isinstance(sim.has_klu(), bool) and isinstance(sim.has_osdi(), bool)


@pytest.mark.parametrize("segmented", [False, True], ids=["clocked", "segmented"])
@pytest.mark.parametrize("name", BACKENDS)
def test_behavioural_circuit_matches_reference(tmp_path, name, segmented):
    knet = random_knet(8, 2, 30, "tanh", seed=4, theta_scale=0.5)
    x = np.random.default_rng(1).uniform(-1, 1, (2, knet.num_features))
    write_circuit(knet, tmp_path / "circuit", segmented=segmented, simulator=name)
    assert (SEGMENTED_MARK in (tmp_path / "circuit").open().readline()) == segmented
    res = simulate(knet, tmp_path / "circuit", x, default_tran(knet, segmented=segmented), jobs=1, simulator=name,
                   waveforms=True)
    ref = integrate(knet, x)
    assert np.abs(ref.states[:, -1] - ref.states[:, 0]).max() > 0.05
    assert compare(ref.states, res.states, knet.output_nodes).max_output_error <= 1e-4
    t, v = res.waveforms[0]
    assert t[0] == 0.0 and t[-1] == pytest.approx(knet.t_bounds[-1]) and v.shape == (t.size, knet.num_nodes)


@pytest.mark.parametrize("name", BACKENDS)
def test_deck_saves_every_node_and_failures_keep_the_run(tmp_path, name):
    sim = get_simulator(name)
    knet = random_knet(5, 2, 8, "relu", seed=2)
    write_circuit(knet, tmp_path / "c", simulator=name)  # and a compiled device's module beside it
    deck = sim.render_deck(np.zeros(knet.num_nodes), default_tran(knet), Scaling(), None, None)
    raw = sim.run(deck, files={sim.circuit_name: tmp_path / "c", **device_libraries(knet, tmp_path / "c", name)})
    assert isinstance(raw, RawData) and all(sim.node_vector(n) in raw.vectors for n in range(1, knet.num_nodes + 1))
    with pytest.raises(SimulatorError) as info:  # the circuit it includes is missing
        sim.run(deck, run_dir=tmp_path / "run")
    err = info.value
    assert err.run_dir == tmp_path / "run" and (err.run_dir / sim.deck_name).read_text() == deck
    assert (err.run_dir / "command").read_text().strip() and err.log


def test_unknown_back_end_is_refused_by_name():
    with pytest.raises(InputError, match="unknown simulator 'spectre': choose one of .*ngspice"):
        get_simulator("spectre")
