"""Dynamic-range budget: the output error a build's cells and scaling predict, before any transistor simulation.

Every device of the circuit's network (:attr:`kcompile.mapping.ScalingPlan.network`)
is the law ``g = scale·φ(a·vs + b·vd + c)`` (:meth:`kcompile.laws.Law.coefficients`)
realised by a cell whose calibrated accuracy is declared in volts, amperes
and relative terms (:class:`kcompile.cells.base.Accuracy`). At the circuit's
scaling each term is a perturbation in model units:

* slopes ``a``, ``b``: relative error ``gain``;
* the argument's constant ``c``: ``offset_i / i0`` (over the output scale) and
  the largest terminal coefficient times ``offset_v / v0``; after per-device
  refinement (:mod:`kcompile.refine`) these two are replaced by the θ each
  instance was measured to achieve;
* every draw centres on the θ each instance achieves (clipped devices on their
  clipped θ: on sky130 the two-pair tanh cell realises slopes up to 0.54);
* the s-side and d-side output copies: relative error ``copy/√2`` each;
* **measured DC I–V** (``tables``: refined maps, whose every instance the
  refinement has DC-swept, cached): the gain, offset and copy terms are not
  drawn but taken as measured. Each device's current is its measured table
  (:class:`Measured`: how it is read between the grid points), and the drawn
  terms move it by ``law(drawn θ) − law(fitted θ)``: every draw is the
  characterised ODE (:mod:`kcompile.characterised`) with perturbations on
  top, and its error is taken against the ideal one. So the measured shape
  and offset of every I–V that the fitted θ leaves out (the refinement fits
  slopes and intercepts only) is in the estimate: a relu network rescaled by
  α = 92 missed the ideal by 118 units at transistor level while the θ-only
  estimate said 20.5; drawn on the tables it says 145 (docs/transistor.md);
* the node capacitance, while a layer is on: ``c_cell`` per cell terminal
  at the node (of either sign), against ``C·c_unit`` (the dynamic term,
  which shrinks as 1/C).

:func:`estimate` draws these perturbations (``σ`` = the declared values;
with mismatch, the Pelgrom terms added in quadrature; the SAME normal draws for
both, common random numbers, so the mismatch estimate is never below the
nominal one by the luck of its draws), integrates the
perturbed network on calibration inputs (:func:`kcompile.reference.integrate`
with a perturbed right-hand side; all draws as one batch), and reports the largest output error per
draw in the ORIGINAL model units (× α): the median over draws is the budget,
the largest the spread. It is an estimate of the DC and first-order dynamic
terms, not a simulation: docs/transistor.md compares it with measured errors.
It holds only while every node stays inside the cells' compliance window,
where their accuracy was measured: when the calibration inputs drive nodes
out of it (``outside``, volts), the estimate says that it is no prediction and
the gate counts as exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .cells import Accuracy
from .characterised import DeviceTables, _bilinear
from .knet import KNet
from .laws import LAWS
from .reference import integrate
from .scaling import Scaling

#: perturbation draws of :func:`estimate`
DRAWS = 8
#: calibration samples integrated per draw
BATCH = 16
#: networks above this many devices get no estimate (the perturbed right-hand side is a plain gather)
MAX_DEVICES = 50_000
#: integration tolerances of the estimate (an estimate needs no more)
RTOL, ATOL = 1e-6, 1e-8
#: the estimate still holds for nodes this far (volts) beyond the cells' window: a quarter of a model unit of the
#: cells' scaling, half a step of the characterised tables' common-mode grid (the slope-limited potential1
#: checkpoint exceeds sky130's window by 9.5 mV)
OUTSIDE_SLACK = 0.025


@dataclass(frozen=True)
class Budget:
    """The estimated output error (original model units) of a build, nominal and with mismatch.

    Attributes
    ----------
    nominal, nominal_max : float
        Median and largest over the draws of the largest output error, with the cells' systematic accuracy.
    mismatch, mismatch_max : float
        The same with the PDK's mismatch added.
    swing : float
        The network's swing: peak ``|v|`` of the ideal trajectories (original units).
    gate : float or None
        The error the build accepts (model units); ``None``: no gate.
    draws : int
    outside : float
        How far (volts) the circuit's nodes leave the cells' compliance window on the calibration inputs
        (0: they stay inside; up to :data:`OUTSIDE_SLACK` the estimate holds).
    measured : bool
        Whether the draws perturb every device's measured DC I–V (``tables`` of :func:`estimate`) rather than the
        law with the cells' calibrated accuracy.
    """

    nominal: float
    nominal_max: float
    mismatch: float
    mismatch_max: float
    swing: float
    gate: float | None
    draws: int
    outside: float = 0.0
    measured: bool = False

    @property
    def holds(self) -> bool:
        """Whether the estimate is a prediction: the nodes stay inside the window (within :data:`OUTSIDE_SLACK`)."""
        return self.outside <= OUTSIDE_SLACK

    @property
    def within(self) -> bool:
        """Whether the nominal estimate meets the gate (always, without one) and holds."""
        return self.gate is None or (self.nominal <= self.gate and self.holds)

    def verdict(self) -> str:
        """Against the gate: ``within``, ``EXCEEDED`` (the estimate is above it) or ``not met: no prediction``
        (below it, but the nodes leave the window, so nothing vouches for it)."""
        if self.within:
            return "within"
        return "EXCEEDED" if self.nominal > self.gate else "not met: no prediction"

    def _pct(self, x: float) -> str:
        return f"{100 * x / self.swing:.2g} % of the swing ±{self.swing:.3g}" if self.swing > 0 else "no swing"

    @property
    def _drawn(self) -> str:
        return ("the cells' dynamics on their measured DC I-V" if self.measured else
                "the cells' declared accuracy, as measured on generic180 tt")

    def message(self) -> str:
        """One line: both estimates in model units and relative to the swing, and the gate."""
        gate = "" if self.gate is None else f"; gate {self.gate:.3g} ({self.verdict()})"
        holds = "" if self.holds else (
            f"; NO PREDICTION: the nodes leave the cells' compliance window by {self.outside:.3g} V, where their "
            "I-V was never measured (the estimate assumes it holds)")
        return (f"expected output error {self.nominal:.3g} model units ({self._pct(self.nominal)}; up to "
                f"{self.nominal_max:.3g} over {self.draws} draws of {self._drawn}), "
                f"{self.mismatch:.3g} with mismatch (up to {self.mismatch_max:.3g}){holds}{gate}")

    def record(self) -> dict:
        return {"nominal": self.nominal, "nominal_max": self.nominal_max, "mismatch": self.mismatch,
                "mismatch_max": self.mismatch_max, "swing": self.swing, "gate": self.gate, "draws": self.draws,
                "outside": self.outside, "measured": self.measured,
                "relative": self.nominal / self.swing if self.swing > 0 else None}


@dataclass(frozen=True)
class _Sigmas:
    """σ of each perturbation, model units of the circuit's network."""

    gain: float
    offset_i: float  # units of current
    offset_v: float  # units of voltage
    copy: float
    c_cell: float  # fraction of one capacitance unit

    @staticmethod
    def of(acc: Accuracy, scaling: Scaling, mismatch: bool, measured: bool, tables: bool = False) -> _Sigmas:
        """``measured``: every device's θ is known (refined), so only copies, dynamics and mismatch are drawn;
        ``tables``: its DC I–V is measured too (both copies), so only dynamics and mismatch are drawn."""
        gain, offset_i, offset_v = (0.0, 0.0, 0.0) if measured or tables else (acc.gain, acc.offset_i, acc.offset_v)
        copy = 0.0 if tables else acc.copy
        v = np.hypot(offset_v, acc.mismatch_v) if mismatch else offset_v
        copy = np.hypot(copy, 2 ** 0.5 * acc.mismatch_gain) if mismatch else copy
        return _Sigmas(gain, offset_i / scaling.i0, v / scaling.v0, copy / 2 ** 0.5, acc.c_cell / scaling.c_unit)


