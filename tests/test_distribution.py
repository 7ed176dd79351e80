"""Sample-distribution metrics: they are zero for equal samples, near their noise floor for independent
draws of one distribution, and far above it for a shifted distribution or a corrupted generative model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from kcompile.distribution import compare_samples, energy_distance, latents, median_bandwidth, mmd2, noise_floor
from kcompile.errors import InputError

CKPT = Path(__file__).resolve().parents[2] / "shared" / "reference-checkpoints" / "circle"


def test_metrics_on_gaussians():
    rng = np.random.default_rng(0)
    x, y, pool = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), rng.normal(size=(1200, 2))
    h = median_bandwidth(pool)
    assert 1.0 < h < 2.5  # median distance of two 2-D standard normals is about 1.67
    assert abs(energy_distance(x, x)) < 0.02  # the distinct-pair terms make it O(1/N), not 0
    same = compare_samples(x, y, pool, rounds=40)
    shifted = compare_samples(x, x + [0.5, 0.0], pool, rounds=40)
    assert same.mmd_ratio < 1.5 and same.energy_ratio < 1.5
    assert shifted.mmd_ratio > 3 and shifted.energy_ratio > 3
    assert shifted.displacement_max == pytest.approx(0.5) and shifted.displacement_mean == pytest.approx(0.5)
    floor = noise_floor(pool, 300, rounds=40)
    assert floor.mmd2 > 0 and floor.energy > 0 and floor.bandwidth == pytest.approx(h)


def test_bad_sizes_are_refused():
    with pytest.raises(InputError, match="N >= 2"):
        mmd2(np.zeros((1, 2)), np.zeros((3, 2)), 1.0)
    with pytest.raises(InputError, match="pool of at least 20"):
        noise_floor(np.zeros((10, 2)), 10)
    with pytest.raises(InputError, match="non-finite"):
        energy_distance(np.array([[0.0], [np.nan]]), np.zeros((2, 1)))
    with pytest.raises(InputError, match="at least 1"):
        latents(0, 2, 0)


@pytest.mark.skipif(not CKPT.is_dir(), reason="the paper's circle checkpoint is not in ../shared")
def test_a_corrupted_flow_fails_the_gate():
    """The metric has power: scaling one layer's θ by 1.5 moves the sample distribution far above its floor."""
    pytest.importorskip("torch")
    from kcompile.importer import import_reference
    from kcompile.reference import integrate

    knet = import_reference(CKPT / "model.pth", CKPT / "config.yaml")
    z, pool_z = latents(200, knet.num_features, 1), latents(800, knet.num_features, 2)
    run = lambda k, x: integrate(k, x, rtol=1e-6, atol=1e-8).outputs  # noqa: E731
    ideal, pool = run(knet, z), run(knet, pool_z)
    layers = tuple(dataclasses.replace(layer, theta=layer.theta * 1.5) if k == 1 else layer
                   for k, layer in enumerate(knet.layers))
    corrupt = compare_samples(ideal, run(dataclasses.replace(knet, layers=layers), z), pool, rounds=30)
    honest = compare_samples(ideal, run(knet, latents(200, knet.num_features, 3)), pool, rounds=30)
    assert corrupt.mmd_ratio > 3 and corrupt.energy_ratio > 3, corrupt
    assert honest.mmd_ratio < 1.5, honest
