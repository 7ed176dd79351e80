"""The transconductance cells (linear, tanh, relu_affine, tanh_affine): calibration inversion and real ngspice.

Cells (docs/cells.md): kc_gm (one degenerated pair, signed output through two current-mode ReLU cores;
linear), kc_tanh2 (kc_gm into a resistor, then an undegenerated weak-inversion pair; tanh), kc_arelu (two
pairs, vs and vd against vref, into one ReLU core; relu_affine), kc_atanh (two pairs into the tanh stage;
tanh_affine). The ngspice tests run a small random network per law at transistor level (generic180 tt,
default scaling) and bound its node voltages against the characterised and the ideal reference with the
transistor-level targets (0.05 and 0.15 model units; looser tr - char for tanh_affine, see BOUNDS); measured values
are in docs/transistor.md.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from kcompile.cells import CELLS, NoCellError, cell_for_law, default_scaling
from kcompile.cells.base import clip_flags
from kcompile.cells.kc_arelu import CELL as AFFINE_RELU
from kcompile.cells.kc_arelu import (
    AffineCalibration,
    affine_achieved,
    affine_param_arrays,
    affine_reason,
    fit_affine_relu,
)
from kcompile.cells.kc_atanh import CELL as AFFINE_TANH
from kcompile.cells.kc_atanh import (
    AffineTanhCalibration,
    affine_tanh_achieved,
    affine_tanh_param_arrays,
    fit_affine_tanh,
)
from kcompile.cells.kc_gm import CELL as SIGNED_GM
from kcompile.cells.kc_gm import GmCalibration, fit_gm, gm_achieved, gm_model, gm_param_arrays
from kcompile.cells.kc_tanh2 import CELL as TANH2
from kcompile.cells.kc_tanh2 import Tanh2Calibration, tanh2_achieved, tanh2_param_arrays
from kcompile.laws import LAWS
from kcompile.pdk import get_pdk

SC = default_scaling(get_pdk("generic180"))
# transistor level vs characterised / vs ideal, every node and layer boundary of the test network: the targets
# (0.05 / 0.15), except tanh_affine's tr - char, which misses its target (measured 0.105 / 0.077 on this network:
# the two-stage dynamics and a coarse characterised table; docs/transistor.md); its bound guards that level
BOUNDS = {"linear": (0.05, 0.15), "tanh": (0.05, 0.15), "relu_affine": (0.05, 0.15), "tanh_affine": (0.15, 0.15)}
R = np.geomspace(5e4, 2e8, 13)


def _gm_cal(two_stage: bool = False) -> GmCalibration:
    """A calibration shaped like a measured one: θ0 ∝ 1/r, unequal variants, own offsets, a dead zone."""
    t0 = 3.2e5 / R
    args = (SC, R, np.maximum(0.8 / R, 2.5e-7), np.array([t0, -0.97 * t0]), np.array([0.01 * t0, -0.02 * t0]),
            np.array([-0.2 * t0, -0.19 * t0]), np.ones((2, R.size)), 0.995)
    if two_stage:
        return Tanh2Calibration("generic180", "tt", "kc_tanh2", "tanh", *args, ib2=2.56e-7, rl=1.75e5, iz_gain=0.97)
    return GmCalibration("generic180", "tt", "kc_gm", "linear", *args)


def _affine_cal(law: str) -> AffineCalibration:
    t0 = 3.2e5 / R
    own = np.array([-0.3 * t0, -0.25 * t0])
    args = (SC, R, np.array([t0, -0.8 * t0]), np.array([0.99 * t0, -0.81 * t0]), own, np.array([1.002, 1.012]))
    if law == "tanh_affine":
        return AffineTanhCalibration("generic180", "tt", "kc_atanh", *args, eps=np.array([-0.2 * t0, -0.19 * t0]),
                                     iz_gain=0.98, ib2=2.56e-7, rl=1.75e5)
    return AffineCalibration("generic180", "tt", "kc_arelu", *args)


@pytest.mark.parametrize("two_stage", [False, True])
def test_gm_calibration_inverts_its_own_model(two_stage):
    cal = _gm_cal(two_stage)
    rng = np.random.default_rng(0)
    t0 = rng.uniform(0.002, 5.0, 200) * rng.choice([-1.0, 1.0], 200)
    t1 = rng.uniform(-1, 1, 200)
    to_params, achieved = (tanh2_param_arrays, tanh2_achieved) if two_stage else (gm_param_arrays, gm_achieved)
    p = to_params(t0, t1, cal, clip=False)
    a0, a1 = achieved(p, cal)
    np.testing.assert_allclose(a0, t0, rtol=1e-9)
    np.testing.assert_allclose(a1, t1, atol=1e-9)
    assert (p.negative == (t0 < 0)).all() and (p.ap >= 0).all() and (p.ap > 0).any()
    if two_stage:  # θ1 by the current into z: iz = (θ1 − own)/gain, no input shift
        assert (p.io == 0).all() and p.rl == 1.75e5
        own = np.interp(np.log(p.r), np.log(R), cal.theta1[0])  # the positive variant's own θ1
        pos = t0 > 0
        np.testing.assert_allclose(p.iz[pos], (t1[pos] - own[pos]) / 0.97 * SC.i0, rtol=1e-9)
    # a table point maps onto its own resistor, with no offset beyond the cell's own
    q = to_params(cal.theta0[:, 4], cal.theta1[:, 4], cal, clip=False)
    np.testing.assert_allclose(q.r, R[4], rtol=1e-9)
    np.testing.assert_allclose(q.iz if two_stage else q.io, 0.0, atol=1e-18)


def test_gm_input_shift_has_the_variant_sign():
    cal = _gm_cal()
    p = gm_param_arrays(np.array([0.5, -0.5 / 0.97]), np.array([0.5, -0.5]), cal, clip=False)
    # the same shift θ1/θ0 = +1 unit of Δ: the negative variant's pair sees −Δ, so its io has the other sign
    assert p.io[0] > 0 > p.io[1]


def test_gm_out_of_range_slopes_raise_or_are_clipped_and_flagged():
    cal = _gm_cal()
    with pytest.raises(ValueError, match="outside the calibrated range"):
        gm_param_arrays(np.array([50.0]), np.zeros(1), cal, clip=False)
    p = gm_param_arrays(np.array([50.0, -50.0]), np.zeros(2), cal, clip=True)
    np.testing.assert_allclose(np.abs(gm_achieved(p, cal)[0]), [cal.theta0_range(False)[1], cal.theta0_range(True)[1]])
    assert clip_flags(np.array([50.0, -50.0, 0.3]), cal).tolist() == [True, True, False]


@pytest.mark.parametrize("law", ["relu_affine", "tanh_affine"])
def test_affine_calibration_inverts_its_own_model(law):
    cal = _affine_cal(law)
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.01, 2, (300, 3)) * rng.choice([-1.0, 1.0], (300, 3))  # inside the table's range
    theta[:, 2] = rng.uniform(-0.2, 1.0, 300)
    to_params, achieved = ((affine_tanh_param_arrays, affine_tanh_achieved) if law == "tanh_affine"
                           else (affine_param_arrays, affine_achieved))
    p = to_params(theta, cal)
    np.testing.assert_allclose(achieved(p, cal), theta, rtol=1e-9, atol=1e-12)
    assert sorted(set(p.signs.tolist())) == ["nn", "np", "pn", "pp"]
    assert all(s[0] == ("n" if a < 0 else "p") and s[1] == ("n" if b < 0 else "p")
               for s, (a, b, _) in zip(p.signs, theta))
    if law == "relu_affine":  # θ2 above the own offset by ap, below it by sp, never both
        assert not ((p.ap > 0) & (p.sp > 0)).any() and (p.ap > 0).any() and (p.sp > 0).any()
    else:  # θ2 by the current into z, nothing subtracted at a core
        assert p.iz.shape == (300,) and "sp" not in p.arrays()


@pytest.mark.parametrize("law", ["relu_affine", "tanh_affine"])
def test_mapped_affine_instances_fill_both_cores_of_signed_cells(law):
    lm = cell_for_law(law).map_layer(law, np.array([[0.3, -0.2, 0.1], [-0.2, 0.25, -0.3]]), _affine_cal(law))
    for i in range(2):
        p = lm.instance(i)
        if law == "tanh_affine":  # stage 1 has both cores: the same dead-zone fill into each
            assert p.ap > 0 and p.an == p.ap and " sp=" not in p.spice() and p.rl == 1.75e5
        else:  # one core: θ2 by ap or sp, nothing into the (absent) negative core
            assert p.an == 0 and (p.ap > 0) != (p.sp > 0)


def test_relu_affine_flags_a_theta2_the_core_cannot_subtract():
    cal = _affine_cal("relu_affine")
    theta = np.array([[0.01, 0.01, -3.0], [0.5, -0.5, -0.1]])
    p = affine_param_arrays(theta, cal)
    why = affine_reason(theta[0], p.sp[0], p.ib[0] + p.ibb[0], cal)
    assert why and "subtracted" in why
    assert affine_reason(theta[1], p.sp[1], p.ib[1] + p.ibb[1], cal) is None
    assert "ceiling" in affine_reason(np.array([30.0, 0.1, 0.0]), 0.0, 1e-6, cal)


@pytest.mark.parametrize("law", ["linear", "tanh", "tanh2"])
def test_fit_gm_recovers_exact_models(law):
    delta = np.linspace(-8, 8, 129)
    for p in ([0.3, 0.1, -0.02, 1.0], [-0.7, 0.4, -0.05, 1.0], [0.05, -0.2, 0.0, 1.0]):
        got = fit_gm(law, delta, gm_model(law, np.array(p), delta), None if law == "linear" else 1.0)
        np.testing.assert_allclose(got[:2], p[:2], atol=1e-5)


def test_fit_affine_recovers_exact_models():
    vs, vd = np.meshgrid(np.linspace(-4, 4, 17), np.linspace(-4, 4, 17), indexing="ij")
    for t in ([0.3, -0.2, 0.1], [-0.5, 0.25, 0.4]):
        np.testing.assert_allclose(fit_affine_relu(vs, vd, np.maximum(t[0] * vs + t[1] * vd + t[2], 0)), t,
                                   atol=1e-6)
        np.testing.assert_allclose(fit_affine_tanh(vs, vd, np.tanh(t[0] * vs + t[1] * vd + t[2]))[:3], t,
                                   atol=1e-5)


def test_templates_render_the_documented_variants():
    pdk = get_pdk("generic180")
    text = SIGNED_GM.render(pdk, "n")
    assert ".subckt kc_gm_n s d en enb vdd vss vr r=" in text and "Ma1 y1 d ta ta" in text and "Mrn xn xn" in text
    text = AFFINE_RELU.render(pdk, "pn")
    assert "Ma1 y1 s ta ta" in text and "Mb1 y1 vr tc tc" in text and "Mb2 y2 d td td" in text
    assert "Mrn" not in text  # ReLU output: the positive core only
    text = TANH2.render(pdk, "p")
    assert ".subckt kc_tanh2_p_s1 s d en enb vdd vss vr os od" in text and "x2 z vr en enb vdd vss vr s d" in text
    text = AFFINE_TANH.render(pdk, "np")
    assert "Ma1 y1 vr ta ta" in text and "iz vr z {iz}" in text


def test_the_four_transconductance_laws_have_their_cells_and_others_are_refused_with_the_fix():
    assert {law: cell_for_law(law) for law in ("linear", "tanh", "relu_affine", "tanh_affine")} == {
        "linear": SIGNED_GM, "tanh": TANH2, "relu_affine": AFFINE_RELU, "tanh_affine": AFFINE_TANH}
    assert set(CELLS.laws) <= set(LAWS)
    for law in set(LAWS) - set(CELLS.laws):  # laws added without a cell
        with pytest.raises(NoCellError, match="--cells behavioural"):
            cell_for_law(law)


@pytest.mark.ngspice
@pytest.mark.parametrize("law", ["linear", "tanh", "relu_affine", "tanh_affine"])
def test_transistor_level_cells_track_characterised_and_ideal(law, tmp_path):
    from kcompile.characterised import integrate_characterised, measure_devices
    from kcompile.knet import random_knet
    from kcompile.mapping import map_knet
    from kcompile.netlist import render_transistor_circuit, transistor_tran
    from kcompile.reference import integrate
    from kcompile.simulate import simulate

    t0 = time.perf_counter()
    knet = random_knet(3, 2, 3, law, num_outputs=2, theta_scale=0.4, seed=2)
    x = np.random.default_rng(7).uniform(-1, 1, (1, knet.num_features))
    cellmap = map_knet(knet, "generic180", "tt")
    assert not cellmap.clipped and cellmap.cell is cell_for_law(law)
    # coarser tables than the defaults, to keep each test short (their effect is measured in docs/transistor.md)
    dpoints, mpoints = {"linear": (65, 5), "tanh": (33, 5), "relu_affine": (65, 17), "tanh_affine": (33, 9)}[law]
    char = integrate_characterised(knet, measure_devices(cellmap, dpoints=dpoints, mpoints=mpoints), x)
    ideal = integrate(knet, x)
    circuit = tmp_path / "circuit.cir"
    circuit.write_text("".join(render_transistor_circuit(knet, cellmap)))
    spice = simulate(knet, circuit, x, transistor_tran(knet, 100), scaling=cellmap.scaling)
    tr_char = np.abs(spice.states - char.states).max()
    tr_ideal = np.abs(spice.states - ideal.states).max()
    print(f"{law}: all nodes tr-char {tr_char:.4f}, tr-ideal {tr_ideal:.4f}, {time.perf_counter() - t0:.0f} s")
    bound_char, bound_ideal = BOUNDS[law]
    assert tr_char < bound_char, tr_char
    assert tr_ideal < bound_ideal, tr_ideal


@pytest.mark.ngspice
@pytest.mark.parametrize("pdk", ["generic180", "sky130"])
def test_two_stage_tanh_stage2_gain_is_one_and_the_fill_closes_the_dead_zone(pdk):
    """With generic180's z resistor, sky130's tanh pair made 0.78 units of argument per unit of current into z: the
    dead-zone fill (a current) left a fifth of every dead zone, and the slopes fell a fifth short of what the
    cell can make (docs/transistor.md, "The two-stage tanh cells' stage 2 on sky130")."""
    from kcompile.cells.kc_gm import GM_GRID
    from kcompile.cells.kc_tanh2 import STAGE2_GAIN_TOLERANCE
    from kcompile.cells.sweep import measure_diff

    cal = TANH2.calibration(pdk, "tt")
    assert abs(cal.iz_gain - 1.0) <= STAGE2_GAIN_TOLERANCE
    instance = TANH2.param_arrays("tanh", np.array([[1.0, 0.0]]), cal)[0]
    sweep = measure_diff(TANH2, get_pdk(pdk), "tt", [instance], cal.scaling, *GM_GRID)
    slope, _, eps, _ = fit_gm("tanh2", sweep.delta, sweep.sink[0][:, sweep.mid.size // 2], 1.0)
    assert abs(eps) < 0.02 and abs(slope - 1.0) < 0.03, (slope, eps)  # sky130 before: eps -0.077
