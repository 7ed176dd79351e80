"""Transistor-level fidelity: ideal vs characterised vs transistor-level ngspice (issue #3).

Produces the figures of docs/transistor.md. Each case plans, maps and refines a
network as ``kcompile build --cells transistor`` does
(``kcompile.build.prepare_transistor``: automatic scaling, the law's cell,
per-device refinement, θ misses, the budget), renders the transistor circuit,
runs ngspice on a batch of inputs and compares, per sample, the node voltages
at every layer boundary:

* ideal        the ODE with the ideal law (``kcompile.reference.integrate``)
* characterised the ODE with every instance's measured DC I–V
                (``kcompile.characterised``)
* transistor   ngspice on the transistor-level circuit

Usage (from the repository root; every case prints one line per network)::

    python benchmarks/transistor_fidelity.py example [--pdk generic180] [--batch 2]
    python benchmarks/transistor_fidelity.py random  [--pdk generic180] [--seeds 0-4] [--batch 2] [--law linear] \
        [--theta-scale 1.0] [--table 65,9]   # networks nobody tuned for; one summary line at the end
    python benchmarks/transistor_fidelity.py classify [--model examples/zoo/moons-hw-transistor.npz] \
        [--batch 200] [--start 0]
    python benchmarks/transistor_fidelity.py mnist   # clipping statistics of the imported checkpoint
    python benchmarks/transistor_fidelity.py checkpoint --model ../shared/reference-checkpoints/circle [--batch 8]
    python benchmarks/transistor_fidelity.py example --c-unit 1e-12   # the old 1 pF scaling
    python benchmarks/transistor_fidelity.py example --points-per-layer 800   # timestep check
    python benchmarks/transistor_fidelity.py example --refine-steps 0   # without per-device refinement

``--out FILE.npz`` saves every state array. Runs use all cores (``--jobs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kcompile.build import prepare_transistor  # noqa: E402
from kcompile.characterised import characterise, integrate_characterised, measure_devices  # noqa: E402
from kcompile.knet import KNet, load_knet, random_knet  # noqa: E402
from kcompile.mapping import map_knet, transistor_scaling  # noqa: E402
from kcompile.netlist import render_transistor_circuit, transistor_tran  # noqa: E402
from kcompile.inputs import random_inputs  # noqa: E402
from kcompile.pdk import get_pdk  # noqa: E402
from kcompile.ranges import CALIBRATION_BATCH, CALIBRATION_SEED, node_ranges  # noqa: E402
from kcompile.reference import integrate  # noqa: E402
from kcompile.simulate import simulate  # noqa: E402


def fidelity(knet: KNet, x: np.ndarray, pdk: str = "generic180", corner: str = "tt", c_unit: float | None = None,
             jobs: int | None = None, points_per_layer: int = 400, table: tuple[int, int | None] | None = None,
             refine_steps: int | None = None, calibration: np.ndarray | None = None, manual: bool = False,
             solver: str | None = None) -> dict:
    """Run the three levels on inputs ``x``; errors are max |a − b| in the ORIGINAL model units.

    The circuit is planned as ``kcompile build`` plans it (:func:`kcompile.build.prepare_transistor`): automatic
    scaling on ``calibration`` inputs (default: ``x``), or the default scaling as given (``manual``).
    ``table`` = (Δ points, common-mode points) of the characterised tables (default: measure_devices's).
    ``refine_steps``: per-device refinement (default: kcompile's, 2 steps for small relu networks).
    ``solver``: ngspice's linear solver (default: kcompile's, KLU from 150 cells on).
    """
    over = {} if c_unit is None else {"c_unit": c_unit}
    scaling = transistor_scaling(get_pdk(pdk), **over)
    t0 = time.perf_counter()
    cal = x if calibration is None else calibration
    prep = prepare_transistor(knet, cal, "the benchmark's inputs", pdk, corner, scaling, "manual" if manual else "auto",
                              allow_clipped=True, refine_steps=refine_steps, allow_out_of_budget=True)
    plan, cellmap = prep.plan, prep.cellmap
    t_build = time.perf_counter() - t0
    if table:
        tables = measure_devices(cellmap, table[0], mpoints=table[1])
    else:
        tables = characterise(cellmap)
    t1 = time.perf_counter()
    ideal = integrate(knet, x)
    char = integrate_characterised(plan.network, tables, x, alpha=plan.alpha)
    with tempfile.TemporaryDirectory(prefix="kc-fidelity-") as tmp:
        circuit = Path(tmp) / "circuit.cir"
        with open(circuit, "w") as f:
            f.writelines(render_transistor_circuit(plan.network, cellmap))
        tran = plan.tran(transistor_tran(knet, points_per_layer))
        tran = tran if solver is None else dataclasses.replace(tran, solver=solver)
        spice = simulate(knet, circuit, x, tran, scaling=plan.scaling,
                         jobs=jobs, timeout=7200, defines=get_pdk(pdk).ngspice_defines())
    t2 = time.perf_counter()
    out = knet.output_nodes - 1

    def gap(a, b):
        return (float(np.abs(a[:, -1, out] - b[:, -1, out]).max()), np.abs(a - b).max(axis=(0, 2)))

    return {"ideal": ideal.states, "char": char.states, "spice": spice.states,
            "tr_char": gap(spice.states, char.states), "tr_ideal": gap(spice.states, ideal.states),
            "char_ideal": gap(char.states, ideal.states), "clipped": len(cellmap.clipped),
            "t_build": t_build, "t_measure": t1 - t0, "t_spice": t2 - t1, "tau": plan.scaling.tau, "alpha": plan.alpha,
            "beta": plan.beta, "swing": plan.ranges.peak, "peak": float(np.abs(ideal.states).max()),
            "budget": None if prep.budget is None else prep.budget.nominal, "misses": prep.misses.count,
            "validation": tables.validation, "samples": len(x), "jobs": jobs or min(os.cpu_count() or 1, len(x)),
            "solver": tran.solver}


def _line(name: str, r: dict) -> str:
    f = lambda g: f"{g[0]:.4f} (all nodes per boundary {np.array2string(g[1][1:], precision=3)})"  # noqa: E731
    rel = 100 * r["tr_ideal"][0] / r["swing"] if r["swing"] else float("nan")
    budget = "-" if r["budget"] is None else f"{r['budget']:.3g}"
    valid = "" if r["validation"] is None else f"; {r['validation'].message()}"
    return (f"{name}: outputs |tr-char| {f(r['tr_char'])}; |tr-ideal| {f(r['tr_ideal'])} = {rel:.2f} % of the swing "
            f"±{r['swing']:.3g}; |char-ideal| {f(r['char_ideal'])}; alpha {r['alpha']:.3g}, beta {r['beta']:.3g}; "
            f"budget {budget}; clipped {r['clipped']}, θ misses {r['misses']}; tau {r['tau']:.3g} s; "
            f"build {r['t_build']:.0f} s, build + tables {r['t_measure']:.0f} s, ngspice {r['t_spice']:.0f} s "
            f"({r['t_spice'] / r['samples']:.0f} s per sample, {r['jobs']} job(s), solver {r['solver']}); load average "
            f"{os.getloadavg()[0]:.1f}{valid}")


def _dense_peak(knet: KNet, x: np.ndarray) -> float:
    """Peak |v| of the ideal trajectories of ``x`` on the range analysis' dense grid."""
    return node_ranges(knet, x).peak


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", choices=["example", "random", "classify", "mnist", "checkpoint"])
    ap.add_argument("--pdk", default="generic180")
    ap.add_argument("--corner", default="tt")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--start", type=int, default=0, help="classify: first test input (run long batches in chunks)")
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--law", default="relu", help="random: device law (relu, shift_relu, relu_affine, linear, tanh, "
                    "tanh_affine)")
    ap.add_argument("--theta-scale", type=float, default=0.3, help="random: θ uniform in ±this")
    ap.add_argument("--table", default=None, help="characterised table grid DPOINTS,MPOINTS (default 129,9; "
                    "129,33 for the affine laws)")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--devices", type=int, default=12)
    ap.add_argument("--manual", action="store_true", help="the default scaling as given (no automatic scaling)")
    ap.add_argument("--model", default=str(ROOT / "examples/zoo/moons-hw-transistor.npz"),
                    help="classify: the model; checkpoint: a folder of a paper checkpoint (model.pth, config.yaml)")
    ap.add_argument("--char-batch", type=int, default=256, help="checkpoint: samples of the characterised level")
    ap.add_argument("--c-unit", type=float, default=None)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--points-per-layer", type=int, default=400,
                    help="ngspice step cap, 1/points of a layer (kcompile's default 400)")
    ap.add_argument("--solver", choices=["sparse", "klu"], default=None,
                    help="ngspice's linear solver (kcompile's default: klu from 150 cells on)")
    ap.add_argument("--refine-steps", type=int, default=None,
                    help="per-device refinement steps (kcompile's default: 2 up to 2,000 devices)")
    a = ap.parse_args(argv)
    saved = {}
    if a.case == "example":
        path = ROOT / "examples/random_relu.npz"
        knet = load_knet(path)
        x = np.load(path)["test_inputs"][:a.batch or 2]
        r = fidelity(knet, x, a.pdk, a.corner, a.c_unit, a.jobs, a.points_per_layer, refine_steps=a.refine_steps)
        print(_line(f"example {a.pdk}/{a.corner} batch {len(x)}", r), flush=True)
        saved.update({k: r[k] for k in ("ideal", "char", "spice")})
    elif a.case == "random":
        worst, met, rows = np.zeros(4), 0, []
        seeds = _seeds(a.seeds)
        for seed in seeds:
            knet = random_knet(a.nodes, a.layers, a.devices, a.law, num_outputs=2, theta_scale=a.theta_scale,
                               seed=seed)
            x = np.random.default_rng(100 + seed).uniform(-1, 1, (a.batch or 2, knet.num_features))
            cal = random_inputs(knet, CALIBRATION_BATCH, CALIBRATION_SEED)  # what build uses without test inputs
            table = tuple(int(v) for v in a.table.split(",")) if a.table else None
            r = fidelity(knet, x, a.pdk, a.corner, a.c_unit, a.jobs, a.points_per_layer, table, a.refine_steps,
                         calibration=cal, manual=a.manual)
            target = max(0.15, 0.01 * _dense_peak(knet, x))
            met += r["tr_ideal"][0] <= target
            worst = np.maximum(worst, [r["tr_char"][0], r["tr_ideal"][0], r["char_ideal"][0],
                                       r["tr_ideal"][0] / target])
            print(_line(f"random {a.law} seed {seed} ({a.nodes} nodes, {a.layers}x{a.devices} devices, "
                        f"θ ±{a.theta_scale:g}) {a.pdk}/{a.corner}", r) + f"; target {target:.3g} "
                  f"({'met' if r['tr_ideal'][0] <= target else 'MISSED'})", flush=True)
            saved.update({f"{k}_{seed}": r[k] for k in ("ideal", "char", "spice")})
            rows.append((r["tr_ideal"][0], 100 * r["tr_ideal"][0] / r["swing"], r["alpha"], r["beta"],
                         r["budget"] or np.nan, r["misses"], r["clipped"], r["t_build"], r["t_measure"] - r["t_build"],
                         r["t_spice"]))
        print(f"worst over seeds: outputs |tr-char| {worst[0]:.4f}, |tr-ideal| {worst[1]:.4f} "
              f"({worst[3]:.2f} x the target), |char-ideal| {worst[2]:.4f}; target met on {met} of {len(seeds)}")
        err, rel, alpha, beta, budget, misses, clipped, t_build, t_tables, t_spice = np.array(rows, dtype=float).T
        print(f"summary {a.law} {a.pdk}/{a.corner}: |tr-ideal| worst {err.max():.3g} median {np.median(err):.3g} "
              f"(% of the swing: worst {rel.max():.2f}, median {np.median(rel):.2f}); α {alpha.min():.3g}-"
              f"{alpha.max():.3g}, β {beta.min():.3g}-{beta.max():.3g}; budget / measured median {np.nanmedian(budget / err):.2f} (range "
              f"{np.nanmin(budget / err):.2f}-{np.nanmax(budget / err):.2f}); θ misses {misses.sum():.0f}, clipped "
              f"{clipped.sum():.0f} of {len(seeds) * a.layers * a.devices}; build {t_build.sum():.0f} s, characterised "
              f"tables {t_tables.sum():.0f} s, ngspice {t_spice.sum():.0f} s", flush=True)
    elif a.case == "classify":
        knet = load_knet(a.model)
        z = np.load(a.model)
        x = z["test_inputs"][a.start:a.start + (a.batch or 200)]
        labels = z["test_labels"][a.start:a.start + len(x)] if "test_labels" in z else None
        r = fidelity(knet, x, a.pdk, a.corner, a.c_unit, a.jobs, a.points_per_layer, refine_steps=a.refine_steps)
        out = knet.output_nodes - 1
        cls = {k: r[k][:, -1, out].argmax(axis=1) for k in ("ideal", "char", "spice")}
        agree = lambda p, q: 100.0 * float(np.mean(cls[p] == cls[q]))  # noqa: E731
        print(_line(f"classify {Path(a.model).name} {a.pdk}/{a.corner} inputs {a.start}..{a.start + len(x) - 1}", r))
        print(f"class agreement: transistor vs ideal {agree('spice', 'ideal'):.1f} %, characterised vs ideal "
              f"{agree('char', 'ideal'):.1f} %, transistor vs characterised {agree('spice', 'char'):.1f} %"
              + ("" if labels is None else
                 f"; accuracy ideal {100 * np.mean(cls['ideal'] == labels):.1f} %, "
                 f"transistor {100 * np.mean(cls['spice'] == labels):.1f} %"), flush=True)
        margin = np.abs(np.diff(np.sort(r["ideal"][:, -1, out], axis=1)[:, -2:], axis=1))[:, 0]
        bad = np.flatnonzero(cls["spice"] != cls["ideal"])
        print(f"disagreeing samples {bad.tolist()} (ideal output margins {np.round(margin[bad], 4).tolist()}); "
              f"smallest ideal margin {margin.min():.4f}")
        saved.update({k: r[k] for k in ("ideal", "char", "spice")}, labels=labels if labels is not None else [])
    elif a.case == "checkpoint":
        from kcompile.importer import import_reference

        folder = Path(a.model)
        knet = import_reference(folder / "model.pth", folder / "config.yaml")
        rng = np.random.default_rng(7)
        cal = rng.standard_normal((CALIBRATION_BATCH, knet.num_features))  # latent samples, like the inputs
        wide = rng.standard_normal((a.char_batch, knet.num_features))
        t0 = time.perf_counter()
        prep = prepare_transistor(knet, cal, "64 standard normal latent samples", a.pdk, a.corner,
                                  transistor_scaling(get_pdk(a.pdk)), "auto", allow_clipped=True,
                                  allow_out_of_budget=True)
        tables = characterise(prep.cellmap)
        t1 = time.perf_counter()
        char = integrate_characterised(prep.plan.network, tables, wide, alpha=prep.plan.alpha)
        ideal = integrate(knet, wide)
        t2 = time.perf_counter()
        swing = node_ranges(knet, wide).peak
        err = np.abs(char.outputs - ideal.outputs).max()
        print(f"checkpoint {folder.name} {a.pdk}/{a.corner}: {knet.num_devices} {knet.law} devices; "
              f"{prep.plan.reason}; clipped {len(prep.cellmap.clipped)}, θ misses {prep.misses.count}; "
              f"characterised on {len(wide)} samples: largest output error {err:.3g} = "
              f"{100 * err / swing:.2f} % of the swing ±{swing:.3g} (outputs within ±"
              f"{np.abs(ideal.outputs).max():.3g}); tables {t1 - t0:.0f} s, integration {t2 - t1:.0f} s"
              + ("" if tables.validation is None else f"; {tables.validation.message()}"), flush=True)
        if a.batch:
            x = wide[:a.batch]
            r = fidelity(knet, x, a.pdk, a.corner, a.c_unit, a.jobs, a.points_per_layer, refine_steps=a.refine_steps,
                         calibration=cal, solver=a.solver)
            print(_line(f"checkpoint {folder.name} {a.pdk}/{a.corner} transistor, {len(x)} latent samples", r),
                  flush=True)
            saved.update({k: r[k] for k in ("ideal", "char", "spice")})
    else:
        from kcompile.importer import import_reference
        from kcompile.cells.base import clip_flags, clip_reason

        ref = "/work/shared/reference-checkpoints/mnist/"
        knet = import_reference(ref + "model.pth", ref + "config.yaml")
        knet = knet.knet if hasattr(knet, "knet") else knet
        map_knet(knet, a.pdk, a.corner)  # calibration cached
        t0, c0 = time.perf_counter(), time.process_time()
        cellmap = map_knet(knet, a.pdk, a.corner)
        t_map, c_map = time.perf_counter() - t0, time.process_time() - c0
        cal = cellmap.calibration
        theta = np.concatenate([layer.theta for layer in knet.layers])
        gains = theta[:, 1]  # shift_relu: θ1 is the gain (the relu-form slope)
        lo = max(cal.theta0_range(False)[0], cal.theta0_range(True)[0])
        reasons = [clip_reason(float(g), cal) for g in gains[clip_flags(gains, cal)]]
        print(f"mnist checkpoint on {a.pdk}/{a.corner}: {knet.law}, {gains.size} devices, mapped in "
              f"{t_map:.2f} s wall, {c_map:.2f} s CPU (calibration cached); θ0 (threshold) in "
              f"[{theta[:, 0].min():.3f}, {theta[:, 0].max():.3f}], "
              f"θ1 (gain) in [{gains.min():.3f}, {gains.max():.3f}]")
        flagged = len(cellmap.clipped)
        print(f"flagged (clipped beyond tolerance): {flagged} = {100 * flagged / gains.size:.3f} %; "
              f"|gain| below the calibrated floor {lo:.4f} (realised at the floor, error <= floor*|Δ|): "
              f"{100 * np.mean(np.abs(gains) < lo):.3f} %; below the old floor 0.02: "
              f"{100 * np.mean(np.abs(gains) < 0.02):.2f} %; reasons: {sorted(set(r for r in reasons if r))[:3]}")
    if a.out is not None and saved:
        np.savez(a.out, **saved)


if __name__ == "__main__":
    main()
