"""Foundation benchmark (a benchmark, not a test): sizes, times and memory.

Reports, in one run:
- build time and peak memory for a network the size of the paper's MNIST
  model (834 nodes, 2 layers x 230,068 devices, shift_relu): the paper's
  own MNIST checkpoint when torch is installed (imported from
  ../shared/reference-checkpoints), else a random network of that size
  (θ uniform in ±0.01: with the checkpoint's ±0.25 on a *random* topology,
  every node sees ~550 devices and the ODE becomes stiff);
- reference-integrator time for a batch of 64 on it (default tolerances);
- ngspice seconds per sample for random networks of 10, 100 and 1,000
  nodes (10 devices per node, 2 layers), behavioural netlists.

Usage: ``python benchmarks/bench_foundation.py [--nodes 10,100,1000] [--skip-mnist] [--json out.json]``
Build and integration run in child processes so that peak memory is theirs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from kcompile.build import build
from kcompile.knet import random_knet, save_knet
from kcompile.netlist import write_circuit, default_tran
from kcompile.reference import integrate
from kcompile.simulate import simulate


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CHECKPOINT = Path(__file__).resolve().parents[2] / "shared" / "reference-checkpoints" / "mnist"


def _mnist_network():
    try:
        from kcompile.importer import import_reference

        return import_reference(CHECKPOINT / "model.pth", CHECKPOINT / "config.yaml"), "paper MNIST checkpoint"
    except Exception as exc:  # torch or the checkpoint missing: say so and use a random network
        print(f"note: using a random MNIST-size network ({exc})", flush=True)
        return (random_knet(834, 2, 230_068, "shift_relu", num_inputs=784, num_outputs=10, theta_scale=0.01,
                            seed=0), "random, θ in ±0.01")


def mnist_size(workdir: Path) -> dict:
    knet, kind = _mnist_network()
    save_knet(knet, workdir / "mnist_size.npz")
    del knet
    base = _peak_mb()
    t = time.perf_counter()
    b = build(workdir / "mnist_size.npz", workdir / "build")
    build_s = time.perf_counter() - t
    x = np.random.default_rng(0).uniform(0, 1, (64, b.knet.num_features))
    t = time.perf_counter()
    tr = integrate(b.knet, x)
    ref_s = time.perf_counter() - t
    return {"network": kind, "nodes": b.knet.num_nodes, "devices": b.knet.num_devices, "build_s": build_s,
            "build_peak_mb": _peak_mb(), "peak_before_build_mb": base,
            "circuit_mb": b.circuit.stat().st_size / 1e6,
            "reference_batch64_s": ref_s, "reference_steps": tr.steps}


def spice_per_sample(nodes: int, samples: int, workdir: Path) -> dict:
    knet = random_knet(nodes, 2, 5 * nodes, "relu", theta_scale=0.3, seed=1)
    write_circuit(knet, workdir / f"c{nodes}.cir")
    x = np.random.default_rng(0).uniform(-1, 1, (samples, nodes))
    t = time.perf_counter()
    res = simulate(knet, workdir / f"c{nodes}.cir", x, default_tran(knet), jobs=1, timeout=3600)
    per = (time.perf_counter() - t) / samples
    err = float(np.abs(res.states - integrate(knet, x).states).max())
    return {"nodes": nodes, "devices": knet.num_devices, "seconds_per_sample": per, "max_error_vs_reference": err}


def _child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="10,100,1000", help="network sizes for the ngspice timing")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-mnist", action="store_true", help="only the ngspice timings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report = {"ngspice": []}
        if not args.skip_mnist:
            report["mnist_size"] = _child(mnist_size, tmp)
            print(json.dumps(report["mnist_size"]), flush=True)
        for n in map(int, args.nodes.split(",")):
            row = _child(spice_per_sample, n, args.samples, tmp)
            report["ngspice"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
