"""Figures of docs/generation.md: a generative flow's levels against the ideal model, and a corrupted model (issue 14).

Runs a flow file (``flows/generation-*.yaml``; any ``--set`` override) and prints, per simulated level, the sample
distribution metrics against the ideal samples of the same latents, the largest error per sample relative to
``max(1, |v|)``, wall and CPU time and the load; ``--corrupt K:F`` also runs the behavioural circuit of the model
whose layer ``K`` θ is scaled by ``F`` and scores it with the same gate against the *unchanged* ideal model;
``--img`` writes the scatter plots (ideal, each level, the corrupted circuit) as a PNG; ``--worst K --points P,Q``
re-runs the behavioural level's K most displaced latents at P, Q, ... points per layer (the step cap study).

    python benchmarks/bench_generation.py flows/generation-circle.yaml --corrupt 1:1.5 --img docs/img/gen-circle.png
    python benchmarks/bench_generation.py flows/generation-circle.yaml --worst 6 --points 1000,4000,16000
    python benchmarks/bench_generation.py flows/generation-circle.yaml --set inputs.normal=256 \
        --set 'levels=[characterised, transistor]' --set inputs.levels.transistor=16

Measured figures: docs/generation.md.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kcompile.flow import load_flow  # noqa: E402
from kcompile.generation import compare_level, pool_latents  # noqa: E402
from kcompile.knet import load_knet, save_knet  # noqa: E402
from kcompile.netlist import default_tran, write_circuit  # noqa: E402
from kcompile.report import sample_images  # noqa: E402
from kcompile.simulate import simulate  # noqa: E402
from kcompile.timing import children_cpu  # noqa: E402
from kcompile.verify import run_flow  # noqa: E402


def relative_error(level: np.ndarray, ideal: np.ndarray) -> float:
    """Largest ``|level − ideal| / max(1, |ideal|)`` over samples and outputs."""
    return float((np.abs(level - ideal) / np.maximum(1.0, np.abs(ideal))).max())


def corrupted(knet, layer: int, factor: float):
    """The same network with layer ``layer``'s θ scaled by ``factor``."""
    return dataclasses.replace(knet, layers=tuple(dataclasses.replace(lay, theta=lay.theta * factor) if k == layer
                                                  else lay for k, lay in enumerate(knet.layers)))


