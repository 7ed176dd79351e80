"""Device laws of the ``kcompile.knet/1`` contract, each declared once.

Every law is ``g(vs, vd, θ) = [θ_k ·] φ(z)``, the current from ``s`` to ``d``:

* a :class:`Form` says how the argument ``z`` (and an optional output scale
  ``θ_k``) comes from the terminal voltages and θ: ``θ0·Δ + θ1`` (gain),
  ``Δ − θ0`` scaled by ``θ1`` (shift), ``θ0·vs + θ1·vd + θ2`` (affine) or
  ``Δ`` scaled by ``θ0`` (scaled), with ``Δ = vs − vd``;
* an :class:`Activation` is ``φ`` as ``torch.nn.functional`` defines it.

A :class:`Law` is one line naming the two (:data:`LAWS`); everything else is
derived from them: the NumPy current (:meth:`Law.current`, the reference),
the torch current (:meth:`Law.torch`, training), the reference integrator's
affine coefficients (:meth:`Law.coefficients`), the ngspice B-source
expression (:meth:`Law.spice`) and a Verilog-A module (:meth:`Law.verilog_a`).
tests/test_laws_contract.py checks that the four forms agree for every law.

The two expression dialects share one text per activation: ngspice 39 and
Verilog-A both have ``exp``, ``ln``, ``tanh``, ``abs``, ``pow``, ``max`` and
``c ? a : b``; only ReLU differs (ngspice's ``uramp(x)``, measured 26 % less
CPU than ``max(x,0)`` on a 10^4-device network, docs/performance.md). Neither
has ``erf`` (ngspice 39 refuses it, OpenVAF reports it "not found"), so
``gelu`` is written ``relu(z) − exp(−z²/2)·Q(t)`` with ``t = 4/(|z| + 4)`` and
``Q`` a degree-20 polynomial fit of ``|z|·erfc(|z|/√2)·exp(z²/2)/2``
(scripts/fit_gelu.py): within 3.5e-15 of the erf form for all ``z``, but
≈ 130x the ngspice cost of tanh (docs/design.md). Every form is safe from
overflow: ``exp`` only ever sees arguments ≤ 20.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import special

#: ``torch.nn.functional.leaky_relu``'s default negative slope
LEAKY_SLOPE = 0.01
#: ``torch.nn.functional.softplus``'s default threshold (β = 1): above it, softplus(z) = z
SOFTPLUS_THRESHOLD = 20.0
#: gelu: ``t = GELU_T / (|z| + GELU_T)`` and ``Q(t)``'s power-series coefficients, lowest first
GELU_T = 4.0
GELU_Q = (
    0.39894228040143115, 1.2617703404558178e-12, -0.02493389269564257, -0.049867776057617726,
    -0.07012681754196548, -0.08103121887792501, -0.07941914655123214, -0.06461109358290065,
    -0.04190564389939307, -0.013590017562304213, 0.02038485107023952, -0.0760149400593546,
    0.357413081217573, -0.8631995320739091, 1.5498518098314877, -2.03041284393007,
    1.8364010405028421, -1.1130141751000742, 0.43415156737650257, -0.09914918063488702,
    0.01013164816594056,
)


def _num(x: float) -> str:
    """A float in 17 significant digits (the netlists' θ; ngspice 39 keeps 11 of them, see :func:`_literal`)."""
    return repr(float(x))


# ------------------------------------------------------------------ expression dialects

@dataclass(frozen=True)
class Dialect:
    """What differs between the expression languages: only ``relu(x)``."""

    name: str
    relu: Callable[[str], str]


NGSPICE = Dialect("ngspice", lambda x: f"uramp({x})")
VERILOG_A = Dialect("verilog-a", lambda x: f"max({x}, 0.0)")


# ------------------------------------------------------------------ activations

@dataclass(frozen=True)
class Activation:
    """``φ`` in every form: NumPy (in place on a float array, returns it), torch, expression text.

    ``text(z, dialect)`` gets ``z`` as expression text and returns an
    expression that is safe to multiply (a call or parenthesised).
    """

    name: str
    formula: str  # with "{z}"
    numpy: Callable[[np.ndarray], np.ndarray]
    torch: Callable[[Any], Any]
    text: Callable[[str, Dialect], str]


def _functional():
    """``torch.nn.functional``, imported only when a torch form is evaluated."""
    import torch.nn.functional

    return torch.nn.functional


def _np_softplus(z):
    low = z <= SOFTPLUS_THRESHOLD
    z[low] = np.log1p(np.exp(z[low]))
    return z


def _np_elu(z):
    low = z <= 0.0
    z[low] = np.expm1(z[low])
    return z


def _np_silu(z):
    z *= special.expit(z)
    return z


def _np_gelu(z):
    e = special.erf(z * math.sqrt(0.5))  # torch: x · 0.5 · (1 + erf(x · M_SQRT1_2))
    e += 1.0
    z *= 0.5
    z *= e
    return z


def _literal(x: float) -> str:
    """``x`` as ``(hi+lo)``, each of 10 significant digits: ngspice 39 reads a B-source number only
    to 11 significant digits (it rewrites them; 17-digit θ lose up to 5e-11 relative), this sum to the last bit."""
    hi = float(f"{x:.10g}")
    return f"({hi!r}+{float(f'{x - hi:.10g}')!r})"


def _gelu_text(z: str, d: Dialect) -> str:
    t = f"{_num(GELU_T)}/(abs({z})+{_num(GELU_T)})"  # > 0: ngspice's pow(x, k) is |x|^k
    q = "+".join([_literal(GELU_Q[0]), f"{_literal(GELU_Q[1])}*{t}",
                  *(f"{_literal(c)}*pow({t},{k})" for k, c in enumerate(GELU_Q[2:], 2))])
    return f"({d.relu(z)}-exp(-0.5*({z})*({z}))*({q}))"


IDENTITY = Activation("identity", "{z}", lambda z: z, lambda z: z, lambda z, d: f"({z})")
RELU = Activation("relu", "max({z}, 0)", lambda z: np.maximum(z, 0.0, out=z), lambda z: z.clamp_min(0.0),
                  lambda z, d: d.relu(z))
LEAKY_RELU = Activation(
    "leaky_relu", "leaky_relu({z})", lambda z: np.maximum(z, LEAKY_SLOPE * z, out=z),
    lambda z: _functional().leaky_relu(z, LEAKY_SLOPE),
    lambda z, d: f"({d.relu(z)}-{_num(LEAKY_SLOPE)}*{d.relu(f'-({z})')})")
TANH = Activation("tanh", "tanh({z})", lambda z: np.tanh(z, out=z), lambda z: z.tanh(), lambda z, d: f"tanh({z})")
SIGMOID = Activation("sigmoid", "sigmoid({z})", lambda z: special.expit(z, out=z), lambda z: z.sigmoid(),
                     lambda z, d: f"(0.5+0.5*tanh(0.5*({z})))")
SOFTPLUS = Activation(
    "softplus", "softplus({z})", _np_softplus,
    lambda z: _functional().softplus(z, beta=1.0, threshold=SOFTPLUS_THRESHOLD),
    lambda z, d: f"(({z})>{_num(SOFTPLUS_THRESHOLD)}?({z}):ln(1+exp({z})))")
ELU = Activation("elu", "elu({z})", _np_elu, lambda z: _functional().elu(z),
                 lambda z, d: f"({d.relu(z)}+(exp(-{d.relu(f'-({z})')})-1))")
SILU = Activation("silu", "silu({z})", _np_silu, lambda z: _functional().silu(z),
                  lambda z, d: f"(({z})*(0.5+0.5*tanh(0.5*({z}))))")
GELU = Activation("gelu", "gelu({z})", _np_gelu, lambda z: _functional().gelu(z), _gelu_text)

#: activations a reference ``Device(negation, activation)`` may name (``torch.nn.functional`` names)
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS, ELU, SILU, GELU)}


