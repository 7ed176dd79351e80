"""Monte Carlo mismatch: seeded per-transistor draws, and which devices' mismatch dominates the outputs.

Draws. Every transistor a cell template emits through ``pdk.mos`` gets a
threshold shift ``vt`` (σ_VT = A_VT/√(W·L)) and a relative current-factor
change ``bt`` (σ_β/β = A_β/√(W·L)), with the PDK's coefficients
(:class:`kcompile.pdk.Mismatch`). Run ``r`` of seed ``S`` draws the values of
cell instance ``(layer k, device i)`` from ``numpy.random.default_rng([S, r, k, i])``:
reproducible, and independent of how many runs, devices or processes there are.
The mismatch deck renders each cell with those values as subcircuit parameters
(:meth:`kcompile.cells.base.Cell.render` ``mismatch=True``); the nominal deck is unchanged.

Attribution. Which devices dominate: the outputs' sensitivity to each device's
relu-form θ, in forward mode (the tangents along every θ integrated with
the node voltages by fixed-step RK4), separately for the current the cell
sinks from its ``s`` terminal and the one it sources into ``d`` (4 numbers a
device: θ0, θ1 of each side), times each device's θ deviation under the very
draws of the Monte Carlo runs, measured by a DC sweep of every mismatched
instance (:func:`theta_deviations`). The linear prediction of each run's
output deviation is then checked against the transistor-level runs
(correlation, explained variance): the ranking is only as good as that check.
"""

from __future__ import annotations

import contextvars
import os
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import progress
from .cells import Transistor, cell_for_law
from .cells.kc_relu import fit_relu
from .cells.sweep import (BenchInstance, bench_ports, cached, dc_bench, deck_key, diff_sweeps, run_ngspice,
                          sweep_timeout, variants)
from .files import cache_dir
from .knet import KNet
from .pdk import Mismatch

#: largest RK4 step of the forward-mode θ sensitivities (layer windows are 1 long); stiffer layers take smaller
#: steps (:func:`sensitivity_step`). Fixed steps: an adaptive step shared by the batch shrinks at every device of
#: every sample that switches on, where the tangents' derivatives jump.
SENSITIVITY_DT = 1e-2
#: numbers in the sensitivity integration's state ``[samples, nodes, 1 + 4·devices]``: sets the default block
TANGENT_BUDGET = 4_000_000
#: instances per DC deck of :func:`theta_deviations`
CHUNK = 400


@dataclass(frozen=True)
class MismatchDraw:
    """The mismatch of Monte Carlo run ``run`` of seed ``seed``; ``scale`` multiplies every σ."""

    model: Mismatch
    seed: int
    run: int
    scale: float = 1.0

    def values(self, k: int, i: int, transistors: tuple[Transistor, ...]) -> np.ndarray:
        """``[T, 2]``: threshold shift (V) and relative β change of each transistor of instance ``(k, i)``."""
        z = np.random.default_rng([self.seed, self.run, k, i]).standard_normal((len(transistors), 2))
        sigma = np.array([self.model.sigma(t.kind, t.w, t.l) for t in transistors]).reshape(-1, 2)
        return self.scale * z * sigma + 0.0  # + 0.0: no "-0" in the deck

    def params(self, k: int, i: int, transistors: tuple[Transistor, ...]) -> str:
        """Instance-line parameters ``vt_<name>=… bt_<name>=…`` of instance ``(k, i)``."""
        v = self.values(k, i, transistors)
        return " ".join(f"vt_{t.name}={a:.6g} bt_{t.name}={b:.6g}" for t, (a, b) in zip(transistors, v))


def draws(model: Mismatch, seed: int, runs: int, scale: float = 1.0) -> list[MismatchDraw]:
    """Runs ``0 … runs-1`` of ``seed``."""
    return [MismatchDraw(model, seed, r, scale) for r in range(runs)]


# ---------------------------------------------------------------- θ under mismatch (DC)

@dataclass(frozen=True)
class _Instance:
    k: int
    i: int
    signs: str
    params: str  # nominal instance parameters (the cell's spice())
    transistors: tuple[Transistor, ...]


def _instances(cellmap) -> list[_Instance]:
    cell, out = cellmap.cell, []
    for k in range(len(cellmap.layers)):
        for i, p in enumerate(cellmap.instances(k)):
            out.append(_Instance(k, i, p.signs, p.spice(), cell.transistors(cellmap.pdk, p.signs)))
    return out


