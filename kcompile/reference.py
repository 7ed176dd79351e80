"""NumPy reference integrator: the ideal KirchhoffNet ODE, batched and sparse.

``C_n dv_n/dt = Σ_{e: d_e = n} g_e − Σ_{e: s_e = n} g_e``, layer by layer.
The right-hand side gathers terminal voltages with fancy indexing and
scatters device currents with a sparse incidence matrix, so the cost per
step is ``O(B·E)``. Steps: adaptive Dormand–Prince 5(4) (max-norm error
control over the whole batch, so no sample hides behind another) or
fixed-step RK4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .knet import KNet
from .laws import LAWS

DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 1e-11


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Result of one integration.

    ``states[b, k, n-1]`` is the voltage of node ``n`` at ``t_bounds[k]``;
    ``outputs`` are the output nodes at ``t_L``; ``grid``/``grid_states`` are
    filled when a time grid was requested.
    """

    states: np.ndarray  # [B, L+1, N]
    outputs: np.ndarray  # [B, M]
    t_bounds: np.ndarray  # [L+1]
    steps: int
    rhs_evals: int
    grid: np.ndarray | None = None  # [T]
    grid_states: np.ndarray | None = None  # [B, T, N]


def layer_rhs(knet: KNet, k: int, dtype=np.float64) -> Callable[[np.ndarray], np.ndarray]:
    """``f(v) -> dv/dt`` for layer ``k``, with ``v`` of shape ``[B, N]``."""
    layer = knet.layers[k]
    n, e = knet.num_nodes, layer.num_devices
    current = LAWS[knet.law].current
    theta = layer.theta.astype(dtype)
    # incidence [N+1, E]: +1 at the drain node, -1 at the source node; drop ground row
    inc = sp.csr_matrix(
        (np.r_[np.ones(e), -np.ones(e)], (np.r_[layer.dst, layer.src], np.r_[np.arange(e), np.arange(e)])),
        shape=(n + 1, e), dtype=dtype,
    )
    scatter = (sp.diags(1.0 / knet.capacitance.astype(dtype)) @ inc[1:]).tocsr()
    src, dst = layer.src, layer.dst

    def rhs(v: np.ndarray) -> np.ndarray:
        vg = np.concatenate([np.zeros((v.shape[0], 1), dtype=v.dtype), v], axis=1)
        g = current(vg[:, src], vg[:, dst], theta)  # [B, E]
        return (scatter @ g.T).T

    return rhs


# Dormand–Prince 5(4) tableau
_C = np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1])
_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_E = _B - np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])


def _hermite(t0, t1, y0, y1, f0, f1, ts):
    """Cubic Hermite interpolation between two accepted steps, at times ``ts``."""
    h = t1 - t0
    s = (np.asarray(ts) - t0) / h
    s = s[:, None, None]
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y0 + h10 * h * f0 + h01 * y1 + h11 * h * f1  # [T, B, N]


def _dopri5(f, y, t0, t1, rtol, atol, grid, out, counters):
    t = t0
    fy = f(y)
    counters[1] += 1
    scale = atol + rtol * np.abs(y)  # first step from the local derivative scale
    d0, d1 = np.max(np.abs(y) / scale), np.max(np.abs(fy) / scale)
    h = min(0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6, t1 - t0)
    while t < t1:
        h = min(h, t1 - t)
        ks = [fy]
        for i in range(1, 7):
            yi = y + h * sum(a * k for a, k in zip(_A[i], ks) if a)
            ks.append(f(yi))
        counters[1] += 6
        y_new = yi  # the 7th stage is evaluated at the 5th-order solution (FSAL)
        err = h * sum(e * k for e, k in zip(_E, ks) if e)
        scale = atol + rtol * np.maximum(np.abs(y), np.abs(y_new))
        ratio = float(np.max(np.abs(err) / scale))
        if ratio <= 1.0:
            t_new = t1 if t1 - (t + h) <= 1e-12 * max(1.0, abs(t1)) else t + h
            _fill_grid(grid, out, t, t_new, y, y_new, fy, ks[6])
            t, y, fy = t_new, y_new, ks[6]
            counters[0] += 1
        h *= min(5.0, max(0.2, 0.9 * (ratio + 1e-16) ** -0.2))
        if h < 1e-14 * max(1.0, abs(t1)):
            raise FloatingPointError(f"step size underflow at t = {t}")
    return y


def _rk4(f, y, t0, t1, dt, grid, out, counters):
    steps = max(1, int(np.ceil((t1 - t0) / dt - 1e-9)))
    h = (t1 - t0) / steps
    fy = f(y)
    for i in range(steps):
        t = t0 + i * h
        k1 = fy
        k2 = f(y + h / 2 * k1)
        k3 = f(y + h / 2 * k2)
        k4 = f(y + h * k3)
        y_new = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        fy_new = f(y_new)
        counters[0] += 1
        counters[1] += 4
        _fill_grid(grid, out, t, t0 + (i + 1) * h if i + 1 < steps else t1, y, y_new, fy, fy_new)
        y, fy = y_new, fy_new
    return y


def _fill_grid(grid, out, t0, t1, y0, y1, f0, f1):
    if grid is None:
        return
    sel = np.flatnonzero((grid >= t0) & (grid <= t1) & np.isnan(out[0, :, 0]))
    if sel.size:
        out[:, sel] = np.moveaxis(_hermite(t0, t1, y0, y1, f0, f1, grid[sel]), 0, 1)


def integrate(knet: KNet, inputs: np.ndarray, *, method: str = "dopri5", rtol: float = DEFAULT_RTOL,
              atol: float = DEFAULT_ATOL, dt: float = 1e-2, grid: np.ndarray | None = None,
              dtype=np.float64) -> Trajectory:
    """Integrate the network for a batch of inputs.

    Parameters
    ----------
    knet : KNet
        The network.
    inputs : array ``[B, F]``
        One row of features per sample (``F = knet.num_features``).
    method : {"dopri5", "rk4"}
        Adaptive Dormand–Prince 5(4) with ``rtol``/``atol``, or RK4 with step ``dt``.
    grid : array, optional
        Times at which to also return all node voltages (``grid_states``).

    Returns
    -------
    Trajectory
    """
    if method not in ("dopri5", "rk4"):
        raise ValueError(f"The 'method' parameter of integrate must be 'dopri5' or 'rk4'. Got {method!r} instead.")
    y = knet.initial_state(inputs).astype(dtype)
    b, n = y.shape
    states = np.empty((b, knet.num_layers + 1, n), dtype=dtype)
    states[:, 0] = y
    grid_arr = None if grid is None else np.asarray(grid, dtype=float)
    out = None if grid_arr is None else np.full((b, grid_arr.size, n), np.nan, dtype=dtype)
    if out is not None:
        out[:, grid_arr <= knet.t_bounds[0]] = y[:, None]
    counters = [0, 0]
    for k, layer in enumerate(knet.layers):
        f = layer_rhs(knet, k, dtype)
        if method == "dopri5":
            y = _dopri5(f, y, layer.t_start, layer.t_stop, rtol, atol, grid_arr, out, counters)
        else:
            y = _rk4(f, y, layer.t_start, layer.t_stop, dt, grid_arr, out, counters)
        states[:, k + 1] = y
    return Trajectory(states, y[:, knet.output_nodes - 1], np.asarray(knet.t_bounds), counters[0],
                      counters[1], grid_arr, out)
