"""Exact rescalings of every law (kcompile.scaling): the rescaled network's trajectories times α are the original's.

``v = α·u``: homogeneous laws divide their offsets by α (and may take a current gain β: θ columns and
capacitance × β); the others multiply their slopes and the capacitance by α. The roles of the θ columns
come from each law's declaration (form × activation), never from a table; these tests hold for every
law of kcompile.laws.LAWS, including any added later.
"""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.knet import random_knet
from kcompile.laws import LAWS
from kcompile.reference import integrate
from kcompile.scaling import Scaling, rescale, rescaling


@pytest.mark.parametrize("law", sorted(LAWS))
def test_every_law_has_an_exact_rescaling(law):
    assert rescaling(law).kind in ("homogeneous", "slopes"), rescaling(law).why


#: (law, α, β): every law at two α; a current gain β only where the law admits one (homogeneous laws)
_RESCALINGS = [(law, alpha, 1.0) for law in sorted(LAWS) for alpha in (3.7, 0.4)] + [
    (law, 6.0, 2.5) for law in sorted(LAWS) if rescaling(law).gains]


@pytest.mark.parametrize("law, alpha, beta", _RESCALINGS)
def test_reference_of_rescaled_network_times_alpha_is_the_original(law, alpha, beta):
    knet = random_knet(6, 3, 14, law, theta_scale=1.0, seed=5)
    x = np.random.default_rng(1).uniform(-1, 1, (4, knet.num_features))
    small = rescale(knet, alpha, beta)
    # fixed steps: the two integrations take the same steps, so only rounding separates them
    want = integrate(knet, x, method="rk4", dt=1e-3)
    got = integrate(small, x / alpha, method="rk4", dt=1e-3)
    scale = max(1.0, float(np.abs(want.states).max()))
    assert np.abs(got.states * alpha - want.states).max() <= 1e-9 * scale
    # and the adaptive default agrees within its own tolerance
    assert np.abs(integrate(small, x / alpha).states * alpha - integrate(knet, x).states).max() <= 1e-4 * scale


@pytest.mark.parametrize("law", sorted(LAWS))
def test_rescaled_theta_follows_the_declared_roles(law):
    r = rescaling(law)
    theta = np.random.default_rng(0).uniform(-1, 1, (5, LAWS[law].num_params))
    new = r.theta(theta, 4.0)
    for j in range(theta.shape[1]):
        if r.kind == "homogeneous":
            factor = 0.25 if j in r.offsets else 1.0
        else:
            factor = 4.0 if j in r.slopes else 1.0
        np.testing.assert_allclose(new[:, j], theta[:, j] * factor)


@pytest.mark.parametrize("law", ["relu", "tanh_affine"])
def test_physical_scaling_keeps_tau_and_maps_original_units(law):
    cells = Scaling(v0=0.1, vcm=0.6, i0=0.5e-6, c_unit=1e-11)
    r = rescaling(law)
    beta = 2.0 if r.gains else 1.0
    sc = r.physical(cells, 5.0, beta)
    assert sc.tau == pytest.approx(cells.tau)
    assert sc.v0 == pytest.approx(0.1 / 5.0) and sc.vcm == 0.6
    if r.kind == "homogeneous":  # currents β/α, capacitance β per original unit
        assert (sc.i0, sc.c_unit) == pytest.approx((0.5e-6 * beta / 5.0, 1e-11 * beta))
    else:  # slopes × α: capacitance α per original unit
        assert (sc.i0, sc.c_unit) == pytest.approx((0.5e-6, 5e-11))
    assert r.physical(cells, 1.0) is cells


def test_rescale_identity_is_the_network_itself():
    knet = random_knet(4, 2, 5, "relu", seed=0)
    assert rescale(knet, 1.0) is knet
