"""Generative training: a 2-node KirchhoffNet as a continuous normalising flow (``kcompile train --task 8gaussians``).

The circuit samples by running forward from a standard-normal latent ``z``
(node voltages at ``t_0``) to ``x`` (node voltages at ``t_L``), as the paper's
flows do (:mod:`kcompile.generation`). Training maximises the likelihood of
data ``x``: the ODE ``dv/dt = f_k(v)`` is integrated **backward** from
``x`` at ``t_L`` to ``z`` at ``t_0`` with fixed-step RK4 (the steps of
:meth:`kcompile.train.TorchKNet.forward`, reversed), and with it the
integral of the exact trace of the Jacobian (2 nodes: two autograd rows), so

    log p(x) = log N(z; 0, I) − ∫ tr(∂f/∂v) dt.

The model is :class:`kcompile.train.TorchKNet` on every ordered pair of
``{ground, 1, 2}`` (``repeat`` parallel devices each, :func:`kcompile.train.fully_connected`);
the hardware-aware options are train.py's: ``--voltage-max`` (the penalty on
every RK4 state of the backward trajectories), ``--theta-range cell:PDK``
(θ projected into the cell's calibrated box after each step) and
``--device-in-the-loop PDK`` (the cell surrogate in place of the law, so the
trace is the surrogate's). The exported weights say ``"generative": true``
and record 64 latents as their test inputs.

The densities are the 2-D toy sets of the FFJORD code the paper's flows were
trained on (8 gaussians, pinwheel, two spirals; the names do not clash with
:data:`kcompile.tasks.TASKS`), scaled by :data:`DENSITY_SCALE`
so that the data stay within about ±3 model units, inside the cells' window.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .distribution import latents, mmd2, median_bandwidth, noise_floor
from .errors import InputError, KCompileError
from .knet import KNet, save_knet

#: every density is FFJORD's toy set times this (8 gaussians: modes at radius 2.12, σ 0.27; data within ±3.2)
DENSITY_SCALE = 0.75
#: latents recorded with the exported model as its test inputs
RECORDED_LATENTS = 64
#: samples of the density in the training and the held-out split
TRAIN_SAMPLES, TEST_SAMPLES = 8192, 2048
#: latents (and held-out data points) of the sample-quality check after training
CHECK_SAMPLES = 1000


def _eight_gaussians(n: int, rng) -> np.ndarray:
    s = 1 / math.sqrt(2)
    centers = 4.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    return (centers[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, 2))) / 1.414


def _pinwheel(n: int, rng) -> np.ndarray:
    # 5 arms: radial std 0.3, tangential 0.1, rate 0.25, times 2 (FFJORD)
    arm = rng.integers(0, 5, n)
    features = rng.standard_normal((n, 2)) * np.array([0.3, 0.1]) + np.array([1.0, 0.0])
    angle = 2 * np.pi * arm / 5 + 0.25 * np.exp(features[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    return 2 * np.c_[features[:, 0] * c + features[:, 1] * s, -features[:, 0] * s + features[:, 1] * c]


def _two_spirals(n: int, rng) -> np.ndarray:
    # two interleaved spirals of 1.5 turns, / 3, noise 0.1 (FFJORD)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
    pts = arm * (np.c_[-np.cos(t) * t, np.sin(t) * t] + 0.5 * rng.random((n, 2)))
    return pts / 3 + 0.1 * rng.standard_normal((n, 2))


@dataclass(frozen=True)
class Density:
    """A 2-D data density: ``sample(n, rng)`` in FFJORD's units (times :data:`DENSITY_SCALE` in volts)."""

    name: str
    description: str
    sample_ffjord: object

    def sample(self, n: int, seed: int) -> np.ndarray:
        return DENSITY_SCALE * self.sample_ffjord(n, np.random.default_rng(seed))


