"""Per-device refinement of mapped cells from their measured I–V (kcompile.refine).

The pure parts (the law fit on tables and the bounded secant step) are
checked on synthetic tables made from the ideal law; the ngspice test maps
the moons classifier's first layer, refines it with real DC sweeps and checks
the measured θ miss shrinks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kcompile.characterised import DeviceTables
from kcompile.knet import random_knet
from kcompile.laws import LAWS
from kcompile.errors import InputError
from kcompile.cells import cell_for_law
from kcompile.refine import DEFAULT_STEPS, MAX_RATIO, MAX_SHIFT, fit_law, measure, refine, secant, steps_for


def _ideal_tables(law: str, theta: np.ndarray, scale: float = 1.0, shift: float = 0.0) -> DeviceTables:
    """Tables of devices whose current is the law at θ with the slopes scaled and the offsets shifted."""
    delta, mid = np.linspace(-8, 8, 129), np.linspace(-4, 4, 9)
    t = np.array(theta, dtype=float)
    slopes, offsets = cell_for_law(law).refine_columns(law)
    t[:, list(slopes)] *= scale
    t[:, list(offsets)] += shift
    vs = np.broadcast_to(mid[None, :] + delta[:, None] / 2, (129, 9))
    vd = vs - delta[:, None]
    current = LAWS[law].current(vs[None], vd[None], t[:, None, None, :])
    return DeviceTables(delta, mid, (current,), (current,))


@pytest.mark.parametrize("law,theta", [
    ("relu", [[0.8, 0.3], [-1.2, 0.5], [0.25, -0.2]]),
    ("shift_relu", [[0.4, 0.7], [-0.5, -0.9], [1.0, 0.3]]),
    ("relu_affine", [[0.8, -0.3, 0.4], [-0.6, 0.9, 0.2], [0.3, 0.5, -0.1]]),
    ("tanh_affine", [[0.8, -0.3, 0.4], [-0.6, 0.2, -0.2], [0.3, 0.5, 0.1]]),
    ("tanh", [[0.8, 0.3], [-1.2, 0.5], [0.25, -0.2]]),
    ("linear", [[0.8], [-1.2], [0.25]]),
])
def test_fit_recovers_the_law_from_ideal_tables(law, theta):
    theta = np.array(theta)
    achieved, usable = fit_law(law, theta, _ideal_tables(law, theta), 0)
    assert usable.all()
    np.testing.assert_allclose(achieved, theta, atol=1e-6)
    # a device 10 % weak and offset by 0.05 is fitted as such
    achieved, _ = fit_law(law, theta, _ideal_tables(law, theta, 0.9, 0.05), 0)
    slopes, offsets = cell_for_law(law).refine_columns(law)
    np.testing.assert_allclose(achieved[:, list(slopes)], 0.9 * theta[:, list(slopes)], rtol=1e-5)
    np.testing.assert_allclose(achieved[:, list(offsets)], theta[:, list(offsets)] + 0.05, atol=1e-5)
    # one secant step from the weak device's fit asks for what cancels its miss
    nxt = secant(law, theta, theta, achieved, usable)
    np.testing.assert_allclose(nxt[:, list(slopes)], theta[:, list(slopes)] / 0.9, rtol=1e-5)
    np.testing.assert_allclose(nxt[:, list(offsets)], theta[:, list(offsets)] - 0.05, atol=1e-5)


def test_fit_skips_devices_that_barely_conduct_or_have_tiny_slopes():
    theta = np.array([[0.005, 0.5], [0.5, -5.0]])  # tiny slope; off everywhere inside |Δ| <= 4
    _, usable = fit_law("relu", theta, _ideal_tables("relu", theta), 0)
    assert not usable.any()
    off = np.array([[0.3, 0.2, -3.0]])  # a two-pair ReLU off everywhere inside the window
    _, usable = fit_law("relu_affine", off, _ideal_tables("relu_affine", off), 0)
    assert not usable.any()


def test_secant_leaves_slopes_the_cell_barely_expresses():
    target = np.array([[0.005, 0.8, 0.1], [0.5, -0.4, 0.1]])
    achieved = np.array([[0.02, 0.7, 0.2], [-0.1, -0.5, 0.1]])  # a tiny slope; a slope fitted with the wrong sign
    nxt = secant("relu_affine", target, target, achieved, np.ones(2, dtype=bool))
    np.testing.assert_allclose(nxt[0], [0.005, 0.8 * 0.8 / 0.7, 0.0])
    np.testing.assert_allclose(nxt[1], [0.5, -0.4 * 0.8, 0.1])


def test_secant_step_corrects_a_weak_offset_device_and_is_bounded():
    target = np.array([[1.0, 0.2], [1.0, 0.2], [1.0, 0.2]])
    achieved = np.array([[0.9, 0.25], [0.1, 3.0], [0.9, 0.25]])
    usable = np.array([True, True, False])
    nxt = secant("relu", target, target, achieved, usable)
    np.testing.assert_allclose(nxt[0], [1.0 / 0.9, 0.15])
    np.testing.assert_allclose(nxt[1], [MAX_RATIO, 0.2 - MAX_SHIFT])  # a wild miss moves at most one bound
    np.testing.assert_array_equal(nxt[2], target[2])  # unusable fits keep their request


def test_default_steps_follow_network_size_and_cell():
    small = random_knet(6, 2, 12, "relu", seed=0)
    assert steps_for(small, None) == DEFAULT_STEPS and steps_for(small, 0) == 0 and steps_for(small, 3) == 3
    limit = cell_for_law("relu").refine_devices
    big = random_knet(60, 2, limit // 2 + 1, "relu", seed=0)
    assert steps_for(big, None) == 0
    assert steps_for(random_knet(6, 2, 12, "relu_affine", seed=0), None) == DEFAULT_STEPS
    # the two-stage tanh cells converge slowly in DC (20-50 ms per instance and point): refined only when asked
    assert steps_for(random_knet(6, 2, 12, "tanh", seed=0), None) == 0
    assert steps_for(random_knet(6, 2, 12, "tanh", seed=0), 2) == 2


def test_refining_a_law_without_a_refinable_cell_is_refused_with_the_fix():
    knet = random_knet(6, 2, 12, "sigmoid", seed=0)
    with pytest.raises(InputError, match="--refine-steps 0|no transistor-level cell"):
        refine(knet, None, steps=1)


@pytest.mark.ngspice
def test_refinement_shrinks_the_measured_theta_miss():
    from kcompile.characterised import measure_devices
    from kcompile.knet import load_knet
    from kcompile.mapping import map_knet

    knet = load_knet(Path(__file__).parent.parent / "examples/zoo/moons-hw-transistor.npz")
    mapped = map_knet(knet, "generic180", "tt")
    refined = refine(knet, mapped, steps=1)
    before = fit_law(knet.law, knet.layers[0].theta, measure_devices(mapped), 0)
    after = fit_law(knet.law, knet.layers[0].theta, measure_devices(refined), 0)
    usable = before[1] & after[1]
    miss_before = np.abs(before[0] - knet.layers[0].theta)[usable].max()
    miss_after = np.abs(after[0] - knet.layers[0].theta)[usable].max()
    # measured on generic180 tt: 0.115 -> 0.014 units (docs/transistor.md)
    assert miss_after < 0.5 * miss_before, (miss_before, miss_after)
    np.testing.assert_array_equal(refined.layers[0].target, mapped.layers[0].target)
    np.testing.assert_allclose(refined.layers[0].achieved[after[1]], after[0][after[1]], atol=1e-12)


@pytest.mark.ngspice
def test_refinement_corrects_two_pair_relu_cells():
    """kc_arelu: the calibration predicts every device exactly; measured, the mapped devices of this network miss
    θ2 by up to 0.076 units and the slopes by 0.037 on generic180 (a random relu_affine network on sky130 missed a
    slope by 0.63: the issue's unflagged miss). One step takes the largest measured miss to 0.003 (asserted:
    at least halves it), and the refined map's achieved θ is the measured one."""
    from kcompile.mapping import map_knet, theta_misses

    knet = random_knet(6, 1, 8, "relu_affine", theta_scale=1.0, seed=0)
    mapped = map_knet(knet, "generic180", "tt")
    assert theta_misses("relu_affine", mapped).count == 0  # predicted: nothing to see
    theta = knet.layers[0].theta
    before = fit_law("relu_affine", theta, measure(mapped), 0)
    refined = refine(knet, mapped, steps=1)
    after = fit_law("relu_affine", theta, measure(refined), 0)
    usable = before[1] & after[1]
    assert usable.sum() >= 4
    miss_before = np.abs(before[0] - theta)[usable].max()
    miss_after = np.abs(after[0] - theta)[usable].max()
    assert miss_after < 0.5 * miss_before, (miss_before, miss_after)
    np.testing.assert_allclose(refined.layers[0].achieved[after[1]], after[0][after[1]], atol=1e-12)


def test_secant_through_two_iterates_converges_where_ratio_steps_oscillate():
    """A cell whose slope answers 2.7x a change of the request (kc_arelu's negative pair on sky130 near its box edge:
    −1.2 → −1.40, −1.35 → −1.79): ratio steps overshoot the target −1.46 back and forth, the secant lands on it."""
    def answer(request):  # θ1 response: −1.40 at −1.2, −1.805 at −1.35 (slope 2.7), signs kept
        out = np.array(request, dtype=float)
        out[:, 1] = -1.40 + 2.7 * (request[:, 1] + 1.2)
        return out

    target = np.array([[1.0, -1.461, 0.1]])
    usable = np.ones(1, dtype=bool)
    request, previous, misses = target.copy(), None, []
    for step in range(4):
        achieved = answer(request)
        misses.append(abs(achieved[0, 1] - target[0, 1]))
        nxt = secant("relu_affine", target, request, achieved, usable, previous=previous if step >= 2 else None)
        previous, request = (request, achieved), nxt
    assert misses[-1] < 0.01 < min(misses[:2])  # two ratio steps miss; the secant steps land on it
