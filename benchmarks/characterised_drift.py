"""Where the characterised level departs from the ideal one: each device's measured DC I–V (the θ-grid or
per-instance tables of ``kcompile.characterised``) against its law, and each node's summed current, along the
ideal trajectory of a batch of recorded test inputs.

Usage (from the repository root)::

    python benchmarks/characterised_drift.py examples/zoo/mnist14-hw.npz --pdk sky130 --batch 10

Prints, per layer, the median and largest per-device error (the largest over the trajectory, model units), the
worst devices' θ, the largest fan-in, and the largest error of a node's summed current (the ODE's right-hand
side times its capacitance) next to that node's ideal current: a node that sums many cells adds their errors.
With ``--sweep-node``, that worst node's devices are also swept one by one (33 x 9 points each) and its summed
error is printed from those sweeps beside the table's: is the error the cells' or the θ-grid table's?
"""
from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp

from kcompile.build import prepare_transistor
from kcompile.characterised import GRID_CHUNK, GRID_SWEEP, _bilinear, _sweep, characterise
from kcompile.cells.sweep import DIFF_SPAN, MID_SPAN
from kcompile.knet import load_extras, load_knet
from kcompile.laws import LAWS
from kcompile.mapping import transistor_scaling
from kcompile.pdk import get_pdk
from kcompile.reference import integrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--pdk", default="generic180")
    ap.add_argument("--corner", default="tt")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--points", type=int, default=41, help="trajectory points (whole run)")
    ap.add_argument("--sweep-node", action="store_true",
                    help="sweep the worst node's devices one by one and compare its summed error with the table's")
    a = ap.parse_args()
    knet = load_knet(a.model)
    x = load_extras(a.model, ("test_inputs",)).get("test_inputs")
    if x is None:
        x = np.random.default_rng(0).uniform(-1, 1, (a.batch, knet.num_features))
    x = np.asarray(x, dtype=float)[:a.batch]
    prep = prepare_transistor(knet, x, "recorded test inputs", a.pdk, a.corner,
                              transistor_scaling(get_pdk(a.pdk)), "auto", allow_clipped=True,
                              allow_out_of_budget=True)
    net, alpha = prep.plan.network, prep.plan.alpha
    tables = characterise(prep.cellmap)
    law = LAWS[net.law]
    tr = integrate(net, x / alpha, grid=np.linspace(0.0, float(net.t_bounds[-1]), a.points))
    print(f"{a.model} on {a.pdk}/{a.corner}: α {alpha:.3g}, {len(x)} inputs, peak |u| "
          f"{np.abs(tr.grid_states).max():.3g} (circuit's units)")
    for k, layer in enumerate(net.layers):
        sel = (tr.grid >= net.t_bounds[k]) & (tr.grid <= net.t_bounds[k + 1])
        v = tr.grid_states[:, sel, :].reshape(-1, net.num_nodes)
        vg = np.concatenate([np.zeros((v.shape[0], 1)), v], axis=1)
        vs, vd = vg[:, layer.src], vg[:, layer.dst]
        sink, source = _bilinear((tables.sink[k], tables.source[k]), tables.delta, tables.mid, vs - vd,
                                 0.5 * (vs + vd))
        ideal = law.current(vs, vd, layer.theta)
        dev = np.maximum(np.abs(sink - ideal), np.abs(source - ideal)).max(axis=0)
        worst = np.argsort(dev)[-3:][::-1]
        n, e = net.num_nodes + 1, layer.num_devices
        into = sp.csr_matrix((np.ones(e), (layer.dst, np.arange(e))), shape=(n, e))
        out = sp.csr_matrix((np.ones(e), (layer.src, np.arange(e))), shape=(n, e))
        signed = into @ (source - ideal).T - out @ (sink - ideal).T  # [node, sample·time]
        node_err = np.abs(signed[1:]).max(axis=1)
        node_ideal = np.abs((into @ ideal.T - out @ ideal.T)[1:]).max(axis=1)
        m = int(np.argmax(node_err))
        fan_in = np.bincount(np.concatenate([layer.dst, layer.src]), minlength=n)[1:].max()
        when = int(np.argmax(np.abs(signed[m + 1])))  # the sample and time of node m's worst summed error
        mine = np.flatnonzero((layer.dst == m + 1) | (layer.src == m + 1))
        inward = layer.dst[mine] == m + 1
        into_m = np.where(inward, (source - ideal)[when, mine], -(sink - ideal)[when, mine])
        gross = np.abs(ideal[when, mine]).sum()
        print(f"layer {k}: {e} devices; per-device error median {np.median(dev):.3g}, largest {dev[worst[0]]:.3g} "
              f"(θ {np.round(layer.theta[worst[0]], 3).tolist()}); largest fan-in {fan_in}; node n{m + 1}'s summed "
              f"current off by {node_err[m]:.3g} where its ideal current reaches {node_ideal[m]:.3g}; at that moment "
              f"its {mine.size} devices err by {into_m.mean():+.3g} on average (into the node) and carry "
              f"{gross:.3g} in all (|g| summed), median |vs - vd| {np.median(np.abs((vs - vd)[when, mine])):.3g}")
        if a.sweep_node:
            sw = _sweep(prep.cellmap, [prep.cellmap.layers[k].instance(int(i)) for i in mine], GRID_CHUNK, DIFF_SPAN,
                        GRID_SWEEP[0], MID_SPAN, GRID_SWEEP[1], True)
            s1, s2 = _bilinear((sw.sink, sw.source), sw.delta, sw.mid, (vs - vd)[:, mine], 0.5 * (vs + vd)[:, mine])
            one = np.where(inward, s2 - ideal[:, mine], -(s1 - ideal[:, mine])).sum(axis=1)
            print(f"  node n{m + 1} from its {mine.size} devices swept one by one: summed current off by "
                  f"{np.abs(one).max():.3g} (the table: {node_err[m]:.3g})")


if __name__ == "__main__":
    main()