def _dc_deck(cellmap, rows: list[tuple[_Instance, str]], dspan: float, dpoints: int) -> str:
    """Every ``(instance, mismatch params)`` between its own ammeters on one swept Δ at common mode vcm,
    in the instance's own orientation (its s port on the positive side)."""
    cell, pdk, sc = cellmap.cell, cellmap.pdk, cellmap.calibration.scaling
    instances = [BenchInstance(n, bench_ports(cell, n), cell.subckt(inst.signs), f"{inst.params} {mm}")
                 for n, (inst, mm) in enumerate(rows)]
    return dc_bench(f"mismatch DC: {cell.name} on {pdk.name}/{cellmap.corner}", pdk, cellmap.corner,
                    variants(cell, pdk, sc, mismatch=True), instances, sc, diff_sweeps(sc, dspan, dpoints),
                    drive="diff")


def _sweep(cellmap, rows, dspan: float, dpoints: int, cache: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Δ [D], sink [n, D], source [n, D])`` in model units; cached by deck hash."""
    sc = cellmap.calibration.scaling
    deck = _dc_deck(cellmap, rows, dspan, dpoints)

    def run() -> dict[str, np.ndarray]:
        data = run_ngspice(deck, cellmap.pdk, sweep_timeout(len(rows), dpoints))  # the limit every DC deck has
        return {"delta": data["sweep"] / sc.v0,
                "sink": np.stack([-data[f"i(vs{n})"] for n in range(len(rows))]) / sc.i0,
                "source": np.stack([data[f"i(vd{n})"] for n in range(len(rows))]) / sc.i0}

    z = cached(cache_dir() / "mismatch" / cellmap.pdk.name / f"dc-{deck_key(deck, cellmap.pdk)}.npz", cache,
               ("delta", "sink", "source"), run)
    return z["delta"], z["sink"], z["source"]


def theta_deviations(cellmap, mc: list[MismatchDraw], dspan: float = 8.0, dpoints: int = 65,
                     cache: bool = True, jobs: int | None = None) -> np.ndarray:
    """``[R, E, 4]``: how far each device's relu-form (θ0, θ1) moves under each draw, sink side then source side.

    Every instance is DC-swept nominal (all draws 0) and under each draw of ``mc``
    (Δ over ±``dspan`` units at common mode 0); ``max(θ0·Δ + θ1, 0)`` is fitted to
    each current and the nominal fit subtracted, so the calibration's own residue cancels. Decks of
    :data:`CHUNK` instances run ``jobs`` at a time (default: all cores). Meaningful for cells with a relu form
    only (:meth:`kcompile.cells.base.Cell.relu_targets`; :func:`rank_devices` refuses the others first).
    """
    from concurrent.futures import ThreadPoolExecutor

    insts = _instances(cellmap)
    zero = MismatchDraw(mc[0].model, 0, 0, 0.0) if mc else None
    rows = [(inst, d.params(inst.k, inst.i, inst.transistors)) for d in [zero, *mc] for inst in insts]
    chunks = [rows[start:start + CHUNK] for start in range(0, len(rows), CHUNK)]
    label = (f"mismatch DC sweeps: {len(insts)} {cellmap.cell.name} instances x {len(mc) + 1} draws "
             f"on {cellmap.pdk.name}/{cellmap.corner} ({len(chunks)} decks of up to {CHUNK})")
    with progress.task(label, len(chunks)), \
            ThreadPoolExecutor(max(1, min(jobs or os.cpu_count() or 1, len(chunks)))) as pool:  # each waits on ngspice
        # each deck runs in a copy of this thread's context, so that it advances the step opened above
        contexts = [contextvars.copy_context() for _ in chunks]
        swept = list(pool.map(lambda ctx, chunk: ctx.run(_sweep, cellmap, chunk, dspan, dpoints, cache),
                              contexts, chunks))
    delta = swept[0][0]
    sink, source = np.concatenate([s[1] for s in swept]), np.concatenate([s[2] for s in swept])
    fits = np.array([[*fit_relu(delta, a), *fit_relu(delta, b)] for a, b in zip(sink, source)])
    fits = fits.reshape(len(mc) + 1, len(insts), 4)
    return fits[1:] - fits[0]


# ---------------------------------------------------------------- output sensitivities (reference)

def relu_form(knet: KNet) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer: the instance's (s node, d node, θ0, θ1) in relu form (a port-swapped shift_relu
    instance sinks from the device's d node), as the law's cell maps them
    (:meth:`kcompile.cells.base.Cell.relu_targets`; a cell without a relu form is refused)."""
    cell = cell_for_law(knet.law)
    out = []
    for layer in knet.layers:
        t0, t1, swap = cell.relu_targets(knet.law, layer.theta)
        a = np.where(swap, layer.dst, layer.src)
        b = np.where(swap, layer.src, layer.dst)
        out.append((a, b, t0, t1))
    return out


