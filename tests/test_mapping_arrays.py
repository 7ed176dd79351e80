"""The array-based mapping gives exactly what the former per-device loop gave.

The loop below is the previous implementation of the signed ReLU cell's layer
mapping (``kcompile.cells.kc_relu.SignedRelu.map_layer``, formerly
``kcompile.mapping._map_layer``) and its helpers, kept verbatim as the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.cells.base import THETA0_RESOLUTION, clip_flags, clip_reason, default_scaling, tail_current
from kcompile.cells.kc_relu import CELL as SIGNED_RELU
from kcompile.cells.kc_relu import ReluCalibration, ReluParams
from kcompile.pdk import get_pdk


def _old_relu_params(theta0, theta1, cal, clip=False):
    negative = bool(theta0 < 0)
    row = int(negative)
    mag = np.abs(cal.theta0[row])
    lo, hi = float(mag.min()), float(mag.max())
    if clip:
        theta0 = float(np.copysign(np.clip(abs(theta0), lo, hi), theta0 if theta0 else 1.0))
    order = np.argsort(mag)
    log_r = np.interp(np.log(abs(theta0)), np.log(mag[order]), np.log(cal.r[order]))
    r = float(np.exp(log_r))
    own = float(np.interp(log_r, np.log(cal.r), cal.theta1[row]))
    need = theta1 - own
    inj = need / cal.inj_gain[0] if need >= 0 else -need / cal.inj_gain[1]
    current = inj * cal.scaling.i0
    return ReluParams(negative, r, tail_current(r, cal.scaling),
                      ipos=current if need >= 0 else 0.0, ineg=current if need < 0 else 0.0)


def _old_shift_relu_params(theta0, theta1, cal, clip=False):
    if clip:
        lo, hi = cal.theta0_range(theta1 < 0)
        theta1 = float(np.copysign(np.clip(abs(theta1), lo, hi), theta1 if theta1 else 1.0))
    if theta1 >= 0:
        return _old_relu_params(theta1, -theta1 * theta0, cal, clip)
    p = _old_relu_params(theta1, theta1 * theta0, cal, clip)
    return ReluParams(p.negative, p.r, p.ib, p.ipos, p.ineg, swap=True)


def _old_achieved(p, cal):
    row = int(p.negative)
    log_r = np.log(p.r)
    theta0 = float(np.copysign(np.exp(np.interp(log_r, np.log(cal.r), np.log(np.abs(cal.theta0[row])))),
                               cal.theta0[row][0]))
    own = float(np.interp(log_r, np.log(cal.r), cal.theta1[row]))
    return theta0, own + (p.ipos * cal.inj_gain[0] - p.ineg * cal.inj_gain[1]) / cal.scaling.i0


def _old_relu_target(law, theta):
    if law == "relu":
        return float(theta[0]), float(theta[1]), False
    t0, t1 = float(theta[0]), float(theta[1])
    return (t1, -t1 * t0, False) if t1 >= 0 else (t1, t1 * t0, True)


def _old_map_layer(law, theta, cal):
    rows = []
    to_params = _old_relu_params if law == "relu" else _old_shift_relu_params
    for th in theta:
        t0, t1, swap = _old_relu_target(law, th)
        p = to_params(float(th[0]), float(th[1]), cal, clip=True)
        a0, a1 = _old_achieved(p, cal)
        achieved = (a0, a1) if law == "relu" else ((a1 if swap else -a1) / a0 if a0 else 0.0, a0)
        rows.append((p, achieved, clip_reason(t0, cal) is not None))
    params = [r[0] for r in rows]
    return dict(negative=[p.negative for p in params], swap=[p.swap for p in params], r=[p.r for p in params],
                ib=[p.ib for p in params], ipos=[p.ipos for p in params], ineg=[p.ineg for p in params],
                achieved=[r[1] for r in rows], clipped=[r[2] for r in rows])


def _cal(floor: float) -> ReluCalibration:
    """A calibration shaped like a measured one: unequal variants, own offsets, injection gains below 1."""
    t = np.geomspace(floor, 6.0, 13)
    r = np.sort(2e5 / t)
    t0 = 2e5 / r * (1 + 0.02 * np.sin(np.arange(r.size)))
    own = 0.004 + 0.15 * t0
    return ReluCalibration("generic180", "tt", "kc_relu", default_scaling(get_pdk("generic180")), r,
                       np.array([t0, -0.93 * t0]), np.array([own, 1.3 * own]), np.array([0.957, 0.903]))


def _theta(seed: int) -> np.ndarray:
    """θ of both signs, with exact zeros, -0.0, values below the floor and above the ceiling."""
    rng = np.random.default_rng(seed)
    th = rng.uniform(-0.5, 0.5, (400, 2))
    th[:40] *= 1e-3  # below the floor
    th[40:60] *= 30.0  # above the ceiling
    th[60:64] = [[0.0, 0.3], [-0.0, -0.2], [0.2, 0.0], [0.1, -0.0]]
    return rng.permutation(th)


@pytest.mark.parametrize("law", ["relu", "shift_relu"])
@pytest.mark.parametrize("floor", [0.002, 0.02])
def test_array_mapping_equals_the_per_device_loop(law, floor):
    cal = _cal(floor)
    theta = _theta(int(floor * 1000))
    new, old = SIGNED_RELU.map_layer(law, theta, cal), _old_map_layer(law, theta, cal)
    arrays = new.arrays()
    for name, want in old.items():
        got = arrays[name]
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
    assert new.clipped.any() and not new.clipped.all()  # some clipped (ceiling, and floor at 0.02), most not
    assert floor > THETA0_RESOLUTION or not new.clipped[np.abs(theta[:, 0 if law == "relu" else 1]) < floor].any()
    np.testing.assert_array_equal(new.target, theta)


def test_clip_flags_agree_with_clip_reason():
    cal = _cal(0.02)
    t0 = np.r_[_theta(3)[:, 0], 0.0, -0.0, 0.02, -6.0, 7.0, -7.0]
    assert clip_flags(t0, cal).tolist() == [clip_reason(float(x), cal) is not None for x in t0]


def test_empty_layer_maps_to_empty_arrays():
    lm = SIGNED_RELU.map_layer("relu", np.zeros((0, 2)), _cal(0.002))
    assert lm.params.r.shape == (0,) and lm.achieved.shape == (0, 2) and lm.clipped.dtype == bool
