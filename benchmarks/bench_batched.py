"""Throughput of batched ngspice decks for small 2-node circuits (issue 14).

For each network, device form (osdi: the law's compiled Verilog-A module, the default on an ngspice that loads OSDI;
bsource: ngspice B-sources) and circuit form (clocked: the build's ``circuit.cir``; segmented: one transient per layer),
the same latent samples are run one sample per ngspice run and K samples per batched deck
(:meth:`kcompile.backends.ngspice.Ngspice.render_batch_deck`), one process at a time (``jobs=1``), and with
``--copies`` also as K copies of the circuit as subcircuit instances in one netlist (the alternative that was
not chosen). Reported per mode: samples per second (wall), ngspice CPU per sample (the children's user + system
time) and the largest difference to the per-sample runs.

    python benchmarks/bench_batched.py                       # circle (2 nodes, 1,200 devices) and a 12-device net
    python benchmarks/bench_batched.py --only circle --devices bsource --forms clocked --samples 4 --batch 4 --copies

Measured figures: docs/generation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kcompile import ngspice  # noqa: E402
from kcompile.generation import latent_batch  # noqa: E402
from kcompile.knet import load_knet, random_knet  # noqa: E402
from kcompile.netlist import default_tran, write_circuit  # noqa: E402
from kcompile.scaling import Scaling  # noqa: E402
from kcompile.simulate import simulate  # noqa: E402


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(fn):
    t0, c0 = time.perf_counter(), _children_cpu()
    out = fn()
    return out, time.perf_counter() - t0, _children_cpu() - c0


def copies_deck(num_nodes: int, initials: np.ndarray, tran) -> str:
    """K copies of the clocked circuit as subcircuit instances, each with its own initial voltages (for the
    comparison only: kcompile runs batches as :meth:`render_batch_deck` loops)."""
    ports = " ".join(f"n{n}" for n in range(1, num_nodes + 1))
    lines = ["* K copies of circuit.cir as subcircuit instances", f".subckt kc {ports}", ".include circuit.cir",
             ".ends kc"]
    ics, saves = [], []
    for j, row in enumerate(initials):
        lines.append(f"X{j} " + " ".join(f"s{j}_{n}" for n in range(1, num_nodes + 1)) + " kc")
        ics += [f"v(s{j}_{n})={v!r}" for n, v in enumerate(row.tolist(), 1)]
        saves += [f"v(s{j}_{n})" for n in range(1, num_nodes + 1)]
    lines += [".ic " + " ".join(ics), f".options {tran.options(Scaling())}",
              f".tran {tran.tstep!r} {tran.tstop!r} 0 {tran.tmax!r} uic",
              ".save " + " ".join(saves), ".end", ""]
    return "\n".join(lines)


def run_copies(knet, circuit: Path, x: np.ndarray, tran, batch: int) -> np.ndarray:
    """Outputs of the copies decks (clocked circuits in model units only)."""
    outs = []
    for i in range(0, len(x), batch):
        rows = knet.initial_state(x[i:i + batch])
        raw = ngspice.run(copies_deck(knet.num_nodes, rows, tran), files={"circuit.cir": circuit}, timeout=3600)
        outs.append(np.stack([[raw[f"v(s{j}_{n})"][-1] for n in knet.output_nodes.tolist()]
                              for j in range(len(rows))]))
    return np.vstack(outs)


def bench(name: str, knet, samples: int, batch: int, copies: bool, points: int | None, devices: list[str],
          forms: list[str]) -> list[dict]:
    x = latent_batch(knet, samples, 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for form in forms:
                segmented = form == "segmented"
                folder = Path(tmp) / f"{device}-{form}"
                folder.mkdir()
                circuit = folder / "circuit.cir"
                write_circuit(knet, circuit, segmented=segmented, devices=device)
                tran = dataclasses.replace(default_tran(knet, points), segmented=segmented)
                base = None
                for label, k in (("one sample per run", 1), (f"batched deck, {batch} per run", batch)):
                    res, wall, cpu = _timed(lambda: simulate(knet, circuit, x, tran, jobs=1, batch=k).outputs)
                    base = res if base is None else base
                    rows.append(_row(name, knet, device, form, label, samples, wall, cpu, np.abs(res - base).max()))
                    print(_line(rows[-1]), flush=True)
                if copies and device == "bsource" and not segmented:
                    res, wall, cpu = _timed(lambda: run_copies(knet, circuit, x, tran, batch))
                    rows.append(_row(name, knet, device, form, f"{batch} copies as subcircuits", samples, wall, cpu,
                                     np.abs(res - base).max()))
                    print(_line(rows[-1]), flush=True)
    return rows


def _row(name, knet, device, form, label, samples, wall, cpu, diff) -> dict:
    return {"network": name, "nodes": knet.num_nodes, "devices": knet.num_devices, "layers": knet.num_layers,
            "device_form": device, "circuit": form, "mode": label, "samples": samples, "wall_s": wall,
            "samples_per_s": samples / wall, "ngspice_cpu_s_per_sample": cpu / samples,
            "max_diff_to_per_sample_runs": float(diff)}


def _line(r: dict) -> str:
    return (f"{r['network']:>7} {r['devices']:5d} dev {r['device_form']:>7} {r['circuit']:>9} {r['mode']:>28}: "
            f"{r['samples_per_s']:7.3f} samples/s wall, ngspice {r['ngspice_cpu_s_per_sample']:.4f} s CPU/sample, "
            f"max diff {r['max_diff_to_per_sample_runs']:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16, help="latents per mode (default 16)")
    ap.add_argument("--batch", type=int, default=16, help="samples per batched deck (default 16)")
    ap.add_argument("--copies", action="store_true", help="also K copies as subcircuit instances (clocked)")
    ap.add_argument("--points", type=int, default=None, help="points per layer (default: the build's 1000)")
    ap.add_argument("--only", choices=["circle", "tiny"], default=None)
    ap.add_argument("--devices", default="osdi,bsource", help="device forms (default osdi,bsource; osdi needs an "
                    "ngspice that loads OSDI)")
    ap.add_argument("--forms", default="segmented,clocked", help="circuit forms (default segmented,clocked)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    nets = {"circle": load_knet(ROOT / "examples" / "flows2d" / "circle.npz"),
            "tiny": random_knet(2, 4, 3, "tanh_affine", num_outputs=2, t_layer=0.5, seed=2,
                                meta={"generative": True})}
    print(f"{ngspice.NGSPICE.describe()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name, knet in nets.items():
        if args.only in (None, name):
            rows += bench(name, knet, args.samples, args.batch, args.copies, args.points, args.devices.split(","),
                          args.forms.split(","))
    if args.json:
        args.json.write_text(json.dumps({"load_before": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