DENSITIES = {d.name: d for d in (
    Density("8gaussians", "8 Gaussians (σ 0.5) on a circle of radius 4, / 1.414 (FFJORD)", _eight_gaussians),
    Density("pinwheel", "5 arms, radial σ 0.3, tangential σ 0.1, rate 0.25, x 2 (FFJORD)", _pinwheel),
    Density("2spirals", "two spirals of 1.5 turns, / 3, noise 0.1 (FFJORD)", _two_spirals),
)}

#: defaults of ``kcompile train --task <density>`` (the options that are given override them)
DENSITY_DEFAULTS = {"law": "tanh_affine", "layers": 4, "t_layer": 0.5, "epochs": 40, "batch_size": 256, "lr": 0.02,
                    "dt": 0.1, "init_scale": 0.3}


def density_topology(layers: int, repeat: int):
    """Every ordered pair of ``{ground, 1, 2}`` with ``repeat`` parallel devices, per layer; nodes 1, 2 are the
    latent (input) and the sample (output)."""
    from .train import Topology, fully_connected

    edges = fully_connected(2, include_ground=True, repeat=repeat)
    return Topology(2, tuple(edges for _ in range(layers)), np.array([1, 2]), np.array([0, 1]), np.array([1, 2]),
                    {"generator": "fully_connected", "include_ground": True, "repeat": repeat, "num_nodes": 2,
                     "layers": layers, "inputs": "nodes 1, 2: the latent", "outputs": "nodes 1, 2: the sample"})


def repeat_for(size: str, layers: int, law: str) -> int:
    """Parallel devices per ordered pair so that the parameter count is closest to the size's budget."""
    from .laws import LAWS
    from .train import SIZE_PARAMS

    return max(1, round(SIZE_PARAMS[size] / (6 * layers * LAWS[law].num_params)))


@dataclass(frozen=True)
class ParamBox:
    """Per law parameter, the interval that the law's transistor cell realises unflagged
    (:meth:`kcompile.cells.base.Cell.theta_box` of its calibration, 0.1 % inside): ``--theta-range cell:PDK``
    for any law with a cell (the relu-only :func:`kcompile.train.theta_box` also keeps slopes above the floors)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    source: str

    def project(self, theta) -> None:
        """In place on a torch ``[E, P]`` tensor (no grad): clamp every column into its interval."""
        for j, (lo, hi) in enumerate(zip(self.lo, self.hi)):
            theta[:, j].clamp_(lo, hi)

    def summary(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi), "source": self.source,
                "note": "per law parameter; projected after every step"}


def param_box(spec: str, law: str) -> ParamBox:
    """The :class:`ParamBox` of ``law``'s cell for ``--theta-range cell:PDK[:CORNER]``."""
    from .cells import cell_for_law
    from .train import _parse_cell_spec

    cell = cell_for_law(law)
    pdk, corner = _parse_cell_spec(spec, "--theta-range")
    box = cell.theta_box(law, cell.calibration(pdk, corner))
    return ParamBox(tuple(float(lo) + 1e-3 * abs(lo) for lo, _ in box),
                    tuple(float(hi) - 1e-3 * abs(hi) for _, hi in box),
                    f"{cell.name} calibration on {pdk}/{corner}")


def _field(model, k: int, v, cols):
    """``f_k(v)`` and the exact trace of its Jacobian per sample (one autograd row per node; graph kept)."""
    torch = model.torch
    with torch.enable_grad():
        if not v.requires_grad:
            v = v.detach().requires_grad_(True)
        f = model.rhs(k, v, cols)
        trace = sum(torch.autograd.grad(f[:, i].sum(), v, create_graph=True)[0][:, i] for i in range(v.shape[1]))
    return f, trace


