"""Independent samples in parallel: local processes, a Dask cluster, and the run cache."""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.knet import random_knet
from kcompile.netlist import default_tran, write_circuit
from kcompile.simulate import simulate

pytestmark = pytest.mark.ngspice


@pytest.fixture
def circuit(tmp_path):
    knet = random_knet(8, 2, 30, "tanh", seed=4, theta_scale=0.5)
    write_circuit(knet, tmp_path / "circuit.cir")
    x = np.random.default_rng(1).uniform(-1, 1, (4, 8))
    return knet, tmp_path / "circuit.cir", x


def test_local_processes_equal_serial(circuit):
    knet, path, x = circuit
    serial = simulate(knet, path, x, default_tran(knet), jobs=1)
    parallel = simulate(knet, path, x, default_tran(knet), jobs=2)
    np.testing.assert_array_equal(serial.states, parallel.states)


def test_dask_local_cluster_equals_local(circuit):
    distributed = pytest.importorskip("distributed", reason="Dask path needs 'distributed' (pip install -e .[dask])")
    knet, path, x = circuit
    local = simulate(knet, path, x, default_tran(knet), jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            remote = simulate(knet, path, x, default_tran(knet), executor=client.get_executor(pure=False))
    np.testing.assert_array_equal(local.states, remote.states)


def test_cache_reuses_finished_runs(circuit, tmp_path):
    knet, path, x = circuit
    first = simulate(knet, path, x[:2], default_tran(knet), jobs=1, cache_dir=tmp_path / "cache")
    assert first.cached == 0 and len(list((tmp_path / "cache").glob("*.npz"))) == 2
    again = simulate(knet, path, x, default_tran(knet), jobs=1, cache_dir=tmp_path / "cache")
    assert again.cached == 2 and len(list((tmp_path / "cache").glob("*.npz"))) == 4
    np.testing.assert_array_equal(again.states[:2], first.states)
    # a changed circuit misses the cache
    path.write_text(path.read_text().replace("tanh(", "tanh(0.5*"))
    changed = simulate(knet, path, x[:1], default_tran(knet), jobs=1, cache_dir=tmp_path / "cache")
    assert changed.cached == 0 and not np.allclose(changed.states, first.states[:1])
