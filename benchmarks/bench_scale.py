"""Scale benchmark (issue #6, a benchmark, not a test): reference, build and ngspice at MNIST size.

Reports, in one run:
- the NumPy reference against the paper's forward pass (torchdiffeq dopri5,
  rtol = atol = 1e-3, float32, RHS in torch with gather + index_add) on the
  MNIST checkpoint, batch 64: times (best of ``--repeat``) and both
  accuracies against a rtol = atol = 1e-9 solve, and the speed ratio;
- build time and peak memory for the checkpoint (child process);
- ngspice seconds per sample (wall and CPU) and the reference's for
  mix-topology networks of about 10^3, 10^4, 10^5 devices, with the fitted
  growth exponent; samples run in parallel (``simulate(jobs=P)``) for the
  speed-up;
- optionally (``--mnist-spice``) one image through the checkpoint in ngspice.

Writes ``--out``/bench_scale.json and bench_scale.png (log-log time vs devices).

Usage::

    python benchmarks/bench_scale.py                     # everything but the MNIST ngspice run
    python benchmarks/bench_scale.py --mnist-spice 150   # plus one image, 150 points per layer

The checkpoint is read with kcompile.importer (needs torch). Without torch a
mix-topology stand-in of the same size is used and the torchdiffeq column is
skipped; the report says so. No MNIST test set ships here, so the inputs are
MNIST-format stand-ins: scikit-learn's 8x8 digits scaled to 20x20 and centred
on 28x28 like MNIST (random smooth blobs without scikit-learn).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmark this checkout, not whichever kcompile is installed

from kcompile import ngspice  # noqa: E402
from kcompile.knet import KNet, make_knet, save_knet  # noqa: E402
from kcompile.netlist import default_tran, write_circuit  # noqa: E402
from kcompile.reference import integrate  # noqa: E402
from kcompile.simulate import simulate  # noqa: E402
from kcompile.timing import best_time, children_cpu, torchdiffeq_forward  # noqa: E402

CHECKPOINT = Path(os.environ.get("KCOMPILE_CHECKPOINTS", "/work/shared/reference-checkpoints")) / "mnist"
TIGHT = 1e-9

#: mix-topology sizes: (grid width, window, hubs) -> devices over 2 layers
MIX_SIZES = {"1e3": (6, 2, 2), "1e4": (9, 3, 8), "1e5": (16, 4, 20)}


# ---------------------------------------------------------------- inputs and networks


def mnist_inputs(n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` MNIST-format images ``[n, 784]`` in [0, 1] and their labels (if known)."""
    try:
        from scipy.ndimage import zoom
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:28, 0:28]
        imgs = [np.clip(sum(np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 8.0)
                            for c in rng.uniform(6, 22, (4, 2))), 0, 1) for _ in range(n)]
        return np.array(imgs).reshape(n, 784), None
    d = load_digits()
    idx = np.arange(n) % len(d.images)
    out = np.zeros((n, 28, 28))
    for i, j in enumerate(idx):
        out[i, 4:24, 4:24] = np.clip(zoom(d.images[j] / 16.0, 2.5, order=1), 0, 1)
    return out.reshape(n, 784), d.target[idx]


def mix_knet(width: int, window: int, hubs: int, theta_pool: np.ndarray | None = None, seed: int = 0) -> KNet:
    """The reference's ``_mix_connect`` (window pairs + hubs tied to every node), 2 layers, shift_relu."""
    from kcompile.importer import mix_connect

    src, dst = mix_connect(1, width, width, window, hubs, repeat=(1, 1))
    n = int(max(src.max(), dst.max()))
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(2):
        theta = (rng.uniform(-0.15, 0.15, (src.size, 2)) if theta_pool is None
                 else theta_pool[rng.integers(0, len(theta_pool), src.size)])
        layers.append((src, dst, theta))
    return make_knet(n, "shift_relu", layers, [0.0, 1.0, 2.0], input_nodes=np.arange(1, width * width + 1),
                     output_nodes=np.arange(n - 9, n + 1), meta={"kind": "mix", "width": width,
                                                                 "window": window, "hubs": hubs})