def log_likelihood(model, x, dt: float, voltage_max: float | None = None):
    """``(log p(x) [B], voltage penalty, peak |v|)`` of data ``x`` ``[B, 2]`` under the flow ``model``.

    Backward RK4 from ``t_L`` to ``t_0`` on ``(v, ∫ tr ∂f/∂v dt)``; the penalty is the mean over the backward
    step states, samples and nodes of ``relu(|v| − voltage_max)²`` (0 without a bound), as
    :meth:`kcompile.train.TorchKNet.forward_with_penalty`.
    """
    torch = model.torch
    v = torch.as_tensor(np.asarray(x), dtype=model.dtype)
    integral = v.new_zeros(v.shape[0])
    excess, states = v.new_zeros(()), 0
    peak = float(v.detach().abs().max())
    for k in reversed(range(len(model.thetas))):
        cols = model.thetas[k].unbind(1)
        if model.surrogate is not None:
            cols = model.surrogate.prepare(cols[0], cols[1])
        t0, t1 = model.t_bounds[k], model.t_bounds[k + 1]
        steps = max(1, int(np.ceil((t1 - t0) / dt - 1e-9)))
        h = (t1 - t0) / steps
        for _ in range(steps):
            f1, d1 = _field(model, k, v, cols)
            f2, d2 = _field(model, k, v - h / 2 * f1, cols)
            f3, d3 = _field(model, k, v - h / 2 * f2, cols)
            f4, d4 = _field(model, k, v - h * f3, cols)
            v = v - h / 6 * (f1 + 2 * f2 + 2 * f3 + f4)
            integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
            if voltage_max is not None:
                excess = excess + ((v.abs() - voltage_max).clamp_min(0.0) ** 2).mean()
                states += 1
            peak = max(peak, float(v.detach().abs().max()))
    log_z = -0.5 * (v * v).sum(1) - v.shape[1] * 0.5 * math.log(2 * math.pi)
    return log_z - integral, excess / max(states, 1), peak


def _nll(model, x: np.ndarray, dt: float, batch: int = 2048) -> float:
    """Mean negative log-likelihood (nats) of ``x`` under the trained model."""
    with model.torch.no_grad():
        return float(-np.concatenate([log_likelihood(model, x[i:i + batch], dt)[0].detach().numpy()
                                      for i in range(0, len(x), batch)]).mean())


