"""The weights-file contract: good files load, every kind of bad file is refused by name."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from kcompile.errors import WeightsError
from kcompile.knet import FORMAT, load_knet, random_knet, save_knet


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_round_trip(small_weights):
    knet = load_knet(small_weights)
    assert knet.num_nodes == 6 and knet.num_layers == 2 and knet.num_devices == 24
    assert knet.law == "relu" and knet.num_features == 3
    assert knet.layers[1].t_start == 1.0 and knet.layers[1].t_stop == 2.0
    assert not knet.layers[0].theta.flags.writeable
    assert knet.meta["kind"] == "random"


def test_graph_attributes(small_weights):
    knet = load_knet(small_weights)
    g = knet.graph()
    assert isinstance(g, nx.MultiDiGraph)
    assert g.number_of_nodes() == 7 and g.number_of_edges() == 24
    assert g.nodes[0]["role"] == "ground"
    assert g.nodes[1]["role"] == "input" and g.nodes[6]["role"] == "output"
    s, d = int(knet.layers[1].src[4]), int(knet.layers[1].dst[4])
    edge = g.edges[s, d, (1, 4)]
    assert edge["layer"] == 1 and edge["law"] == "relu"
    assert edge["theta"] == tuple(knet.layers[1].theta[4])
    assert g.nodes[3]["capacitance"] == 1.0


def test_optional_keys_default(tmp_path, small_weights):
    arrays = _arrays(small_weights)
    for key in ("capacitance", "input_index", "meta"):
        del arrays[key]
    arrays["unknown_extra_key"] = np.arange(3)
    np.savez(tmp_path / "w.npz", **arrays)
    knet = load_knet(tmp_path / "w.npz")
    assert np.all(knet.capacitance == 1.0)
    assert knet.input_index.tolist() == [0, 1, 2] and knet.meta == {}


def _broken(arrays, change):
    arrays = dict(arrays)
    change(arrays)
    return arrays


CASES = {
    "missing key": (lambda a: a.pop("t_bounds"), "'t_bounds': missing"),
    "missing layer key": (lambda a: a.pop("layer1_theta"), "'layer1_theta': missing"),
    "wrong dtype": (lambda a: a.__setitem__("layer0_src", a["layer0_src"].astype(float)), "'layer0_src': must have an integer dtype"),
    "wrong theta shape": (lambda a: a.__setitem__("layer0_theta", a["layer0_theta"][:, :1]), "'layer0_theta': must have shape"),
    "node out of range": (lambda a: a["layer0_dst"].__setitem__(0, 99), "'layer0_dst': node id 99 out of range"),
    "negative node": (lambda a: a["layer1_src"].__setitem__(2, -1), "'layer1_src': node id -1 out of range"),
    "nan": (lambda a: a["layer0_theta"].__setitem__((0, 0), np.nan), "'layer0_theta': contains NaN or inf"),
    "inf": (lambda a: a.__setitem__("capacitance", np.array(np.inf)), "'capacitance': contains NaN or inf"),
    "src == dst": (lambda a: a["layer0_dst"].__setitem__(1, a["layer0_src"][1]), "src == dst"),
    "non-increasing t_bounds": (lambda a: a.__setitem__("t_bounds", np.array([0.0, 1.0, 1.0])), "'t_bounds': must be strictly increasing"),
    "unknown law": (lambda a: a.__setitem__("device", np.array("hardtanh")), "'device': unknown device law 'hardtanh'"),
    "unknown format": (lambda a: a.__setitem__("format", np.array("kcompile.knet/9")), "'format': unknown format"),
    "input node is ground": (lambda a: a["input_nodes"].__setitem__(0, 0), "'input_nodes': node id 0 out of range"),
    "bad meta json": (lambda a: a.__setitem__("meta", np.array("{not json")), "'meta': is not valid JSON"),
    "extra layer": (lambda a: a.__setitem__("layer5_src", np.array([1])), "'layer5_src': names layer 5"),
    "string num_nodes": (lambda a: a.__setitem__("num_nodes", np.array("6")), "'num_nodes': must have an integer dtype"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_contract_violations_name_the_key(tmp_path, small_weights, case):
    change, message = CASES[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **_broken(_arrays(small_weights), change))
    with pytest.raises(WeightsError) as info:
        load_knet(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_object_array_needs_pickle(tmp_path, small_weights):
    arrays = _arrays(small_weights)
    arrays["meta"] = np.array([{"evil": 1}], dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    with pytest.raises(WeightsError, match="'meta': is an object array that would need pickle"):
        load_knet(path)


def test_truncated_and_not_npz(tmp_path, small_weights):
    data = small_weights.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("hello, I am not an archive\n")
    np.save(tmp_path / "bare.npy", np.arange(3))
    for name in ("trunc.npz", "text.npz", "bare.npy"):
        with pytest.raises(WeightsError) as info:
            load_knet(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="no such file"):
        load_knet(tmp_path / "absent.npz")


def test_corrupt_member(tmp_path, small_weights):
    data = bytearray(small_weights.read_bytes())
    start = data.find(b"layer0_theta.npy")
    data[start + 200:start + 260] = b"\xff" * 60  # damage the member's bytes, keep the zip directory
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))
    with pytest.raises(WeightsError):
        load_knet(tmp_path / "corrupt.npz")


def test_save_writes_the_format(tmp_path):
    knet = random_knet(4, 1, 5, "tanh", seed=1, meta={"task": "x"})
    save_knet(knet, tmp_path / "w.npz")
    arrays = _arrays(tmp_path / "w.npz")
    assert str(arrays["format"]) == FORMAT and json.loads(str(arrays["meta"]))["task"] == "x"