def _timed(fn):
    t0, c0, p0 = time.perf_counter(), children_cpu(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, children_cpu() - c0 + time.process_time() - p0


def _row(name: str, n: int, cmp, level, ideal, wall: float, cpu: float) -> dict:
    return {"level": name, "n": n, **cmp.as_dict(), "max_abs_error": float(np.abs(level - ideal).max()),
            "max_rel_error": relative_error(level, ideal), "wall_s": wall, "cpu_s": cpu}


def _print(r: dict) -> None:
    print(f"{r['level']:>22} n={r['n']:5d}: MMD ratio {r['sample_mmd_ratio']:.3f}, energy ratio "
          f"{r['sample_energy_ratio']:.3f}, max displacement {r['max_displacement']:.3g}, max |err| "
          f"{r['max_abs_error']:.3g}, max rel err {r['max_rel_error']:.3g}  ({r['wall_s']:.0f} s wall"
          + ("" if r["cpu_s"] is None else f", {r['cpu_s']:.0f} s CPU") + ")", flush=True)


def step_study(knet, x: np.ndarray, ideal: np.ndarray, points: list[int]) -> list[dict]:
    """The latents ``x`` in segmented circuits (the build's device form) at each step cap: largest errors."""
    rows = []
    for p in points:
        with tempfile.TemporaryDirectory() as tmp:
            circuit = Path(tmp) / "circuit.cir"
            write_circuit(knet, circuit, segmented=True)
            tran = dataclasses.replace(default_tran(knet, p), segmented=True)
            out, wall, cpu = _timed(lambda: simulate(knet, circuit, x, tran, jobs=2, batch=max(1, len(x) // 2)).outputs)
        rows.append({"points_per_layer": p, "latents": len(x), "max_abs_error": float(np.abs(out - ideal).max()),
                     "max_rel_error": relative_error(out, ideal), "wall_s": wall, "cpu_s": cpu})
        print(f"  {len(x)} most displaced latents at {p} points per layer: max |err| {rows[-1]['max_abs_error']:.3g}, "
              f"max rel err {rows[-1]['max_rel_error']:.3g} ({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
    return rows


def scatter(path: Path, title: str, ideal: np.ndarray, panels: list[tuple[str, np.ndarray]]) -> None:
    """Ideal samples, then each level's (same latents), on common axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("ideal", ideal)] + panels
    both = np.vstack([p for _, p in panels])
    lo, hi = np.percentile(both, 0.2, axis=0), np.percentile(both, 99.8, axis=0)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), squeeze=False)
    for ax, (label, pts) in zip(axes[0], panels):
        ax.plot(pts[:, 0], pts[:, 1], ".", ms=1.5 if len(pts) > 500 else 3, alpha=0.5)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(label, fontsize=9)
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flow", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="flow key override, as kcompile verify --set (repeatable)")
    ap.add_argument("--corrupt", default=None, metavar="K:F", help="also the model with layer K's θ times F")
    ap.add_argument("--img", type=Path, default=None, help="PNG of the samples")
    ap.add_argument("--worst", type=int, default=0, help="step cap study on this many most displaced latents")
    ap.add_argument("--points", default="1000,4000,16000", help="points per layer of the step cap study")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    load = os.getloadavg()
    flow = dataclasses.replace(load_flow(args.flow, args.overrides), cache=None)  # every run fresh
    print(f"{flow.name}: {flow.model.name}, {flow.latent.n} latents (seed {flow.latent.seed}), levels "
          f"{list(flow.levels)}, jobs {flow.jobs}, {os.cpu_count()} CPUs, load {load[0]:.1f}", flush=True)
    result, flow_wall, flow_cpu = _timed(lambda: run_flow(flow))
    ideal = result.ideal.outputs
    rows = []
    for run in result.levels:
        if run.samples is not None:
            n = len(run.outputs)
            rows.append(_row(f"{run.level} {run.corner}".strip(" -"), n, run.samples, run.outputs, ideal[:n],
                             run.seconds, None))
            _print(rows[-1])
    for g in result.gates:
        print(f"  gate {g.detail}: {'PASS' if g.passed else 'FAIL'}")
    print(f"  flow: {flow_wall:.0f} s wall, {flow_cpu:.0f} s CPU (this process and its children)", flush=True)
    study = []
    if args.worst:
        run = result.level("behavioural")[0]
        worst = np.argsort(np.linalg.norm(run.outputs - ideal[:len(run.outputs)], axis=1))[-args.worst:]
        study = step_study(result.knet, result.inputs[worst], ideal[worst], [int(p) for p in args.points.split(",")])
    panels = [(f"{r['level']} (MMD ratio {r['sample_mmd_ratio']:.2f})", run.outputs)
              for r, run in zip(rows, [r for r in result.levels if r.samples is not None])]
    if args.corrupt:
        layer, factor = args.corrupt.split(":")
        knet = load_knet(flow.model)
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / f"corrupted-{flow.model.name}"
            save_knet(corrupted(knet, int(layer), float(factor)), bad)
            other = dataclasses.replace(load_flow(args.flow, [*args.overrides, f"model={bad}", "levels=[behavioural]"]),
                                        cache=None)
            res, wall, cpu = _timed(lambda: run_flow(other))
        n = len(res.level("behavioural")[0].outputs)
        out = res.level("behavioural")[0].outputs
        pool = result.reference.integrate(knet, pool_latents(n, knet.num_features, flow.latent.seed)).outputs
        cmp = compare_level(ideal, out, pool)
        rows.append(_row(f"corrupted {layer}:{factor}", n, cmp, out, ideal[:n], wall, cpu))
        _print(rows[-1])
        gate = next((g for g in flow.gates if g.metric == "sample_mmd_ratio"), None)
        if gate is not None:
            print(f"  the same gate on the corrupted circuit: sample_mmd_ratio = {cmp.mmd_ratio:.3g} "
                  f"{'<=' if gate.holds(cmp.mmd_ratio) else 'not <='} {gate.limit:g}: "
                  f"{'PASS' if gate.holds(cmp.mmd_ratio) else 'FAIL'}")
        panels.append((f"layer {layer} θ × {factor} (MMD ratio {cmp.mmd_ratio:.1f})", out))
    if args.img and ideal.shape[1] == 2:
        scatter(args.img, f"{flow.model.stem}: {len(ideal)} latents (seed {flow.latent.seed})", ideal, panels)
    elif args.img:  # square images (genmnist): the report's grid of the first latents, per level and its difference
        tag = sample_images(result, int(round(np.sqrt(ideal.shape[1]))))
        args.img.write_bytes(base64.b64decode(tag.split("base64,")[1].split('"')[0]))
    if args.json:
        args.json.write_text(json.dumps({"flow": flow.name, "overrides": args.overrides, "load_before": load,
                                         "load_after": os.getloadavg(), "wall_s": flow_wall, "cpu_s": flow_cpu,
                                         "rows": rows, "step_study": study,
                                         "gates": [g.detail for g in result.gates]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
