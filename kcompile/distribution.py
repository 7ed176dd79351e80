"""Sample-distribution metrics for generative KirchhoffNets.

A generative network (a continuous normalising flow) is judged by the
distribution of the samples it produces from standard-normal latents, not by
any single output. Three measures compare a level's samples ``y`` with the
ideal model's samples ``x`` for the same latents:

``mmd2``
    Unbiased squared maximum mean discrepancy with a Gaussian (RBF) kernel
    whose bandwidth is the median pairwise distance of the ideal samples
    (the median heuristic).
``energy``
    The energy distance ``2·E|X−Y| − E|X−X'| − E|Y−Y'|`` (Székely), with
    the same-sample terms taken over distinct pairs.
``displacement``
    Per latent, the Euclidean distance between the two samples: the same
    noise, how far did the circuit move the sample.

The level's and the ideal samples come from the same latents, so ``x_i`` and
``y_i`` are not independent: the cross terms then leave out the pairs
``(x_i, y_i)`` (``paired=True``), which keeps both statistics unbiased and
makes them exactly 0 for ``y = x`` (with those pairs, whose kernel is near 1
and whose distance near 0, identical samples would score about ``-2/N``).

A distance alone has no scale, so each is divided by its **sampling noise
floor**: the 95th percentile of the same distance between two independent
ideal draws of the same size (drawn from a larger ideal pool without
replacement). ``mmd_ratio <= 1`` then means "indistinguishable from the ideal
model at this sample size".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: quantile of the ideal-vs-ideal distances that defines the noise floor
FLOOR_QUANTILE = 0.95
#: at most this many samples enter the median-heuristic bandwidth (its cost is quadratic)
BANDWIDTH_SAMPLES = 1000


def _check(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"The '{name}' samples must be an array [N, D] with N >= 2 for a distribution metric. "
                         f"Got shape {list(x.shape)} instead.")
    if not np.isfinite(x).all():
        raise InputError(f"The '{name}' samples hold non-finite values; the level that produced them diverged")
    return x


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of ``x`` (a random subset of :data:`BANDWIDTH_SAMPLES` when larger)."""
    x = _check(x, "ideal")
    if len(x) > BANDWIDTH_SAMPLES:
        x = x[np.random.default_rng(seed).choice(len(x), BANDWIDTH_SAMPLES, replace=False)]
    d = np.sqrt(_sq_dists(x, x)[np.triu_indices(len(x), 1)])
    h = float(np.median(d))
    return h if h > 0 else 1.0


def _cross_mean(k: np.ndarray, paired: bool) -> float:
    """Mean of a cross matrix; ``paired``: over ``i != j`` only (row i of both samples from one latent)."""
    if not paired:
        return float(k.mean())
    n = len(k)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def _paired(x: np.ndarray, y: np.ndarray, paired: bool) -> None:
    if paired and x.shape != y.shape:
        raise InputError(f"Paired samples (row i of both from one latent) must have the same shape. Got "
                         f"{list(x.shape)} and {list(y.shape)} instead.")


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float, *, paired: bool = False) -> float:
    """Unbiased MMD² between samples ``x`` and ``y`` with kernel ``exp(−|a−b|²/(2h²))``; ``paired``: ``x[i]``
    and ``y[i]`` come from one latent, so the cross term leaves those pairs out."""
    x, y = _check(x, "ideal"), _check(y, "level")
    _paired(x, y, paired)
    g = -0.5 / bandwidth**2
    kxx, kyy, kxy = np.exp(g * _sq_dists(x, x)), np.exp(g * _sq_dists(y, y)), np.exp(g * _sq_dists(x, y))
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * _cross_mean(kxy, paired))


def energy_distance(x: np.ndarray, y: np.ndarray, *, paired: bool = False) -> float:
    """Energy distance ``2·E|X−Y| − E|X−X'| − E|Y−Y'|`` (distinct pairs in the same-sample terms, and in the
    cross term too when ``paired``)."""
    x, y = _check(x, "ideal"), _check(y, "level")
    _paired(x, y, paired)
    n, m = len(x), len(y)
    dxy = _cross_mean(np.sqrt(_sq_dists(x, y)), paired)
    dxx = np.sqrt(_sq_dists(x, x)).sum() / (n * (n - 1))
    dyy = np.sqrt(_sq_dists(y, y)).sum() / (m * (m - 1))
    return float(2.0 * dxy - dxx - dyy)


