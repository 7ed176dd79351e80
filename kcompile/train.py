"""``kcompile train``: train a KirchhoffNet (or a matched ReLU-MLP baseline) in PyTorch.

The model is the circuit itself: node voltages ``v`` (``[B, N]``, ground 0 V),
devices ``g(vs, vd, θ)`` per layer, ``C dv/dt = Σ_in g − Σ_out g`` on layer
windows ``[t_k, t_{k+1}]``. Training backpropagates through a fixed-step RK4
solver (``steps = ceil((t_{k+1} − t_k) / dt)`` per layer, exactly the steps
of :func:`kcompile.reference.integrate` with ``method="rk4"``), so the
gradient is exact for the discretised model. After training the network is
exported as a :class:`~kcompile.knet.KNet` and scored again with the NumPy
reference, with RK4 (same ``dt``: the model that was trained) and with
adaptive Dormand–Prince 5(4) (the ODE the circuit solves); both are recorded.

Readout: the voltages of the output nodes at ``t_L``; classification uses
them as logits of a cross-entropy (one node per class), regression uses one
node and an MSE on the scaled target (:mod:`kcompile.tasks`).

PyTorch is an optional extra (``pip install -e .[train]``); importing this
module never needs it, only training does.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np

from . import __version__
from .errors import InputError, KCompileError
from .gentrain import DENSITIES
from .knet import KNet, make_knet, save_knet
from .laws import LAWS
from .tasks import TASKS, Task, load_task, scale_inputs

TRAIN_HINT = "pip install -e .[train]  (torch==2.13.0 CPU wheel, scikit-learn, mlxtend)"

#: target parameter counts of the paper's Table I sizes
SIZE_PARAMS = {"small": 170, "medium": 530, "large": 1520}
#: extra hub nodes (beyond one per class) of the image topology, per size
SIZE_HUBS = {"small": 0, "medium": 10, "large": 30}


def require_torch():
    """Import torch or raise a :class:`KCompileError` that says how to install it."""
    try:
        import torch
    except ImportError:
        raise KCompileError(f"kcompile train needs PyTorch, which is not installed: {TRAIN_HINT}") from None
    return torch


# ------------------------------------------------------------------ device laws in torch

#: law -> torch current ``(vs, vd, theta[..., P]) -> g``, derived from the law's one declaration
#: (:mod:`kcompile.laws`; tests/test_laws_contract.py checks it against the NumPy form)
TORCH_LAWS = {name: law.torch for name, law in LAWS.items()}


# ------------------------------------------------------------------ hardware-aware training
# What a law's transistor-level cell can realise, asked of the cell registry (kcompile.cells): its calibrated
# θ range (--theta-range) and a small surrogate of its measured DC I–V (--device-in-the-loop); the signed
# ReLU cell (relu) has both, other cells refuse. Both need ngspice only when the cell's characterisation is
# not cached yet.

def _parse_cell_spec(spec: str, option: str) -> tuple[str, str]:
    """``cell:PDK[:CORNER]`` (or ``PDK[:CORNER]``, ``CELLNAME:PDK``) → ``(pdk, corner)``."""
    from .cells import CELLS

    parts = [p for p in str(spec).split(":") if p]
    if parts and (parts[0] == "cell" or parts[0] in CELLS):
        parts = parts[1:]
    if not 1 <= len(parts) <= 2:
        raise InputError(f"{option} takes cell:PDK or cell:PDK:CORNER (e.g. cell:generic180), got {spec!r}")
    return parts[0], parts[1] if len(parts) > 1 else "tt"


_CAL_CACHE: dict = {}


def _cell_table(pdk: str, corner: str, law: str = "relu"):
    """The characterisation table and calibration of ``law``'s cell (cached per process)."""
    if (pdk, corner, law) not in _CAL_CACHE:
        from .cells import cell_for_law
        from .pdk import get_pdk

        cell = cell_for_law(law)
        get_pdk(pdk)  # a clear error for an unknown PDK
        table = cell.characterize(pdk, corner)
        _CAL_CACHE[pdk, corner, law] = (table, cell.calibrate(table))
    return _CAL_CACHE[pdk, corner, law]


@dataclass(frozen=True)
class ThetaBox:
    """Where a ``relu`` device's θ may lie: ``lo[s] ≤ |θ0| ≤ hi[s]`` for sign ``s`` (0: θ0 ≥ 0, 1: θ0 < 0),
    ``|θ1| ≤ theta1_max``. :meth:`project` puts θ back inside after each optimiser step."""

    lo: tuple[float, float]
    hi: tuple[float, float]
    theta1_max: float
    source: str = ""

    def project(self, theta) -> None:
        """In place on a torch ``[E, 2]`` tensor (no grad): clip |θ0| per sign (sign kept, 0 → +lo), clip θ1."""
        t0 = theta[:, 0]
        neg = t0 < 0
        mag = t0.abs()
        lo = mag.new_tensor(self.lo)[neg.long()]
        hi = mag.new_tensor(self.hi)[neg.long()]
        mag = mag.maximum(lo).minimum(hi)
        theta[:, 0] = mag.where(~neg, -mag)
        theta[:, 1].clamp_(-self.theta1_max, self.theta1_max)


def theta_box(spec: str, law: str = "relu") -> ThetaBox:
    """The calibrated θ range of ``law``'s cell for ``--theta-range cell:PDK[:CORNER]``
    (:meth:`kcompile.cells.base.Cell.training_range`; cells without one refuse).

    ``|θ0|`` is kept inside the measured range of each sign variant, shrunk by
    0.1 % so rounding never puts a device just outside it (:func:`kcompile.cells.base.clip_reason`
    flags only a slope strictly above the ceiling, or below a floor coarser than
    ``THETA0_RESOLUTION``); ``|θ1|`` inside the cell's tested intercept range.
    """
    from .cells import cell_for_law

    cell = cell_for_law(law)
    pdk, corner = _parse_cell_spec(spec, "--theta-range")
    lo, hi, t1 = cell.training_range(law, pdk, corner)
    return ThetaBox(tuple(float(x) * 1.001 for x in lo), tuple(float(x) * 0.999 for x in hi), float(t1),
                    f"{cell.name} calibration on {pdk}/{corner}")


def project_thetas(thetas, theta_max: float | None, box) -> None:
    """After an optimiser step, in place and without grad: every θ into ``[-theta_max, theta_max]``, then
    into ``box`` (a :class:`ThetaBox` or :class:`kcompile.gentrain.ParamBox`); either may be None."""
    import torch

    with torch.no_grad():
        for t in thetas:
            if theta_max is not None:
                t.clamp_(-theta_max, theta_max)
            if box is not None:
                box.project(t)