# ------------------------------------------------------------------ argument forms

@dataclass(frozen=True)
class Form:
    """How ``z = a·vs + b·vd + c`` and the output scale come from θ.

    ``argument`` and ``coefficients`` take θ as a sequence of columns ``p``
    and use operators only, so they serve NumPy arrays and torch tensors
    alike; ``text`` builds ``z`` from the terminals' and θ's expression texts.
    """

    name: str
    num_params: int
    formula: str
    argument: Callable[[Any, Any, Sequence], Any]
    coefficients: Callable[[Sequence], tuple]  # (a, b, c)
    text: Callable[[str, str, Sequence[str]], str]
    scale: int | None = None  # θ column multiplying φ(z)


GAIN = Form("gain", 2, "θ0·Δ + θ1", lambda vs, vd, p: p[0] * (vs - vd) + p[1], lambda p: (p[0], -p[0], p[1]),
            lambda s, d, p: f"{p[0]}*({s}-{d})+{p[1]}")
SHIFT = Form("shift", 2, "Δ − θ0", lambda vs, vd, p: vs - vd - p[0], lambda p: (1.0, -1.0, -p[0]),
             lambda s, d, p: f"{s}-{d}-{p[0]}", scale=1)
AFFINE = Form("affine", 3, "θ0·vs + θ1·vd + θ2", lambda vs, vd, p: p[0] * vs + p[1] * vd + p[2],
              lambda p: (p[0], p[1], p[2]), lambda s, d, p: f"{p[0]}*{s}+{p[1]}*{d}+{p[2]}")
SCALED = Form("scaled", 1, "Δ", lambda vs, vd, p: vs - vd, lambda p: (1.0, -1.0, 0.0), lambda s, d, p: f"{s}-{d}",
              scale=0)


# ------------------------------------------------------------------ laws

def _columns(theta) -> list:
    return [theta[..., j] for j in range(theta.shape[-1])]


