"""kcompile train --task <density>: a 2-node KirchhoffNet trained as a normalising flow (kcompile.gentrain)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install -e .[train]")

from click.testing import CliRunner  # noqa: E402

from kcompile.cli import main  # noqa: E402
from kcompile.generation import is_generative  # noqa: E402
from kcompile.gentrain import (  # noqa: E402
    DENSITIES, DENSITY_DEFAULTS, density_topology, evaluate_flow, log_likelihood, param_box, repeat_for, train_density,
)
from kcompile.knet import load_knet  # noqa: E402
from kcompile.reference import integrate  # noqa: E402
from kcompile.train import TorchKNet, TrainConfig  # noqa: E402
from kcompile.tasks import TASKS  # noqa: E402

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_densities_are_seeded_within_the_window_and_do_not_clash_with_tasks():
    for name, density in DENSITIES.items():
        x = density.sample(4000, 3)
        assert x.shape == (4000, 2) and np.array_equal(x, density.sample(4000, 3)) and name not in TASKS
        assert np.abs(x).max() < 4.0 and not np.array_equal(x, density.sample(4000, 4))
    assert repeat_for("small", 4, "tanh_affine") == 2 and repeat_for("medium", 4, "relu") == 11


@pytest.mark.parametrize("law,tol", [("tanh_affine", 1e-7), ("relu", 5e-3)])  # relu: RK4 over its kinks
def test_log_likelihood_is_the_change_of_variables_of_the_forward_circuit(law, tol):
    """log p(x) from the backward RK4 with the exact trace equals log N(z) − log|det ∂x/∂z| of the forward ODE
    that the circuit solves (NumPy reference, dopri5; Jacobian by central differences), for latents z and x = Φ(z)."""
    model = TorchKNet.init(density_topology(2, 2), law, [0.0, 0.5, 1.0], seed=1, init_scale=3.0,
                           dtype=torch.float64)
    knet = model.to_knet({"generative": True})
    z = np.random.default_rng(0).standard_normal((6, 2))
    x = integrate(knet, z, rtol=1e-11, atol=1e-13).outputs
    eps, jac = 1e-5, np.zeros((6, 2, 2))
    for j in range(2):
        dz = np.zeros(2)
        dz[j] = eps
        plus, minus = (integrate(knet, z + s * dz, rtol=1e-11, atol=1e-13).outputs for s in (1, -1))
        jac[:, :, j] = (plus - minus) / (2 * eps)
    want = -0.5 * (z * z).sum(1) - np.log(2 * np.pi) - np.log(np.abs(np.linalg.det(jac)))
    got, penalty, peak = log_likelihood(model, x, 0.005)
    err = np.abs(got.detach().numpy() - want).max()  # measured 5.7e-10 (tanh_affine), 2.3e-3 (relu)
    assert err < tol and float(penalty) == 0
    assert np.abs(jac - np.eye(2)).max() > 0.05  # the map is far from the identity
    assert peak >= np.abs(x).max() - 1e-12


def test_training_lowers_the_likelihood_inside_the_box_and_the_voltage_bound():
    cfg = TrainConfig(epochs=6, lr=0.05, batch_size=128, dt=0.25, t_layer=0.5, theta_range="cell:generic180",
                      voltage_max=3.5, voltage_weight=10.0)
    knet, meta = train_density(DENSITIES["8gaussians"], "tanh_affine", 2, 2, cfg, sizes=(1024, 512, 200))
    box = param_box("cell:generic180", "tanh_affine")
    for layer in knet.layers:
        assert (layer.theta >= np.array(box.lo) - 1e-12).all() and (layer.theta <= np.array(box.hi) + 1e-12).all()
    nll = meta["training"]["final_train_nll"]
    assert is_generative(knet) and knet.output_nodes.tolist() == [1, 2] and knet.num_devices == 2 * 12
    # a standard normal fitted to 8 gaussians scores about 3.68 nats; the flow learns more than that
    assert nll < 3.6 and abs(meta["metrics"]["test_nll_rk4"] - nll) < 0.3, meta["metrics"]
    assert meta["training"]["hardware_aware"]["theta_box"]["source"] == "kc_atanh calibration on generic180/tt"
    assert {"data_mmd_ratio", "max_abs_voltage"} <= set(meta["metrics"]["samples"])


def test_train_command_trains_a_density(tmp_path):
    out = tmp_path / "g.npz"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--task", "8gaussians", "--epochs", "1", "--layers", "2", "--size", "small",
                                  "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    knet = load_knet(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert knet.law == DENSITY_DEFAULTS["law"] and knet.num_layers == 2 and knet.meta["generative"] is True
    assert "--task 8gaussians" in meta["provenance"]["command"] and "test NLL" in result.stdout
    with np.load(out) as f:
        assert f["test_inputs"].shape == (64, 2) and "test_labels" not in f
    for args, message in ((["--baseline", "mlp"], "--baseline does not apply to --task 8gaussians"),
                          (["--theta-noise", "0.1"], "--theta-noise does not apply"),
                          (["--layers", "0"], "--layers must be at least 1"),
                          (["--voltage-max", "-1"], "--voltage-max must be positive")):
        result = runner.invoke(main, ["train", "--task", "8gaussians", *args, "-o", str(tmp_path / "x.npz")])
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("path", sorted(ZOO.glob("*-gen-*.npz")), ids=lambda p: p.stem)
def test_generative_zoo_models_reproduce_their_recorded_samples_and_fit_the_cells(path):
    """The zoo's generative models: meta as in the .json, 64 recorded latents, the sample check recorded at
    training reproduced by the reference, and every θ inside the box of the cell they were trained for."""
    knet = load_knet(path)
    assert knet.meta == json.loads(path.with_suffix(".json").read_text()) and is_generative(knet)
    with np.load(path) as f:
        assert f["test_inputs"].shape == (64, 2)
    task, samples = knet.meta["task"], knet.meta["metrics"]["samples"]
    got = evaluate_flow(knet, DENSITIES[task["name"]], task["data_seed"], samples["latent_seed"], samples["latents"])
    assert got == pytest.approx(samples, rel=1e-9, abs=1e-12)
    box = param_box(knet.meta["training"]["theta_range"], knet.law)
    assert all((lay.theta >= box.lo).all() and (lay.theta <= box.hi).all() for lay in knet.layers)
