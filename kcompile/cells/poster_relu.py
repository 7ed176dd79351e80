"""``kc_poster``: the KirchhoffNet poster's passive ReLU device, a measured baseline that realises no law.

Template ``templates/cells/poster_relu.sp.j2``: a triode MOS resistor (conductance
set by its gate voltage ``vg``) in series with a diode-connected switch, and a
mirrored reference current ``iref`` across the resistor. It is kept to document
why kcompile does not use it (docs/cells.md): the diode drops 0.5–0.8 V before
it conducts, the resistor is nonlinear, θ1 cannot be negative, and nothing
switches it off but ``vg``. It is characterised (:func:`measure_poster`) and
reported beside the signed ReLU cell; it has no calibration, so no law maps
onto it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pdk import get_pdk
from .base import Cell, SpiceParams, default_scaling
from .kc_relu import fit_relu
from .sweep import bench_instance, dc_bench, measure_deck, plane_sweeps


@dataclass(frozen=True)
class PosterParams(SpiceParams):
    """Instance parameters of one poster device: the reference current ``iref`` (A)."""

    keys = ("iref",)
    iref: float
    signs: str = "p"
    swap: bool = False


def measure_poster(pdk_name: str = "generic180", corner: str = "tt", vg: tuple[float, ...] = (0.9, 1.2, 1.8),
                   iref: tuple[float, ...] = (0.0, 1.0), span: float = 8.0, points: int = 33,
                   cache: bool = True) -> dict:
    """DC-sweep the poster's baseline cell for each gate voltage ``vg`` (V) and ``iref`` (units of i0).

    Returns the :class:`kcompile.cells.sweep.Sweep` (instances ordered ``vg``-major) and, per instance,
    the fitted ``(θ0, θ1)``, the max deviation from that fit (% of its full
    scale) and ``turn_on_v``, the smallest ``vs − vd`` in volts, on the line of
    the lowest ``vd``, where the current exceeds 0.05 units.
    """
    pdk = get_pdk(pdk_name)
    sc = default_scaling(pdk)
    grid = [(g, i) for g in vg for i in iref]
    deck = dc_bench(f"baseline: poster cell on {pdk.name}/{corner}", pdk, corner, [CELL.render(pdk, "p", sc)],
                    [bench_instance(CELL, k, PosterParams(i * sc.i0), gate=g) for k, (g, i) in enumerate(grid)], sc,
                    plane_sweeps(sc, span, points, max(sc.vcm - span * sc.v0, 0.0), min(sc.vcm + span * sc.v0,
                                                                                        pdk.supply)),
                    enabled=None)
    sweep = measure_deck(CELL, pdk, deck, corner, len(grid), sc, points, cache)
    rows = []
    for k, (g, i) in enumerate(grid):
        t0, t1 = fit_relu(sweep.delta, sweep.sink[k])
        fit = np.maximum(t0 * sweep.delta + t1, 0.0)
        on = (sweep.vs - sweep.vd[0])[sweep.sink[k][:, 0] > 0.05] * sc.v0
        rows.append({"vg": g, "iref": i, "theta0": t0, "theta1": t1,
                     "fit_err": 100 * float(np.abs(sweep.sink[k] - fit).max() / max(fit.max(), 1e-12)),
                     "turn_on_v": float(on.min()) if on.size else float("nan")})
    return {"sweep": sweep, "rows": rows}


@dataclass(frozen=True)
class PosterRelu(Cell):
    """The poster's baseline device (see the module docstring)."""

    def characterize(self, pdk_name="generic180", corner="tt", scaling=None, cache=True) -> dict:
        """:func:`measure_poster` at its defaults (``scaling`` must be the default one)."""
        if scaling is not None and scaling != default_scaling(get_pdk(pdk_name)):
            raise self._refuse("is measured at the default scaling only")
        return measure_poster(pdk_name, corner, cache=cache)

    def report(self, study: str, pdk_name: str, corner: str) -> None:
        for row in measure_poster(pdk_name, corner)["rows"]:
            print("  poster baseline: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()))


CELL = PosterRelu(
    name="kc_poster",
    template="poster_relu.sp.j2",
    ports=("s", "d", "vg", "vdd", "vss"),
    laws=(),
    params=PosterParams.keys,
    sizes=(("w_res", 1.0), ("l_res", 4.0), ("w_dio", 4.0), ("l_dio", 0.5), ("w_mir", 2.0), ("l_mir", 2.0)),
    variants=("p",),
    studies=("relu", "shift_relu"),  # reported beside the signed ReLU cell
)