def _law(law, theta: np.ndarray, vs: np.ndarray, vd: np.ndarray, grid: bool = False) -> np.ndarray:
    """The law's current for θ rows ``[E, P]`` at ``vs, vd`` ``[B, E]``, or (``grid``) on a ``[D, M]`` grid:
    ``[E, D, M]``."""
    a, b, c, scale = (np.asarray(x, dtype=float).reshape((-1, 1, 1) if grid else (-1,))
                      for x in law.coefficients(theta))
    return scale * law.activation.numpy(a * vs + b * vd + c)


@dataclass(frozen=True, eq=False)
class Measured:
    """Every device's measured DC I–V (:class:`kcompile.characterised.DeviceTables`, model units of the circuit's
    network) and the θ fitted to it, read between the tables' points as the midpoint of two bilinear readings
    that are exact on the grid points: of the table itself, and of the law at the fitted θ plus the bilinear
    residual ``table − law(θ)``.

    The build's tables are 0.125 units apart in Δ, wider than a refined cell's measured knee: read directly,
    the chord over the knee adds current, read as law plus residual it takes some away. On the strongly rescaled
    relu networks of docs/transistor.md ('The budget on strongly rescaled networks') the two readings of the
    129-point tables bracket what tables 4x finer in Δ give (shift_relu seed 14: 28 and 7.2 units at the outputs
    against 13.7), and their midpoint is within 1.4x of it (18.7).

    ``sink``, ``source`` hold per layer ``2·table − law(θ)`` on the grid (:meth:`of`); ``achieved`` the fitted θ.
    """

    delta: np.ndarray
    mid: np.ndarray
    sink: tuple[np.ndarray, ...]
    source: tuple[np.ndarray, ...]
    achieved: tuple[np.ndarray, ...]

    @staticmethod
    def of(network: KNet, achieved: list, tables: DeviceTables) -> Measured:
        """Bilinear readings are linear in the table: the two readings' sum is one reading of ``table + residual``
        (``2·table − law(θ)`` on the grid), what :class:`Measured` keeps."""
        law = LAWS[network.law]
        vs, vd = tables.mid[None, :] + tables.delta[:, None] / 2, tables.mid[None, :] - tables.delta[:, None] / 2
        ideal = [_law(law, theta, vs, vd, grid=True) for theta in achieved]
        return Measured(tables.delta, tables.mid, tuple(2 * t - g for t, g in zip(tables.sink, ideal)),
                        tuple(2 * t - g for t, g in zip(tables.source, ideal)),
                        tuple(np.asarray(t, dtype=float) for t in achieved))

    def correction(self, law, k: int, vs: np.ndarray, vd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What layer ``k``'s devices sink from s and source into d at ``vs, vd`` ``[B, E]`` beyond the law at
        their fitted θ (added to the law at the drawn θ, it is the measured current perturbed by the draw)."""
        both_sink, both_source = _bilinear((self.sink[k], self.source[k]), self.delta, self.mid, vs - vd,
                                           0.5 * (vs + vd))
        g = _law(law, self.achieved[k], vs, vd)
        return 0.5 * (both_sink - g), 0.5 * (both_source - g)


def perturbed_rhs(draws: list[dict], measured: Measured | None = None):
    """A right-hand-side factory for :func:`kcompile.reference.integrate` of ``len(draws)`` perturbed networks at
    once (the batch: ``len(draws)`` blocks of the same inputs, draw-major): the law with each device's drawn
    coefficients, output copies and node capacitance (``draw[k]`` of :func:`_draw`), plus the ``measured``
    :meth:`Measured.correction` when given. One integration of all draws shares the adaptive steps, and costs
    little more than one draw's (the right-hand side's overhead is per call)."""

    def factory(knet: KNet, k: int, dtype=np.float64):
        layer, law = knet.layers[k], LAWS[knet.law]
        e, n = layer.num_devices, knet.num_nodes
        a, b, c, copy_s, copy_d, cap = (np.stack([d[k][key] for d in draws])[:, None]
                                        for key in ("a", "b", "c", "copy_s", "copy_d", "capacitance"))
        scale = draws[0][k]["scale"]
        into = sp.csr_matrix((np.ones(e), (layer.dst, np.arange(e))), shape=(n + 1, e))[1:].tocsr()
        out = sp.csr_matrix((np.ones(e), (layer.src, np.arange(e))), shape=(n + 1, e))[1:].tocsr()

        def rhs(v: np.ndarray) -> np.ndarray:
            vg = np.concatenate([np.zeros((v.shape[0], 1)), v], axis=1)
            vs, vd = vg[:, layer.src], vg[:, layer.dst]
            shape = (len(draws), -1, e)
            g = scale * law.activation.numpy(a * vs.reshape(shape) + b * vd.reshape(shape) + c)
            g_sink, g_source = g, g
            if measured is not None:
                r_sink, r_source = measured.correction(law, k, vs, vd)
                g_sink, g_source = g + r_sink.reshape(shape), g + r_source.reshape(shape)
            g_sink, g_source = (g_sink * (1 + copy_s)).reshape(-1, e), (g_source * (1 + copy_d)).reshape(-1, e)
            dv = (into @ g_source.T - out @ g_sink.T).T
            return (dv.reshape(len(draws), -1, n) / cap).reshape(-1, n)

        return rhs

    return factory


def _draw(knet: KNet, s: _Sigmas, rng: np.random.Generator, achieved: list | None) -> dict:
    """One draw of every device's perturbed coefficients (around ``achieved[k]`` when given), copies, and each
    layer's node capacitance."""
    law, out = LAWS[knet.law], {}
    for k, layer in enumerate(knet.layers):
        e = layer.num_devices
        theta = layer.theta if achieved is None else achieved[k]
        a, b, c, scale = (np.broadcast_to(np.asarray(x, dtype=float), (e,)) for x in law.coefficients(theta))
        z = rng.standard_normal((6, e))
        terminals = np.bincount(np.r_[layer.src, layer.dst], minlength=knet.num_nodes + 1)[1:]
        cap = knet.capacitance * (1.0 + s.c_cell * np.sqrt(terminals) * rng.standard_normal(knet.num_nodes)
                                  / knet.capacitance)
        out[k] = {"a": a * (1 + s.gain * z[0]), "b": b * (1 + s.gain * z[1]),
                  "c": c + s.offset_i * z[2] / np.maximum(np.abs(scale), 1e-12)
                  + np.maximum(np.abs(a), np.abs(b)) * s.offset_v * z[3],
                  "scale": scale, "copy_s": s.copy * z[4], "copy_d": s.copy * z[5],
                  "capacitance": np.maximum(cap, 0.05 * knet.capacitance)}
    return out