def _interp(torch, x, xs, ys):
    """Piecewise-linear ``ys(xs)`` at ``x`` (``xs`` increasing; constant beyond the ends), differentiable in x.

    ``ys`` is ``[K]`` or ``[K, ...]`` (each trailing entry interpolated alike); the result has shape
    ``x.shape + ys.shape[1:]``.
    """
    idx = torch.searchsorted(xs, x.detach().contiguous()).clamp(1, xs.numel() - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    f = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return y0 + f.reshape(f.shape + (1,) * (ys.dim() - 1)) * (y1 - y0)


def _signed_interp(torch, theta0, log_mag, table):
    """Per device, ``table[row]`` interpolated at ``log|θ0|``, the row chosen by the sign of θ0 (1: θ0 < 0)."""
    lm = theta0.abs().clamp_min(1e-12).log()
    pos = _interp(torch, lm, log_mag[0], table[0])
    neg = _interp(torch, lm, log_mag[1], table[1])
    return neg.where((theta0 < 0).reshape(theta0.shape + (1,) * (pos.dim() - theta0.dim())), pos)


class CellSurrogate:
    """A small model of the characterised signed ReLU cell, for training with the device in the loop
    (its arrays fitted by :meth:`kcompile.cells.kc_relu.SignedRelu.surrogate`).

    For a ``relu`` device with target θ (what the exported file holds, i.e. what
    :func:`kcompile.mapping.map_knet` is asked to realise), per sign variant ``s``:

    * **achieved slope** ``a0 = sign(θ0)·clip(|θ0|, lo_s, hi_s)``: the mapping interpolates the
      calibration table (log r against log |θ0|), which returns every table point exactly, and
      clips at the table's ends;
    * **intercept** ``θ1``: the mapping subtracts the cell's own offset ``θ1_own(r)`` (measured per
      table point, kept here as ``own``) and injects the rest with the calibrated injection gain,
      so the achieved intercept is the target one; ``own`` is used only by :meth:`raw_currents`
      (an instance with no injection, as measured in the table);
    * **soft knee**: ``i_s = w·softplus(u / w)``, ``u = a0·Δ + θ1``, with the width ``w(|θ0|)``
      fitted by least squares to each table point's measured s-side sweep (θ0, θ1 fixed at the
      calibration) and interpolated in log |θ0|;
    * **copy ratio**: the current entering d is ``i_d = ρ(|θ0|)·i_s``, ``ρ`` the median
      source/sink ratio of each table point's sweep where it conducts (1.00–1.07 on generic180).

    Not modelled: the slope's growth with Δ and the common mode (the measured I–V is
    slightly convex: up to ~8 % of full scale at |θ0| ≈ 1.7, 11 % at the 6.3 ceiling),
    the current limit of the pair (≈ 2·ib), compliance outside ±4 units, injection-gain
    variation with r, and everything dynamic (switching charge, delays).
    """

    def __init__(self, pdk: str, corner: str, log_mag, knee, copy, own, lo, hi):
        self.pdk, self.corner = pdk, corner
        self.log_mag = np.asarray(log_mag, dtype=float)  # [2, K], increasing per row
        self.knee, self.copy, self.own = (np.asarray(a, dtype=float) for a in (knee, copy, own))
        self.lo, self.hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        self._torch = {}

    @classmethod
    def from_pdk(cls, spec: str, law: str = "relu") -> "CellSurrogate":
        """Fit to the cached characterisation of ``law``'s cell on ``PDK[:CORNER]`` (also ``cell:PDK``;
        :meth:`kcompile.cells.base.Cell.surrogate`, which cells without a surrogate refuse)."""
        from .cells import cell_for_law

        cell = cell_for_law(law)
        pdk, corner = _parse_cell_spec(spec, "--device-in-the-loop")
        return cls(pdk, corner, **cell.surrogate(law, pdk, corner))

    def summary(self) -> dict:
        """What the surrogate holds, for ``meta.training``."""
        return {"pdk": self.pdk, "corner": self.corner, "theta0_abs_range": [self.lo.tolist(), self.hi.tolist()],
                "table_theta0_abs": np.exp(self.log_mag).round(6).tolist(), "knee_width": self.knee.round(6).tolist(),
                "copy_ratio_d_over_s": self.copy.round(5).tolist(), "own_theta1": self.own.round(6).tolist(),
                "model": "i_s = w(|θ0|)·softplus((a0·Δ + θ1)/w), a0 = sign·clip(|θ0|, lo, hi); i_d = ρ(|θ0|)·i_s"}

    def _tensors(self, torch, dtype):
        key = (dtype,)
        if key not in self._torch:
            t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
            self._torch[key] = {"log_mag": t(self.log_mag), "knee": t(np.log(self.knee)), "copy": t(self.copy),
                                "own": t(self.own), "lo": t(self.lo), "hi": t(self.hi)}
        return self._torch[key]

    def prepare(self, theta0, theta1, inject: bool = True):
        """Per-device ``(a0, intercept, w, ρ)`` (each ``[E]``), computed once per forward pass."""
        torch = require_torch()
        p = self._tensors(torch, theta0.dtype)
        neg = theta0 < 0
        row = neg.long()
        mag = theta0.abs().maximum(p["lo"][row]).minimum(p["hi"][row])
        a0 = mag.where(~neg, -mag)

        def table(name):
            return _signed_interp(torch, a0, p["log_mag"], p[name])

        return a0, theta1 if inject else table("own"), table("knee").exp(), table("copy")

    @staticmethod
    def apply(delta, prepared):
        """``(i_s, i_d)`` for ``delta`` ``[B, E]`` from :meth:`prepare`'s tensors."""
        a0, b, w, rho = prepared
        torch = require_torch()
        i_s = w * torch.nn.functional.softplus((a0 * delta + b) / w)
        return i_s, rho * i_s

    def currents(self, delta, theta0, theta1, inject: bool = True):
        """``(i_s, i_d)``: current leaving s and entering d (torch; ``delta`` ``[B, E]``, θ columns ``[E]``).

        With ``inject=False`` the intercept is the cell's own offset at that slope (no injection,
        as measured in the calibration table) and ``theta1`` is ignored.
        """
        return self.apply(delta, self.prepare(theta0, theta1, inject))

    def raw_currents(self, delta, theta0):
        """The surrogate of an instance with no offset injection (as in the calibration table)."""
        return self.currents(delta, theta0, theta0, inject=False)


# ------------------------------------------------------------------ mismatch-aware training
# The signed cell's δθ under per-transistor mismatch, measured (kcompile.mismatch: Pelgrom draws rendered into the
# cell, each instance DC-swept and its relu form fitted on the sink and the source side) on instances mapped at
# table points of |θ0| per sign and θ1 ∈ MISMATCH_LEVELS; a Gaussian per table point, drawn per device and die in
# training (--mismatch). Its decks are cached by content (kcompile.mismatch), so only the first use runs ngspice.

#: Monte Carlo draws per table point, their seed (the flows' Monte Carlo uses seed 1: other draws), |θ0| points per sign
MISMATCH_RUNS, MISMATCH_SEED, MISMATCH_POINTS = 64, 2024, 12
#: θ1 of the table instances: the own offset cancelled (0), and one unit injected either way
MISMATCH_LEVELS = (0.0, 1.0, -1.0)
#: Δ span (units) of the DC sweeps: a θ1 = -1 instance is used only where its kink lies within half of it
MISMATCH_DSPAN = 8.0


def _no_mismatch_table(what: str) -> InputError:
    return InputError(f"--mismatch draws the signed relu cell's measured θ deviations; {what} has no mismatch table "
                      "(no other cell's δθ is measured: train a KirchhoffNet with --law relu)")


def _psd_root(cov: np.ndarray) -> np.ndarray:
    """Symmetric square roots ``S`` (``S·Sᵀ = cov``) of ``[..., 4, 4]`` covariances, negative eigenvalues set to 0."""
    w, v = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    return (v * np.sqrt(np.maximum(w, 0.0))[..., None, :]) @ np.swapaxes(v, -1, -2)


class MismatchModel:
    """How far a mapped signed ReLU cell's θ moves under mismatch, measured, for ``--mismatch PDK[:CORNER]``.

    Per device ``δθ = (δθ0_s, δθ1_s, δθ0_d, δθ1_d)``: the change of the relu law fitted to the current the
    cell sinks from ``s`` and to the one it sources into ``d`` (as :func:`kcompile.mismatch.theta_deviations`
    measures it), Gaussian with covariance ``Σ0(|θ0|) + θ1²·Σ±(|θ0|)``: ``Σ0`` measured on instances with
    θ1 = 0 (the tail, pair and mirror mismatch at the bias ``ib ∝ |θ0|`` that the slope sets), ``Σ+`` / ``Σ−``
    the (PSD part of the) extra covariance of instances injecting θ1 = +1 / −1 (the copies' and the injection
    mirror's gain error acting on the injected current); where a θ1 = −1 instance does not conduct within the
    sweep (small |θ0|) ``Σ−`` takes ``Σ+``. Both are interpolated per sign in log |θ0| (their square roots).
    """

    def __init__(self, pdk: str, corner: str, runs: int, seed: int, log_mag, root0, root_pos, root_neg, sigma):
        self.pdk, self.corner, self.runs, self.seed = pdk, corner, int(runs), int(seed)
        self.log_mag = np.asarray(log_mag, dtype=float)  # [2, K]
        self.roots = tuple(np.asarray(r, dtype=float) for r in (root0, root_pos, root_neg))  # each [2, K, 4, 4]
        self.sigma_table = np.asarray(sigma, dtype=float)  # [2, levels, K, 4]: measured std of δθ
        self._torch = {}

    @classmethod
    def from_pdk(cls, spec: str, runs: int = MISMATCH_RUNS, seed: int = MISMATCH_SEED) -> "MismatchModel":
        """Measure (or read from the deck cache) the δθ table of ``PDK[:CORNER]`` (also ``cell:PDK``).

        Raises
        ------
        InputError
            The PDK has no mismatch coefficients (nothing to draw from).
        """
        from .knet import make_knet
        from .mapping import map_knet
        from .mismatch import draws, theta_deviations
        from .pdk import get_pdk

        pdk_name, corner = _parse_cell_spec(spec, "--mismatch")
        pdk = get_pdk(pdk_name)
        if pdk.mismatch is None:
            raise InputError(
                f"--mismatch {spec}: PDK {pdk_name} has no Pelgrom mismatch coefficients (Pdk.mismatch, "
                "kcompile/pdk.py), so the signed cell's θ deviations cannot be measured; add A_VT and A_beta per "
                f"device flavour from the foundry's matching data, then --mismatch measures the table once with "
                f"ngspice ({runs} seeded draws per table point, cached)")
        box = theta_box(f"cell:{pdk_name}:{corner}")
        mags = np.array([np.geomspace(box.lo[s], box.hi[s], MISMATCH_POINTS) for s in (0, 1)])  # [2, K]
        sign = np.array([1.0, -1.0])[:, None, None]
        theta0 = np.broadcast_to(sign * mags[:, None, :], (2, len(MISMATCH_LEVELS), MISMATCH_POINTS))
        theta1 = np.broadcast_to(np.array(MISMATCH_LEVELS)[None, :, None], theta0.shape)
        theta = np.stack([theta0.ravel(), theta1.ravel()], axis=1)
        e = len(theta)
        knet = make_knet(2, "relu", [(np.ones(e, np.int64), np.full(e, 2), theta)], [0.0, 1.0],
                         input_nodes=[1], output_nodes=[2])
        dev = theta_deviations(map_knet(knet, pdk_name, corner), draws(pdk.mismatch, seed, runs),
                               dspan=MISMATCH_DSPAN)
        dev = dev.reshape(runs, *theta0.shape, 4)
        centred = dev - dev.mean(axis=0)
        cov = np.einsum("rslki,rslkj->slkij", centred, centred) / max(runs - 1, 1)  # [2, levels, K, 4, 4]
        extra_pos = cov[:, 1] - cov[:, 0]
        conducts = (mags * MISMATCH_DSPAN >= 2.0)[..., None, None]  # the θ1 = -1 kink within half the sweep
        extra_neg = np.where(conducts, cov[:, 2] - cov[:, 0], extra_pos)
        return cls(pdk_name, corner, runs, seed, np.log(mags), _psd_root(cov[:, 0]), _psd_root(extra_pos),
                   _psd_root(extra_neg), np.sqrt(np.einsum("slkii->slki", cov)))

    def summary(self) -> dict:
        """What the model holds, for ``meta.training``."""
        sig = self.sigma_table.round(5)
        return {"pdk": self.pdk, "corner": self.corner, "runs_per_point": self.runs, "seed": self.seed,
                "theta1_levels": list(MISMATCH_LEVELS), "table_theta0_abs": np.exp(self.log_mag).round(6).tolist(),
                "sigma": {"order": "[sign (θ0 >= 0, θ0 < 0)][θ1 level][|θ0| point][δθ0_s, δθ1_s, δθ0_d, δθ1_d]",
                          "values": sig.tolist()},
                "model": "δθ ~ N(0, Σ0(|θ0|) + θ1²·Σ±(|θ0|)) per device and die, measured by "
                         "kcompile.mismatch.theta_deviations (relu fits of sink and source currents)"}

    def _tensors(self, torch, dtype):
        if dtype not in self._torch:
            t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
            self._torch[dtype] = (t(self.log_mag), *(t(r.reshape(2, r.shape[1], 16)) for r in self.roots))
        return self._torch[dtype]

    def _roots(self, theta0, theta1):
        """Per device the square root of its covariance, ``[E, 4, 4]`` (torch, differentiable in θ)."""
        torch = require_torch()
        log_mag, r0, rp, rn = self._tensors(torch, theta0.dtype)
        at = lambda r: _signed_interp(torch, theta0, log_mag, r).reshape(theta0.shape + (4, 4))  # noqa: E731
        return at(r0), at(rp).where((theta1 >= 0)[:, None, None], at(rn))

    def sample(self, theta0, theta1, dies: int, generator=None, scale: float = 1.0):
        """``[dies, E, 4]`` draws of δθ for devices with relu-form ``θ0``, ``θ1`` (torch ``[E]`` each)."""
        torch = require_torch()
        s0, s1 = self._roots(theta0, theta1)
        z = torch.randn((dies, theta0.shape[0], 4, 2), dtype=theta0.dtype, generator=generator)
        d = (s0 @ z[..., 0:1])[..., 0] + theta1.abs()[:, None] * (s1 @ z[..., 1:2])[..., 0]
        return scale * d

    def sigma(self, theta0, theta1) -> np.ndarray:
        """``[E, 4]``: the standard deviation of each δθ component the model draws (NumPy in and out)."""
        torch = require_torch()
        t0, t1 = (torch.as_tensor(np.asarray(a, dtype=float)) for a in (theta0, theta1))
        s0, s1 = self._roots(t0, t1)
        cov = s0 @ s0.transpose(-1, -2) + (t1 ** 2)[:, None, None] * (s1 @ s1.transpose(-1, -2))
        return cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy()


# ------------------------------------------------------------------ topology generators

def fully_connected(num_nodes: int, include_ground: bool = True, repeat: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair ``s → d`` (``s != d``) of nodes ``0..N`` (``1..N`` without ground).

    Each pair carries ``repeat`` parallel devices (consecutive). With ground,
    a layer has ``repeat · N · (N + 1)`` devices.
    """
    nodes = np.arange(0 if include_ground else 1, num_nodes + 1)
    s, d = np.meshgrid(nodes, nodes, indexing="ij")
    off = s != d
    return np.repeat(s[off], repeat), np.repeat(d[off], repeat)


def chain(num_nodes: int, include_ground: bool = True, both_ways: bool = True,
          repeat: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A chain ``0 → 1 → … → N`` (from 1 without ground), and back with ``both_ways``."""
    a = np.arange(0 if include_ground else 1, num_nodes)
    src, dst = (np.r_[a, a + 1], np.r_[a + 1, a]) if both_ways else (a, a + 1)
    return np.repeat(src, repeat), np.repeat(dst, repeat)


def mix(height: int, width: int, hubs: int, neighbor: int = 3, include_ground: bool = True,
        hub_to_hub: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour-plus-hub topology for images.

    Pixel nodes ``1..H·W`` (row-major) link both ways to every other pixel
    within a ``neighbor × neighbor`` window (Chebyshev distance
    ``≤ neighbor // 2``), and to ground; hub nodes ``H·W + 1 .. H·W + hubs``
    link both ways to every pixel and to ground (and to each other with
    ``hub_to_hub``). Each ordered pair carries one device.
    """
    p = height * width
    r, c = np.divmod(np.arange(p), width)
    near = (np.abs(r[:, None] - r[None, :]) <= neighbor // 2) & (np.abs(c[:, None] - c[None, :]) <= neighbor // 2)
    np.fill_diagonal(near, False)
    s_pix, d_pix = np.nonzero(near)
    src, dst = [s_pix + 1], [d_pix + 1]
    pixels = np.arange(1, p + 1)
    hub_ids = np.arange(p + 1, p + hubs + 1)
    if include_ground:
        src += [pixels, np.zeros(p, np.int64)]
        dst += [np.zeros(p, np.int64), pixels]
    others = np.r_[0, pixels] if include_ground else pixels
    for h in hub_ids:
        src += [others, np.full(others.size, h)]
        dst += [np.full(others.size, h), others]
    if hub_to_hub and hubs > 1:
        hs, hd = np.meshgrid(hub_ids, hub_ids, indexing="ij")
        off = hs != hd
        src.append(hs[off])
        dst.append(hd[off])
    return np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Topology:
    """Where the devices sit: one ``(src, dst)`` per layer, plus input and output nodes."""

    num_nodes: int
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    input_nodes: np.ndarray
    input_index: np.ndarray
    output_nodes: np.ndarray
    description: dict
    capacitance: float | np.ndarray = 1.0  # per node ([N]) or one for all

    def num_params(self, law: str) -> int:
        return LAWS[law].num_params * sum(int(s.size) for s, _ in self.layers)


def _fc_params(n: int, law: str, layers: int) -> int:
    return layers * n * (n + 1) * LAWS[law].num_params


def fully_connected_sizes(num_features: int, num_outputs: int, law: str, layers: int = 2) -> dict[str, int]:
    """Node count per size for :func:`fully_connected_topology`.

    Each size takes the ``N ≥ F + M`` whose parameter count is closest (in
    ratio) to its :data:`SIZE_PARAMS` budget. When the inputs force ``N`` up
    so that a size would repeat the smaller one, its budget moves to the
    geometric midpoint between its own and the next budget (for ``medium``:
    ``sqrt(530 · 1520) ≈ 898``), else to ``N + 1``. For the 10-feature
    Diabetes data this gives 528 / 840 / 1520 parameters, the paper's sizes.
    """
    n_min = num_features + num_outputs

    def closest(target):
        return min(range(n_min, n_min + 400), key=lambda n: abs(math.log(_fc_params(n, law, layers) / target)))

    names = list(SIZE_PARAMS)
    out, prev = {}, 0
    for i, name in enumerate(names):
        n = closest(SIZE_PARAMS[name])
        if n <= prev and i + 1 < len(names):
            n = closest(math.sqrt(SIZE_PARAMS[name] * SIZE_PARAMS[names[i + 1]]))
        out[name] = n = max(n, prev + 1)
        prev = n
    return out


def fully_connected_topology(num_features: int, num_outputs: int, law: str, size: str = "small",
                             layers: int = 2, num_nodes: int | None = None, repeat: int = 1) -> Topology:
    """Fully connected (ground included) KirchhoffNet for tabular data.

    Inputs are nodes ``1..F``; outputs the last ``M`` nodes ``N−M+1..N``. The
    node count ``N`` (``≥ F + M``) is the one whose parameter count
    ``layers · N (N + 1) · P`` is closest (in ratio) to :data:`SIZE_PARAMS`;
    with the ``relu`` law and 2 layers that gives the paper's Table I sizes
    168 / 528 / 1520 (N = 6 / 11 / 19) when the features fit (see
    :func:`fully_connected_sizes` for when they do not). ``repeat`` parallel devices per ordered pair (each
    its own θ): a pair's current is then the sum of ``repeat`` cells, whose mismatch partly averages out.
    """
    if repeat < 1:
        raise InputError(f"--repeat must be at least 1, got {repeat}")
    n_min = num_features + num_outputs
    if num_nodes is None:
        num_nodes = fully_connected_sizes(num_features, num_outputs, law, layers)[size]
    elif num_nodes < n_min:
        raise InputError(f"--nodes {num_nodes} is too few for {num_features} inputs and {num_outputs} outputs")
    edges = fully_connected(num_nodes, repeat=repeat)
    return Topology(
        num_nodes, tuple(edges for _ in range(layers)),
        np.arange(1, num_features + 1), np.arange(num_features),
        np.arange(num_nodes - num_outputs + 1, num_nodes + 1),
        {"generator": "fully_connected", "include_ground": True, "repeat": repeat, "num_nodes": num_nodes,
         "layers": layers, "size": size, "inputs": "nodes 1..F", "outputs": "last M nodes"},
    )


def mix_topology(image_shape: tuple[int, int], num_outputs: int, size: str = "small", layers: int = 2,
                 neighbor: int = 3) -> Topology:
    """Neighbour-plus-hub KirchhoffNet for images: pixels are the input nodes,
    the first ``M`` hubs the outputs; ``M +`` :data:`SIZE_HUBS` hubs in all."""
    h, w = image_shape
    hubs = num_outputs + SIZE_HUBS[size]
    edges = mix(h, w, hubs, neighbor)
    p = h * w
    return Topology(
        p + hubs, tuple(edges for _ in range(layers)),
        np.arange(1, p + 1), np.arange(p), np.arange(p + 1, p + num_outputs + 1),
        {"generator": "mix", "neighbor": neighbor, "hubs": hubs, "include_ground": True, "hub_to_hub": True,
         "layers": layers, "size": size, "inputs": "pixel nodes 1..H*W (row-major)",
         "outputs": "first M hub nodes"},
    )


def hidden_topology(num_features: int, num_outputs: int, hidden: int, used: np.ndarray | None = None,
                    layers: int = 2, input_capacitance: float = 1.0, hidden2: int | None = None) -> Topology:
    """Inputs → hidden nodes (→ a second hidden group) → outputs, for a small device budget (images).

    Nodes: one per feature (``1..F``, all input nodes), then ``hidden`` hidden nodes, then ``hidden2``
    second hidden nodes if given, then the ``num_outputs`` output nodes. Layer 0: one device from every
    *used* input node to every hidden node (the input node is its s terminal; its θ0 sign sets whether the
    input raises or lowers the current) and one each way between every hidden node and ground. With
    ``hidden2`` (three layer windows), layer 1: one device each way between every hidden and every second
    hidden node, and between every second hidden node and ground. The last layer: one device each way
    between every node of the last hidden group and every output node, and between every output node and
    ground. Input nodes not in ``used`` (feature indices; default all) carry no device: their features are
    read but ignored, so the network takes the same input rows. ``input_capacitance`` is the input nodes'
    capacitance (the others have 1): a larger one holds the input voltages while layer 0's devices draw
    from them.
    """
    windows = 2 if hidden2 is None else 3
    if layers != windows:
        raise InputError(f"--hidden builds two layer windows (inputs → hidden → outputs), with --hidden2 three "
                         f"(give --layers {windows}), got --layers {layers}")
    if hidden < 1 or (hidden2 is not None and hidden2 < 1):
        raise InputError(f"--hidden and --hidden2 must be at least 1, got {hidden} and {hidden2}")
    used = np.arange(num_features) if used is None else np.asarray(used, dtype=np.int64)
    inputs = used + 1
    groups, first = [], num_features + 1
    for size in (hidden, hidden2 or 0, num_outputs):
        groups.append(np.arange(first, first + size))
        first += size
    hid, hid2, out = groups
    ground = lambda n: np.zeros(n, np.int64)  # noqa: E731

    def both_ways(a, b):  # a <-> b for every pair, then b <-> ground
        pa, pb = (x.ravel() for x in np.meshgrid(a, b, indexing="ij"))
        return np.r_[pa, pb, b, ground(b.size)], np.r_[pb, pa, ground(b.size), b]

    s0 = np.r_[np.repeat(inputs, hidden), hid, ground(hidden)]
    d0 = np.r_[np.tile(hid, inputs.size), ground(hidden), hid]
    mid = [both_ways(hid, hid2)] if hidden2 else []
    last = both_ways(hid2 if hidden2 else hid, out)
    description = {"generator": "hidden", "hidden": hidden, **({"hidden2": hidden2} if hidden2 else {}),
                   "layers": windows, "used_inputs": int(used.size),
                   "used_feature_index": used.tolist() if used.size < num_features else "all",
                   "layer0": "every used input -> every hidden node; hidden <-> ground",
                   **({"layer1": "hidden <-> hidden2 (both ways); hidden2 <-> ground"} if hidden2 else {}),
                   f"layer{windows - 1}": f"{'hidden2' if hidden2 else 'hidden'} <-> outputs (both ways); "
                                          "outputs <-> ground",
                   "inputs": "nodes 1..F (all features)", "outputs": "last M nodes",
                   "input_capacitance": input_capacitance}
    return Topology(
        first - 1, ((s0, d0), *mid, last), np.arange(1, num_features + 1), np.arange(num_features), out,
        description, np.r_[np.full(num_features, float(input_capacitance)), np.ones(first - 1 - num_features)],
    )


def used_pixels(task: Task, pixel_min: float | None) -> np.ndarray | None:
    """Feature indices whose mean over the training split exceeds ``pixel_min`` (``None``: all)."""
    if pixel_min is None:
        return None
    used = np.flatnonzero(task.X_train.mean(axis=0) > pixel_min)
    if used.size == 0:
        raise InputError(f"--pixel-min {pixel_min} leaves no input: every feature's training mean is at most that")
    return used


def task_topology(task: Task, law: str, size: str, layers: int, hidden: int | None = None,
                  pixel_min: float | None = None, input_capacitance: float = 1.0, repeat: int = 1,
                  hidden2: int | None = None) -> Topology:
    """The default topology of a task: ``mix`` for images, fully connected otherwise; with ``hidden``
    :func:`hidden_topology` on the features whose training mean exceeds ``pixel_min``."""
    if hidden is not None:
        return hidden_topology(task.num_features, task.num_outputs, hidden, used_pixels(task, pixel_min), layers,
                               input_capacitance, hidden2)
    if pixel_min is not None or input_capacitance != 1.0 or hidden2 is not None:
        raise InputError("--pixel-min, --input-capacitance and --hidden2 shape the topology of --hidden, "
                         "which is not given")
    if task.image_shape is not None:
        if repeat != 1:
            raise InputError("--repeat applies to the fully connected topology of tabular tasks")
        return mix_topology(task.image_shape, task.num_outputs, size, layers)
    return fully_connected_topology(task.num_features, task.num_outputs, law, size, layers, repeat=repeat)


# ------------------------------------------------------------------ the model in torch

class TorchKNet:
    """A KirchhoffNet as torch tensors: ``θ`` per layer (leaf tensors) and the RK4 forward pass.

    Not an ``nn.Module`` on purpose (this module imports without torch);
    :meth:`parameters` gives what an optimiser needs.
    """

    #: above this many nodes the right-hand side gathers and scatters (index ops)
    #: instead of multiplying by dense incidence matrices
    DENSE_MAX_NODES = 128

    def __init__(self, topology: Topology, law: str, t_bounds, thetas, capacitance: float | np.ndarray = 1.0,
                 dtype=None):
        torch = require_torch()
        self.torch, self.topology, self.law = torch, topology, law
        self.dtype = dtype or torch.float64
        self.t_bounds = np.asarray(t_bounds, dtype=float)
        #: node capacitances ``[N]`` (a scalar applies to every node)
        self.capacitance = np.broadcast_to(np.asarray(capacitance, dtype=float), (topology.num_nodes,)).copy()
        self.cinv = torch.as_tensor(1.0 / self.capacitance, dtype=self.dtype)
        n = topology.num_nodes
        self.dense = n <= self.DENSE_MAX_NODES
        self.layer_ops = []
        for s, d in topology.layers:
            e = np.arange(s.size)
            ops = {"src": torch.as_tensor(s, dtype=torch.long), "dst": torch.as_tensor(d, dtype=torch.long)}
            if self.dense:
                # gather [N, E] (ground row dropped: it is 0 V) and scatter [E, N] (±1/C)
                sel_s, sel_d = np.zeros((n + 1, s.size)), np.zeros((n + 1, s.size))
                sel_s[s, e] = 1.0
                sel_d[d, e] = 1.0
                ops["S"] = torch.as_tensor(sel_s[1:], dtype=self.dtype)
                ops["D"] = torch.as_tensor(sel_d[1:], dtype=self.dtype)
                ops["delta"] = torch.as_tensor(sel_s[1:] - sel_d[1:], dtype=self.dtype)
                ops["scatter"] = torch.as_tensor((sel_d[1:] - sel_s[1:]).T / self.capacitance, dtype=self.dtype)
                ops["into"] = torch.as_tensor(sel_d[1:].T / self.capacitance, dtype=self.dtype)
                ops["out"] = torch.as_tensor(sel_s[1:].T / self.capacitance, dtype=self.dtype)
            self.layer_ops.append(ops)
        #: a :class:`CellSurrogate` used in place of the ideal ``relu`` law (``--device-in-the-loop``)
        self.surrogate = None
        #: a :class:`MismatchModel` whose δθ a forward pass with ``mismatch=`` draws (``--mismatch``)
        self.mismatch = None
        self.thetas = [torch.as_tensor(np.array(t), dtype=self.dtype).clone().requires_grad_(True)
                       for t in thetas]
        self.input_nodes = torch.as_tensor(topology.input_nodes - 1, dtype=torch.long)
        self.input_index = torch.as_tensor(np.array(topology.input_index), dtype=torch.long)
        self.output_nodes = torch.as_tensor(topology.output_nodes - 1, dtype=torch.long)

    @classmethod
    def init(cls, topology: Topology, law: str, t_bounds, *, seed: int = 0, init_scale: float = 1.0,
             dtype=None) -> "TorchKNet":
        """Random θ: ``N(0, σ²)`` per entry, ``σ = init_scale / sqrt(mean devices per node)``."""
        rng = np.random.default_rng(seed)
        thetas = []
        for s, d in topology.layers:
            degree = 2.0 * s.size / max(1, topology.num_nodes)
            sigma = init_scale / math.sqrt(max(degree, 1.0))
            thetas.append(rng.normal(0.0, sigma, (s.size, LAWS[law].num_params)))
        return cls(topology, law, t_bounds, thetas, topology.capacitance, dtype=dtype)

    @classmethod
    def from_knet(cls, knet: KNet, dtype=None) -> "TorchKNet":
        """The network of a :class:`~kcompile.knet.KNet` (its θ as the parameters)."""
        topo = Topology(knet.num_nodes, tuple((np.array(la.src), np.array(la.dst)) for la in knet.layers),
                        np.asarray(knet.input_nodes), np.asarray(knet.input_index), np.asarray(knet.output_nodes),
                        dict(knet.meta.get("model", {}).get("topology", {})))
        return cls(topo, knet.law, knet.t_bounds, [la.theta for la in knet.layers], capacitance=knet.capacitance,
                   dtype=dtype)

    def parameters(self):
        return list(self.thetas)

    @property
    def num_params(self) -> int:
        return sum(int(t.numel()) for t in self.thetas)

    def _currents(self, ops, v, cols):
        """Device currents ``[B, E]``; ``cols`` are θ's columns (each ``[E]``)."""
        if self.dense:
            vs, vd = v @ ops["S"], v @ ops["D"]
        else:
            vg = self.torch.nn.functional.pad(v, (1, 0))  # column 0: ground
            vs, vd = vg[:, ops["src"]], vg[:, ops["dst"]]
        return LAWS[self.law].torch_columns(vs, vd, cols)

    def rhs(self, k: int, v, cols):
        """``dv/dt`` of layer ``k`` for node voltages ``v`` ``[B, N]`` and θ columns ``cols``
        (or the split-current parameters of :meth:`layer_params`)."""
        ops = self.layer_ops[k]
        if self.surrogate is not None and not isinstance(cols, dict):
            cols = self.layer_params(self.torch.stack(cols, 1))
        if isinstance(cols, dict):
            return self._split_rhs(ops, v, cols)
        g = self._currents(ops, v, cols)
        if self.dense:
            return g @ ops["scatter"]
        out = v.new_zeros((v.shape[0], self.topology.num_nodes + 1))
        out = out.index_add(1, ops["dst"], g).index_add(1, ops["src"], -g)
        return out[:, 1:] * self.cinv

    def layer_params(self, theta, dies: int = 0, generator=None, scale: float = 1.0):
        """θ ``[E, 2]`` of a relu layer as split-current parameters, or θ's columns when the ideal law applies.

        The split form (``dict``) gives the sink side ``a_s``, ``b_s`` and the source side ``a_d``, ``b_d``
        (``i_s = f(a_s·Δ + b_s)``, ``i_d = ρ·f(a_d·Δ + b_d)``), the knee ``w`` (``f = w·softplus(·/w)``; ``None``:
        the ideal relu) and the copy ratio ``rho`` (``None``: 1), from the cell surrogate when there is one. With
        ``dies > 0`` each side also gets δθ drawn from :attr:`mismatch` (``[dies, E]``, times ``scale``; the
        source side's δθ are divided by ρ, since they were measured on the source current).
        """
        cols = theta.unbind(1)
        if self.surrogate is None and not dies:
            return cols
        a0, b, w, rho = self.surrogate.prepare(cols[0], cols[1]) if self.surrogate is not None else (*cols, None, None)
        p = {"a_s": a0, "b_s": b, "a_d": a0, "b_d": b, "w": w, "rho": rho}
        if dies:
            d = self.mismatch.sample(a0, b, dies, generator, scale)
            r = 1.0 if rho is None else rho
            p.update(a_s=a0 + d[..., 0], b_s=b + d[..., 1], a_d=a0 + d[..., 2] / r, b_d=b + d[..., 3] / r)
        return p

    def _split_rhs(self, ops, v, p):
        """``dv/dt`` with separate sink and source currents: ``i_s`` leaves s, ``i_d`` enters d (they differ)."""
        torch = self.torch
        if self.dense:
            delta = v @ ops["delta"]
        else:
            vg = torch.nn.functional.pad(v, (1, 0))
            delta = vg[:, ops["src"]] - vg[:, ops["dst"]]

        def law(a, b):
            u = torch.addcmul(b, delta, a)
            return u.clamp_min(0.0) if p["w"] is None else p["w"] * torch.nn.functional.softplus(u / p["w"])

        i_s = law(p["a_s"], p["b_s"])
        i_d = i_s if p["a_d"] is p["a_s"] and p["b_d"] is p["b_s"] else law(p["a_d"], p["b_d"])
        if p["rho"] is not None:
            i_d = p["rho"] * i_d
        if self.dense:
            return i_d @ ops["into"] - i_s @ ops["out"]
        out = v.new_zeros((v.shape[0], self.topology.num_nodes + 1))
        out = out.index_add(1, ops["dst"], i_d).index_add(1, ops["src"], -i_s)
        return out[:, 1:] * self.cinv

    def forward(self, x, dt: float, *, theta_noise: float = 0.0, voltage_noise: float = 0.0, generator=None,
                mismatch: str | None = None, mismatch_scale: float = 1.0):
        """Output-node voltages at ``t_L`` (``[B, M]``) for inputs ``x`` ``[B, F]``.

        ``theta_noise`` adds ``N(0, theta_noise²)`` to every θ once per call;
        ``voltage_noise`` adds ``N(0, voltage_noise²·h)`` to the state after
        every RK4 step of length ``h`` (a Wiener-like disturbance whose
        variance over a window does not depend on ``dt``). Both default to 0.
        ``mismatch`` draws every device's δθ from :attr:`mismatch` (σ times
        ``mismatch_scale``) once per call: ``"sample"`` one die per input row,
        ``"shared"`` one die for the whole batch.
        """
        return self.forward_with_penalty(x, dt, theta_noise=theta_noise, voltage_noise=voltage_noise,
                                         generator=generator, mismatch=mismatch, mismatch_scale=mismatch_scale)[0]

    def forward_with_penalty(self, x, dt: float, voltage_max: float | None = None, *, theta_noise: float = 0.0,
                             voltage_noise: float = 0.0, generator=None, mismatch: str | None = None,
                             mismatch_scale: float = 1.0):
        """:meth:`forward` plus the voltage-range penalty and the peak ``|v|``.

        Returns ``(outputs, penalty, peak)``: ``penalty`` is the mean over RK4
        step states, samples and nodes of ``relu(|v| − voltage_max)²`` (a
        0-d tensor; 0 when ``voltage_max`` is None) and ``peak`` the largest
        ``|v|`` over the whole trajectory (a float, no gradient).
        """
        torch = self.torch
        x = torch.as_tensor(x, dtype=self.dtype)
        v = x.new_zeros((x.shape[0], self.topology.num_nodes))
        v = v.index_copy(1, self.input_nodes, x[:, self.input_index])
        excess, n_states = v.new_zeros(()), 0
        peak = float(v.detach().abs().max()) if v.numel() else 0.0
        dies = {None: 0, "sample": x.shape[0], "shared": 1}[mismatch]
        if dies and self.mismatch is None:
            raise KCompileError("a forward pass with mismatch needs TorchKNet.mismatch (a MismatchModel)")
        for k, theta in enumerate(self.thetas):
            if theta_noise:
                theta = theta + theta_noise * torch.randn(theta.shape, dtype=theta.dtype, generator=generator)
            cols = self.layer_params(theta, dies, generator, mismatch_scale)
            t0, t1 = self.t_bounds[k], self.t_bounds[k + 1]
            steps = max(1, int(np.ceil((t1 - t0) / dt - 1e-9)))
            h = (t1 - t0) / steps
            for _ in range(steps):
                k1 = self.rhs(k, v, cols)
                k2 = self.rhs(k, torch.add(v, k1, alpha=h / 2), cols)
                k3 = self.rhs(k, torch.add(v, k2, alpha=h / 2), cols)
                k4 = self.rhs(k, torch.add(v, k3, alpha=h), cols)
                v = torch.add(v, torch.add(k1 + k4, k2 + k3, alpha=2.0), alpha=h / 6)
                if voltage_noise:
                    v = v + voltage_noise * math.sqrt(h) * torch.randn(v.shape, dtype=v.dtype, generator=generator)
                if voltage_max is not None:
                    excess = excess + ((v.abs() - voltage_max).clamp_min(0.0) ** 2).mean()
                    n_states += 1
                peak = max(peak, float(v.detach().abs().max()))
        return v[:, self.output_nodes], excess / max(n_states, 1), peak

    __call__ = forward

    def theta_arrays(self) -> list[np.ndarray]:
        return [t.detach().cpu().numpy().astype(np.float64) for t in self.thetas]

    def to_knet(self, meta: dict | None = None) -> KNet:
        """The trained network as a :class:`~kcompile.knet.KNet` (θ in float64)."""
        topo = self.topology
        return make_knet(
            topo.num_nodes, self.law,
            [(s, d, th) for (s, d), th in zip(topo.layers, self.theta_arrays())],
            self.t_bounds, capacitance=self.capacitance if np.ptp(self.capacitance) else self.capacitance[0],
            input_nodes=topo.input_nodes,
            input_index=topo.input_index, output_nodes=topo.output_nodes, meta=meta,
        )


def mlp_hidden_width(num_features: int, num_outputs: int, target_params: int, hidden_layers: int = 2) -> int:
    """Hidden width ``h`` whose ReLU-MLP ``F → h → … → h → M`` has the parameter count closest to the target."""
    return min(range(1, 2000), key=lambda h: abs(mlp_num_params(num_features, num_outputs, h, hidden_layers)
                                                 - target_params))


def mlp_num_params(num_features: int, num_outputs: int, width: int, hidden_layers: int = 2) -> int:
    sizes = [num_features] + [width] * hidden_layers + [num_outputs]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


class TorchMLP:
    """ReLU-MLP baseline ``F → h (ReLU) → … → h (ReLU) → M`` with PyTorch's default init."""

    def __init__(self, num_features: int, num_outputs: int, width: int, hidden_layers: int = 2, seed: int = 0,
                 dtype=None):
        torch = require_torch()
        self.torch, self.dtype = torch, dtype or torch.float64
        torch.manual_seed(seed)
        mods = []
        sizes = [num_features] + [width] * hidden_layers
        for a, b in zip(sizes[:-1], sizes[1:]):
            mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        mods.append(torch.nn.Linear(sizes[-1], num_outputs))
        self.net = torch.nn.Sequential(*mods).to(self.dtype)
        self.width, self.hidden_layers = width, hidden_layers

    def parameters(self):
        return list(self.net.parameters())

    @property
    def num_params(self) -> int:
        return sum(int(p.numel()) for p in self.net.parameters())

    def forward(self, x, dt=None, **_):
        return self.net(self.torch.as_tensor(x, dtype=self.dtype))

    __call__ = forward


# ------------------------------------------------------------------ training

@dataclass
class TrainConfig:
    """Hyper-parameters of one run (recorded in ``meta.training``)."""

    epochs: int = 100
    lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    dt: float = 0.05
    t_layer: float = 1.0
    init_scale: float = 0.3
    weight_decay: float = 0.0
    theta_max: float | None = None
    theta_noise: float = 0.0
    voltage_noise: float = 0.0
    voltage_max: float | None = None
    voltage_weight: float = 10.0
    theta_range: str | None = None
    device_in_the_loop: str | None = None
    mismatch: str | None = None
    mismatch_scale: float = 1.0
    mismatch_weight: float = 0.0
    augment_shift: int = 0
    dtype: str = "float32"
    optimizer: str = "Adam"
    schedule: str = "cosine (lr -> 0 over all epochs)"


#: per-task defaults (law, epochs, batch size, learning rate, RK4 step, dtype); CLI options override them
TASK_DEFAULTS = {
    "moons": {"law": "relu", "epochs": 40, "batch_size": 32, "lr": 0.02, "dt": 0.05},
    "circles": {"law": "relu", "epochs": 40, "batch_size": 32, "lr": 0.02, "dt": 0.05},
    "friedman": {"law": "relu", "epochs": 100, "batch_size": 32, "lr": 0.01, "dt": 0.1},
    "diabetes": {"law": "relu", "epochs": 150, "batch_size": 32, "lr": 0.005, "dt": 0.1},
    "housing": {"law": "relu", "epochs": 150, "batch_size": 32, "lr": 0.005, "dt": 0.1},
    "digits": {"law": "relu", "epochs": 20, "batch_size": 64, "lr": 0.01, "dt": 0.1},
    "mnist14": {"law": "relu", "epochs": 10, "batch_size": 64, "lr": 0.01, "dt": 0.1},
}


def _loss_fn(task: Task):
    torch = require_torch()
    if task.kind == "classification":
        return lambda out, y: torch.nn.functional.cross_entropy(out, y)
    return lambda out, y: torch.nn.functional.mse_loss(out[:, 0], y)


def _targets(task: Task, y):
    torch = require_torch()
    return torch.as_tensor(y, dtype=torch.long if task.kind == "classification" else torch.float64)


def shifted(torch, x, shape: tuple[int, int], shift: int, generator):
    """Images ``x`` ``[B, H·W]`` (row-major) each moved by its own random offset in ``{-shift..shift}²``,
    blank (0) where they move in from outside."""
    h, w = shape
    b = x.shape[0]
    padded = torch.nn.functional.pad(x.reshape(b, h, w), (shift, shift, shift, shift))
    dy, dx = (torch.randint(0, 2 * shift + 1, (b,), generator=generator) for _ in range(2))
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, :, None]
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, :]
    return padded[torch.arange(b)[:, None, None], rows, cols].reshape(b, h * w)


def fit(model, task: Task, cfg: TrainConfig, log=None, progress=None) -> dict:
    """Adam on mini-batches with a cosine learning-rate schedule; returns the loss history.

    ``model`` is a :class:`TorchKNet` or :class:`TorchMLP`; noise options only
    act on a :class:`TorchKNet`, and ``theta_max`` clamps its θ after each step.
    Hardware-aware options (:class:`TorchKNet` only): ``voltage_max`` adds
    ``voltage_weight · mean(relu(|v| − voltage_max)²)`` over every RK4 step state
    to the loss; ``theta_range`` (``cell:PDK``) projects θ into the signed cell's
    calibrated range after every step (:func:`theta_box`); ``augment_shift`` moves every training image by a
    random offset of up to that many pixels each time it is drawn (:func:`shifted`); ``mismatch``
    (``PDK[:CORNER]``) draws every device's δθ from the cell's measured mismatch (:class:`MismatchModel`, σ
    times ``mismatch_scale``), one die per sample, in every forward pass, and ``mismatch_weight`` adds that
    weight times the mean squared change of the outputs against the nominal die. The loss history is the task
    loss alone. ``progress(step, steps, loss)`` is called after every optimiser step with the epoch's running
    mean loss.
    """
    torch = require_torch()
    gen = torch.Generator().manual_seed(cfg.seed)
    X = torch.as_tensor(task.X_train, dtype=model.dtype)
    y = _targets(task, task.y_train)
    if task.kind == "regression":
        y = y.to(model.dtype)
    loss_fn = _loss_fn(task)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    noise = {}
    knet_model = isinstance(model, TorchKNet)
    if knet_model:
        noise = {"theta_noise": cfg.theta_noise, "voltage_noise": cfg.voltage_noise, "generator": gen}
    mismatch = {}
    if knet_model and cfg.mismatch:
        if model.law != "relu":
            raise _no_mismatch_table(f"law {model.law!r}")
        if model.mismatch is None:
            model.mismatch = MismatchModel.from_pdk(cfg.mismatch)
        mismatch = {"mismatch": "sample", "mismatch_scale": cfg.mismatch_scale}
    box = None
    if knet_model and cfg.theta_range:
        box = theta_box(cfg.theta_range, model.law)
        project_thetas(model.thetas, None, box)  # start inside the box too
    if cfg.augment_shift and task.image_shape is None:
        raise InputError(f"--augment-shift moves images; task {task.name!r} has no image shape")
    history, penalties, peaks, spreads = [], [], [], []
    steps_per_epoch = -(-X.shape[0] // cfg.batch_size)
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        total, total_pen, total_spread, count, peak = 0.0, 0.0, 0.0, 0, 0.0
        for i in range(0, X.shape[0], cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb = shifted(torch, X[idx], task.image_shape, cfg.augment_shift, gen) if cfg.augment_shift else X[idx]
            if knet_model:
                out, pen, pk = model.forward_with_penalty(xb, cfg.dt, cfg.voltage_max, **noise, **mismatch)
                task_loss = loss_fn(out, y[idx])
                loss = task_loss + cfg.voltage_weight * pen if cfg.voltage_max is not None else task_loss
                if mismatch and cfg.mismatch_weight:  # the outputs' spread under mismatch, against the nominal die
                    spread = ((out - model(xb, cfg.dt)) ** 2).mean()
                    loss = loss + cfg.mismatch_weight * spread
                    total_spread += float(spread.detach()) * idx.numel()
                total_pen += float(pen.detach()) * idx.numel()
                peak = max(peak, pk)
            else:
                task_loss = loss = loss_fn(model(xb, cfg.dt), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if knet_model:
                project_thetas(model.thetas, cfg.theta_max, box)
            total += float(task_loss.detach()) * idx.numel()
            count += idx.numel()
            if progress:
                progress(epoch * steps_per_epoch + i // cfg.batch_size + 1, cfg.epochs * steps_per_epoch, total / count)
        sched.step()
        history.append(total / count)
        penalties.append(total_pen / count)
        peaks.append(peak)
        spreads.append(total_spread / count)
        if not math.isfinite(history[-1]):
            raise KCompileError(f"training diverged at epoch {epoch + 1} (loss {history[-1]}): "
                                "lower --lr, --init-scale or --dt")
        if log and (epoch + 1 == cfg.epochs or (epoch + 1) % max(1, cfg.epochs // 10) == 0):
            extra = (f", voltage penalty {penalties[-1]:.3g}, peak |v| {peaks[-1]:.3g}"
                     if cfg.voltage_max is not None and knet_model else "")
            extra += f", mismatch spread {spreads[-1]:.3g}" if mismatch and cfg.mismatch_weight else ""
            log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {history[-1]:.4g}{extra} "
                f"({time.perf_counter() - t_start:.0f} s)")
    return {"loss": history, "voltage_penalty": penalties, "peak_voltage": peaks, "mismatch_spread": spreads,
            "seconds": time.perf_counter() - t_start}


def score(task: Task, outputs: np.ndarray, y: np.ndarray) -> dict:
    """Metrics of outputs ``[B, M]``: accuracy and cross-entropy, or MSE and R² (scaled target)."""
    outputs = np.asarray(outputs, dtype=float)
    if task.kind == "classification":
        z = outputs - outputs.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return {"accuracy": float(np.mean(outputs.argmax(axis=1) == y)),
                "cross_entropy": float(-np.mean(logp[np.arange(y.size), y]))}
    err = outputs[:, 0] - y
    mse = float(np.mean(err**2))
    return {"mse": mse, "r2": float(1.0 - mse / np.var(y)) if np.var(y) > 0 else float("nan")}


def _model_outputs(model, X: np.ndarray, dt: float, batch: int = 1024) -> np.ndarray:
    torch = require_torch()
    with torch.no_grad():
        return np.concatenate([model(X[i:i + batch], dt).cpu().numpy() for i in range(0, len(X), batch)])


#: samples per reference integration when scoring (dopri5's error norm spans its batch: in a large batch the
#: sample with the most ReLU kinks would set every sample's step)
EVAL_CHUNK = 500


def evaluate_knet(knet: KNet, task: Task, dt: float, rtol: float = 1e-7, atol: float = 1e-9) -> dict:
    """Score an exported network with the NumPy reference: RK4 (step ``dt``) and dopri5.

    Also reports the largest output difference between the two on the test
    split (how far the trained, discretised model is from the ODE). Splits are
    integrated :data:`EVAL_CHUNK` samples at a time.
    """
    from .reference import integrate

    res = {"rk4": {"dt": dt}, "dopri5": {"rtol": rtol, "atol": atol}}
    outs = {}
    grid = np.linspace(0.0, knet.t_bounds[-1], 50 * knet.num_layers + 1)
    peak = 0.0
    for split, X, y in (("train", task.X_train, task.y_train), ("test", task.X_test, task.y_test)):
        for method in ("rk4", "dopri5"):
            t0 = time.perf_counter()
            parts = []
            for i in range(0, len(X), EVAL_CHUNK):
                tr = integrate(knet, X[i:i + EVAL_CHUNK], method=method, dt=dt, rtol=rtol, atol=atol,
                               grid=grid if method == "dopri5" else None)
                if tr.grid_states is not None:
                    peak = max(peak, float(np.nanmax(np.abs(tr.grid_states))))
                parts.append(tr.outputs)
            outs[method, split] = np.concatenate(parts)
            res[method][split] = score(task, outs[method, split], y)
            res[method][f"{split}_seconds"] = round(time.perf_counter() - t0, 3)
    res["max_abs_output_diff_rk4_vs_dopri5"] = float(
        max(np.max(np.abs(outs["rk4", s] - outs["dopri5", s])) for s in ("train", "test")))
    res["max_abs_output"] = float(max(np.max(np.abs(outs["dopri5", s])) for s in ("train", "test")))
    res["max_rel_output_diff_rk4_vs_dopri5"] = res["max_abs_output_diff_rk4_vs_dopri5"] / max(
        res["max_abs_output"], 1e-300)
    # the largest |node voltage| anywhere on the trajectory (dopri5, 50 points per layer; train and test)
    res["max_abs_voltage"] = peak
    return res


def _provenance() -> dict:
    prov = {"kcompile": __version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import torch
        prov["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        import sklearn
        prov["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    return prov


@dataclass
class TrainResult:
    """What one run produced: the model, its exported network (KirchhoffNet only) and a report."""

    model: object
    knet: KNet | None
    report: dict = field(default_factory=dict)


def train_knet(task: Task, law: str, size: str = "small", layers: int = 2, cfg: TrainConfig | None = None,
               topology: Topology | None = None, log=None, command: str | None = None,
               evaluate: bool = True, progress=None) -> TrainResult:
    """Train a KirchhoffNet on ``task`` and export it with full ``meta``.

    Returns a :class:`TrainResult` whose ``knet.meta`` records the task, split,
    normalisation, topology, hyper-parameters, metrics (train/test, RK4 and
    dopri5) and provenance.
    """
    torch = require_torch()
    cfg = cfg or TrainConfig()
    if law not in LAWS:
        raise InputError(f"unknown law {law!r}: choose one of {', '.join(LAWS)}")
    topology = topology or task_topology(task, law, size, layers)
    layers = len(topology.layers)
    t_bounds = np.arange(layers + 1) * cfg.t_layer
    dtype = getattr(torch, cfg.dtype)
    model = TorchKNet.init(topology, law, t_bounds, seed=cfg.seed, init_scale=cfg.init_scale, dtype=dtype)
    hardware = {}
    if cfg.device_in_the_loop:
        model.surrogate = CellSurrogate.from_pdk(cfg.device_in_the_loop, law)
        hardware["surrogate"] = model.surrogate.summary()
    if cfg.theta_range:
        box = theta_box(cfg.theta_range, law)
        hardware["theta_box"] = {"theta0_abs_min": list(box.lo), "theta0_abs_max": list(box.hi),
                                 "theta1_abs_max": box.theta1_max, "source": box.source,
                                 "note": "per sign of θ0: [θ0 >= 0, θ0 < 0]; projected after every step"}
    hist = fit(model, task, cfg, log, progress)  # measures (or reads) the mismatch table of cfg.mismatch
    if model.mismatch is not None:
        hardware["mismatch"] = {**model.mismatch.summary(), "scale": cfg.mismatch_scale,
                                "spread_weight": cfg.mismatch_weight,
                                "dies": "one die per training sample, drawn again in every forward pass"}
    if cfg.voltage_max is not None:
        hardware["voltage"] = {"max": cfg.voltage_max, "weight": cfg.voltage_weight,
                               "penalty": "voltage_weight * mean over RK4 step states, samples, nodes of "
                                          "relu(|v| - voltage_max)^2",
                               "final_penalty": hist["voltage_penalty"][-1],
                               "final_epoch_peak_abs_voltage": hist["peak_voltage"][-1]}
    # the exported float64 model, scored by the torch RK4 (what was trained) ...
    meta = {
        "kind": "trained",
        "task": task.summary(),
        "model": {"type": "kirchhoffnet", "law": law, "law_formula": LAWS[law].formula, "size": size,
                  "layers": layers, "t_bounds": t_bounds.tolist(), "num_nodes": topology.num_nodes,
                  "num_devices": int(sum(s.size for s, _ in topology.layers)),
                  "num_params": model.num_params, "topology": topology.description,
                  "readout": ("output-node voltages at t_L as logits of a cross-entropy, one node per class"
                              if task.kind == "classification" else
                              "output-node voltage at t_L = scaled target, MSE")},
        "training": {**asdict(cfg), "loss": task.kind == "classification" and "cross_entropy" or "mse",
                     "final_train_loss": hist["loss"][-1], "seconds": round(hist["seconds"], 1),
                     "gradient": "backprop through fixed-step RK4 (exact for the discretised model)",
                     **({"hardware_aware": hardware} if hardware else {})},
        "provenance": {**_provenance(), **({"command": command} if command else {})},
    }
    knet = model.to_knet(meta)
    if evaluate:
        meta["metrics"] = evaluate_knet(knet, task, cfg.dt)
        if model.surrogate is not None:  # the model as trained: surrogate cell, torch RK4
            meta["metrics"]["device_in_the_loop"] = {
                "dt": cfg.dt, "surrogate": f"{model.surrogate.pdk}/{model.surrogate.corner}",
                **{split: score(task, _model_outputs(model, X, cfg.dt), y)
                   for split, X, y in (("train", task.X_train, task.y_train), ("test", task.X_test, task.y_test))}}
        if model.mismatch is not None:  # the model as trained, on dies drawn from the measured mismatch
            meta["metrics"]["mismatch"] = mismatch_monte_carlo(model, task, task.X_test, task.y_test, cfg.dt,
                                                               scale=cfg.mismatch_scale)
        knet = model.to_knet(meta)
    return TrainResult(model, knet, meta)


#: dies and seed of the Monte Carlo score of a mismatch-trained model (``meta.metrics.mismatch``)
MC_DIES, MC_SEED = 100, 1


def mismatch_monte_carlo(model: "TorchKNet", task: Task, X: np.ndarray, y: np.ndarray, dt: float,
                         dies: int = MC_DIES, seed: int = MC_SEED, scale: float = 1.0, batch: int = 1000) -> dict:
    """Score ``model`` on ``dies`` dies drawn from its :attr:`TorchKNet.mismatch` (torch RK4, step ``dt``).

    Die ``r`` is drawn from a generator seeded ``[seed, r]``, the same for every batch of ``X``. Returns the
    metric per die and its mean, 5th percentile, worst and 95th percentile (accuracy, or MSE).
    """
    torch = require_torch()
    key = "accuracy" if task.kind == "classification" else "mse"
    values = []
    with torch.no_grad():
        for r in range(dies):
            outs = []
            for i in range(0, len(X), batch):
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, r]).generate_state(1)[0]))
                outs.append(model(X[i:i + batch], dt, mismatch="shared", mismatch_scale=scale, generator=gen).numpy())
            values.append(score(task, np.concatenate(outs), y)[key])
    v = np.array(values)
    return {"dies": dies, "seed": seed, "scale": scale, "dt": dt, "samples": int(len(X)),
            "surrogate": None if model.surrogate is None else f"{model.surrogate.pdk}/{model.surrogate.corner}",
            "mismatch": f"{model.mismatch.pdk}/{model.mismatch.corner}", "metric": key,
            "mean": float(v.mean()), "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)),
            "worst": float(v.min() if key == "accuracy" else v.max()), "per_die": v.round(6).tolist()}


def train_mlp(task: Task, size: str = "small", target_params: int | None = None, hidden_layers: int = 2,
              cfg: TrainConfig | None = None, log=None, command: str | None = None) -> TrainResult:
    """Train the ReLU-MLP baseline whose parameter count is closest to ``target_params``."""
    cfg = cfg or TrainConfig()
    target = target_params or SIZE_PARAMS[size]
    width = mlp_hidden_width(task.num_features, task.num_outputs, target, hidden_layers)
    torch = require_torch()
    model = TorchMLP(task.num_features, task.num_outputs, width, hidden_layers, seed=cfg.seed,
                     dtype=getattr(torch, cfg.dtype))
    hist = fit(model, task, cfg, log)
    metrics = {split: score(task, _model_outputs(model, X, None), y)
               for split, X, y in (("train", task.X_train, task.y_train), ("test", task.X_test, task.y_test))}
    report = {
        "kind": "baseline",
        "task": task.summary(),
        "model": {"type": "mlp", "activation": "relu", "hidden_layers": hidden_layers, "width": width,
                  "num_params": model.num_params, "target_params": target, "size": size},
        "training": {**{k: v for k, v in asdict(cfg).items()
                        if k not in ("dt", "t_layer", "init_scale", "theta_max", "theta_noise", "voltage_noise",
                                     "voltage_max", "voltage_weight", "theta_range", "device_in_the_loop",
                                     "mismatch", "mismatch_scale", "mismatch_weight", "augment_shift")},
                     "init": "torch default (Kaiming-uniform)", "final_train_loss": hist["loss"][-1],
                     "seconds": round(hist["seconds"], 1)},
        "metrics": metrics,
        "provenance": {**_provenance(), **({"command": command} if command else {})},
    }
    return TrainResult(model, None, report)


def export(result: TrainResult, task: Task, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (``kcompile.knet/1`` with ``test_inputs``/``test_labels``) and ``path.json`` (the meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = task.y_test.astype(np.int64 if task.kind == "classification" else np.float64)
    save_knet(result.knet, path, test_inputs=np.asarray(task.X_test, dtype=np.float64), test_labels=labels)
    side = path.with_suffix(".json")
    side.write_text(json.dumps(result.report, indent=1) + "\n")
    return path, side


def record_figures(path: str | Path, key: str, figures: dict) -> None:
    """Store figures measured after training (flows, Monte Carlo) as ``meta.verification[key]`` of the weights file
    ``path`` and of its ``.json``, keeping the recorded test split."""
    import dataclasses

    from .knet import load_extras, load_knet

    path = Path(path)
    knet = load_knet(path)
    meta = {**knet.meta, "verification": {**knet.meta.get("verification", {}), key: figures}}
    save_knet(dataclasses.replace(knet, meta=meta), path, **load_extras(path, ("test_inputs", "test_labels")))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


# ------------------------------------------------------------------ CLI

def _headline(task: Task, report: dict) -> str:
    m = report["metrics"]
    key = "accuracy" if task.kind == "classification" else "mse"
    fmt = (lambda x: f"{x:.4f}") if key == "accuracy" else (lambda x: f"{x:.3e}")
    if "rk4" in m:
        return (f"{key}: train {fmt(m['rk4']['train'][key])} / test {fmt(m['rk4']['test'][key])} (RK4 dt "
                f"{m['rk4']['dt']}), test {fmt(m['dopri5']['test'][key])} (dopri5); "
                f"max |RK4 - dopri5| {m['max_abs_output_diff_rk4_vs_dopri5']:.2e}")
    return f"{key}: train {fmt(m['train'][key])} / test {fmt(m['test'][key])}"


def _command_line(ctx, **resolved) -> str:
    """The command that reproduces this run, defaults resolved (recorded in the provenance)."""
    words = ["kcompile", "train"]
    from click.core import ParameterSource

    for name, value in {**ctx.params, **resolved}.items():
        if value is None or value is False or name in ("out_path", "quiet", "threads"):
            continue
        if (name not in resolved and name not in ("task_name", "size")
                and ctx.get_parameter_source(name) is ParameterSource.DEFAULT):
            continue
        flag = "--" + {"task_name": "task"}.get(name, name).replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    if ctx.params.get("out_path") is not None:
        words += ["-o", str(ctx.params["out_path"])]
    return " ".join(words)


@contextlib.contextmanager
def _progress_bar(quiet: bool):
    """A progress bar on stderr (steps, running loss, elapsed and remaining time); ``None`` when ``quiet``."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=None, loss="-")

        def progress(step: int, steps: int, loss: float) -> None:
            bar.update(task, completed=step, total=steps, loss=f"{loss:.4g}")

        yield progress


@click.command("train")
@click.option("--task", "task_name", type=click.Choice([*TASKS, *DENSITIES]), required=True,
              help="Data set (kcompile.tasks), or a 2-D density trained as a normalising flow (kcompile.gentrain).")
@click.option("--law", type=click.Choice(list(LAWS)), default=None, help="Device law (default: per task, relu).")
@click.option("--size", type=click.Choice(list(SIZE_PARAMS)), default="small", show_default=True,
              help="Parameter budget: small ~170, medium ~530, large ~1520 (Table I); images: hubs.")
@click.option("--layers", type=int, default=2, show_default=True, help="Layer windows of the KirchhoffNet.")
@click.option("--hidden", type=int, default=None,
              help="Topology inputs -> H hidden nodes -> outputs (two layers) instead of the task's default.")
@click.option("--hidden2", type=int, default=None,
              help="With --hidden and --layers 3: a second group of H2 hidden nodes between the first and the "
                   "outputs.")
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Fully connected topology: parallel devices per node pair (each its own θ; mismatch averages).")
@click.option("--input-capacitance", type=float, default=1.0, show_default=True,
              help="With --hidden: capacitance of the input nodes (model units; the others have 1).")
@click.option("--pixel-min", type=float, default=None,
              help="With --hidden: connect only the inputs whose training mean exceeds this (images: skip the "
                   "blank border).")
@click.option("--t-layer", type=float, default=1.0, show_default=True, help="Length of each layer window.")
@click.option("--epochs", type=int, default=None, help="Training epochs (default: per task).")
@click.option("--batch-size", type=int, default=None, help="Mini-batch size (default: per task).")
@click.option("--lr", type=float, default=None, help="Adam learning rate (default: per task).")
@click.option("--dt", type=float, default=None, help="RK4 step of training and of the RK4 score (default: per task).")
@click.option("--init-scale", type=float, default=0.3, show_default=True, help="Scale of the random θ init.")
@click.option("--input-scale", type=float, default=1.0, show_default=True,
              help="Multiply every input feature (volts) by this: a larger swing against the cells' offsets.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default=None,
              help="Training precision (default float32; the export and its scoring are float64).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the init and the batches.")
@click.option("--data-seed", type=int, default=42, show_default=True, help="Seed of the data set and split.")
@click.option("--theta-max", type=float, default=None, help="Clamp every θ to [-m, m] (hardware range).")
@click.option("--theta-noise", type=float, default=0.0, show_default=True,
              help="Std of Gaussian noise added to θ in each training forward pass.")
@click.option("--voltage-noise", type=float, default=0.0, show_default=True,
              help="Std (per sqrt time unit) of Gaussian noise on node voltages during training.")
@click.option("--voltage-max", type=float, default=None,
              help="Keep every node voltage within ±V model units over the whole trajectory (loss penalty).")
@click.option("--voltage-weight", type=float, default=10.0, show_default=True,
              help="Weight of the --voltage-max penalty mean(relu(|v|-V)^2).")
@click.option("--theta-range", default=None, metavar="cell:PDK[:CORNER]",
              help="Keep |θ0| (relu) inside the signed cell's calibrated range and |θ1| <= 4 (e.g. cell:generic180).")
@click.option("--device-in-the-loop", default=None, metavar="PDK[:CORNER]",
              help="Train with a surrogate of the characterised signed cell in place of the ideal relu law.")
@click.option("--mismatch", default=None, metavar="PDK[:CORNER]",
              help="Train under the signed cell's measured mismatch: every device's θ deviations drawn per sample "
                   "and step (measured once with ngspice, cached; relu law).")
@click.option("--mismatch-scale", type=float, default=1.0, show_default=True,
              help="Multiply every mismatch σ of --mismatch (margin).")
@click.option("--mismatch-weight", type=float, default=0.0, show_default=True,
              help="Weight of the outputs' mean squared change under --mismatch against the nominal die (loss).")
@click.option("--augment-shift", type=int, default=0, show_default=True,
              help="Images: move every training image by a random offset of up to this many pixels each epoch.")
@click.option("--baseline", type=click.Choice(["mlp"]), default=None,
              help="Train the matched ReLU-MLP baseline instead (writes only the metrics JSON).")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights file (.npz) to write, with a .json of the metrics beside it (--baseline: only the .json).")
@click.option("--threads", type=int, default=1, show_default=True, help="torch CPU threads.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def train_command(task_name, law, size, layers, repeat, hidden, hidden2, input_capacitance, pixel_min, t_layer, epochs,
                  batch_size, lr, dt, init_scale, input_scale, dtype, seed, data_seed, theta_max, theta_noise,
                  voltage_noise, voltage_max, voltage_weight, theta_range, device_in_the_loop, mismatch, mismatch_scale,
                  mismatch_weight, augment_shift, baseline, out_path, threads, quiet):
    """Train a KirchhoffNet on a bundled task and export it as kcompile.knet/1."""
    torch = require_torch()
    torch.set_num_threads(max(1, threads))
    if task_name in DENSITIES:  # a generative model: kcompile.gentrain reads the same options
        from .gentrain import density_command
        return density_command(click.get_current_context())
    if layers < 1:
        raise InputError(f"--layers must be at least 1, got {layers}")
    defaults = TASK_DEFAULTS[task_name]
    law = law or defaults["law"]
    cfg = TrainConfig(epochs=epochs or defaults["epochs"], lr=lr or defaults["lr"],
                      batch_size=batch_size or defaults["batch_size"], seed=seed,
                      dt=dt or defaults["dt"], t_layer=t_layer, init_scale=init_scale,
                      dtype=dtype or defaults.get("dtype", "float32"),
                      theta_max=theta_max, theta_noise=theta_noise, voltage_noise=voltage_noise,
                      voltage_max=voltage_max, voltage_weight=voltage_weight, theta_range=theta_range,
                      device_in_the_loop=device_in_the_loop, mismatch=mismatch, mismatch_scale=mismatch_scale,
                      mismatch_weight=mismatch_weight, augment_shift=augment_shift)
    if voltage_max is not None and voltage_max <= 0:
        raise InputError(f"--voltage-max must be positive, got {voltage_max}")
    if mismatch_scale <= 0 or mismatch_weight < 0:
        raise InputError(f"--mismatch-scale must be positive and --mismatch-weight 0 or more, got {mismatch_scale} "
                         f"and {mismatch_weight}")
    if mismatch is None and (mismatch_scale != 1.0 or mismatch_weight):
        raise InputError("--mismatch-scale and --mismatch-weight act on --mismatch PDK[:CORNER], which is not given")
    if mismatch is not None and (baseline or law != "relu"):
        raise _no_mismatch_table("the MLP baseline" if baseline else f"law {law!r}")
    task = scale_inputs(load_task(task_name, data_seed), input_scale)
    log = None if quiet else (lambda s: click.echo(s, err=True))
    command = _command_line(click.get_current_context(), law=law, epochs=cfg.epochs, lr=cfg.lr,
                            batch_size=cfg.batch_size, dt=cfg.dt, dtype=cfg.dtype,
                            **({"voltage_weight": voltage_weight} if voltage_max is not None else {}))
    if not input_capacitance > 0:
        raise InputError(f"--input-capacitance must be positive, got {input_capacitance}")
    topology = task_topology(task, law, size, layers, hidden, pixel_min, input_capacitance, repeat, hidden2)
    if baseline == "mlp":
        # the KirchhoffNet of the same size sets the parameter budget
        target = topology.num_params(law)
        result = train_mlp(task, size, target, cfg=cfg, log=log, command=command)
        if out_path is not None:
            side = out_path.with_suffix(".json")
            side.parent.mkdir(parents=True, exist_ok=True)
            side.write_text(json.dumps(result.report, indent=1) + "\n")
            click.echo(f"wrote {side}", err=True)
        m = result.report["model"]
        click.echo(f"{task_name} mlp-{size} ({m['num_params']} params, width {m['width']}): "
                   + _headline(task, result.report))
        return
    with _progress_bar(quiet) as progress:
        result = train_knet(task, law, size, layers, cfg, topology, log=log, command=command, progress=progress)
    npz, side = export(result, task, out_path)
    m = result.report["model"]
    click.echo(f"{task_name} kirchhoffnet-{size} ({law}, {m['num_nodes']} nodes, {m['num_params']} params): "
               + _headline(task, result.report))
    click.echo(f"wrote {npz} and {side}", err=True)


if __name__ == "__main__":  # python -m kcompile.train ... (same as kcompile train ...)
    train_command()