def fit_density(model, data: np.ndarray, cfg, log=None) -> dict:
    """Adam on mini-batches of ``data`` (cosine schedule) minimising the negative log-likelihood plus
    ``voltage_weight ·`` the voltage penalty; θ projected into ``cfg.theta_range``'s box and clamped to
    ``cfg.theta_max`` after every step (as :func:`kcompile.train.fit`). Returns the history."""
    from .train import project_thetas

    torch = model.torch
    gen = torch.Generator().manual_seed(cfg.seed)
    X = torch.as_tensor(data, dtype=model.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    box = param_box(cfg.theta_range, model.law) if cfg.theta_range else None

    def project():
        project_thetas(model.thetas, cfg.theta_max, box)

    project()  # start inside the box too
    history, penalties, peaks = [], [], []
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        total, total_pen, count, peak = 0.0, 0.0, 0, 0.0
        for i in range(0, X.shape[0], cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            logp, pen, pk = log_likelihood(model, X[idx], cfg.dt, cfg.voltage_max)
            nll = -logp.mean()
            loss = nll + cfg.voltage_weight * pen if cfg.voltage_max is not None else nll
            opt.zero_grad()
            loss.backward()
            opt.step()
            project()
            total += float(nll.detach()) * idx.numel()
            total_pen += float(pen.detach()) * idx.numel()
            count += idx.numel()
            peak = max(peak, pk)
        sched.step()
        history.append(total / count)
        penalties.append(total_pen / count)
        peaks.append(peak)
        if not math.isfinite(history[-1]):
            raise KCompileError(f"training diverged at epoch {epoch + 1} (negative log-likelihood {history[-1]}): "
                                "lower --lr, --init-scale or --dt")
        if log and (epoch + 1 == cfg.epochs or (epoch + 1) % max(1, cfg.epochs // 10) == 0):
            extra = (f", voltage penalty {penalties[-1]:.3g}" if cfg.voltage_max is not None else "")
            log(f"epoch {epoch + 1}/{cfg.epochs}: train NLL {history[-1]:.4f} nats{extra}, peak |v| {peak:.3g} "
                f"({time.perf_counter() - t_start:.0f} s)")
    return {"nll": history, "voltage_penalty": penalties, "peak_voltage": peaks,
            "seconds": time.perf_counter() - t_start}


def evaluate_flow(knet: KNet, density: Density, data_seed: int, seed: int = 0, n: int = CHECK_SAMPLES) -> dict:
    """The exported flow sampled with the NumPy reference (dopri5) from ``n`` latents, against as many fresh data
    points: MMD² over the data's noise floor (two independent data draws of the same size), and the largest
    |v| on the trajectories (50 points per layer)."""
    from .reference import integrate

    z = latents(n, 2, seed)
    grid = np.linspace(0.0, knet.t_bounds[-1], 50 * knet.num_layers + 1)
    tr = integrate(knet, z, grid=grid)
    pool = density.sample(3 * n, data_seed + 2)
    data, rest = pool[:n], pool[n:]
    h = median_bandwidth(data)
    floor = noise_floor(rest, n, bandwidth=h)
    m = mmd2(data, tr.outputs, h)
    return {"latents": n, "latent_seed": seed, "mmd2_vs_data": m, "floor_mmd2": floor.mmd2,
            "data_mmd_ratio": max(m, 0.0) / floor.mmd2, "bandwidth": h,
            "max_abs_voltage": float(np.abs(tr.grid_states).max()), "max_abs_sample": float(np.abs(tr.outputs).max())}


def train_density(density: Density, law: str, layers: int, repeat: int, cfg, data_seed: int = 42, log=None,
                  command: str | None = None, sizes: tuple[int, int, int] = (TRAIN_SAMPLES, TEST_SAMPLES,
                                                                          CHECK_SAMPLES)):
    """Train a 2-node flow on ``density`` by maximum likelihood; returns ``(KNet, report)``.

    ``cfg`` is a :class:`kcompile.train.TrainConfig` (``theta_noise``/``voltage_noise`` unused); ``sizes``: data
    points of the training and the test split, latents of the sample check (:func:`evaluate_flow`).
    """
    from .train import CellSurrogate, TorchKNet, _provenance, require_torch

    torch = require_torch()
    topology = density_topology(layers, repeat)
    t_bounds = np.arange(layers + 1) * cfg.t_layer
    model = TorchKNet.init(topology, law, t_bounds, seed=cfg.seed, init_scale=cfg.init_scale,
                           dtype=getattr(torch, cfg.dtype))
    hardware = {}
    if cfg.device_in_the_loop:
        model.surrogate = CellSurrogate.from_pdk(cfg.device_in_the_loop, law)
        hardware["surrogate"] = model.surrogate.summary()
    if cfg.theta_range:
        hardware["theta_box"] = param_box(cfg.theta_range, law).summary()
    train, test = density.sample(sizes[0], data_seed), density.sample(sizes[1], data_seed + 1)
    hist = fit_density(model, train, cfg, log)
    if cfg.voltage_max is not None:
        hardware["voltage"] = {"max": cfg.voltage_max, "weight": cfg.voltage_weight,
                               "penalty": "voltage_weight * mean over the backward RK4 step states, samples, nodes of "
                                          "relu(|v| - voltage_max)^2",
                               "final_penalty": hist["voltage_penalty"][-1]}
    meta = {
        "kind": "trained", "generative": True,
        "task": {"name": density.name, "kind": "density", "description": density.description,
                 "scale": DENSITY_SCALE, "num_train": sizes[0], "num_test": sizes[1],
                 "data_seed": data_seed},
        "model": {"type": "kirchhoffnet", "law": law, "layers": layers, "t_bounds": t_bounds.tolist(),
                  "num_nodes": 2, "num_devices": int(sum(s.size for s, _ in topology.layers)),
                  "num_params": model.num_params, "topology": topology.description,
                  "readout": "node voltages at t_L are the sample; latents N(0, I) at t_0"},
        "training": {**asdict(cfg), "loss": "negative log-likelihood (continuous normalising flow, exact trace)",
                     "final_train_nll": hist["nll"][-1], "seconds": round(hist["seconds"], 1),
                     "gradient": "backprop through backward fixed-step RK4 of (v, ∫ tr ∂f/∂v dt)",
                     **({"hardware_aware": hardware} if hardware else {})},
        "provenance": {**_provenance(), **({"command": command} if command else {})},
    }
    knet = model.to_knet(meta)
    meta["metrics"] = {"test_nll_rk4": _nll(model, test, cfg.dt), "dt": cfg.dt,
                       "peak_abs_voltage_last_epoch": hist["peak_voltage"][-1],
                       "samples": evaluate_flow(knet, density, data_seed, cfg.seed, sizes[2])}
    return model.to_knet(meta), meta


def export_density(knet: KNet, report: dict, path: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``path`` (with :data:`RECORDED_LATENTS` latents as ``test_inputs``) and ``path.json`` (the meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_knet(knet, path, test_inputs=latents(RECORDED_LATENTS, 2, seed))
    side = path.with_suffix(".json")
    side.write_text(json.dumps(report, indent=1) + "\n")
    return path, side


#: ``kcompile train`` options a density refuses when given (they act on labelled tasks only)
_NOT_FOR_DENSITIES = {"baseline": "--baseline", "theta_noise": "--theta-noise", "voltage_noise": "--voltage-noise"}


def density_command(ctx) -> None:
    """``kcompile train --task <density>`` (called by :func:`kcompile.train.train_command` with its context)."""
    import click
    from click.core import ParameterSource

    from .train import TrainConfig, _command_line

    p = ctx.params
    given = {name for name in p if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    for name, flag in _NOT_FOR_DENSITIES.items():
        if name in given and p[name]:
            raise InputError(f"{flag} does not apply to --task {p['task_name']} (a 2-D density trained as a "
                             "normalising flow); leave it out")
    pick = {k: p[k] if k in given and p[k] is not None else v for k, v in DENSITY_DEFAULTS.items()}
    if pick["layers"] < 1:
        raise InputError(f"--layers must be at least 1, got {pick['layers']}")
    if p["voltage_max"] is not None and p["voltage_max"] <= 0:
        raise InputError(f"--voltage-max must be positive, got {p['voltage_max']}")
    cfg = TrainConfig(epochs=pick["epochs"], lr=pick["lr"], batch_size=pick["batch_size"], seed=p["seed"],
                      dt=pick["dt"], t_layer=pick["t_layer"], init_scale=pick["init_scale"],
                      dtype=p["dtype"] or "float32", theta_max=p["theta_max"], voltage_max=p["voltage_max"],
                      voltage_weight=p["voltage_weight"], theta_range=p["theta_range"],
                      device_in_the_loop=p["device_in_the_loop"])
    repeat = repeat_for(p["size"], pick["layers"], pick["law"])
    log = None if p["quiet"] else (lambda s: click.echo(s, err=True))
    command = _command_line(ctx, **pick, dtype=cfg.dtype)
    knet, report = train_density(DENSITIES[p["task_name"]], pick["law"], pick["layers"], repeat, cfg,
                                 p["data_seed"], log, command)
    npz, side = export_density(knet, report, p["out_path"], cfg.seed)
    m, s = report["model"], report["metrics"]["samples"]
    click.echo(f"{p['task_name']} flow ({pick['law']}, {m['num_devices']} devices, {m['num_params']} params): test "
               f"NLL {report['metrics']['test_nll_rk4']:.4f} nats (RK4 dt {cfg.dt}); samples vs data: MMD ratio "
               f"{s['data_mmd_ratio']:.2f} at n = {s['latents']}; max |v| {s['max_abs_voltage']:.3g}; trained in "
               f"{report['training']['seconds']:.0f} s")
    click.echo(f"wrote {npz} and {side}", err=True)
