"""Import of the KirchhoffNet reference implementation's checkpoints (issue #5)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kcompile.errors import KCompileError
from kcompile.importer import (
    DEVICE_CLASSES,
    fully_connect,
    import_reference,
    mix_connect,
    replicate_parallel,
    simple_connect,
    window_pairs,
)
from kcompile.knet import load_knet, save_knet
from kcompile.laws import ACTIVATIONS
from kcompile.netlist import default_tran, write_circuit
from kcompile.reference import integrate
from kcompile.simulate import simulate

yaml = pytest.importorskip("yaml", reason="the importer reads configs with PyYAML")

TORCH_REASON = "torch is an optional extra: pip install torch==2.13.0 (or pip install -e .[torch])"
TWO_D = ["twomoon", "circle", "8gaussians", "potential1"]


def _checkpoint_root() -> Path:
    env = os.environ.get("KCOMPILE_REFERENCE_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "reference-checkpoints"


def _checkpoint(name: str) -> Path:
    folder = _checkpoint_root() / name
    if not (folder / "model.pth").is_file():
        pytest.skip(f"REFERENCE CHECKPOINT MISSING: {folder} (set KCOMPILE_REFERENCE_CHECKPOINTS to "
                    "the folder holding twomoon/, circle/, ... to run the import tests)")
    return folder


# ------------------------------------------------------------ generators, by hand


def test_fully_connect_order_with_ground():
    src, dst = fully_connect(3, include_gnd=True, repeat=[1, 2])
    got = list(zip(src.tolist(), dst.tolist()))
    want = []
    for i, j in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]:
        want += [(i, j)] + [(j, i)] * 2
    assert got == want


def test_fully_connect_without_ground_and_counts():
    src, dst = fully_connect(3, include_gnd=False, repeat=[25, 25])
    assert src.size == 6 * 50 and src.min() == 1 and dst.max() == 3
    src, dst = fully_connect(3, repeat=[25, 25])
    assert src.size == 300 and max(src.max(), dst.max()) == 2  # the 2-D checkpoints' layers


def test_simple_connect_chain_ignores_backward_repeat():
    src, dst = simple_connect(3, include_gnd=False, repeat=[2, 5])
    assert src.tolist() == [1, 1, 2, 2, 3, 3] and dst.tolist() == [2, 2, 3, 3, 4, 4]


def test_window_pairs_small_grid_by_hand():
    # 1 x 2 x 3 grid, 2 x 2 windows: nodes [[1, 2, 3], [4, 5, 6]], windows (1,2,4,5) then (2,3,5,6)
    src, dst = window_pairs(1, 2, 3, 2)
    want = []
    for win in ([1, 2, 4, 5], [2, 3, 5, 6]):
        want += [(a, b) for a in win for b in win if a != b]
    assert list(zip(src.tolist(), dst.tolist())) == want


def test_replicate_parallel_reproduces_the_doubling_quirk():
    s, d = np.array([1, 2]), np.array([2, 1])
    s2, _ = replicate_parallel(s, d, 2)
    assert s2.tolist() == [1, 2, 3, 4]
    s3, _ = replicate_parallel(s, d, 3)  # offsets 0, 1, 2, 3 (not 0, 1, 2)
    assert s3.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


def test_mix_connect_mnist_sizes():
    src, dst = mix_connect(1, 28, 28, 4, 50, repeat=[1, 1])
    assert src.size == 230_068
    assert max(src.max(), dst.max()) == 834
    assert np.all(src != dst)
    # 625 windows x 240 pairs, then ground links, then 50 hub nodes x 785 terminals x 2
    assert src[150_000:150_002].tolist() == [1, 0] and dst[150_000:150_002].tolist() == [0, 1]
    assert src[151_568:151_570].tolist() == [0, 785] and dst[151_568:151_570].tolist() == [785, 0]


# ------------------------------------------------------------ generators vs a loop transcription


def _loop_mix_connect(torch, num_channel, width, height, neighbor_size, fully_connect_node, repeat=(1, 0),
                      padding=False, kernel_repeat=1, parallel=1):
    """A slow, literal reading of the reference generator (torch unfold for the windows)."""
    grid = torch.arange(1, 1 + num_channel * width * height).reshape(num_channel, width, height)[None].float()
    cols = torch.nn.functional.unfold(grid, kernel_size=neighbor_size,
                                      padding=neighbor_size - 1 if padding else 0).long()[0]
    edges = []
    for w in range(cols.shape[1]):
        for a in range(cols.shape[0]):
            for b in range(cols.shape[0]):
                u, v = int(cols[a, w]), int(cols[b, w])
                if a != b and u and v:
                    edges += [(u, v)] * kernel_repeat
    shift = max(max(e) for e in edges)
    for i in range(1, parallel):
        edges = edges + [(u + shift * i, v + shift * i) for u, v in edges]
    top = max(max(e) for e in edges)
    for n in range(1, top + 1):
        edges += [(n, 0)] * repeat[0] + [(0, n)] * repeat[1]
    for f in range(top + 1, top + 1 + fully_connect_node):
        for i in range(top + 1):
            edges += [(i, f)] * repeat[0] + [(f, i)] * repeat[1]
    return edges


@pytest.mark.parametrize("args", [
    dict(num_channel=1, width=5, height=4, neighbor_size=2, fully_connect_node=3),
    dict(num_channel=2, width=4, height=5, neighbor_size=3, fully_connect_node=2, repeat=(2, 1)),
    dict(num_channel=1, width=3, height=3, neighbor_size=2, fully_connect_node=1, padding=True, kernel_repeat=2),
    dict(num_channel=1, width=3, height=4, neighbor_size=2, fully_connect_node=2, repeat=(1, 1), parallel=3),
])
def test_mix_connect_matches_loop_transcription(args):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    src, dst = mix_connect(**{**args, "repeat": list(args.get("repeat", (1, 0)))})
    assert list(zip(src.tolist(), dst.tolist())) == _loop_mix_connect(torch, **args)


# ------------------------------------------------------------ the shipped checkpoints


@pytest.mark.parametrize("name", TWO_D)
def test_two_d_checkpoints_reproduce_reference_outputs(name):
    pytest.importorskip("torch", reason=TORCH_REASON)
    folder = _checkpoint(name)
    knet = import_reference(folder / "model.pth", folder / "config.yaml")
    io = np.load(folder / "io.npz")
    out = integrate(knet, io["inputs"]).outputs
    err = float(np.max(np.abs(out - io["outputs"])))
    assert err <= 1e-5, f"{name}: max abs error {err:.3g}"
    assert knet.num_nodes == 2 and knet.output_nodes.tolist() == [1, 2]
    assert knet.meta["task"] == name
    assert knet.meta["provenance"]["device_class"] in ("ShiftTanh1", "ShiftTanh2")


def test_imported_network_survives_save_and_load(tmp_path):
    pytest.importorskip("torch", reason=TORCH_REASON)
    folder = _checkpoint("twomoon")
    knet = import_reference(folder / "model.pth", folder / "config.yaml")
    save_knet(knet, tmp_path / "twomoon.npz")
    back = load_knet(tmp_path / "twomoon.npz")
    assert back.meta == knet.meta
    assert back.law == "tanh_affine" and back.t_bounds.tolist() == [0.0, 0.5, 1.0]
    io = np.load(folder / "io.npz")
    assert np.max(np.abs(integrate(back, io["inputs"][:8]).outputs - io["outputs"][:8])) <= 1e-5


def test_mnist_checkpoint_imports_fast_with_the_right_sizes():
    pytest.importorskip("torch", reason=TORCH_REASON)
    folder = _checkpoint("mnist")
    import_reference(folder / "model.pth", folder / "config.yaml")  # warm torch's import
    start = time.perf_counter()
    knet = import_reference(folder / "model.pth", folder / "config.yaml")
    assert time.perf_counter() - start < 5.0
    assert knet.num_nodes == 834 and knet.law == "shift_relu"
    assert [layer.num_devices for layer in knet.layers] == [230_068, 230_068]
    assert knet.input_nodes.tolist() == list(range(1, 785)) and knet.num_features == 784
    assert knet.output_nodes.tolist() == list(range(825, 835))
    assert knet.t_bounds.tolist() == [0.0, 1.0, 2.0]
    for layer in knet.layers:
        assert 0.1 < np.abs(layer.theta).max() < 0.3
    rng = np.random.default_rng(0)
    out = integrate(knet, rng.uniform(0, 1, (2, 784)), method="rk4", dt=0.1).outputs
    assert out.shape == (2, 10) and np.all(np.isfinite(out)) and np.all(np.abs(out) < 1e3)


# ------------------------------------------------------------ device classes added in issue 11

#: checkpoints written by the reference code's own device classes (tests/data/reference/make_checkpoints.py)
DATA = Path(__file__).resolve().parent / "data" / "reference"
NEW_CLASSES = sorted(p.name for p in DATA.iterdir() if (p / "model.pth").is_file())


def _expected_law(case: str) -> str:
    if case.startswith("ShiftLeakyRelu"):
        return {"ShiftLeakyRelu1": "shift_leaky_relu", "ShiftLeakyRelu2": "leaky_relu_affine"}[case]
    _, act, form = case.split("-")
    return act if form == "negation" else f"{act}_affine"


def test_new_device_class_data_covers_every_class_and_activation():
    assert len(NEW_CLASSES) == 2 + 2 * len(ACTIVATIONS)


@pytest.mark.parametrize("case", NEW_CLASSES)
def test_new_device_classes_reproduce_the_reference_forward(case):
    pytest.importorskip("torch", reason=TORCH_REASON)
    folder = DATA / case
    knet = import_reference(folder / "model.pth", folder / "config.yaml")
    assert knet.law == _expected_law(case) and knet.num_devices == 2 * 36
    io = np.load(folder / "io.npz")
    out = integrate(knet, io["inputs"]).outputs
    assert np.abs(io["outputs"] - io["inputs"]).max() > 1.0  # the circuit did move
    err = float(np.max(np.abs(out - io["outputs"])) / np.max(np.abs(io["outputs"])))
    assert err <= 1e-5, f"{case}: max relative error {err:.3g}"


@pytest.mark.ngspice
@pytest.mark.parametrize("case", NEW_CLASSES)
def test_new_device_classes_in_behavioural_ngspice(case, tmp_path):
    pytest.importorskip("torch", reason=TORCH_REASON)
    folder = DATA / case
    knet = import_reference(folder / "model.pth", folder / "config.yaml")
    io = np.load(folder / "io.npz")
    write_circuit(knet, tmp_path / "circuit.cir")
    spice = simulate(knet, tmp_path / "circuit.cir", io["inputs"][:1], default_tran(knet, 400), jobs=1)
    err = float(np.max(np.abs(spice.states[:, -1, knet.output_nodes - 1] - io["outputs"][:1])))
    assert err <= 1e-4, f"{case}: max abs error {err:.3g}"


# ------------------------------------------------------------ refusals (no checkpoint needed)

_BASE = {
    "network": {
        "model": {"name": "ShiftTanh2", "args": {}},
        "net_struct": [{"name": "_fully_connect", "args": {"num_node": 3, "repeat": [1, 0]}}],  # 6 edges
        "initialization": "kaiming",
        "adjoint": True,
    },
    "simulation": {"t_end": [0.0, 1.0], "tol": "1e-4", "method": "dopri5"},
    # a bench the importer does not know (features: num_features, else layer 0's nodes), not a generative flow, so
    # its projector applies; the reference code's twomoon is a flow (importer.GENERATIVE_BENCHES)
    "test_bench": "custom",
}


def _config(tmp_path, **network_changes) -> Path:
    cfg = {**_BASE, "network": {**_BASE["network"], **network_changes}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("change, named", [
    ({"encoder": [2, 16]}, "encoder"),
    ({"residual": [0, 1]}, "residual"),
    ({"projector": "mlp_2_10"}, "mlp_2_10"),
    ({"projector": "reshape2"}, "reshape2"),
    ({"net_struct": [{"name": "_pregiven", "args": {}}]}, "_pregiven"),
    ({"model": {"name": "ShiftSigmoid1", "args": {}}}, "ShiftSigmoid1"),
    ({"model": {"name": "Device", "args": {"negation": True, "activation": "hardtanh"}}}, "hardtanh"),
    ({"model": {"name": "Device", "args": {"negation": True, "activation": None}}}, "gelu"),
    ({"model": {"name": "Device", "args": {"negation": "yes", "activation": "tanh"}}}, "negation"),
    ({"model": {"name": "Device", "args": {"activation": "tanh"}}}, "negation and activation"),
    ({"model": {"name": "ShiftTanh2", "args": {"reparam": True}}}, "reparam"),
    ({"mode": "deq"}, "deq"),
    ({"dropout": 0.1}, "dropout"),
    ({"net_struct": [{"name": "_fully_connect", "args": {"num_node": 3, "width": 2}}]}, "width"),
])
def test_unsupported_config_feature_is_refused_by_name(tmp_path, change, named):
    with pytest.raises(KCompileError, match=named):
        import_reference(tmp_path / "absent.pth", _config(tmp_path, **change))


def test_layer_count_mismatch_with_t_end_is_refused(tmp_path):
    net = {"net_struct": _BASE["network"]["net_struct"] * 2}
    with pytest.raises(KCompileError, match="t_end"):
        import_reference(tmp_path / "absent.pth", _config(tmp_path, **net))


def test_missing_torch_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(KCompileError, match=r"pip install torch==2\.13\.0"):
        import_reference(tmp_path / "model.pth", _config(tmp_path))


# ------------------------------------------------------------ checkpoints we write ourselves


def _save(torch, path, state):
    torch.save(state, path)
    return path


def test_synthetic_checkpoint_maps_rows_per_device_class(tmp_path):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    param = torch.arange(18, dtype=torch.float32).reshape(3, 6) / 10
    model = _save(torch, tmp_path / "m.pth", {"circuit.layer_list.0.model.param": param})
    for name, spec in DEVICE_CLASSES.items():
        knet = import_reference(model, _config(tmp_path, model={"name": name, "args": {}}))
        assert knet.law == spec.law
        np.testing.assert_array_equal(knet.layers[0].theta, param.numpy()[list(spec.rows)].T.astype(float))
    tanh1 = import_reference(model, _config(tmp_path, model={"name": "ShiftTanh1", "args": {}}))
    np.testing.assert_array_equal(tanh1.layers[0].theta[:, 0], param.numpy()[1])  # θ0 = p1 (gain)


def test_synthetic_checkpoint_maps_rows_of_the_generic_device(tmp_path):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    param = torch.arange(18, dtype=torch.float32).reshape(3, 6) / 10
    model = _save(torch, tmp_path / "m.pth", {"circuit.layer_list.0.model.param": param})
    for act in ACTIVATIONS:
        gain = import_reference(model, _config(tmp_path, model={"name": "Device",
                                                                  "args": {"negation": True, "activation": act}}))
        assert gain.law == act and gain.meta["provenance"]["device_args"] == {"negation": True, "activation": act}
        np.testing.assert_array_equal(gain.layers[0].theta, param.numpy()[[1, 0]].T.astype(float))  # θ0 = p1
        affine = import_reference(model, _config(tmp_path, model={"name": "Device",
                                                                    "args": {"negation": False, "activation": act}}))
        assert affine.law == f"{act}_affine"
        np.testing.assert_array_equal(affine.layers[0].theta, param.numpy().T.astype(float))


def test_fill_and_projector_map_onto_input_and_output_nodes(tmp_path):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    struct = [{"name": "_fully_connect", "args": {"num_node": 6, "repeat": [1, 0]}}]  # nodes 1..5
    model = _save(torch, tmp_path / "m.pth", {"circuit.layer_list.0.model.param": torch.ones(3, 30)})
    zeros = import_reference(model, _config(tmp_path, net_struct=struct, fill="zeros", projector="last3"),
                             num_features=2)
    assert zeros.input_nodes.tolist() == [1, 2] and zeros.output_nodes.tolist() == [3, 4, 5]
    rep = import_reference(model, _config(tmp_path, net_struct=struct, fill="repeat", projector=["last3", "first1"]),
                           num_features=2)
    assert rep.input_nodes.tolist() == [1, 2, 3, 4, 5] and rep.input_index.tolist() == [0, 1, 0, 1, 0]
    assert rep.output_nodes.tolist() == [3]
    wide = import_reference(model, _config(tmp_path, net_struct=struct), num_features=7)  # cut to 5
    assert wide.input_nodes.tolist() == [1, 2, 3, 4, 5] and wide.output_nodes.tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(KCompileError, match="fill"):
        import_reference(model, _config(tmp_path, net_struct=struct), num_features=2)  # 5 nodes, no fill


def test_checkpoint_problems_are_refused(tmp_path):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    cfg = _config(tmp_path)
    wrong_cols = _save(torch, tmp_path / "a.pth", {"circuit.layer_list.0.model.param": torch.ones(3, 5)})
    with pytest.raises(KCompileError, match="5 parameter columns"):
        import_reference(wrong_cols, cfg)
    extra = _save(torch, tmp_path / "b.pth", {"circuit.layer_list.0.model.param": torch.ones(3, 6),
                                             "projector.fc.weight": torch.ones(2, 2)})
    with pytest.raises(KCompileError, match="projector.fc.weight"):
        import_reference(extra, cfg)
    missing = _save(torch, tmp_path / "c.pth", {"circuit.layer_list.1.model.param": torch.ones(3, 6)})
    with pytest.raises(KCompileError, match="layers"):
        import_reference(missing, cfg)
    (tmp_path / "d.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(KCompileError, match="weights_only"):
        import_reference(tmp_path / "d.pth", cfg)


class _Opaque:
    """A class that only full unpickling could rebuild."""


def test_checkpoint_needing_full_unpickling_is_refused(tmp_path):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    model = _save(torch, tmp_path / "m.pth", {"circuit.layer_list.0.model.param": torch.ones(3, 6),
                                              "extra": _Opaque()})
    with pytest.raises(KCompileError, match="weights_only"):
        import_reference(model, _config(tmp_path))


def test_cli_import_reference_writes_a_loadable_file(tmp_path):
    pytest.importorskip("torch", reason=TORCH_REASON)
    from click.testing import CliRunner

    from kcompile.cli import main
    from kcompile.knet import load_knet

    folder = _checkpoint("twomoon")
    out = tmp_path / "twomoon.npz"
    result = CliRunner().invoke(main, ["import-reference", str(folder / "model.pth"), str(folder / "config.yaml"),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    knet = load_knet(out)
    assert knet.law == "tanh_affine" and knet.num_devices == 600
    bad = CliRunner().invoke(main, ["import-reference", str(folder / "model.pth"), str(tmp_path / "none.yaml"),
                                    "-o", str(tmp_path / "x.npz")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and not (tmp_path / "x.npz").exists()
