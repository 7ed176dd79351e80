"""kcompile train: torch laws, RK4 forward, training, export, tasks, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install -e .[train]")
pytest.importorskip("sklearn", reason="the training tasks need scikit-learn: pip install -e .[train]")

from click.testing import CliRunner  # noqa: E402

from kcompile.errors import InputError  # noqa: E402
from kcompile.knet import load_knet  # noqa: E402
from kcompile.laws import LAWS  # noqa: E402
from kcompile.reference import integrate  # noqa: E402
from kcompile.tasks import Task, load_task, minmax_fit  # noqa: E402
from kcompile.train import (  # noqa: E402
    TORCH_LAWS, TorchKNet, TrainConfig, chain, export, fit, fully_connected, fully_connected_topology,
    mix, mix_topology, mlp_num_params, score, train_command, train_knet, train_mlp,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _toy_task(n=120, kind="classification", seed=0) -> Task:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 2))
    if kind == "classification":
        y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
        m = 2
    else:
        y = 0.5 + 0.3 * np.sin(2 * X[:, 0]) * X[:, 1]
        m = 1
    k = n * 3 // 4
    return Task("toy", kind, X[:k], y[:k], X[k:], y[k:], m, "toy", {"seed": seed}, {})


# ------------------------------------------------------------------ laws and forward pass


@pytest.mark.parametrize("law", sorted(LAWS))
def test_torch_law_equals_numpy_law(law):
    rng = np.random.default_rng(3)
    vs, vd = rng.normal(size=(7, 11)), rng.normal(size=(7, 11))
    theta = rng.normal(size=(11, LAWS[law].num_params)) * 2
    want = LAWS[law].current(vs, vd, theta)
    got = TORCH_LAWS[law](torch.tensor(vs), torch.tensor(vd), torch.tensor(theta)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("law", sorted(LAWS))
@pytest.mark.parametrize("dense", [True, False])
def test_torch_rk4_equals_reference_rk4(law, dense):
    topo = fully_connected_topology(3, 2, law, layers=2)
    model = TorchKNet.init(topo, law, [0.0, 1.0, 2.5], seed=1, init_scale=1.5)
    model.dense = dense
    if not dense:  # the gather/scatter path, used for large image networks
        assert "src" in model.layer_ops[0]
    X = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    got = model(X, 0.1).detach().numpy()
    want = integrate(model.to_knet(), X, method="rk4", dt=0.1).outputs
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_gradient_matches_finite_difference():
    topo = fully_connected_topology(2, 1, "tanh", layers=1)
    model = TorchKNet.init(topo, "tanh", [0.0, 1.0], seed=0)
    X = np.array([[0.3, -0.2], [0.1, 0.5]])
    out = model(X, 0.25).sum()
    out.backward()
    grad = model.thetas[0].grad.numpy().copy()
    theta = model.theta_arrays()[0]
    eps = 1e-6
    for idx in [(0, 0), (3, 1), (5, 0)]:
        vals = []
        for sign in (1, -1):
            th = theta.copy()
            th[idx] += sign * eps
            m2 = TorchKNet(topo, "tanh", [0.0, 1.0], [th])
            vals.append(float(m2(X, 0.25).sum().detach()))
        assert abs((vals[0] - vals[1]) / (2 * eps) - grad[idx]) < 1e-7


# ------------------------------------------------------------------ topologies


def test_fully_connected_counts_and_no_self_loops():
    src, dst = fully_connected(5)
    assert src.size == 5 * 6 and not np.any(src == dst)
    assert len(set(zip(src.tolist(), dst.tolist()))) == 30
    src, dst = fully_connected(4, include_ground=False, repeat=2)
    assert src.size == 2 * 4 * 3 and src.min() == 1


def test_paper_table_sizes_for_relu():
    # Table I: 168 / 528 / 1520 parameters for the 5-feature Friedman task
    got = [fully_connected_topology(5, 1, "relu", size).num_params("relu") for size in ("small", "medium", "large")]
    assert got == [168, 528, 1520]


def test_chain_and_mix():
    src, dst = chain(4)
    assert sorted(zip(src.tolist(), dst.tolist()))[:3] == [(0, 1), (1, 0), (1, 2)]
    src, dst = mix(3, 3, hubs=2, neighbor=3)
    assert not np.any(src == dst)
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert (1, 5) in pairs and (5, 1) in pairs and (1, 9) not in pairs  # corner 1 is no neighbour of corner 9
    assert (10, 1) in pairs and (0, 11) in pairs and (10, 11) in pairs
    assert len(pairs) == src.size  # one device per ordered pair
    topo = mix_topology((3, 3), 2, "small")
    assert topo.num_nodes == 11 and topo.output_nodes.tolist() == [10, 11]


def test_mlp_param_count_matches_paper_mlp_s():
    assert mlp_num_params(5, 1, 10) == 181  # the paper's MLP-s for Friedman


# ------------------------------------------------------------------ training and export


def test_tiny_training_reduces_loss():
    task = _toy_task()
    topo = fully_connected_topology(2, 2, "relu", layers=1, num_nodes=5)
    model = TorchKNet.init(topo, "relu", [0.0, 1.0], seed=0, init_scale=0.3)
    hist = fit(model, task, TrainConfig(epochs=8, lr=0.03, batch_size=30, dt=0.25))
    assert hist["loss"][-1] < 0.8 * hist["loss"][0]


@pytest.mark.parametrize("law", ["shift_leaky_relu", "softplus_affine", "gelu"])
def test_new_laws_train_ideally(law):
    task = _toy_task()
    topo = fully_connected_topology(2, 2, law, layers=1, num_nodes=5)
    model = TorchKNet.init(topo, law, [0.0, 1.0], seed=0, init_scale=0.3)
    hist = fit(model, task, TrainConfig(epochs=8, lr=0.03, batch_size=30, dt=0.25))
    assert hist["loss"][-1] < hist["loss"][0] and model.to_knet().law == law


@pytest.mark.parametrize("option", [{"theta_range": "cell:generic180"}, {"device_in_the_loop": "cell:generic180"}])
def test_cell_options_refuse_laws_without_a_cell_by_name(option):
    with pytest.raises(InputError, match="law 'silu_affine' has no transistor-level cell"):
        train_knet(_toy_task(), "silu_affine", cfg=TrainConfig(epochs=1, **option))


def test_noise_and_theta_clamp_options():
    task = _toy_task(kind="regression")
    topo = fully_connected_topology(2, 1, "tanh", layers=1, num_nodes=4)
    model = TorchKNet.init(topo, "tanh", [0.0, 1.0], seed=0)
    fit(model, task, TrainConfig(epochs=2, lr=0.5, batch_size=30, dt=0.5, theta_max=0.2, theta_noise=0.01,
                                 voltage_noise=0.01))
    assert max(float(t.detach().abs().max()) for t in model.thetas) <= 0.2 + 1e-15


def test_export_round_trips_and_agrees_with_dopri5(tmp_path):
    task = _toy_task(kind="regression")
    cfg = TrainConfig(epochs=3, lr=0.02, batch_size=30, dt=0.05, init_scale=0.3, dtype="float64")
    topo = fully_connected_topology(2, 1, "relu", layers=2, num_nodes=4)
    result = train_knet(task, "relu", cfg=cfg, topology=topo)
    npz, side = export(result, task, tmp_path / "toy.npz")
    knet = load_knet(npz)
    assert knet.law == "relu" and knet.num_layers == 2 and knet.num_nodes == 4
    for a, b in zip(knet.layers, result.knet.layers):
        np.testing.assert_array_equal(a.theta, b.theta)
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["test_inputs"], task.X_test)
        np.testing.assert_array_equal(z["test_labels"], task.y_test)
    meta = knet.meta
    assert meta == json.loads(side.read_text())
    assert meta["model"]["num_params"] == topo.num_params("relu")
    assert {"torch", "kcompile"} <= set(meta["provenance"])
    m = meta["metrics"]
    # the RK4-trained model is the ODE the circuit solves, to integration accuracy
    assert m["max_abs_output_diff_rk4_vs_dopri5"] < 1e-3
    assert abs(m["rk4"]["test"]["mse"] - m["dopri5"]["test"]["mse"]) < 1e-4
    # the torch model and the exported file compute the same thing
    torch_out = result.model(task.X_test, cfg.dt).detach().numpy()
    np.testing.assert_allclose(torch_out, integrate(knet, task.X_test, method="rk4", dt=cfg.dt).outputs,
                               atol=1e-12)


def test_mlp_baseline_trains():
    task = _toy_task(kind="regression")
    result = train_mlp(task, target_params=60, cfg=TrainConfig(epochs=3, batch_size=30))
    assert result.knet is None
    assert abs(result.report["model"]["num_params"] - 60) <= 15
    assert np.isfinite(result.report["metrics"]["test"]["mse"])


def test_score():
    task = _toy_task()
    s = score(task, np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    assert s["accuracy"] == 0.5 and s["cross_entropy"] > 0


# ------------------------------------------------------------------ tasks


def test_minmax_fit():
    X = np.array([[0.0, 5.0, 1.0], [2.0, 7.0, 1.0]])
    off, sc = minmax_fit(X, -1, 1)
    np.testing.assert_allclose((X - off) * sc, [[-1, -1, -1], [1, 1, -1]])


def test_friedman_task_contract():
    t = load_task("friedman")
    assert t.X_train.shape == (2457, 5) and t.X_test.shape == (1639, 5)
    assert t.X_train.min() == 0.0 and t.X_train.max() == 1.0
    assert t.y_train.min() == 0.0 and t.y_train.max() == 1.0
    assert t.kind == "regression" and t.num_outputs == 1
    assert load_task("friedman").X_test.tolist() == t.X_test.tolist()  # deterministic


@pytest.mark.parametrize("name,features,classes", [("moons", 2, 2), ("circles", 2, 2), ("digits", 64, 10),
                                                   ("diabetes", 10, 1)])
def test_task_shapes(name, features, classes):
    t = load_task(name)
    assert t.num_features == features and t.num_outputs == classes
    assert np.all(np.isfinite(t.X_train)) and t.X_train.shape[0] > t.X_test.shape[0]
    json.dumps(t.summary())


def test_unknown_task_is_refused():
    from kcompile.errors import InputError

    with pytest.raises(InputError, match="unknown task"):
        load_task("cifar")


# ------------------------------------------------------------------ CLI


def test_cli_train_writes_a_loadable_model(tmp_path):
    out = tmp_path / "m.npz"
    res = CliRunner().invoke(train_command, ["--task", "moons", "--epochs", "1", "--dt", "0.25", "--layers", "1",
                                             "--quiet", "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output
    knet = load_knet(out)
    assert knet.meta["task"]["name"] == "moons"
    assert knet.meta["provenance"]["command"].startswith("kcompile train --task moons")
    assert (tmp_path / "m.json").is_file()


def test_cli_baseline(tmp_path):
    res = CliRunner().invoke(train_command, ["--task", "moons", "--epochs", "1", "--baseline", "mlp", "--quiet",
                                             "-o", str(tmp_path / "b.npz")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "b.json").read_text())
    assert rep["model"]["type"] == "mlp" and not (tmp_path / "b.npz").exists()


def test_cli_needs_an_output(tmp_path):
    res = CliRunner().invoke(train_command, ["--task", "moons"], catch_exceptions=False)
    assert res.exit_code == 2 and "Missing option '-o' / '--out'" in res.output


def test_missing_torch_gives_install_hint(monkeypatch):
    import builtins

    from kcompile import train
    from kcompile.errors import KCompileError

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(KCompileError, match=r"pip install -e \.\[train\]"):
        train.require_torch()


def test_sizes_grow_when_inputs_force_the_small_size_up():
    from kcompile.train import fully_connected_sizes

    # 10 Diabetes features: 528 / 840 / 1520 parameters, as in the paper's Table I
    sizes = fully_connected_sizes(10, 1, "relu")
    assert sizes == {"small": 11, "medium": 14, "large": 19}
    assert [fully_connected_topology(10, 1, "relu", s).num_params("relu") for s in sizes] == [528, 840, 1520]


ZOO = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples" / "zoo"


# generative zoo models (*-gen-*) record latents, not labelled inputs: tests/test_gentrain.py checks them
@pytest.mark.parametrize("path", sorted(p for p in ZOO.glob("*.npz") if "-gen-" not in p.name), ids=lambda p: p.stem)
def test_zoo_models_reproduce_their_recorded_metrics(path):
    knet = load_knet(path)
    assert path.stat().st_size < 2_000_000  # mnist14-hw: its 1,000 recorded test images take 1.8 MB
    assert knet.meta == json.loads(path.with_suffix(".json").read_text())
    m = knet.meta["metrics"]
    with np.load(path) as z:
        X, y = z["test_inputs"], z["test_labels"]
    out = integrate(knet, X, method="rk4", dt=m["rk4"]["dt"]).outputs
    task = Task("zoo", knet.meta["task"]["kind"], X, y, X, y, len(knet.output_nodes), "", {}, {})
    got = score(task, out, y)
    for key, want in m["rk4"]["test"].items():
        assert got[key] == pytest.approx(want, rel=1e-9, abs=1e-12), key


@pytest.mark.slow
def test_moons_trains_to_high_accuracy_through_the_cli(tmp_path):
    out = tmp_path / "moons.npz"
    res = CliRunner().invoke(train_command, ["--task", "moons", "--epochs", "15", "--quiet", "-o", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = load_knet(out).meta["metrics"]
    assert m["dopri5"]["test"]["accuracy"] > 0.95
    assert m["rk4"]["test"]["accuracy"] == pytest.approx(m["dopri5"]["test"]["accuracy"], abs=0.01)


# ------------------------------------------------------------------ hardware-aware training (issue #5 item 4)


def _peak_voltage(model, X, dt):
    return model.forward_with_penalty(X, dt, None)[2]


def test_forward_with_penalty_matches_forward_and_counts_the_excess():
    topo = fully_connected_topology(2, 2, "relu", layers=2, num_nodes=4)
    model = TorchKNet.init(topo, "relu", [0.0, 1.0, 2.0], seed=2, init_scale=2.0, dtype=torch.float64)
    X = np.random.default_rng(0).uniform(-1, 1, (6, 2))
    out, pen, peak = model.forward_with_penalty(X, 0.1, 0.5)
    np.testing.assert_array_equal(out.detach().numpy(), model(X, 0.1).detach().numpy())
    assert peak > 0.5 and float(pen.detach()) > 0
    _, pen_far, _ = model.forward_with_penalty(X, 0.1, peak + 1.0)
    assert float(pen_far.detach()) == 0.0


def test_voltage_penalty_reduces_the_peak():
    task = _toy_task()
    topo = fully_connected_topology(2, 2, "relu", layers=2, num_nodes=5)
    X = task.X_train
    peaks = {}
    for vmax in (None, 1.0):
        model = TorchKNet.init(topo, "relu", [0.0, 1.0, 2.0], seed=0, init_scale=0.3, dtype=torch.float64)
        hist = fit(model, task, TrainConfig(epochs=6, lr=0.05, batch_size=45, dt=0.5, voltage_max=vmax,
                                            voltage_weight=30.0))
        peaks[vmax] = _peak_voltage(model, X, 0.5)
        assert len(hist["voltage_penalty"]) == 6
    print(peaks)
    assert peaks[None] > 1.5  # without the penalty the logits run away
    assert peaks[1.0] < 0.7 * peaks[None]


def _fake_surrogate(knee=1e-9, copy=1.0, lo=1e-3, hi=50.0):
    from kcompile.train import CellSurrogate

    lm = np.log(np.array([[1e-3, 1.0, 50.0]] * 2))
    full = lambda v: np.full((2, 3), v)  # noqa: E731
    return CellSurrogate("fake", "tt", lm, full(knee), full(copy), full(0.0), [lo, lo], [hi, hi])


def test_theta_box_projection_keeps_theta_inside():
    from kcompile.train import ThetaBox

    box = ThetaBox((0.01, 0.02), (2.0, 1.5), 4.0)
    th = torch.tensor([[0.0, 9.0], [0.001, -9.0], [-0.001, 0.0], [3.0, 1.0], [-3.0, 1.0], [0.5, 0.2], [-0.7, 0.1]],
                      dtype=torch.float64)
    box.project(th)
    want = [[0.01, 4.0], [0.01, -4.0], [-0.02, 0.0], [2.0, 1.0], [-1.5, 1.0], [0.5, 0.2], [-0.7, 0.1]]
    np.testing.assert_allclose(th.numpy(), want)


def test_surrogate_with_sharp_knee_and_unit_copy_is_the_ideal_relu():
    topo = fully_connected_topology(2, 2, "relu", layers=2, num_nodes=4)
    model = TorchKNet.init(topo, "relu", [0.0, 1.0, 2.0], seed=1, init_scale=1.0, dtype=torch.float64)
    X = np.random.default_rng(1).uniform(-1, 1, (5, 2))
    ideal = model(X, 0.1).detach().numpy()
    model.surrogate = _fake_surrogate()
    np.testing.assert_allclose(model(X, 0.1).detach().numpy(), ideal, atol=1e-7)
    # the gather/scatter path agrees with the dense one
    model.surrogate = _fake_surrogate(knee=0.05, copy=0.97)
    dense = model(X, 0.1).detach().numpy()
    model.dense = False
    np.testing.assert_allclose(model(X, 0.1).detach().numpy(), dense, atol=1e-12)
    assert np.abs(dense - ideal).max() > 1e-3  # the knee and the copy ratio do change the trajectory


def test_surrogate_d_side_and_s_side_differ_by_the_copy_ratio():
    s = _fake_surrogate(knee=0.01, copy=1.03, lo=0.1, hi=2.0)
    delta = torch.linspace(-3, 3, 25, dtype=torch.float64)[:, None].repeat(1, 3)
    t0 = torch.tensor([0.5, -5.0, 0.01], dtype=torch.float64)
    t1 = torch.tensor([0.2, 0.0, 0.3], dtype=torch.float64)
    i_s, i_d = s.currents(delta, t0, t1)
    np.testing.assert_allclose((i_d / i_s).numpy(), 1.03)
    d = delta[:, 0].numpy()
    np.testing.assert_allclose(i_s[:, 0].numpy(), np.maximum(0.5 * d + 0.2, 0), atol=0.01)
    np.testing.assert_allclose(i_s[:, 1].numpy(), np.maximum(-2.0 * d, 0), atol=0.01)  # clipped at hi
    np.testing.assert_allclose(i_s[:, 2].numpy(), np.maximum(0.1 * d + 0.3, 0), atol=0.01)  # raised to lo


def _cached_cell_or_skip():
    import shutil

    from kcompile.train import _cell_table

    if shutil.which("ngspice") is None:
        pytest.skip("the signed cell's calibration needs ngspice")
    return _cell_table("generic180", "tt")


def test_theta_range_from_the_calibration_is_respected_by_training():
    from kcompile.cells.base import clip_reason
    from kcompile.train import theta_box

    _, cal = _cached_cell_or_skip()
    box = theta_box("cell:generic180")
    assert box.hi[0] <= cal.theta0_range(False)[1] and box.lo[1] >= cal.theta0_range(True)[0]
    task = _toy_task()
    topo = fully_connected_topology(2, 2, "relu", layers=1, num_nodes=4)
    model = TorchKNet.init(topo, "relu", [0.0, 1.0], seed=0, init_scale=30.0)  # far outside the range
    fit(model, task, TrainConfig(epochs=2, lr=0.5, batch_size=30, dt=0.25, theta_range="cell:generic180"))
    th = model.theta_arrays()[0]
    neg = th[:, 0] < 0
    mag = np.abs(th[:, 0])
    assert np.all(mag >= np.where(neg, box.lo[1], box.lo[0])) and np.all(mag <= np.where(neg, box.hi[1], box.hi[0]))
    assert np.all(np.abs(th[:, 1]) <= 4.0)
    assert all(clip_reason(float(t0), cal) is None for t0 in th[:, 0])


def test_surrogate_matches_the_calibration_at_its_table_points():
    from kcompile.cells.kc_relu import fit_relu
    from kcompile.train import CellSurrogate

    table, cal = _cached_cell_or_skip()
    s = CellSurrogate.from_pdk("generic180")
    k = len(table.r)
    delta = torch.as_tensor(table.sweep.delta.ravel()[:, None], dtype=torch.float64)
    for row in range(2):
        for j in range(k):
            t0 = torch.tensor([cal.theta0[row, j]], dtype=torch.float64)
            i_s, i_d = s.raw_currents(delta, t0)
            i_s, i_d = i_s[:, 0].numpy(), i_d[:, 0].numpy()
            a0, a1 = fit_relu(table.sweep.delta.ravel(), i_s)
            fs = max(np.abs(i_s).max(), 1e-9)
            # achieved slope and the cell's own offset at a table point (the soft knee moves the relu fit a
            # little where the knee width is a sizeable part of the full scale, i.e. at the smallest slopes)
            assert a0 == pytest.approx(cal.theta0[row, j], rel=0.05)
            assert abs(a1 - cal.theta1[row, j]) < 0.05 * fs + 1e-3
            measured = table.sweep.sink[row * k + j].ravel()
            # the surrogate's s-side current against the measured sweep, for slopes up to 2 (above, the
            # measured I-V bends: the pair nears its current limit, which the surrogate does not model)
            if abs(cal.theta0[row, j]) <= 2.0:
                assert np.abs(i_s - measured).max() < 0.15 * measured.max() + 1e-3
            on = measured > 0.1 * measured.max()
            np.testing.assert_allclose(np.median(i_d[on] / i_s[on]),
                                       np.median(table.sweep.source[row * k + j].ravel()[on] / measured[on]),
                                       rtol=1e-6)
    # beyond the table's ends the slope is clipped, as the mapping clips it
    big = torch.tensor([100.0, -100.0], dtype=torch.float64)
    i_s, _ = s.currents(torch.ones(1, 2, dtype=torch.float64), big, torch.zeros(2, dtype=torch.float64))
    np.testing.assert_allclose(i_s[0].numpy(), [s.hi[0], 0.0], rtol=1e-3, atol=0.05)


@pytest.mark.parametrize("name", ["moons-plain", "moons-hw"])
def test_hardware_aware_flows_load(name):
    from kcompile.flow import load_flow

    flow = load_flow(ZOO.parent.parent / "flows" / f"{name}.yaml")
    assert flow.levels == ("behavioural", "characterised", "transistor")
    assert any(g.metric == "accuracy_drop" and g.level == "transistor" for g in flow.gates)


def test_shipped_hardware_aware_model_stays_in_the_cell_window():
    knet = load_knet(ZOO / "moons-hw-transistor.npz")
    hw = knet.meta["training"]["hardware_aware"]
    assert hw["voltage"]["max"] == 3.0 and "theta_box" in hw and "surrogate" in hw
    assert knet.meta["metrics"]["max_abs_voltage"] < 4.0  # the cells' compliance window is about ±4 units
    assert knet.meta["metrics"]["dopri5"]["test"]["accuracy"] >= 0.98
    box = hw["theta_box"]
    for layer in knet.layers:
        t0 = layer.theta[:, 0]
        hi = np.where(t0 < 0, box["theta0_abs_max"][1], box["theta0_abs_max"][0])
        lo = np.where(t0 < 0, box["theta0_abs_min"][1], box["theta0_abs_min"][0])
        # trained in float32: the box's ends hold to float32 rounding (the box is 0.1 % inside the calibration)
        assert np.all((np.abs(t0) <= hi * (1 + 1e-6)) & (np.abs(t0) >= lo * (1 - 1e-6)))