@dataclass(frozen=True)
class NoiseFloor:
    """The ideal-vs-ideal distances of two independent draws of ``n`` samples (``rounds`` pairs)."""

    n: int
    bandwidth: float
    mmd2: float  # FLOOR_QUANTILE of the rounds' MMD²
    energy: float
    rounds: int


def noise_floor(pool: np.ndarray, n: int, *, rounds: int = 50, seed: int = 0,
                bandwidth: float | None = None) -> NoiseFloor:
    """Sampling noise of :func:`mmd2` and :func:`energy_distance` at sample size ``n``.

    ``pool`` holds at least ``2·n`` ideal samples from latents independent of
    the ones being compared; each round draws two disjoint subsets of ``n``.
    """
    pool = _check(pool, "ideal pool")
    if len(pool) < 2 * n:
        raise InputError(f"The noise floor at N = {n} needs an ideal pool of at least {2 * n} samples. "
                         f"Got {len(pool)} instead.")
    h = bandwidth or median_bandwidth(pool, seed)
    rng = np.random.default_rng(seed)
    m, e = [], []
    for _ in range(rounds):
        idx = rng.permutation(len(pool))
        a, b = pool[idx[:n]], pool[idx[n:2 * n]]
        m.append(mmd2(a, b, h))
        e.append(energy_distance(a, b))
    q = 100 * FLOOR_QUANTILE
    return NoiseFloor(n, h, float(np.percentile(m, q)), float(np.percentile(e, q)), rounds)


@dataclass(frozen=True)
class SampleComparison:
    """A level's samples against the ideal model's, for the same latents."""

    n: int
    mmd2: float
    mmd_ratio: float  # mmd2 / its noise floor (<= 1: indistinguishable at this N)
    energy: float
    energy_ratio: float
    displacement_mean: float
    displacement_p95: float
    displacement_max: float
    floor: NoiseFloor

    def as_dict(self) -> dict:
        return {"n": self.n, "mmd2": self.mmd2, "sample_mmd_ratio": self.mmd_ratio, "energy": self.energy,
                "sample_energy_ratio": self.energy_ratio, "displacement_mean": self.displacement_mean,
                "displacement_p95": self.displacement_p95, "max_displacement": self.displacement_max,
                "floor_mmd2": self.floor.mmd2, "floor_energy": self.floor.energy,
                "bandwidth": self.floor.bandwidth, "floor_rounds": self.floor.rounds}


def _ratio(value: float, floor: float) -> float:
    # a distance below its floor (MMD² is unbiased, so it can be negative) counts as 0
    return max(value, 0.0) / floor if floor > 0 else (0.0 if value <= 0 else float("inf"))


def compare_samples(ideal: np.ndarray, level: np.ndarray, pool: np.ndarray, *, rounds: int = 50,
                    seed: int = 0) -> SampleComparison:
    """Compare ``level`` with ``ideal`` (row ``i`` of both from latent ``i``); ``pool``: independent ideal samples.

    Parameters
    ----------
    ideal, level : ndarray [N, D]
        Samples of the ideal model and of the level under test, same latents.
    pool : ndarray [P, D], P >= 2N
        Ideal samples from other latents, for the noise floor.
    """
    ideal, level = _check(ideal, "ideal"), _check(level, "level")
    if ideal.shape != level.shape:
        raise InputError(f"The 'ideal' and 'level' samples must have the same shape. Got {list(ideal.shape)} and "
                         f"{list(level.shape)} instead.")
    floor = noise_floor(pool, len(ideal), rounds=rounds, seed=seed)
    m, e = mmd2(ideal, level, floor.bandwidth, paired=True), energy_distance(ideal, level, paired=True)
    disp = np.linalg.norm(level - ideal, axis=1)
    return SampleComparison(len(ideal), m, _ratio(m, floor.mmd2), e, _ratio(e, floor.energy),
                            float(disp.mean()), float(np.percentile(disp, 95)), float(disp.max()), floor)


def latents(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` standard-normal latent vectors of width ``dim`` (seeded)."""
    if n < 1:
        raise InputError(f"The number of latent samples must be at least 1. Got {n} instead.")
    return np.random.default_rng(seed).standard_normal((n, dim))
