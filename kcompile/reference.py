"""NumPy reference integrator: the ideal KirchhoffNet ODE, batched and sparse.

``C_n dv_n/dt = Σ_{e: d_e = n} g_e − Σ_{e: s_e = n} g_e``, layer by layer.

Every law of the contract is ``g = scale · φ(a·vs + b·vd + c)``
(:meth:`kcompile.laws.Law.coefficients` and its activation's in-place NumPy
form), so the right-hand side is two sparse products around one elementwise
pass:

    z = A v + c          A [E, N]: row e holds a at s_e and b at d_e
    dv/dt = S φ(z)       S [N, E]: ± scale_e / C_n at d_e / s_e

The state is held node-major (``[N, B]``: a sample's voltages in a column)
so that each non-zero of ``A`` and ``S`` moves one contiguous row of ``B``
numbers. The devices are processed in chunks whose ``z`` fits in the CPU
cache, so ``z`` is written, activated and scattered before it leaves it: at
MNIST size (460k devices, batch 64) this is 5x faster than gathering
``v[src]``, ``v[dst]`` over the whole layer. For the relu laws of
``Δ = vs − vd`` a forward and a reverse device between the same two nodes
share one row of ``A`` (:class:`_LayerRHS`): another 1.35x (docs/performance.md).
Steps: adaptive Dormand–Prince 5(4) (max-norm error control over the whole
batch, so no sample hides behind another; PI step-size control) or
fixed-step RK4.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .errors import InputError
from .knet import KNet
from .laws import LAWS, RELU

DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 1e-11
#: step budget per layer: the most a shipped example takes is 5,604 for both layers (digits, its first 64 test
#: inputs; docs/reliability.md)
MAX_STEPS = 1_000_000

#: bytes of one chunk's pre-activations ``z`` (about half a core's L2 cache)
CHUNK_BYTES = 2 << 20

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def default_threads() -> int:
    """Threads for the right-hand side: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` workers (a forked child makes its own: the parent's threads are gone)."""
    key = (os.getpid(), threads)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="kcompile-rhs")
    return _pools[key]


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

    def __repr__(self) -> str:
        b, k, n = self.states.shape
        grid = "" if self.grid is None else f", a grid of {self.grid.size} times"
        return (f"<Trajectory: {b} samples, {k - 1} layers, {n} nodes, {self.outputs.shape[1]} outputs; "
                f"{self.steps} steps{grid}>")


# ---------------------------------------------------------------- right-hand side

class _LayerRHS:
    """``f(v) -> dv/dt`` for one layer, node-major: ``v`` and the result are ``[N, B]``.

    Two forms, the faster that fits the law:

    * **pairs** (relu of ``Δ``: ``relu``, ``shift_relu``): devices between the
      same two nodes share one row ``Δ_p = v_lo − v_hi`` of ``A``, and
      ``relu(α·Δ + c) = α·max(Δ, τ) + c`` (``α > 0``) or ``α·min(Δ, τ) + c``
      (``α < 0``) with ``τ = −c/α``; a row carries one "max" and one "min"
      device (a forward and a reverse device), so the gather ``A v`` is
      half as long, the offset needs no pass of its own, and the constant
      ``c`` terms sum into one bias per node;
    * **affine** (every other law): one row of ``A`` per device,
      ``φ(A v + c)`` (relu as ``max(A v, −c)`` plus a bias).
    """

    def __init__(self, knet: KNet, k: int, dtype, threads: int = 1):
        layer = knet.layers[k]
        self.n, self.e, self.dtype, self.threads = knet.num_nodes, layer.num_devices, np.dtype(dtype), threads
        src, dst, rows = layer.src, layer.dst, np.arange(layer.num_devices)
        inv_c = 1.0 / knet.capacitance
        self._chunks: dict[int, list] = {}
        self.bias = None
        law = LAWS[knet.law]
        relu = law.activation is RELU
        self.activation = law.activation.numpy
        a, b, c, scale = (np.broadcast_to(np.asarray(x, float), (self.e,)) for x in law.coefficients(layer.theta))
        if relu and np.array_equal(a, -b):
            self.mode = "pairs"
            self._init_pairs(src, dst, a, c, scale, inv_c, dtype)
            return
        self.mode = "affine"
        self.A = _matrix(rows, src, a, rows, dst, b, (self.e, self.n), dtype)  # ground columns dropped
        self.S = _scatter(src, dst, rows, scale, inv_c, self.n, self.e, dtype)
        if relu:  # relu(z + c) = max(z, -c) + c: the c terms become a bias
            self.c = (-c).astype(dtype)[:, None]
            self.bias = _bias(src, dst, scale * c, inv_c, self.n, dtype)
        else:
            self.c = c.astype(dtype)[:, None]

    def _init_pairs(self, src, dst, a, c, scale, inv_c, dtype):
        n = self.n
        lo, hi = np.minimum(src, dst), np.maximum(src, dst)
        alpha = np.where(src == lo, a, -a)  # z = alpha·(v_lo − v_hi) + c
        is_min = alpha < 0
        live = alpha != 0
        # slot rank of each device among the devices of its (pair, kind): rank r goes to the pair's r-th row
        key = (lo.astype(np.int64) * (n + 1) + hi) * 2 + is_min
        order = np.argsort(key, kind="stable")
        ks = key[order]
        first = np.r_[0, np.flatnonzero(ks[1:] != ks[:-1]) + 1]
        rank = np.empty(self.e, np.int64)
        rank[order] = np.arange(self.e) - np.repeat(first, np.diff(np.r_[first, self.e]))
        pair = lo.astype(np.int64) * (n + 1) + hi
        row_key, row = np.unique(pair[live] * (int(rank.max(initial=0)) + 1) + rank[live], return_inverse=True)
        nrows = row_key.size
        rlo, rhi = np.zeros(nrows, np.int64), np.zeros(nrows, np.int64)
        rlo[row], rhi[row] = lo[live], hi[live]
        r = np.arange(nrows)
        self.A = _matrix(r, rlo, np.ones(nrows), r, rhi, -np.ones(nrows), (nrows, n), dtype)
        al, cl, sl = alpha[live], c[live], scale[live]
        tau = -cl / al
        weight = sl * al
        self.taus, self.S = [], []
        for sel in (~is_min[live], is_min[live]):  # max slots, then min slots
            t = np.zeros(nrows)
            t[row[sel]] = tau[sel]
            self.taus.append(t.astype(dtype)[:, None])
            self.S.append(_scatter(src[live][sel], dst[live][sel], row[sel], weight[sel], inv_c, n, nrows, dtype))
        # constant currents: the c of every live device, relu(c) of a device with alpha = 0
        const = np.where(live, scale * c, scale * np.maximum(c, 0.0))
        self.bias = _bias(src, dst, const, inv_c, n, dtype)
        self.rows = nrows

    def chunks(self, batch: int) -> list:
        """Per chunk of rows of ``A``, the slices each form needs, sized for ``batch`` columns."""
        if batch not in self._chunks:
            total = self.rows if self.mode == "pairs" else self.e
            size = max(1024, CHUNK_BYTES // (batch * self.dtype.itemsize))
            bounds = [(lo, min(lo + size, total)) for lo in range(0, total, size)]
            if self.mode == "pairs":
                (tmax, tmin), (smax, smin) = self.taus, self.S
                chunks = [(self.A[lo:hi], tmax[lo:hi], tmin[lo:hi], smax[:, lo:hi], smin[:, lo:hi])
                          for lo, hi in bounds]
            else:
                chunks = [(self.A[lo:hi], self.c[lo:hi], self.S[:, lo:hi]) for lo, hi in bounds]
            self._chunks[batch] = chunks
        return self._chunks[batch]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        chunks = self.chunks(v.shape[1])
        parts = min(self.threads, len(chunks))
        if parts <= 1:
            out = self._partial(v, chunks)
        else:  # contiguous groups of chunks in threads (the sparse products and ufuncs release the GIL)
            bounds = np.linspace(0, len(chunks), parts + 1).astype(int)
            groups = [chunks[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
            out, *rest = _pool(parts).map(lambda group: self._partial(v, group), groups)
            for part in rest:
                out += part
        if self.bias is not None:
            out += self.bias
        return out

    def _partial(self, v: np.ndarray, chunks: list) -> np.ndarray:
        """The devices of ``chunks``' share of ``dv/dt`` (without the bias)."""
        out = np.zeros_like(v)
        if self.mode == "pairs":
            for a, tmax, tmin, smax, smin in chunks:
                d = a @ v
                z = np.maximum(d, tmax)
                np.minimum(d, tmin, out=d)
                out += smax @ z
                out += smin @ d
        else:
            relu_bias = self.bias is not None
            for a, c, s in chunks:
                z = a @ v
                if relu_bias:
                    np.maximum(z, c, out=z)
                else:
                    z += c
                    self.activation(z)
                out += s @ z
        return out


def _scatter(src, dst, cols, weight, inv_c, n, ncols, dtype) -> sp.csc_matrix:
    """``[N, ncols]``: ``+weight/C`` at the drain's row, ``−weight/C`` at the source's row (ground dropped)."""
    inv = np.r_[0.0, inv_c]
    return _matrix(dst, cols, weight * inv[dst], src, cols, -weight * inv[src], (n, ncols), dtype,
                   drop="rows").tocsc()


def _bias(src, dst, current, inv_c, n, dtype) -> np.ndarray:
    """``[N, 1]``: the net constant current into each node over its capacitance."""
    inv = np.r_[0.0, inv_c]
    out = np.bincount(dst, current * inv[dst], minlength=n + 1) - np.bincount(src, current * inv[src], minlength=n + 1)
    return out[1:].astype(dtype)[:, None]


def _matrix(r1, c1, v1, r2, c2, v2, shape, dtype, drop="cols") -> sp.csr_matrix:
    """CSR matrix with entries ``v1`` at ``(r1, c1)`` and ``v2`` at ``(r2, c2)``; node 0 (ground) dropped."""
    r, c, v = np.r_[r1, r2], np.r_[c1, c2], np.r_[v1, v2]
    keep = (c if drop == "cols" else r) > 0
    r, c = r[keep], c[keep]
    if drop == "cols":
        c = c - 1
    else:
        r = r - 1
    return sp.csr_matrix((v[keep].astype(dtype), (r, c)), shape=shape, dtype=dtype)


def layer_rhs(knet: KNet, k: int, dtype=np.float64) -> Callable[[np.ndarray], np.ndarray]:
    """``f(v) -> dv/dt`` for layer ``k``, with ``v`` of shape ``[B, N]``."""
    f = _LayerRHS(knet, k, dtype)
    return lambda v: f(np.ascontiguousarray(np.asarray(v, dtype).T)).T


# ---------------------------------------------------------------- steppers
# The steppers see states node-major ([N, B]); ``integrate`` transposes at its edges.

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

# PI step-size control (Hairer, Nørsett & Wanner, Solving ODEs I, §II.4; DOPRI5's constants)
_SAFETY, _BETA = 0.9, 0.04
_ALPHA = 0.2 - 0.75 * _BETA
_GROW, _SHRINK = 5.0, 0.2


#: a step may grow by this factor to reach the end of the window in one go
_STRETCH = 1.1


def _first_step(f, y, fy, rtol, atol, span, counters):
    """Starting step (Hairer, Nørsett & Wanner, Solving ODEs I, §II.4), max norm.

    ``h0 = 0.01·|y|/|f|``, one explicit Euler step of ``h0`` to estimate the
    second derivative, then ``h1 = (0.01 / max(|f|, |f'|))^(1/5)`` in units of
    the tolerance; ``min(100·h0, h1)``. One extra right-hand side, and several
    fewer steps at loose tolerances (the ramp from a tiny first step).
    """
    scale = atol + rtol * np.abs(y)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below
        d0, d1 = float(np.max(np.abs(y) / scale)), float(np.max(np.abs(fy) / scale))
    if not np.isfinite(d1):
        raise FloatingPointError("the derivative overflows at the start of the window (|v| up to "
                                 f"{np.abs(y).max():.3g})")
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = f(y + h0 * fy)
    counters[1] += 1
    f1 -= fy
    f1 /= scale
    d2 = float(np.max(np.abs(f1))) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    return min(100 * h0, h1, span)


def _hermite(t0, t1, y0, y1, f0, f1, ts):
    """Cubic Hermite interpolation between two accepted steps, at times ``ts``."""
    h = t1 - t0
    s = (np.asarray(ts) - t0) / h
    s = s[:, None, None]
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y0 + h10 * h * f0 + h01 * y1 + h11 * h * f1  # [T, N, B]


def _combine(y, h, coeffs, ks):
    """``y + h·Σ coeffs[i]·ks[i]`` (zero coefficients skipped) in one new array."""
    out = y.copy()
    for a, k in zip(coeffs, ks):
        if a:
            out += (h * a) * k
    return out


def _dopri5(f, y, t0, t1, rtol, atol, grid, out, counters, max_steps=None):
    t, start = t0, counters[0]
    fy = f(y)
    counters[1] += 1
    h = _first_step(f, y, fy, rtol, atol, t1 - t0, counters)
    prev_ratio, rejected = 1e-4, False
    while t < t1:
        h = t1 - t if t + _STRETCH * h >= t1 else h  # no sliver of a step at the end of the window
        ks = [fy]
        for i in range(1, 7):
            yi = _combine(y, h, _A[i], ks)
            ks.append(f(yi))
        counters[1] += 6
        y_new = yi  # the 7th stage is evaluated at the 5th-order solution (FSAL)
        err = _combine(np.zeros_like(y), h, _E, ks)
        scale = np.maximum(np.abs(y), np.abs(y_new))
        scale *= rtol
        scale += atol
        np.abs(err, out=err)
        err /= scale
        ratio = float(err.max())
        if ratio <= 1.0:
            t_new = t1 if t1 - (t + h) <= 1e-12 * max(1.0, abs(t1)) else t + h
            _fill_grid(grid, out, t, t_new, y, y_new, fy, ks[6])
            t, y, fy = t_new, y_new, ks[6]
            counters[0] += 1
            factor = _SAFETY * (ratio + 1e-16) ** -_ALPHA * prev_ratio ** _BETA
            factor = min(1.0 if rejected else _GROW, max(_SHRINK, factor))
            prev_ratio, rejected = max(ratio, 1e-4), False
        else:
            if not np.isfinite(ratio) and np.abs(y).max() > 1e100:
                raise FloatingPointError(f"the state grows without bound (|v| = {np.abs(y).max():.3g} at t = {t:.6g})")
            factor, rejected = max(_SHRINK, _SAFETY * ratio ** -_ALPHA), True
        h *= factor
        if h < 1e-14 * max(1.0, abs(t1)):
            raise FloatingPointError(f"the step size underflowed at t = {t:.6g} (the state overflowed, or the "
                                     "network is too stiff for an explicit solver)")
        _budget(counters[0] - start, t0, t, t1, max_steps)
    return y


def _budget(steps, t0, t, t1, max_steps):
    """Stop an integration that would take more than ``max_steps`` steps (projected from its pace every 1000)."""
    if max_steps is not None and steps and steps % 1000 == 0 and steps * (t1 - t0) > max_steps * (t - t0):
        raise FloatingPointError(f"at t = {t:.6g} after {steps:,} steps, the window [{t0:g}, {t1:g}] would take "
                                 f"more than {max_steps:,} steps (the network is too stiff for an explicit solver)")


def _rk4(f, y, t0, t1, dt, grid, out, counters, max_steps=None):
    steps = max(1, int(np.ceil((t1 - t0) / dt - 1e-9)))
    if max_steps is not None and steps > max_steps:
        raise FloatingPointError(f"the window [{t0:g}, {t1:g}] takes {steps:,} steps of dt = {dt:g}, more than "
                                 f"{max_steps:,}")
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
    """Write the grid points in ``[t0, t1]`` into ``out [B, T, N]`` (states arrive ``[N, B]``)."""
    if grid is None:
        return
    sel = np.flatnonzero((grid >= t0) & (grid <= t1) & np.isnan(out[0, :, 0]))
    if sel.size:
        out[:, sel] = _hermite(t0, t1, y0, y1, f0, f1, grid[sel]).transpose(2, 0, 1)


def integrate(knet: KNet, inputs: np.ndarray, *, method: str = "dopri5", rtol: float = DEFAULT_RTOL,
              atol: float = DEFAULT_ATOL, dt: float = 1e-2, grid: np.ndarray | None = None,
              dtype=np.float64, rhs: Callable | None = None, threads: int | None = None,
              max_steps: int | None = MAX_STEPS) -> Trajectory:
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
    dtype : numpy dtype
        Arithmetic precision. ``float32`` halves the memory traffic of the
        right-hand side (about 2.5x faster at MNIST size) but cannot meet
        tolerances much below 1e-6; keep ``float64`` for the defaults.
    rhs : callable, optional
        ``rhs(knet, k, dtype) -> f`` with ``f(v [B, N]) -> dv/dt [B, N]``: replaces
        the ideal law (the characterised reference uses measured cell tables).
    threads : int, optional
        Threads for the ideal right-hand side of large layers (default: every
        core this process may use, :func:`default_threads`; a layer that fits
        one cache-sized chunk of devices always runs in the calling thread).
    max_steps : int, optional
        Step budget per layer (``None``: unlimited). A stiff network (tiny
        capacitances against steep devices) would otherwise run for hours.

    Returns
    -------
    Trajectory

    Raises
    ------
    InputError
        The network is too stiff for the budget or the state overflows; the
        message names the layer and the smallest capacitance.
    """
    if method not in ("dopri5", "rk4"):
        raise ValueError(f"The 'method' parameter of integrate must be 'dopri5' or 'rk4'. Got {method!r} instead.")
    y0 = knet.initial_state(inputs).astype(dtype)
    b, n = y0.shape
    states = np.empty((b, knet.num_layers + 1, n), dtype=dtype)
    states[:, 0] = y0
    grid_arr = None if grid is None else np.asarray(grid, dtype=float)
    out = None if grid_arr is None else np.full((b, grid_arr.size, n), np.nan, dtype=dtype)
    if out is not None:
        out[:, grid_arr <= knet.t_bounds[0]] = y0[:, None]
    counters = [0, 0]
    y = np.ascontiguousarray(y0.T)  # node-major [N, B]
    for k, layer in enumerate(knet.layers):
        if rhs is None:
            f = _LayerRHS(knet, k, dtype, threads or default_threads())
        else:
            batch_major = rhs(knet, k, dtype)
            f = lambda v, g=batch_major: np.ascontiguousarray(g(v.T).T)  # noqa: E731 (node-major adapter)
        try:
            if method == "dopri5":
                y = _dopri5(f, y, layer.t_start, layer.t_stop, rtol, atol, grid_arr, out, counters, max_steps)
            else:
                y = _rk4(f, y, layer.t_start, layer.t_stop, dt, grid_arr, out, counters, max_steps)
        except FloatingPointError as exc:
            start = float(np.abs(y0).max(initial=0.0))
            raise InputError(f"the reference integrator gave up on layer {k}: {exc}. The inputs start the nodes at "
                             f"|v| up to {start:.3g}; smallest node capacitance {knet.capacitance.min():.3g}, "
                             f"largest |θ| {np.abs(layer.theta).max(initial=0):.3g}: "
                             + ("scale the inputs to the range the network was made for, or " if start > 1e3 else "")
                             + "rescale capacitance, θ or t_bounds so that the time constants C/θ are not tiny "
                             "against the layer windows") from None
        states[:, k + 1] = y.T
    return Trajectory(states, states[:, -1, knet.output_nodes - 1], np.asarray(knet.t_bounds), counters[0],
                      counters[1], grid_arr, out)
