"""What the same inference costs in software: the reference integrator, and the paper's PyTorch forward.

Beside a transistor-level flow's energy per inference and physical latency
``t_L·τ``, the report shows the measured wall and CPU time of

- kcompile's NumPy reference integrator (:func:`kcompile.reference.integrate`,
  its default tolerances) on the same inputs, and
- the paper's forward pass: ``torchdiffeq.odeint`` dopri5 over each layer
  window, float32, rtol = atol = 1e-3, first step 1e-2 (the reference code's
  settings, as in ``benchmarks/bench_scale.py``); when ``torchdiffeq`` is not
  installed, kcompile's own fixed-step RK4 torch forward
  (:class:`kcompile.train.TorchKNet`), labelled as such; neither when torch is
  missing (the report says so).

Each is the best of ``repeat`` runs (the first also warms caches).
"""

from __future__ import annotations

import resource
import time

import numpy as np

from .knet import KNet
from .reference import integrate

#: the reference code's dopri5 tolerances (rtol = atol) and first step
PAPER_TOL, PAPER_FIRST_STEP = 1e-3, 1e-2
#: RK4 step of the fallback forward (model time units)
RK4_DT = 1e-2


def children_cpu() -> float:
    """CPU seconds of finished child processes (ngspice, pool workers), user + system."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def best_time(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall and CPU seconds of ``repeat`` calls of ``fn``, and its last result."""
    best, best_cpu, out = np.inf, np.inf, None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    return best, best_cpu, out


def torchdiffeq_forward(knet: KNet, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Output voltages ``[B, M]`` by the paper's forward (dopri5 per layer window in float32), and its RHS count."""
    import torch
    import torchdiffeq

    from .train import TORCH_LAWS

    law = TORCH_LAWS[knet.law]
    y = torch.as_tensor(knet.initial_state(x), dtype=torch.float32)
    cinv = torch.as_tensor(1.0 / knet.capacitance, dtype=torch.float32)
    nfe = [0]
    for layer in knet.layers:
        src, dst = torch.as_tensor(np.array(layer.src)), torch.as_tensor(np.array(layer.dst))
        theta = torch.as_tensor(np.array(layer.theta), dtype=torch.float32)

        def rhs(t, v, src=src, dst=dst, theta=theta):
            nfe[0] += 1
            vg = torch.cat((torch.zeros_like(v[:, :1]), v), dim=1)
            g = law(vg[:, src], vg[:, dst], theta)
            out = torch.zeros_like(vg)
            out.index_add_(1, dst, g)
            out.index_add_(1, src, -g)
            return out[:, 1:] * cinv

        span = torch.tensor([0.0, layer.t_stop - layer.t_start])
        with torch.no_grad():
            y = torchdiffeq.odeint(rhs, y, span, rtol=PAPER_TOL, atol=PAPER_TOL, method="dopri5",
                                   options={"first_step": PAPER_FIRST_STEP})[-1]
    return y.double().numpy()[:, knet.output_nodes - 1], nfe[0]


def rk4_forward(knet: KNet, x: np.ndarray) -> np.ndarray:
    """Output voltages ``[B, M]`` by kcompile's torch RK4 forward (:class:`kcompile.train.TorchKNet`)."""
    import torch

    from .train import Topology, TorchKNet

    topo = Topology(knet.num_nodes, tuple((np.array(layer.src), np.array(layer.dst)) for layer in knet.layers),
                    np.array(knet.input_nodes), np.array(knet.input_index), np.array(knet.output_nodes), {})
    thetas = [np.array(layer.theta) for layer in knet.layers]
    model = TorchKNet(topo, knet.law, knet.t_bounds, thetas, float(np.mean(knet.capacitance)))
    with torch.no_grad():
        return model.forward(torch.as_tensor(np.asarray(x, float), dtype=model.dtype), RK4_DT).double().numpy()


def compute_timing(knet: KNet, x: np.ndarray, repeat: int = 3) -> dict:
    """Wall and CPU seconds per inference of the reference integrator and of a torch forward."""
    x = np.atleast_2d(x)
    b = len(x)
    wall, cpu, ref = best_time(lambda: integrate(knet, x), repeat)
    out = {"samples": b, "reference": {"label": "kcompile NumPy reference (dopri5, rtol 1e-9, atol 1e-11)",
                                       "wall_s_per_inference": wall / b, "cpu_s_per_inference": cpu / b}}
    try:
        import torch  # noqa: F401
    except ImportError:
        out["torch"] = {"label": "not measured: torch is not installed (pip install -e .[train])"}
        return out
    try:
        import torchdiffeq  # noqa: F401

        def fn(k, v):
            return torchdiffeq_forward(k, v)[0]

        label = (f"paper's forward: torchdiffeq dopri5, float32, rtol = atol = {PAPER_TOL:g}, "
                 f"first step {PAPER_FIRST_STEP:g}")
    except ImportError:
        fn, label = rk4_forward, (f"torchdiffeq is not installed: kcompile's torch RK4 forward "
                                  f"(kcompile.train.TorchKNet, float64, dt {RK4_DT:g}) instead")
    if fn is rk4_forward and np.ptp(knet.capacitance) > 0:
        out["torch"] = {"label": label + ": not measured (it takes one capacitance for every node)"}
        return out
    wall, cpu, y = best_time(lambda: fn(knet, x), repeat)
    out["torch"] = {"label": label, "wall_s_per_inference": wall / b, "cpu_s_per_inference": cpu / b,
                    "max_output_error_vs_reference": float(np.abs(y - ref.outputs).max())}
    return out
