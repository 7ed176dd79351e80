"""Generative KirchhoffNets: latent inputs, and each level's samples against the ideal model's.

A continuous normalising flow samples by running the circuit forward from
standard-normal latents; its output nodes' voltages at ``t_L`` are the sample
(every node, for the paper's flows: :data:`kcompile.importer.GENERATIVE_BENCHES`).
A weights file says it is one with ``meta.generative: true``. What matters for
a generator is whether the circuit's *distribution* matches, so a flow with
``inputs: {normal: N, seed: S}`` compares every level's samples with the
ideal model's for the same latents (:func:`kcompile.distribution.compare_samples`):
MMD² and energy distance over their sampling noise floor, which comes from a
pool of ideal samples of other latents (:func:`pool_latents`), and the
displacement of each sample.
"""

from __future__ import annotations

import numpy as np

from .distribution import SampleComparison, compare_samples, latents
from .errors import InputError
from .knet import KNet

#: random stream of the noise-floor pool's latents (:func:`pool_latents`); stream 0 is the samples' own
POOL_STREAM = 1
#: the pool holds this many ideal samples per compared sample (the noise floor draws two disjoint halves)
POOL_FACTOR = 2


def is_generative(knet: KNet) -> bool:
    """Whether the weights' meta declares a generative model (``"generative": true``)."""
    return knet.meta.get("generative") is True


def check_latent_use(knet: KNet, model: str, option: str, latent: bool) -> None:
    """Refuse latent inputs for a model that is not generative, and uniform random inputs for one that is.

    Parameters
    ----------
    model : str
        How the message names the model (its file).
    option : str
        The option or key that asked for the inputs (``--latent``, ``inputs.normal``, ``inputs: random``).
    latent : bool
        Whether ``option`` draws standard-normal latents.
    """
    if latent and not is_generative(knet):
        raise InputError(f"{model}: {option} draws standard-normal latents for a generative model, but this model "
                         "is not generative (its meta has no \"generative\": true); give inputs instead "
                         "(--inputs X.npy, a random or recorded batch)")
    if not latent and is_generative(knet):
        raise InputError(f"{model}: is a generative model (meta \"generative\": true), whose inputs are "
                         f"standard-normal latents, but {option} draws a uniform random batch; use --latent N "
                         "(simulate) or 'inputs: {normal: N, seed: S}' (flows), or give the latents as a file")


def pool_latents(n: int, dim: int, seed: int) -> np.ndarray:
    """``POOL_FACTOR·n`` latents for the noise floor, independent of ``latents(n, dim, seed)``."""
    rng = np.random.default_rng([seed, POOL_STREAM])
    return rng.standard_normal((POOL_FACTOR * n, dim))


def latent_batch(knet: KNet, n: int, seed: int) -> np.ndarray:
    """``n`` standard-normal latent rows of the network's input width (seeded)."""
    return latents(n, knet.num_features, seed)


def compare_level(ideal: np.ndarray, level: np.ndarray, pool: np.ndarray, seed: int = 0) -> SampleComparison:
    """A level's samples (its first ``len(level)`` latents) against the ideal ones; ``pool``: ideal samples of the
    pool latents (at least ``POOL_FACTOR·len(level)``)."""
    n = len(level)
    return compare_samples(ideal[:n], level, pool[:POOL_FACTOR * n], seed=seed)
