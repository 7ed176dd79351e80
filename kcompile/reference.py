"""NumPy reference integrator: the ideal KirchhoffNet ODE, batched and sparse.

``C_n dv_n/dt = Σ_{e: d_e = n} g_e − Σ_{e: s_e = n} g_e``, layer by layer.

Every law of the contract is ``g = scale · φ(a·vs + b·vd + c)`` with ``φ`` one
of relu, tanh or identity (:data:`_AFFINE_FORMS`), so the right-hand side is
two sparse products around one elementwise pass:

    z = A v + c          A [E, N]: row e holds a at s_e and b at d_e
    dv/dt = S φ(z)       S [N, E]: ± scale_e / C_n at d_e / s_e

The state is held node-major (``[N, B]``: a sample's voltages in a column)
so that each non-zero of ``A`` and ``S`` moves one contiguous row of ``B``
numbers. The devices are processed in chunks whose ``z`` fits in the CPU
cache, so ``z`` is written, activated and scattered before it leaves it: at
MNIST size (460k devices, batch 64) this is 5x faster than gathering
``v[src]``, ``v[dst]`` over the whole layer (see docs/performance.md).
Steps: adaptive Dormand–Prince 5(4) (max-norm error control over the whole
batch, so no sample hides behind another; PI step-size control), fixed-step
RK4, or adaptive Runge–Kutta–Chebyshev (RKC, second order, stabilised
explicit) for large networks whose hub nodes make the ODE mildly stiff.
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

#: bytes of one chunk's pre-activations ``z`` (about half a core's L2 cache)
CHUNK_BYTES = 2 << 20


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


# ---------------------------------------------------------------- right-hand side

def _relu(z):
    np.maximum(z, 0.0, out=z)


def _tanh(z):
    np.tanh(z, out=z)


#: law -> (theta [E, P] -> (a, b, c, scale), in-place activation or None for identity);
#: the same current as :data:`kcompile.laws.LAWS` (tests/test_reference_integrator.py checks it)
_AFFINE_FORMS: dict[str, tuple[Callable, Callable | None]] = {
    "relu": (lambda t: (t[:, 0], -t[:, 0], t[:, 1], 1.0), _relu),
    "shift_relu": (lambda t: (1.0, -1.0, -t[:, 0], t[:, 1]), _relu),
    "relu_affine": (lambda t: (t[:, 0], t[:, 1], t[:, 2], 1.0), _relu),
    "tanh_affine": (lambda t: (t[:, 0], t[:, 1], t[:, 2], 1.0), _tanh),
    "tanh": (lambda t: (t[:, 0], -t[:, 0], t[:, 1], 1.0), _tanh),
    "linear": (lambda t: (1.0, -1.0, 0.0, t[:, 0]), None),
}


class _LayerRHS:
    """``f(v) -> dv/dt`` for one layer, node-major: ``v`` and the result are ``[N, B]``."""

    def __init__(self, knet: KNet, k: int, dtype):
        layer = knet.layers[k]
        self.n, self.e, self.dtype = knet.num_nodes, layer.num_devices, np.dtype(dtype)
        src, dst, rows = layer.src, layer.dst, np.arange(layer.num_devices)
        form = _AFFINE_FORMS.get(knet.law)
        if form is None:  # a law without an affine form: gather, law, scatter
            self.current, self.activation = LAWS[knet.law].current, None
            self.theta = layer.theta.astype(dtype)
            self.src, self.dst = src, dst
            scale = np.ones(self.e)
        else:
            coeffs, self.activation = form
            a, b, c, scale = (np.broadcast_to(np.asarray(x, float), (self.e,)) for x in coeffs(layer.theta))
            self.current = None
            self.c = c.astype(dtype)[:, None]
            self.A = _matrix(rows, src, a, rows, dst, b, (self.e, self.n), dtype)  # ground columns dropped
        inv_c = 1.0 / knet.capacitance
        # S: + scale/C at the drain's row, - scale/C at the source's row (ground rows dropped)
        self.S = _matrix(dst, rows, scale * inv_c[dst - 1], src, rows, -scale * inv_c[src - 1],
                         (self.n, self.e), dtype, drop="rows").tocsc()
        self._chunks: dict[int, list] = {}

    def spectral_bound(self) -> float:
        """Upper bound on the Jacobian's spectral radius: ``max_n Σ |S| |A|`` (row sums, |φ'| ≤ 1).

        For the laws of ``Δ = vs − vd`` the Jacobian is ``C⁻¹`` times a weighted
        graph Laplacian (symmetric), so this is Gershgorin's bound on a real spectrum.
        """
        if self.current is not None:
            return float("inf")
        absA, absS = abs(self.A).astype(np.float64), abs(self.S).astype(np.float64)
        return float((absS @ (absA @ np.ones(self.n))).max(initial=0.0))

    def chunks(self, batch: int) -> list:
        """``(A_c, c_c, S_c)`` per chunk of devices, sized for ``batch`` columns."""
        if batch not in self._chunks:
            size = max(1024, CHUNK_BYTES // (batch * self.dtype.itemsize))
            bounds = list(range(0, self.e, size)) + [self.e]
            self._chunks[batch] = [(self.A[lo:hi], self.c[lo:hi], self.S[:, lo:hi])
                                   for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        return self._chunks[batch]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if self.current is not None:
            vg = np.concatenate([np.zeros((1, v.shape[1]), v.dtype), v])
            return self.S @ self.current(vg[self.src].T, vg[self.dst].T, self.theta).T
        out = np.zeros_like(v)
        for a, c, s in self.chunks(v.shape[1]):
            z = a @ v
            z += c
            if self.activation is not None:
                self.activation(z)
            out += s @ z
        return out


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


def _dopri5(f, y, t0, t1, rtol, atol, grid, out, counters):
    t = t0
    fy = f(y)
    counters[1] += 1
    scale = atol + rtol * np.abs(y)  # first step from the local derivative scale
    d0, d1 = np.max(np.abs(y) / scale), np.max(np.abs(fy) / scale)
    h = min(0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6, t1 - t0)
    prev_ratio, rejected = 1e-4, False
    while t < t1:
        h = min(h, t1 - t)
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
            factor, rejected = max(_SHRINK, _SAFETY * ratio ** -_ALPHA), True
        h *= factor
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


def _rkc_step(f, y, fy, h, s):
    """One step of Verwer's second-order RKC with ``s`` stages (damping ε = 2/13), ``s - 1`` evaluations.

    Sommeijer, Shampine & Verwer, "RKC: an explicit solver for parabolic PDEs",
    J. Comput. Appl. Math. 88 (1998): Chebyshev three-term recursion, stable on
    ``[-β(s), 0]`` with ``β(s) ≈ 0.653 s²``.
    """
    w0 = 1.0 + 2.0 / (13.0 * s * s)
    temp1 = w0 * w0 - 1.0
    temp2 = np.sqrt(temp1)
    arg = s * np.log(w0 + temp2)
    w1 = np.sinh(arg) * temp1 / (np.cosh(arg) * s * temp2 - w0 * np.sinh(arg))
    bjm1 = bjm2 = 1.0 / (2.0 * w0) ** 2
    yjm2 = y
    yjm1 = y + (h * w1 * bjm1) * fy
    zjm1, zjm2, dzjm1, dzjm2, d2zjm1, d2zjm2 = w0, 1.0, 1.0, 0.0, 0.0, 0.0
    for _ in range(2, s + 1):
        zj = 2.0 * w0 * zjm1 - zjm2
        dzj = 2.0 * w0 * dzjm1 - dzjm2 + 2.0 * zjm1
        d2zj = 2.0 * w0 * d2zjm1 - d2zjm2 + 4.0 * dzjm1
        bj = d2zj / dzj**2
        ajm1 = 1.0 - zjm1 * bjm1
        mu, nu = 2.0 * w0 * bj / bjm1, -bj / bjm2
        mus = mu * w1 / w0
        yj = f(yjm1)  # y_j = mu y_{j-1} + nu y_{j-2} + (1 - mu - nu) y + h mus (f(y_{j-1}) - a_{j-1} f(y))
        yj *= h * mus
        yj += (-h * mus * ajm1) * fy
        yj += mu * yjm1
        yj += nu * yjm2
        yj += (1.0 - mu - nu) * y
        yjm2, yjm1 = yjm1, yj
        bjm2, bjm1 = bjm1, bj
        zjm2, zjm1, dzjm2, dzjm1, d2zjm2, d2zjm1 = zjm1, zj, dzjm1, dzj, d2zjm1, d2zj
    return yjm1


#: RKC stage count bound: a step needing more is shortened instead
_RKC_MAX_STAGES = 200


def _rkc(f, y, t0, t1, rtol, atol, rho, grid, out, counters):
    """Adaptive RKC over ``[t0, t1]``; ``rho`` bounds the Jacobian's spectral radius.

    Error estimate ``(12 (y_n − y_{n+1}) + 6 h (f_n + f_{n+1})) / 15`` (the RKC
    paper's), in the max norm over the batch like :func:`_dopri5`; step factor
    ``0.8 err^(-1/3)`` within ``[0.1, 5]``, no growth right after a rejection.
    """
    t = t0
    fy = f(y)
    counters[1] += 1
    scale = atol + rtol * np.abs(y)
    d0, d1 = np.max(np.abs(y) / scale), np.max(np.abs(fy) / scale)
    h = min(0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6, t1 - t0)
    h_cap = 0.653 * _RKC_MAX_STAGES**2 / rho if rho > 0 else np.inf
    rejected = False
    while t < t1:
        h = min(h, t1 - t, h_cap)
        stages = max(2, 1 + int(np.sqrt(1.0 + 1.54 * h * rho)))
        y_new = _rkc_step(f, y, fy, h, stages)
        f_new = f(y_new)
        counters[1] += stages
        err = y - y_new
        err *= 0.8
        err += (0.4 * h) * fy
        err += (0.4 * h) * f_new
        scale = np.maximum(np.abs(y), np.abs(y_new))
        scale *= rtol
        scale += atol
        np.abs(err, out=err)
        err /= scale
        ratio = float(err.max())
        factor = 0.8 * (ratio + 1e-16) ** (-1.0 / 3.0)
        if ratio <= 1.0:
            t_new = t1 if t1 - (t + h) <= 1e-12 * max(1.0, abs(t1)) else t + h
            _fill_grid(grid, out, t, t_new, y, y_new, fy, f_new)
            t, y, fy = t_new, y_new, f_new
            counters[0] += 1
            factor = min(1.0 if rejected else 5.0, max(0.1, factor))
            rejected = False
        else:
            factor, rejected = max(0.1, factor), True
        h *= factor
        if h < 1e-14 * max(1.0, abs(t1)):
            raise FloatingPointError(f"step size underflow at t = {t}")
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
              dtype=np.float64, rhs: Callable | None = None) -> Trajectory:
    """Integrate the network for a batch of inputs.

    Parameters
    ----------
    knet : KNet
        The network.
    inputs : array ``[B, F]``
        One row of features per sample (``F = knet.num_features``).
    method : {"dopri5", "rk4", "rkc"}
        Adaptive Dormand–Prince 5(4) with ``rtol``/``atol``, RK4 with step ``dt``,
        or adaptive second-order Runge–Kutta–Chebyshev with ``rtol``/``atol``.
        RKC takes as many stages per step as the Jacobian's spectral radius
        needs (bounded from the weights), so its steps are set by accuracy,
        not stability: on the MNIST checkpoint it needs several times fewer
        right-hand sides than dopri5 at loose tolerances (docs/performance.md).
        It assumes a near-real spectrum: true for every law of ``Δ = vs − vd``
        (the Jacobian is a weighted graph Laplacian); for ``relu_affine`` and
        ``tanh_affine`` prefer dopri5.
    grid : array, optional
        Times at which to also return all node voltages (``grid_states``).
    dtype : numpy dtype
        Arithmetic precision. ``float32`` halves the memory traffic of the
        right-hand side (about 2.5x faster at MNIST size) but cannot meet
        tolerances much below 1e-6; keep ``float64`` for the defaults.
    rhs : callable, optional
        ``rhs(knet, k, dtype) -> f`` with ``f(v [B, N]) -> dv/dt [B, N]``: replaces
        the ideal law (the characterised reference uses measured cell tables).

    Returns
    -------
    Trajectory
    """
    if method not in ("dopri5", "rk4", "rkc"):
        raise ValueError("The 'method' parameter of integrate must be 'dopri5', 'rk4' or 'rkc'. "
                         f"Got {method!r} instead.")
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
            f = _LayerRHS(knet, k, dtype)
        else:
            batch_major = rhs(knet, k, dtype)
            f = lambda v, g=batch_major: np.ascontiguousarray(g(v.T).T)  # noqa: E731 (node-major adapter)
        if method == "dopri5":
            y = _dopri5(f, y, layer.t_start, layer.t_stop, rtol, atol, grid_arr, out, counters)
        elif method == "rkc":
            rho = f.spectral_bound() if rhs is None else _LayerRHS(knet, k, np.float64).spectral_bound()
            if not np.isfinite(rho):
                raise ValueError(f"method 'rkc' needs a law with an affine form; {knet.law!r} has none")
            y = _rkc(f, y, layer.t_start, layer.t_stop, rtol, atol, rho, grid_arr, out, counters)
        else:
            y = _rk4(f, y, layer.t_start, layer.t_stop, dt, grid_arr, out, counters)
        states[:, k + 1] = y.T
    return Trajectory(states, states[:, -1, knet.output_nodes - 1], np.asarray(knet.t_bounds), counters[0],
                      counters[1], grid_arr, out)