@dataclass(frozen=True)
class Law:
    """One device law: ``[θ_scale ·] activation(form's z)``; all its forms are derived."""

    name: str
    form: Form
    activation: Activation

    @property
    def num_params(self) -> int:
        return self.form.num_params

    @property
    def formula(self) -> str:
        """The current in words, e.g. ``θ1 · max(Δ − θ0, 0)``."""
        scale = "" if self.form.scale is None else f"θ{self.form.scale} · "
        return scale + self.activation.formula.format(z=self.form.formula)

    @property
    def module(self) -> str:
        """Name of the law's Verilog-A module."""
        return f"kc_law_{self.name}"

    def current(self, vs, vd, theta) -> np.ndarray:
        """NumPy current for voltages ``vs``, ``vd`` and parameters ``theta[..., P]`` (broadcasting)."""
        p = _columns(np.asarray(theta))
        z = self.activation.numpy(np.asarray(self.form.argument(vs, vd, p), dtype=float))
        return z if self.form.scale is None else p[self.form.scale] * z

    def torch(self, vs, vd, theta):
        """torch current for tensors ``vs``, ``vd`` and ``theta[..., P]``."""
        return self.torch_columns(vs, vd, theta.unbind(-1))

    def torch_columns(self, vs, vd, cols: Sequence):
        """torch current with θ given as its ``P`` columns (each broadcasting against ``vs``)."""
        z = self.activation.torch(self.form.argument(vs, vd, cols))
        return z if self.form.scale is None else cols[self.form.scale] * z

    def coefficients(self, theta: np.ndarray) -> tuple:
        """``(a, b, c, scale)`` with ``g = scale · φ(a·vs + b·vd + c)`` for ``theta [E, P]`` (arrays or floats)."""
        p = _columns(theta)
        return (*self.form.coefficients(p), 1.0 if self.form.scale is None else p[self.form.scale])

    def _text(self, s: str, d: str, p: Sequence[str], dialect: Dialect) -> str:
        scale = "" if self.form.scale is None else f"{p[self.form.scale]}*"
        return scale + self.activation.text(self.form.text(s, d, p), dialect)

    def spice(self, vs: str, vd: str, theta) -> str:
        """ngspice behavioural-source expression for one device (``vs``/``vd`` are SPICE terms)."""
        return self._text(vs, vd, [_num(t) for t in theta], NGSPICE)

    def verilog_a_terms(self, s: str, d: str, p: Sequence[str]) -> tuple[str, str]:
        """Verilog-A text of ``z`` (terminal terms ``s``, ``d``, parameter names ``p``) and of the current as a
        function of a variable ``z`` (also the statements of :mod:`kcompile.osdi`'s bundled modules)."""
        scale = "" if self.form.scale is None else f"{p[self.form.scale]}*"
        return self.form.text(s, d, p), scale + self.activation.text("z", VERILOG_A)

    def verilog_a(self) -> str:
        """A complete Verilog-A module: terminals ``s``, ``d``; instance parameters ``theta0..``; model units."""
        names = [f"theta{j}" for j in range(self.num_params)]
        z, current = self.verilog_a_terms("V(s)", "V(d)", names)
        params = "".join(f'    (*type="instance"*) parameter real {n} = 0.0;\n' for n in names)
        return (f"// kcompile.knet/1 device law '{self.name}': the current from s to d in model units.\n"
                '`include "disciplines.vams"\n\n'
                f"module {self.module}(s, d);\n"
                "    inout s, d;\n"
                "    electrical s, d;\n"
                f"{params}"
                "    real z;\n\n"
                "    analog begin\n"
                f"        z = {z};\n"
                f"        I(s, d) <+ {current};\n"
                "    end\n"
                "endmodule\n")


LAWS: dict[str, Law] = {
    law.name: law
    for law in (
        Law("relu", GAIN, RELU),
        Law("shift_relu", SHIFT, RELU),
        Law("relu_affine", AFFINE, RELU),
        Law("tanh_affine", AFFINE, TANH),
        Law("tanh", GAIN, TANH),
        Law("linear", SCALED, IDENTITY),
        Law("shift_leaky_relu", SHIFT, LEAKY_RELU),
        Law("leaky_relu", GAIN, LEAKY_RELU),
        Law("leaky_relu_affine", AFFINE, LEAKY_RELU),
        Law("sigmoid", GAIN, SIGMOID),
        Law("sigmoid_affine", AFFINE, SIGMOID),
        Law("softplus", GAIN, SOFTPLUS),
        Law("softplus_affine", AFFINE, SOFTPLUS),
        Law("elu", GAIN, ELU),
        Law("elu_affine", AFFINE, ELU),
        Law("silu", GAIN, SILU),
        Law("silu_affine", AFFINE, SILU),
        Law("gelu", GAIN, GELU),
        Law("gelu_affine", AFFINE, GELU),
    )
}


def law_for(form: Form, activation: Activation) -> Law:
    """The law of ``form`` and ``activation`` (``KeyError`` if the contract has none)."""
    for law in LAWS.values():
        if law.form is form and law.activation is activation:
            return law
    raise KeyError(f"no law has the {form.name} form and the {activation.name} activation")