def _tangent_rhs(knet: KNet, form, k: int, lo: int, hi: int, starts: np.ndarray):
    """Layer ``k``'s right-hand side of the node voltages and of their tangents along the relu-form θ of
    devices ``lo:hi`` (global order). ``y [B, N·(1 + P)]`` holds per node ``v`` then ``P = 4·(hi − lo)``
    tangents (∂v/∂(θ0_s, θ1_s, θ0_d, θ1_d) of each device in turn): ``dS/dt = J·S + ∂f/∂θ`` with the
    Jacobian ``J = −diag(1/C)·A·diag(on·θ0)·Aᵀ`` of the incidence matrix ``A`` (+1 at s, −1 at d)."""
    a, b, t0, t1 = form[k]
    n, e, p = knet.num_nodes, a.size, 4 * (hi - lo)
    ends = np.arange(e)
    inc = sp.csr_matrix((np.r_[np.ones(e), -np.ones(e)], (np.r_[a, b], np.r_[ends, ends])), shape=(n + 1, e))[1:]
    # J's entries as a linear map of the devices' conductances w = on·θ0: −w at (s, s) and (d, d), +w at (s, d)
    # and (d, s), ground rows and columns dropped
    rows = np.r_[a, b, a, b]
    cols = np.r_[a, b, b, a]
    keep = (rows > 0) & (cols > 0)
    gather = sp.csr_matrix((np.r_[-np.ones(2 * e), np.ones(2 * e)][keep],
                            ((rows[keep] - 1) * n + cols[keep] - 1, np.tile(ends, 4)[keep])), shape=(n * n, e))
    cinv = 1.0 / knet.capacitance
    own = np.arange(max(lo, starts[k]), min(hi, starts[k + 1]))  # this layer's devices in the block (global)
    col, dev = 4 * (own - lo), own - starts[k]  # their first tangent, their index in the layer
    sink, source = a[dev] > 0, b[dev] > 0  # the sides whose node is not ground

    def rhs(y: np.ndarray) -> np.ndarray:
        y = y.reshape(len(y), n, 1 + p)
        v, s = y[:, :, 0], y[:, :, 1:]
        delta = (inc.T @ v.T).T  # [B, E]
        z = t0 * delta + t1
        on = z > 0
        cur = np.where(on, z, 0.0)
        jac = (gather @ (on * t0).T).T.reshape(len(y), n, n) * cinv[:, None]  # [B, N, N]
        out = np.empty_like(y)
        out[:, :, 0] = -(inc @ cur.T).T * cinv
        ds = out[:, :, 1:]
        np.matmul(jac, s, out=ds)
        for side, node, sign, first in ((sink, a, -1.0, 0), (source, b, 1.0, 2)):
            d, c, nd = dev[side], col[side] + first, node[dev[side]] - 1
            ds[:, nd, c] += sign * cinv[nd] * on[:, d] * delta[:, d]  # ∂/∂θ0 of that side's current
            ds[:, nd, c + 1] += sign * cinv[nd] * on[:, d]  # ∂/∂θ1
        return out.reshape(len(y), -1)

    return rhs


def sensitivity_step(knet: KNet, dt: float = SENSITIVITY_DT) -> float:
    """RK4 step of :func:`sensitivities`: ``dt``, or ``0.5/ρ`` for a stiffer layer, with Gershgorin's bound
    ``ρ = 2·max_n Σ|θ0|/C_n`` on its Jacobian's spectral radius: RK4 is then stable and accurate to about
    ``(hλ)⁵/120 ≈ 3e-4`` per step on the fastest mode."""
    rate = 0.0
    for a, b, t0, _ in relu_form(knet):
        load = np.bincount(a, np.abs(t0), knet.num_nodes + 1) + np.bincount(b, np.abs(t0), knet.num_nodes + 1)
        rate = max(rate, float(np.max(2 * load[1:] / knet.capacitance, initial=0.0)))
    return min(dt, 0.5 / rate) if rate > 0 else dt


