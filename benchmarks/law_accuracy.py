"""Behavioural ngspice vs the NumPy reference for each law (the configuration of
tests/test_ngspice_laws.py: 20 nodes, 3 layers x 70 devices, θ uniform in ±0.3,
inputs uniform in [-1, 1]), at several step caps. Prints a markdown table.

Usage: python benchmarks/law_accuracy.py [--points 100,1000] [--samples 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from kcompile.knet import random_knet
from kcompile.laws import LAWS
from kcompile.netlist import default_tran, write_circuit
from kcompile.reference import integrate
from kcompile.simulate import simulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", default="100,400,1000")
    ap.add_argument("--samples", type=int, default=3)
    args = ap.parse_args()
    points = [int(p) for p in args.points.split(",")]
    print("| law | " + " | ".join(f"max err @ {p} pts/layer | s/sample @ {p}" for p in points) + " |")
    print("|---|" + "---|---|" * len(points))
    with tempfile.TemporaryDirectory() as tmp:
        for law in LAWS:
            knet = random_knet(20, 3, 70, law, seed=21, theta_scale=0.3)
            x = np.random.default_rng(4).uniform(-1, 1, (args.samples, knet.num_features))
            write_circuit(knet, Path(tmp) / "c.cir")
            ref = integrate(knet, x)
            cells = []
            for p in points:
                tran = default_tran(knet, p)
                t = time.perf_counter()
                res = simulate(knet, Path(tmp) / "c.cir", x, tran, jobs=1)
                per = (time.perf_counter() - t) / len(x)
                cells += [f"{np.abs(res.states - ref.states).max():.1e}", f"{per:.2f}"]
            print(f"| {law} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
