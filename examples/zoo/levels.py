"""Ideal, characterised and characterised-level Monte Carlo accuracy of a zoo classifier on its recorded test split.

    python examples/zoo/levels.py examples/zoo/mnist14-hw.npz --pdk sky130 --runs 10 --rtol 1e-6 --json /tmp/l.json

* **ideal**: the NumPy reference (dopri5) on the recorded test inputs;
* **characterised**: the ODE with every mapped cell's measured DC I–V (``kcompile.characterised.characterise``:
  one sweep per instance below 150 devices, else the cell's cached θ-grid table, as the flows' characterised
  level), after ``--refine-steps`` per-device refinement steps (``kcompile.refine``);
* **characterised Monte Carlo**: the same tables, each device's sink and source currents moved by the change
  of its relu law under mismatch run ``r`` of ``--seed``: ``i' = table + relu((θ0+δθ0)·Δ + θ1+δθ1) −
  relu(θ0·Δ + θ1)`` with θ the device's achieved relu form and δθ its own deviation under exactly the draws
  of the transistor-level Monte Carlo (``kcompile.mismatch.theta_deviations``: every instance DC-swept with
  its mismatched transistors). The transistor-level flows' Monte Carlo runs the same draws in ngspice.

Prints (and with ``--json`` writes) the accuracies, the 5th percentile over the runs, the cells' gate area and the
seconds per stage.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.sparse as sp

from kcompile.characterised import characterise, integrate_characterised, table_rhs
from kcompile.knet import load_knet
from kcompile.mapping import map_knet
from kcompile.mismatch import draws, theta_deviations
from kcompile.pdk import get_pdk
from kcompile.reference import integrate
from kcompile.refine import refine, steps_for


def mismatch_rhs(tables, achieved: list[np.ndarray], dtheta: list[np.ndarray]):
    """The characterised right-hand side plus each device's relu-law change under its δθ (one run)."""
    base = table_rhs(tables)

    def factory(knet, k, dtype=np.float64):
        table = base(knet, k, dtype)
        layer = knet.layers[k]
        n, e = knet.num_nodes, layer.num_devices
        cinv = sp.diags(1.0 / knet.capacitance)
        into = (cinv @ sp.csr_matrix((np.ones(e), (layer.dst, np.arange(e))), shape=(n + 1, e))[1:]).tocsr()
        out = (cinv @ sp.csr_matrix((np.ones(e), (layer.src, np.arange(e))), shape=(n + 1, e))[1:]).tocsr()
        a, b = achieved[k][:, 0], achieved[k][:, 1]
        d = dtheta[k]

        def rhs(v: np.ndarray) -> np.ndarray:
            vg = np.concatenate([np.zeros((v.shape[0], 1)), v], axis=1)
            delta = vg[:, layer.src] - vg[:, layer.dst]
            nominal = np.maximum(a * delta + b, 0.0)
            sink = np.maximum((a + d[:, 0]) * delta + b + d[:, 1], 0.0) - nominal
            source = np.maximum((a + d[:, 2]) * delta + b + d[:, 3], 0.0) - nominal
            return table(v) + (into @ source.T - out @ sink.T).T

        return rhs

    return factory


def gate_area(cellmap) -> float:
    """Σ W·L (µm²) of every transistor of every mapped cell: the active area, not counting the degeneration
    resistors, capacitors and wiring."""
    cell, pdk = cellmap.cell, cellmap.pdk
    return float(sum(t.w * t.l for k in range(len(cellmap.layers)) for p in cellmap.instances(k)
                     for t in cell.transistors(pdk, p.signs)))


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(outputs.argmax(axis=1) == labels))


def chunked(run, x: np.ndarray, chunk: int) -> np.ndarray:
    """``run(x_part).outputs`` over chunks of ``x`` (each chunk its own step-size control: a batch-wide error
    norm lets the sample with the most ReLU kinks set every sample's step)."""
    return np.concatenate([run(x[i:i + chunk]).outputs for i in range(0, len(x), chunk)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--pdk", default="generic180")
    ap.add_argument("--corner", default="tt")
    ap.add_argument("--samples", type=int, default=None, help="first N recorded test inputs (default: all)")
    ap.add_argument("--runs", type=int, default=10, help="Monte Carlo runs (0: none)")
    ap.add_argument("--seed", type=int, default=1, help="Monte Carlo seed (the flows' default is 1)")
    ap.add_argument("--refine-steps", type=int, default=None, help="default: kcompile.refine.steps_for")
    ap.add_argument("--jobs", type=int, default=None, help="ngspice decks at a time (default: all cores)")
    ap.add_argument("--rtol", type=float, default=1e-9, help="dopri5 tolerance of every integration (atol 1e-2·rtol)")
    ap.add_argument("--chunk", type=int, default=100, help="samples per integration")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    knet = load_knet(args.model)
    with np.load(args.model) as z:
        x, y = z["test_inputs"][:args.samples], z["test_labels"][:args.samples]
    res = {"model": args.model, "pdk": args.pdk, "corner": args.corner, "samples": int(len(x)), "rtol": args.rtol,
           "seconds": {}}
    tol = {"rtol": args.rtol, "atol": 1e-2 * args.rtol}
    t0 = time.perf_counter()
    ideal = chunked(lambda part: integrate(knet, part, **tol), x, args.chunk)
    res["ideal"] = accuracy(ideal, y)
    res["seconds"]["ideal"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    steps = steps_for(knet, args.refine_steps)
    cellmap = refine(knet, map_knet(knet, args.pdk, args.corner), steps)
    tables = characterise(cellmap)
    res["refine_steps"], res["clipped"] = steps, len(cellmap.clipped)
    res["gate_area_um2"] = gate_area(cellmap)
    res["seconds"]["map_refine_measure"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    char = chunked(lambda part: integrate_characterised(knet, tables, part, **tol), x, args.chunk)
    res["characterised"] = accuracy(char, y)
    res["characterised_class_agreement"] = float(100.0 * np.mean(char.argmax(1) == ideal.argmax(1)))
    res["characterised_max_output_error"] = float(np.abs(char - ideal).max())
    res["seconds"]["characterised"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res), flush=True)

    if args.runs:
        pdk = get_pdk(args.pdk)
        t0 = time.perf_counter()
        dev = theta_deviations(cellmap, draws(pdk.mismatch, args.seed, args.runs), jobs=args.jobs)  # [R, E, 4]
        res["seconds"]["theta_deviations"] = round(time.perf_counter() - t0, 1)
        starts = np.cumsum([0] + [layer.num_devices for layer in knet.layers])
        achieved = [np.asarray(lm.achieved, dtype=float) for lm in cellmap.layers]
        t0 = time.perf_counter()
        accs = []
        for r in range(args.runs):
            per_layer = [dev[r, starts[k]:starts[k + 1]] for k in range(len(knet.layers))]
            rhs = mismatch_rhs(tables, achieved, per_layer)
            out = chunked(lambda part: integrate(knet, part, rhs=rhs, **tol), x, args.chunk)
            accs.append(accuracy(out, y))
            print(f"run {r}: {accs[-1]:.2f} %", flush=True)
        res["seconds"]["monte_carlo_integration"] = round(time.perf_counter() - t0, 1)
        a = np.array(accs)
        res["monte_carlo"] = {"runs": args.runs, "seed": args.seed, "per_run": a.tolist(), "mean": float(a.mean()),
                              "p5": float(np.percentile(a, 5)), "worst": float(a.min()),
                              "sigma_dtheta_median": np.median(dev.std(axis=0), axis=0).round(4).tolist()}
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