def sensitivities(knet: KNet, x: np.ndarray, block: int | None = None, dt: float | None = None) -> np.ndarray:
    """``[B, M, E, 4]``: d(output)/d(θ0_s, θ1_s, θ0_d, θ1_d) of every device (all layers, in order) at the
    trained θ, in forward mode: each block of ``block`` devices' tangents integrated with the node voltages by
    RK4 of step ``dt`` (default :func:`sensitivity_step`), which gives the exact derivative of that discretised
    network. The default block keeps the state near :data:`TANGENT_BUDGET` numbers."""
    from .reference import _rk4

    form = relu_form(knet)
    starts = np.cumsum([0] + [f[0].size for f in form])
    total, n = int(starts[-1]), knet.num_nodes
    x = np.atleast_2d(np.asarray(x, dtype=float))
    block = block or max(1, TANGENT_BUDGET // (4 * n * len(x)))
    dt = dt or sensitivity_step(knet)
    v0 = knet.initial_state(x)  # [B, N]
    outs = knet.output_nodes - 1
    parts = []
    for lo in range(0, total, block):
        hi = min(total, lo + block)
        p = 4 * (hi - lo)
        y = np.zeros((len(x), n, 1 + p))
        y[:, :, 0] = v0
        y = y.reshape(len(x), -1)
        for k, layer in enumerate(knet.layers):
            y = _rk4(_tangent_rhs(knet, form, k, lo, hi, starts), y, layer.t_start, layer.t_stop, dt, None, None,
                     [0, 0])
        s = y.reshape(len(x), n, 1 + p)[:, outs, 1:]  # [B, M, P]
        parts.append(s.reshape(len(x), len(outs), hi - lo, 4))
    return np.concatenate(parts, axis=2)


# ---------------------------------------------------------------- attribution

@dataclass(frozen=True)
class DeviceShare:
    """One device's part of the Monte Carlo output spread."""

    layer: int
    index: int
    src: int
    dst: int
    theta: tuple[float, ...]  # as trained
    rms: float  # RMS over runs, samples, outputs of its predicted output deviation (model units)
    share: float  # its fraction of the summed predicted variance
    sigma_theta: tuple[float, float, float, float]  # std over runs of δθ0_s, δθ1_s, δθ0_d, δθ1_d


@dataclass(frozen=True, eq=False)
class Attribution:
    """Devices ranked by their predicted part of the spread, and how well the prediction explains it.

    ``predicted`` and ``measured`` are ``[R, B, M]``: each run's output deviation from the
    nominal transistor-level run, linearly predicted from the devices' DC θ deviations and
    the reference sensitivities, and as ngspice measured it.
    """

    devices: list[DeviceShare]
    predicted: np.ndarray
    measured: np.ndarray
    seconds: float

    @property
    def correlation(self) -> float:
        p, m = self.predicted.ravel(), self.measured.ravel()
        return float(np.corrcoef(p, m)[0, 1]) if p.size > 1 and p.std() > 0 and m.std() > 0 else float("nan")

    @property
    def explained(self) -> float:
        """``1 − var(measured − predicted)/var(measured)`` (deviations about zero)."""
        m = self.measured
        return float(1 - np.mean((m - self.predicted) ** 2) / max(np.mean(m ** 2), 1e-300))

    @property
    def sigma_ratio(self) -> float:
        """RMS of the predicted deviations over RMS of the measured ones."""
        return float(np.sqrt(np.mean(self.predicted ** 2) / max(np.mean(self.measured ** 2), 1e-300)))


def attribute(knet: KNet, x: np.ndarray, sens: np.ndarray, dtheta: np.ndarray,
              measured: np.ndarray, seconds: float = 0.0) -> Attribution:
    """Rank devices: ``sens [B, M, E, 4]``, ``dtheta [R, E, 4]``, ``measured [R, B, M]``."""
    contrib = np.einsum("bmej,rej->rbme", sens, dtheta)  # each device's predicted deviation
    predicted = contrib.sum(axis=-1)
    ms = np.mean(contrib ** 2, axis=(0, 1, 2))  # [E]
    total = max(float(ms.sum()), 1e-300)
    where = [(k, i) for k, layer in enumerate(knet.layers) for i in range(layer.num_devices)]
    sigma = dtheta.std(axis=0) if len(dtheta) > 1 else np.abs(dtheta[0])
    shares = []
    for g in np.argsort(-ms):
        k, i = where[g]
        layer = knet.layers[k]
        shares.append(DeviceShare(k, i, int(layer.src[i]), int(layer.dst[i]), tuple(float(t) for t in layer.theta[i]),
                                  float(np.sqrt(ms[g])), float(ms[g] / total), tuple(float(s) for s in sigma[g])))
    return Attribution(shares, predicted, measured, seconds)


def rank_devices(knet: KNet, cellmap, x: np.ndarray, mc: list[MismatchDraw], measured: np.ndarray,
                 cache: bool = True, jobs: int | None = None) -> Attribution:
    """:func:`sensitivities` × :func:`theta_deviations` for the draws ``mc`` (see :func:`attribute`)."""
    t0 = time.perf_counter()
    sens = sensitivities(knet, x)
    dtheta = theta_deviations(cellmap, mc, cache=cache, jobs=jobs)
    return attribute(knet, x, sens, dtheta, measured, time.perf_counter() - t0)