def load_mnist() -> tuple[KNet, str]:
    try:
        import torch  # noqa: F401
        from kcompile.importer import import_reference
        return import_reference(CHECKPOINT / "model.pth", CHECKPOINT / "config.yaml"), "checkpoint"
    except ImportError:
        return mix_knet(28, 4, 50, seed=0), "mix stand-in (torch missing: checkpoint not readable)"


def _key(knet: KNet, x: np.ndarray) -> str:
    h = hashlib.sha256(x.tobytes())
    for layer in knet.layers:
        h.update(layer.src.tobytes() + layer.dst.tobytes() + layer.theta.tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- 1. reference vs torchdiffeq


def reference_section(knet: KNet, x: np.ndarray, repeat: int, cache: Path, configs) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    tight_file = cache / f"tight_{_key(knet, x)}.npz"
    if tight_file.is_file():
        with np.load(tight_file) as z:
            tight, tight_s = z["outputs"], float(z["seconds"])
    else:
        t = time.perf_counter()
        tight = integrate(knet, x, rtol=TIGHT, atol=TIGHT).outputs
        tight_s = time.perf_counter() - t
        np.savez(tight_file, outputs=tight, seconds=tight_s)
    report = {"batch": len(x), "tight_tol": TIGHT, "tight_seconds": tight_s, "ours": []}
    for dtype, method, tol in configs:
        kw = {"rtol": tol, "atol": tol} if method == "dopri5" else {"dt": tol}
        wall, cpu, tr = best_time(lambda: integrate(knet, x, method=method, dtype=dtype, **kw), repeat)
        row = {"dtype": np.dtype(dtype).name, "method": method, "tol_or_dt": tol, "seconds": wall, "cpu_seconds": cpu,
               "rhs_evals": tr.rhs_evals, "max_output_error": float(np.abs(tr.outputs - tight).max())}
        report["ours"].append(row)
        print("  reference", json.dumps(row), flush=True)
    try:
        import torch
        import torchdiffeq  # noqa: F401
    except ImportError:
        report["torchdiffeq"] = {"skipped": "torch/torchdiffeq not installed "
                                            "(pip install torch==2.13.0 torchdiffeq)"}
        print("  torchdiffeq: skipped (torch/torchdiffeq not installed)", flush=True)
        return report
    wall, cpu, (out, nfe) = best_time(lambda: torchdiffeq_forward(knet, x), max(1, repeat // 2))
    report["torchdiffeq"] = {"tol": 1e-3, "dtype": "float32", "threads": torch.get_num_threads(), "seconds": wall,
                             "cpu_seconds": cpu, "rhs_evals": nfe, "max_output_error": float(np.abs(out - tight).max())}
    print("  torchdiffeq", json.dumps(report["torchdiffeq"]), flush=True)
    ok = [r for r in report["ours"] if r["max_output_error"] <= report["torchdiffeq"]["max_output_error"]]
    if ok:
        best = min(ok, key=lambda r: r["cpu_seconds"])
        report["speedup"] = {"vs": best, "cpu_ratio": cpu / best["cpu_seconds"], "wall_ratio": wall / best["seconds"]}
        print(f"  speed-up at equal or better accuracy: {cpu / best['cpu_seconds']:.1f}x CPU, "
              f"{wall / best['seconds']:.1f}x wall ({best['dtype']} {best['method']} {best['tol_or_dt']:g}: "
              f"error {best['max_output_error']:.3g} vs torchdiffeq {report['torchdiffeq']['max_output_error']:.3g}, "
              f"both against the {TIGHT:g} solve)", flush=True)
    return report


# ---------------------------------------------------------------- 2. build


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). ``ru_maxrss`` is no use in a spawned child:
    Linux carries it over from the parent across ``execve``, so it reports the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build_child(weights: str, out: str) -> dict:
    from kcompile.build import build

    base = _peak_rss_mb()
    t, c = time.perf_counter(), time.process_time()
    b = build(weights, out)
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
            "peak_mb": _peak_rss_mb(), "peak_before_mb": base,
            "devices": b.knet.num_devices, "circuit_mb": b.circuit.stat().st_size / 1e6,
            "segmented": b.tran.segmented}


def _child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# ---------------------------------------------------------------- 3./4. ngspice



def spice_section(sizes: list[str], ppl: int, samples: int, jobs: int, work: Path, pool: np.ndarray | None,
                  form: str = "segmented") -> list:
    rows = []
    for name in sizes:
        knet = mix_knet(*MIX_SIZES[name], theta_pool=pool, seed=1)
        circuit = work / f"mix_{name}.cir"
        segmented = None if form == "auto" else form == "segmented"
        write_circuit(knet, circuit, segmented=segmented)
        x = np.random.default_rng(0).uniform(0, 1, (samples, knet.num_features))
        tran = default_tran(knet, ppl, segmented=segmented)
        t, c = time.perf_counter(), children_cpu()
        res = simulate(knet, circuit, x, tran, jobs=1, timeout=7200)
        wall1, cpu1 = (time.perf_counter() - t) / samples, (children_cpu() - c) / samples
        row = {"name": name, "nodes": knet.num_nodes, "devices": knet.num_devices, "points_per_layer": ppl,
               "segmented": tran.segmented, "trtol": tran.trtol, "solver": tran.solver, "samples": samples,
               "seconds_per_sample": wall1, "cpu_seconds_per_sample": cpu1}
        if jobs > 1:
            t = time.perf_counter()
            simulate(knet, circuit, x, tran, jobs=jobs, timeout=7200)
            row[f"seconds_per_sample_jobs{jobs}"] = (time.perf_counter() - t) / samples
            row["parallel_speedup"] = wall1 / row[f"seconds_per_sample_jobs{jobs}"]
        ref_wall, ref_cpu, tr = best_time(lambda: integrate(knet, x[:1]), 1)
        row.update(reference_seconds_per_sample=ref_wall, reference_cpu_seconds_per_sample=ref_cpu,
                   max_error_vs_reference=float(np.abs(res.states - integrate(knet, x).states).max()),
                   load_average=os.getloadavg()[0])
        rows.append(row)
        print("  ngspice", json.dumps(row), flush=True)
    return rows


def growth_exponent(rows: list, key: str) -> float | None:
    pts = [(r["devices"], r[key]) for r in rows if r.get(key)]
    if len(pts) < 2:
        return None
    d, t = np.log(np.array(pts)).T
    return float(np.polyfit(d, t, 1)[0])


def mnist_spice(knet: KNet, x: np.ndarray, ppl: int | None, work: Path, max_error: float = 1e-3) -> dict:
    """One image through the checkpoint with the large-network defaults (segmented, ``default_tran``)."""
    write_circuit(knet, work / "mnist.cir")
    tran = default_tran(knet, ppl)
    t, c = time.perf_counter(), children_cpu()
    res = simulate(knet, work / "mnist.cir", x, tran, jobs=1, timeout=7200)
    wall, cpu = time.perf_counter() - t, children_cpu() - c
    ref = integrate(knet, x, rtol=TIGHT, atol=TIGHT)
    err = float(np.abs(res.outputs - ref.outputs).max())
    cls, ref_cls = res.outputs.argmax(1).tolist(), ref.outputs.argmax(1).tolist()
    return {"points_per_layer": round(tran.tstop / knet.num_layers / tran.tmax), "segmented": tran.segmented,
            "trtol": tran.trtol, "reltol": tran.reltol, "solver": tran.solver,
            "ngspice": ngspice.version() + (" KLU" if tran.solver == "klu" and ngspice.has_klu() else ""),
            "seconds": wall, "cpu_seconds": cpu,
            "max_output_error": err, "max_state_error": float(np.abs(res.states - ref.states).max()),
            "output_span": float(np.abs(ref.outputs).max()), "class_spice": cls, "class_reference": ref_cls,
            "same_class": cls == ref_cls, "within": max_error, "match": err <= max_error and cls == ref_cls,
            "load_average": os.getloadavg()[0]}


def summary(report: dict) -> None:
    """The headline numbers of every section that ran, in a few lines."""
    print(f"\nsummary (load average {report['load_average_start'][0]:.1f} at start, "
          f"{report['load_average_end'][0]:.1f} at end; CPU = user + system)")
    ref = report.get("reference", {})
    if "speedup" in ref:
        sp, td = ref["speedup"], ref["torchdiffeq"]
        print(f"  reference vs torchdiffeq (batch {ref['batch']}): {sp['cpu_ratio']:.1f}x CPU, "
              f"{sp['wall_ratio']:.1f}x wall; "
              f"errors vs the {ref['tight_tol']:g} solve: ours {sp['vs']['max_output_error']:.3g} "
              f"({sp['vs']['rhs_evals']} RHS, {sp['vs']['cpu_seconds']:.2f} s CPU), "
              f"torchdiffeq {td['max_output_error']:.3g} ({td['rhs_evals']} RHS, {td['cpu_seconds']:.1f} s CPU)")
    if "build" in report:
        b = report["build"]
        print(f"  build: {b['devices']} devices, {b['cpu_seconds']:.1f} s CPU, {b['seconds']:.1f} s wall, "
              f"peak {b['peak_mb']:.0f} MB, circuit {b['circuit_mb']:.0f} MB")
    for r in report.get("ngspice", []):
        print(f"  ngspice {r['devices']} devices ({'segmented' if r['segmented'] else 'clocked'}, "
              f"{r['points_per_layer']} pts/layer): {r['cpu_seconds_per_sample']:.2f} s CPU/sample, "
              f"error {r['max_error_vs_reference']:.2g}" +
              (f", {r['parallel_speedup']:.2f}x with {r['samples']} samples on 2 jobs"
               if "parallel_speedup" in r else ""))
    g = report.get("growth_exponent", {})
    if g.get("cpu_seconds_per_sample"):
        print(f"  ngspice growth exponent (CPU): {g['cpu_seconds_per_sample']:.2f}")
    m = report.get("mnist_spice")
    if m:
        print(f"  MNIST one image in ngspice: {m['cpu_seconds']:.0f} s CPU ({m['seconds']:.0f} s wall), "
              f"max output error "
              f"{m['max_output_error']:.3g} (outputs up to {m['output_span']:.3g}), class {m['class_spice']} vs "
              f"{m['class_reference']}: {'within' if m['match'] else 'NOT within'} {m['within']:g}")


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  plot skipped: matplotlib not installed (pip install matplotlib)")
        return
    rows = report.get("ngspice", [])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    dev = [r["devices"] for r in rows]
    for key, label, style in (("seconds_per_sample", "ngspice, wall", "o-"),
                              ("cpu_seconds_per_sample", "ngspice, CPU", "s--"),
                              ("reference_seconds_per_sample", "NumPy reference, wall", "^-")):
        if rows:
            ax.loglog(dev, [r[key] for r in rows], style, label=label)
    m = report.get("mnist_spice")
    if m:
        ax.loglog([report["mnist"]["devices"]], [m["seconds"]], "r*", ms=12,
                  label=f"ngspice {m.get('ngspice', '')} MNIST checkpoint ({m['points_per_layer']} pts/layer)")
    if rows:
        d = np.array([min(dev), max(dev)])
        ax.loglog(d, rows[0]["cpu_seconds_per_sample"] * d / d[0], "k:", lw=1, label="linear")
    ax.set_xlabel("devices (2 layers, mix topology)")
    ax.set_ylabel("seconds per sample")
    ppl = rows[0]["points_per_layer"] if rows else "?"
    form = ("segmented" if rows[0].get("segmented") else "clocked") if rows else "?"
    ax.set_title(f"Time per sample vs size ({form}, {ppl} points per layer)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="timings are the best of this many runs")
    ap.add_argument("--sizes", default="1e3,1e4,1e5", help=f"mix sizes for ngspice, of {', '.join(MIX_SIZES)}")
    ap.add_argument("--points-per-layer", type=int, default=100, help="ngspice step cap for the size sweep")
    ap.add_argument("--samples", type=int, default=2, help="ngspice samples per size")
    ap.add_argument("--jobs", type=int, default=2, help="parallel ngspice processes for the speed-up")
    ap.add_argument("--mnist-spice", type=int, nargs="?", const=0, default=None, metavar="PPL",
                    help="also simulate one image through the checkpoint (PPL points per layer; "
                         "default: the large-network default of kcompile.netlist.default_tran)")
    ap.add_argument("--spice-form", choices=("segmented", "clocked", "auto"), default="segmented",
                    help="netlist form for the size sweep (auto: by size, as kcompile build does)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: reference,build,spice")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kcompile-bench-scale")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_average_start": os.getloadavg(),
                    "simulator": {"version": ngspice.version(), "binary": ngspice.binary(), "klu": ngspice.has_klu()}}
    print("ngspice:", json.dumps(report["simulator"]), flush=True)
    knet, source = load_mnist()
    report["mnist"] = {"source": source, "nodes": knet.num_nodes, "devices": knet.num_devices}
    print("MNIST:", json.dumps(report["mnist"]), flush=True)
    x, labels = mnist_inputs(args.batch)
    pool = np.concatenate([layer.theta for layer in knet.layers]) if source == "checkpoint" else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "reference" not in skip:
            print("reference vs torchdiffeq, batch", args.batch, flush=True)
            configs = [(np.float32, "dopri5", 1e-1), (np.float32, "dopri5", 3e-2), (np.float32, "dopri5", 1e-2),
                       (np.float32, "dopri5", 1e-3), (np.float32, "rk4", 0.1), (np.float64, "dopri5", 1e-3)]
            report["reference"] = reference_section(knet, x, args.repeat, args.cache, configs)
        if "build" not in skip:
            save_knet(knet, tmp / "mnist.npz")
            report["build"] = _child(_build_child, str(tmp / "mnist.npz"), str(tmp / "build"))
            print("build", json.dumps(report["build"]), flush=True)
        if "spice" not in skip:
            print("ngspice on mix topologies", flush=True)
            rows = spice_section(args.sizes.split(","), args.points_per_layer, args.samples, args.jobs, tmp, pool,
                                 args.spice_form)
            report["ngspice"] = rows
            report["growth_exponent"] = {k: growth_exponent(rows, k) for k in
                                         ("seconds_per_sample", "cpu_seconds_per_sample",
                                          "reference_seconds_per_sample")}
            print("growth exponents", json.dumps(report["growth_exponent"]), flush=True)
        if args.mnist_spice is not None:
            ppl = args.mnist_spice or "default"
            print(f"MNIST checkpoint in ngspice, one image, {ppl} points per layer", flush=True)
            report["mnist_spice"] = mnist_spice(knet, x[:1], args.mnist_spice or None, tmp)
            print("  ", json.dumps(report["mnist_spice"]), flush=True)
    report["load_average_end"] = os.getloadavg()
    summary(report)
    (args.out / "bench_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    if report.get("ngspice"):  # the figure is the sweep's: leave an existing one alone when the sweep did not run
        plot(report, args.out / "bench_scale.png")
    print(f"wrote {args.out / 'bench_scale.json'}" + (" and bench_scale.png" if report.get("ngspice") else ""),
          flush=True)


if __name__ == "__main__":
    main()
