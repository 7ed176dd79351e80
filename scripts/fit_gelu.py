"""Fit the coefficients of gelu's expression form (kcompile.laws.GELU_Q); prints them and their error.

ngspice 39 and Verilog-A have no erf, so kcompile writes

    gelu(z) = relu(z) - exp(-z²/2) · Q(t),   t = T / (|z| + T),   T = 4,

with ``Q`` a polynomial that approximates ``q(t) = |z|·erfc(|z|/√2)·exp(z²/2)/2``
(smooth on t ∈ [0, 1]: q(0) = 1/√(2π), q(1) = 0). The fit is a least-squares
Chebyshev fit of degree 20 in 50-digit arithmetic (mpmath) on 600 Chebyshev
nodes of [0, 1], converted to the power basis in t. Run:

    python3 scripts/fit_gelu.py
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

T, DEGREE, NODES = 4, 20, 600
mp.mp.dps = 50


def q_of_t(t):
    if t == 0:
        return 1 / mp.sqrt(2 * mp.pi)
    z = T * (1 - t) / t
    return z * mp.erfc(z / mp.sqrt(2)) * mp.exp(z * z / 2) / 2


def _at(poly, k):
    return poly[k] if 0 <= k < len(poly) else 0


def fit() -> list[float]:
    ts = [(mp.cos(mp.pi * (k + mp.mpf(0.5)) / NODES) + 1) / 2 for k in range(NODES)]
    rows = mp.matrix(NODES, DEGREE + 1)
    for i, t in enumerate(ts):  # Chebyshev polynomials of s = 2t - 1
        s, prev, cur = 2 * t - 1, mp.mpf(1), 2 * t - 1
        rows[i, 0], rows[i, 1] = prev, cur
        for j in range(2, DEGREE + 1):
            prev, cur = cur, 2 * s * cur - prev
            rows[i, j] = cur
    cheb = mp.qr_solve(rows, mp.matrix([q_of_t(t) for t in ts]))[0]
    # power basis in t: T_0 = 1, T_1 = 2t - 1, T_j = (4t - 2)·T_{j-1} - T_{j-2}
    basis = [[mp.mpf(1)], [mp.mpf(-1), mp.mpf(2)]]
    for _ in range(2, DEGREE + 1):
        p1, p2 = basis[-1], basis[-2]
        basis.append([4 * _at(p1, k - 1) - 2 * _at(p1, k) - _at(p2, k) for k in range(len(p1) + 1)])
    power = [sum(c * _at(poly, k) for c, poly in zip(cheb, basis)) for k in range(DEGREE + 1)]
    return [float(c) for c in power]


if __name__ == "__main__":
    from scipy.special import erf

    coeffs = fit()
    print("GELU_Q = (\n" + "".join(f"    {c!r},\n" for c in coeffs) + ")")
    z = np.linspace(-40, 40, 400001)
    t = T / (np.abs(z) + T)
    approx = np.maximum(z, 0) - np.exp(-0.5 * z * z) * sum(c * t**k for k, c in enumerate(coeffs))
    exact = z * 0.5 * (1 + erf(z * np.sqrt(0.5)))
    print(f"max |error| against z·(1 + erf(z/√2))/2 on [-40, 40]: {np.abs(approx - exact).max():.2g}")
