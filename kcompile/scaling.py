"""Physical scaling between model units and volts, amperes, farads and seconds, and exact rescalings of a network.

:class:`Scaling` maps model units to physical ones: ``V = vcm + v0·v``,
``I = i0·g``, ``C = c_unit·c``, one model time unit ``τ = c_unit·v0/i0`` seconds.

:class:`Rescaling`: the ODE ``C·dv/dt = Σ g(vs, vd, θ)`` admits exact
rescalings ``v = α·u`` (α > 0). Every law is ``g = scale·φ(a·vs + b·vd + c)``
(:meth:`kcompile.laws.Law.coefficients`); two cases, derived from the law's
declaration (form × activation), never from a table of laws:

* **homogeneous** ``φ`` (``φ(α·z) = α·φ(z)``: relu, leaky relu, identity):
  ``g(α·u, θ) = α·g(u, θ')`` with the θ columns that enter ``c`` (the
  *offsets*) divided by α; capacitance and slopes unchanged, so the
  rescaled network keeps its θ inside a cell's calibrated box;
* any other ``φ``, when the θ columns that enter ``a`` and ``b`` (the
  *slopes*) enter nothing else and ``a = b = 0`` without them:
  ``g(α·u, θ) = g(u, θ')`` with the slopes multiplied by α, and
  ``α·C·du/dt = Σ g(u, θ')``: capacitance × α.

:func:`rescale` returns the network ``u = v/α``; :meth:`Rescaling.physical`
the scaling that maps the ORIGINAL model units onto the same circuit, so
that a build of the rescaled network reads back in the original units
(:mod:`kcompile.mapping`, :func:`kcompile.mapping.plan_scaling`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from .knet import KNet, _frozen


@dataclass(frozen=True)
class Scaling:
    """Physical scaling: ``V = vcm + v0·v``, ``I = i0·g``, ``C = c_unit·c``.

    The default is the identity (model units are volts, amperes, farads and
    seconds), which is what the behavioural level uses to check the compiler.
    """

    v0: float = 1.0
    vcm: float = 0.0
    i0: float = 1.0
    c_unit: float = 1.0

    @property
    def tau(self) -> float:
        """Seconds per model time unit: ``c_unit·v0/i0``."""
        return self.c_unit * self.v0 / self.i0

    @property
    def is_identity(self) -> bool:
        return self == Scaling()


# ---------------------------------------------------------------- exact rescalings

#: relative tolerance of the numerical checks that derive and verify a rescaling
EXACT_RTOL = 1e-12


@dataclass(frozen=True)
class Rescaling:
    """How a law's networks rescale exactly under ``v = α·u`` and a current gain β (see the module docstring).

    Attributes
    ----------
    law : str
    kind : {"homogeneous", "slopes", "none"}
        Offsets divided by α (capacitance kept), slopes multiplied by α (capacitance × α), or no exact
        rescaling (``why`` says why).
    slopes, offsets : tuple of int
        The θ columns that enter only ``a``/``b``, and those that enter only ``c``.
    gains : tuple of int
        The θ columns a current gain β multiplies (homogeneous laws: the output scale, else the slopes and
        offsets; then capacitance × β too): ``g(v, β·θ) = β·g(v, θ)``. Empty: no current gain.
    why : str
        For ``"none"``: what the law's declaration lacks.
    """

    law: str
    kind: str
    slopes: tuple[int, ...]
    offsets: tuple[int, ...]
    gains: tuple[int, ...] = ()
    why: str = ""

    def theta(self, theta: np.ndarray, alpha: float, beta: float = 1.0) -> np.ndarray:
        """θ of the rescaled network (``[E, P]``): offsets / α or slopes × α, then the gain columns × β."""
        out = np.array(theta, dtype=float)
        if self.kind == "homogeneous":
            out[:, list(self.offsets)] /= alpha
        elif self.kind == "slopes":
            out[:, list(self.slopes)] *= alpha
        elif alpha != 1.0:
            raise ValueError(f"law {self.law!r} has no exact rescaling: {self.why}")
        if beta != 1.0:
            if not self.gains:
                raise ValueError(f"law {self.law!r} has no current gain (its activation is not homogeneous)")
            out[:, list(self.gains)] *= beta
        return out

    def capacitance(self, alpha: float, beta: float = 1.0) -> float:
        """Factor of every node capacitance: β (homogeneous) or α (slopes)."""
        return alpha if self.kind == "slopes" else beta

    def physical(self, scaling: Scaling, alpha: float, beta: float = 1.0) -> Scaling:
        """The scaling of the ORIGINAL model units onto the circuit of the rescaled network at ``scaling``:
        ``v0/α`` volts per unit, and ``i0·β/α`` amperes and ``c_unit·β`` farads per unit (homogeneous) or
        ``c_unit·α`` farads per unit (slopes); ``τ`` and ``vcm`` unchanged."""
        if alpha == 1.0 and beta == 1.0:
            return scaling
        if self.kind == "homogeneous":
            return dataclasses.replace(scaling, v0=scaling.v0 / alpha, i0=scaling.i0 * beta / alpha,
                                       c_unit=scaling.c_unit * beta)
        return dataclasses.replace(scaling, v0=scaling.v0 / alpha, c_unit=scaling.c_unit * alpha)


def argument_coefficients(law, theta: np.ndarray) -> np.ndarray:
    """``(a, b, c, scale)`` of ``g = scale·φ(a·vs + b·vd + c)`` for one θ row
    (:meth:`kcompile.laws.Law.coefficients`)."""
    return np.array([np.ravel(x)[0] for x in np.broadcast_arrays(*law.coefficients(theta[None, :]))], dtype=float)


def _roles(law) -> tuple[list[int], list[int], list[int], list[int]]:
    """The θ columns that move (linearly) only ``a``/``b``, only ``c``, only the output scale, and the others."""
    p = law.num_params
    base = argument_coefficients(law, np.zeros(p))
    slopes, offsets, scales, other = [], [], [], []
    for j in range(p):
        unit = np.eye(p)[j]
        one, two = argument_coefficients(law, unit) - base, argument_coefficients(law, 2 * unit) - base
        linear = np.allclose(two, 2 * one, rtol=EXACT_RTOL, atol=0.0)
        moves = np.abs(one) > 0
        if linear and moves[:2].any() and not moves[2:].any():
            slopes.append(j)
        elif linear and moves[2] and not moves[[0, 1, 3]].any():
            offsets.append(j)
        elif linear and moves[3] and not moves[:3].any():
            scales.append(j)
        elif moves.any():
            other.append(j)
    return slopes, offsets, scales, other


def _exact(law, candidate: Rescaling, rng: np.random.Generator) -> bool:
    """Whether ``candidate`` satisfies its identities on random voltages, θ, α and β (relative ``EXACT_RTOL``)."""
    theta = rng.uniform(-2.0, 2.0, (64, law.num_params))
    vs, vd = rng.uniform(-6.0, 6.0, 64), rng.uniform(-6.0, 6.0, 64)
    for alpha, beta in ((0.37, 1.0), (2.5, 1.0), (11.0, 1.0)) + (((1.0, 3.3), (4.0, 0.6)) if candidate.gains else ()):
        new = candidate.theta(theta, alpha, beta)
        lhs = law.current(alpha * vs, alpha * vd, theta) * beta
        rhs = law.current(vs, vd, new) * (alpha if candidate.kind == "homogeneous" else 1.0)
        if not np.allclose(lhs, rhs, rtol=EXACT_RTOL, atol=EXACT_RTOL * (1.0 + np.abs(lhs).max())):
            return False
    return True


@functools.lru_cache(maxsize=None)
def rescaling(law_name: str) -> Rescaling:
    """The exact rescaling of ``law_name``, derived from its declaration (:data:`kcompile.laws.LAWS`) and
    verified numerically (:func:`_exact`)."""
    from .laws import LAWS

    law = LAWS[law_name]
    slopes, offsets, scales, other = _roles(law)
    rng = np.random.default_rng(0)
    a0, b0 = argument_coefficients(law, np.zeros(law.num_params))[:2]
    candidates = [Rescaling(law_name, "homogeneous", tuple(slopes), tuple(offsets), tuple(scales or slopes + offsets))]
    if slopes and a0 == 0.0 and b0 == 0.0:
        candidates.append(Rescaling(law_name, "slopes", tuple(slopes), tuple(offsets)))
    if not other:
        for candidate in candidates:
            if _exact(law, candidate, rng):
                return candidate
    why = (f"its activation is not positively homogeneous and its form ({law.formula}) has no θ column that scales "
           "both terminal coefficients")
    return Rescaling(law_name, "none", tuple(slopes), tuple(offsets), why=why)


def rescale(knet: KNet, alpha: float, beta: float = 1.0) -> KNet:
    """The network of ``u = v/α`` with current gain β: θ by :meth:`Rescaling.theta`, capacitance by
    :meth:`Rescaling.capacitance` (``knet`` itself for α = β = 1). Its trajectories times α are ``knet``'s,
    exactly."""
    if alpha == 1.0 and beta == 1.0:
        return knet
    r = rescaling(knet.law)
    layers = tuple(dataclasses.replace(layer, theta=_frozen(r.theta(layer.theta, alpha, beta)))
                   for layer in knet.layers)
    capacitance = _frozen(np.asarray(knet.capacitance, dtype=float) * r.capacitance(alpha, beta))
    meta = {**knet.meta, "rescaled": {"alpha": alpha, "beta": beta, "kind": r.kind}}
    return dataclasses.replace(knet, layers=layers, capacitance=capacitance, meta=meta)