def estimate(network: KNet, alpha: float, accuracy: Accuracy, scaling: Scaling, x: np.ndarray, swing: float,
             gate: float | None = None, achieved: list | None = None, draws: int = DRAWS,
             seed: int = 0, outside: float = 0.0, measured: bool | None = None,
             tables: DeviceTables | None = None) -> Budget | None:
    """The budget of a circuit realising ``network`` (``u = v/α``) at ``scaling`` with cells of ``accuracy``.

    Parameters
    ----------
    x : ndarray ``[B, F]``
        Calibration inputs in the ORIGINAL units (the first :data:`BATCH` are used).
    swing : float
        Peak ``|v|`` of the original network (:attr:`kcompile.ranges.Ranges.peak`).
    achieved : list of ndarray, optional
        Per layer the θ every instance achieves: the draws centre on it (a clipped device on its clipped θ).
    measured : bool, optional
        Whether ``achieved`` was MEASURED (refined maps, :mod:`kcompile.refine`): the DC law is then taken as
        measured, and only the copies, the dynamic term and mismatch are drawn; otherwise it is the calibration's
        prediction and the cells' calibrated accuracy is drawn around it too. Default: ``achieved`` is given.
    tables : DeviceTables, optional
        Every device's measured DC I–V (with ``achieved`` fitted to them): the draws perturb these tables
        (:class:`Measured`), so the estimate includes the characterised level's error; only the dynamic term and
        mismatch are drawn.
    outside : float
        How far (volts) the nodes leave the cells' window on ``x`` (:attr:`kcompile.mapping.ScalingPlan.outside`).

    Returns ``None`` above :data:`MAX_DEVICES` devices. Both estimates use the same normal draws (scaled by their
    own σ).
    """
    if network.num_devices > MAX_DEVICES:
        return None
    if tables is not None and achieved is None:
        raise ValueError("The 'achieved' parameter of estimate must be given with 'tables'. Got None instead.")
    dc = None if tables is None else Measured.of(network, achieved, tables)
    u = np.asarray(x, dtype=float)[:BATCH] / alpha
    ideal = integrate(network, u, rtol=RTOL, atol=ATOL).outputs
    errors = {}
    for mismatch in (False, True):
        sig = _Sigmas.of(accuracy, scaling, mismatch, achieved is not None if measured is None else measured,
                         tables is not None)
        rng = np.random.default_rng(seed)  # common random numbers: the same draws with and without mismatch
        drawn = [_draw(network, sig, rng, achieved) for _ in range(draws)]
        out = integrate(network, np.tile(u, (draws, 1)), rhs=perturbed_rhs(drawn, dc), rtol=RTOL, atol=ATOL).outputs
        errors[mismatch] = np.abs(out.reshape(draws, len(u), -1) - ideal).max(axis=(1, 2)) * alpha
    nom, mis = errors[False], errors[True]
    return Budget(float(np.median(nom)), float(nom.max()), float(np.median(mis)), float(mis.max()), swing, gate,
                  draws, outside, tables is not None)
