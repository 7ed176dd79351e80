"""Compiled devices (issue 12, a benchmark, not a test): B-sources vs OSDI in ngspice 46, and VACASK.

Side by side in one process, on the paper's mix topology (``bench_scale.mix_knet``: window pairs plus hubs,
shift_relu, θ drawn from the MNIST checkpoint when it can be read), 2 layers, segmented (one transient per
layer), 100 points per layer, trtol 1000, reltol 1e-3, KLU (the large-network analysis of
``kcompile.netlist.default_tran``):

- ``sweep``: per size (10^3, 10^4, 10^5 devices) and form (ngspice B-sources, ngspice OSDI, VACASK OSDI):
  seconds per sample (wall of ``simulate``, CPU of the simulator processes), the simulator's peak memory
  (layer 0 re-run under ``/usr/bin/time``), the largest state error against a 1e-9 reference solve, the
  growth exponents from 10^3 to 10^5 and the OSDI speed-up at 10^4;
- ``laws``: every law on a random network (20 nodes, 3 layers, 70 devices per layer, as in
  tests/test_ngspice_laws.py) with θ of both signs up to ``--theta-scale`` (1), in ngspice OSDI and VACASK,
  clocked and segmented, at each ``--law-points`` per layer (1000, the small-network default, and 4000):
  errors relative to max(1, |v|) against a 1e-12 reference solve and against each other;
- ``mnist``: one image through the checkpoint end to end on the default path (``kcompile.build.build``
  with its default devices, then ``simulate``), in ngspice and in VACASK, against a 1e-9 solve, with
  ``--mnist-bsource`` also the B-source circuit; then the same as a user types it (``kcompile build``,
  ``kcompile simulate --inputs``, its reference solve included), each command timed;
- ``bundles``: MNIST layer 0 with the compiled devices bundled up to ``--slots`` per instance (1, 4, 8: the
  default), ngspice's counters side by side;
- ``transistor``: the shipped example at transistor level (generic180, sky130) in Debian's ngspice 39 and
  in ngspice 46 on the same inputs: seconds, ngspice's own counters (``.options acct``: netlist loading,
  transient analysis, timepoints, iterations), errors against the ideal ODE and 46 against 39.

The machine is shared: every row carries the load average; CPU times are the figures to compare.

Usage::

    python benchmarks/bench_osdi.py                          # sweep + laws
    python benchmarks/bench_osdi.py --sections mnist --mnist-bsource   # one MNIST image (import cached in --work)
    python benchmarks/bench_osdi.py --sections sweep --sizes 1e3,1e4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmark this checkout, not whichever kcompile is installed
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import CHECKPOINT, MIX_SIZES, growth_exponent, mix_knet, mnist_inputs  # noqa: E402
from kcompile import osdi  # noqa: E402
from kcompile.backends import get_simulator  # noqa: E402
from kcompile.build import build, circuit_for  # noqa: E402
from kcompile.knet import load_knet, random_knet  # noqa: E402
from kcompile.laws import LAWS  # noqa: E402
from kcompile.netlist import default_tran, render_deck, write_circuit  # noqa: E402
from kcompile.reference import integrate  # noqa: E402
from kcompile.simulate import device_libraries, simulate  # noqa: E402
from kcompile.timing import children_cpu  # noqa: E402

#: (label, simulator, devices)
FORMS = (("ngspice B-source", "ngspice", "bsource"), ("ngspice OSDI", "ngspice", "osdi"),
         ("VACASK OSDI", "vacask", "osdi"))
TIGHT = 1e-9


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _rerun(run_dir: Path) -> dict:
    """Re-run a kept run directory's command under GNU time: the simulator's own wall, CPU and peak memory."""
    cmd = shlex.split((run_dir / "command").read_text())
    for name in ("out.raw",):
        (run_dir / name).unlink(missing_ok=True)
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", *cmd], cwd=run_dir, capture_output=True,
                          text=True, check=True)
    wall, user, system, kb = proc.stderr.strip().splitlines()[-1].split()
    return {"wall_s": float(wall), "cpu_s": float(user) + float(system), "peak_mb": int(kb) / 1024}


def _run(knet, x, simulator: str, devices: str, tran, work: Path, ref_states: np.ndarray) -> dict:
    """Build the circuit, simulate every row of ``x`` (one process), time it; re-run layer 0 for memory."""
    folder = work / f"{simulator}-{devices}"
    folder.mkdir(parents=True, exist_ok=True)
    circuit = folder / get_simulator(simulator).circuit_name
    t = time.perf_counter()
    write_circuit(knet, circuit, segmented=tran.segmented, simulator=simulator, devices=devices)
    write_s = time.perf_counter() - t
    device_libraries(knet, circuit, simulator)  # openvaf-r runs once per module and machine: not timed
    shutil.rmtree(folder / "runs", ignore_errors=True)  # an earlier run's directories
    t, c = time.perf_counter(), children_cpu()
    res = simulate(knet, circuit, x, tran, jobs=1, timeout=7200, simulator=simulator, run_root=folder / "runs")
    wall, cpu = (time.perf_counter() - t) / len(x), (children_cpu() - c) / len(x)
    layer0 = folder / "runs" / "sample_0" / ("layer0" if tran.segmented else "")
    return {"write_s": write_s, "seconds_per_sample": wall, "cpu_seconds_per_sample": cpu,
            "layer0": _rerun(layer0), "max_state_error": float(np.abs(res.states - ref_states).max()),
            "states": res.states, "load_average": _load()}


def sweep(sizes: list[str], samples: int, ppl: int, work: Path) -> dict:
    pool = None
    if (work / "mnist.npz").is_file():
        knet = load_knet(work / "mnist.npz")
        pool = np.concatenate([layer.theta for layer in knet.layers])
    rows = []
    for name in sizes:
        knet = mix_knet(*MIX_SIZES[name], theta_pool=pool, seed=1)
        x = np.random.default_rng(0).uniform(0, 1, (samples, knet.num_features))
        tran = default_tran(knet, ppl, segmented=True)
        ref = integrate(knet, x, rtol=TIGHT, atol=TIGHT).states
        for label, simulator, devices in FORMS:
            row = _run(knet, x, simulator, devices, tran, work / f"mix_{name}", ref)
            row.pop("states")
            row.update(size=name, devices=knet.num_devices, nodes=knet.num_nodes, form=label)
            rows.append(row)
            print("  sweep", json.dumps(row), flush=True)
    report = {"rows": rows, "points_per_layer": ppl, "samples": samples, "exponents": {}, "speedup": {}}
    for label, _, _ in FORMS:
        mine = [r for r in rows if r["form"] == label]
        report["exponents"][label] = {k: growth_exponent(mine, k) for k in ("cpu_seconds_per_sample",
                                                                           "seconds_per_sample")}
        report["exponents"][label]["cpu_pairwise"] = {  # the fit over all sizes hides a fixed start-up cost
            f"{a['size']}-{b['size']}": growth_exponent([a, b], "cpu_seconds_per_sample")
            for a, b in zip(mine, mine[1:])}
    for name in sizes:
        by = {r["form"]: r for r in rows if r["size"] == name}
        report["speedup"][name] = {label: by["ngspice B-source"]["cpu_seconds_per_sample"] /
                                   by[label]["cpu_seconds_per_sample"] for label, _, _ in FORMS[1:]}
    return report


def laws(work: Path, theta_scale: float, points: list[int]) -> list:
    """Every law on a random network (20 nodes, 3 layers, 70 devices per layer, θ uniform in ±``theta_scale``),
    clocked and segmented, at each step cap of ``points`` per layer (1000: the default of small networks)."""
    rows = []
    for law in LAWS:
        knet = random_knet(20, 3, 70, law, seed=21, theta_scale=theta_scale)
        x = np.random.default_rng(4).uniform(-1, 1, (3, knet.num_features))
        ref = integrate(knet, x, rtol=1e-12, atol=1e-14).states
        scale = np.maximum(1.0, np.abs(ref))
        for ppl in points:
            got = {}
            for segmented in (False, True):
                tran = dataclasses.replace(default_tran(knet, ppl), segmented=segmented)
                for simulator in ("ngspice", "vacask"):
                    run = _run(knet, x, simulator, "osdi", tran, work / f"law_{law}_{segmented}", ref)
                    got[simulator, segmented] = run["states"]
            row = {"law": law, "theta_scale": theta_scale, "points_per_layer": ppl,
                   "max_abs_state": float(np.abs(ref).max()),
                   **{f"{s} {'segmented' if g else 'clocked'}": float((np.abs(v - ref) / scale).max())
                      for (s, g), v in got.items()},
                   "ngspice vs vacask": max(float((np.abs(got["ngspice", g] - got["vacask", g]) / scale).max())
                                            for g in (False, True)), "load_average": _load()}
            rows.append(row)
            print("  law", json.dumps(row), flush=True)
    return rows


def mnist(work: Path, bsource: bool) -> dict:
    """One image through the checkpoint: import (cached), build with the default devices, simulate, compare."""
    weights = _import_mnist(work)
    x, _ = mnist_inputs(1)
    report = {"load_average_start": _load()}
    forms = [("default", None)] + ([("bsource", "bsource")] if bsource else [])
    for label, devices in forms:
        t, c = time.perf_counter(), time.process_time()
        b = build(weights, work / f"mnist-{label}", devices=devices)
        report[f"build_{label}"] = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
                                    "devices": b.manifest["cells"]["devices"], "notes": b.manifest["notes"]}
        print("  build", json.dumps(report[f"build_{label}"]), flush=True)
        t = time.perf_counter()
        ref = integrate(b.knet, x, rtol=TIGHT, atol=TIGHT)
        report["reference_tight_seconds"] = time.perf_counter() - t
        sims = ("ngspice", "vacask") if b.manifest["cells"]["devices"] == "osdi" else ("ngspice",)
        for simulator in sims:
            sim = get_simulator(simulator)
            folder = work / f"mnist-{label}-{simulator}"
            shutil.rmtree(folder, ignore_errors=True)  # an earlier run's
            folder.mkdir()
            circuit = circuit_for(b, simulator, folder)
            t, c = time.perf_counter(), children_cpu()
            res = simulate(b.knet, circuit, x, b.tran, jobs=1, timeout=7200, simulator=simulator,
                           run_root=folder / "runs")
            wall, cpu = time.perf_counter() - t, children_cpu() - c
            err = float(np.abs(res.outputs - ref.outputs).max())
            row = {"simulator": sim.describe(), "devices": b.manifest["cells"]["devices"],
                   "points_per_layer": round(b.tran.tstop / b.knet.num_layers / b.tran.tmax),
                   "seconds": wall, "cpu_seconds": cpu,
                   "end_to_end_seconds": wall + report[f"build_{label}"]["seconds"],
                   "max_output_error": err, "output_span": float(np.abs(ref.outputs).max()),
                   "class": res.outputs.argmax(1).tolist(), "class_reference": ref.outputs.argmax(1).tolist(),
                   "layer0": _rerun(folder / "runs" / "sample_0" / "layer0"), "load_average": _load()}
            row["same_class"] = row["class"] == row["class_reference"]
            report[f"{label}_{simulator}"] = row
            print("  mnist", json.dumps(row), flush=True)
    report["cli"] = mnist_cli(weights, x, ref.outputs, work)
    report["load_average_end"] = _load()
    return report


def mnist_cli(weights: Path, x: np.ndarray, ref_outputs: np.ndarray, work: Path) -> dict:
    """What a user types, timed as a user sees it: ``kcompile build``, then ``kcompile simulate --inputs`` (its
    own reference solve included), each a fresh process; the error against the tight solve ``ref_outputs``."""
    np.save(work / "mnist-x.npy", x)
    steps = (("build", ["build", weights, "-o", work / "mnist-cli", "-q"]),
             ("simulate", ["simulate", work / "mnist-cli", "--inputs", work / "mnist-x.npy", "-o",
                           work / "mnist-cli.npz", "-q"]))
    row = {"command": " && ".join(shlex.join(["kcompile", *map(str, argv)]) for _, argv in steps)}
    for step, argv in steps:
        t, c = time.perf_counter(), children_cpu()
        subprocess.run([sys.executable, "-m", "kcompile", *map(str, argv)], cwd=ROOT, check=True)
        row[step] = {"seconds": time.perf_counter() - t, "cpu_seconds": children_cpu() - c, "load_average": _load()}
    with np.load(work / "mnist-cli.npz", allow_pickle=False) as z:
        spice = z["spice"]
    row.update(seconds=row["build"]["seconds"] + row["simulate"]["seconds"],
               max_output_error=float(np.abs(spice - ref_outputs).max()),
               same_class=spice.argmax(1).tolist() == ref_outputs.argmax(1).tolist())
    print("  mnist cli", json.dumps(row), flush=True)
    return row


def bundles(work: Path, slot_counts: list[int]) -> list:
    """MNIST layer 0, one image, in ngspice with its compiled devices bundled up to S per instance (the devices
    between one node pair share an instance; ``osdi.MAX_SLOTS``, 8 by default): ngspice's own counters
    (``.options acct``), CPU and peak memory, side by side, and the largest difference from the default's
    final voltages."""
    knet = load_knet(_import_mnist(work))
    x, _ = mnist_inputs(1)
    tran = default_tran(knet)
    span = float(knet.t_bounds[1] - knet.t_bounds[0])
    deck = render_deck(knet.initial_state(x)[0], dataclasses.replace(tran, tstop=span), layer=0)
    sim, default, rows, finals = get_simulator("ngspice"), osdi.MAX_SLOTS, [], {}
    try:
        for slots in slot_counts:
            osdi.MAX_SLOTS = slots
            folder = work / f"bundle-x{slots}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            write_circuit(knet, folder / "circuit.cir", segmented=True, devices="osdi")
            libraries = device_libraries(knet, folder / "circuit.cir")
            raw = sim.run(deck, files={"circuit.cir": folder / "circuit.cir", **libraries}, run_dir=folder / "run",
                          keep=True, timeout=7200)
            finals[slots] = np.array([raw[sim.node_vector(n)][-1] for n in range(1, knet.num_nodes + 1)])
            row = {"slots": slots, "instances": (folder / "circuit.cir").read_text().count("\nN0_"),
                   **_acct(folder / "run", sim.binary()), "load_average": _load()}
            rows.append(row)
            print("  bundle", json.dumps(row), flush=True)
    finally:
        osdi.MAX_SLOTS = default
    for row in rows:
        row["max_diff_vs_default"] = float(np.abs(finals[row["slots"]] - finals[slot_counts[-1]]).max())
    return rows


def _import_mnist(work: Path) -> Path:
    """The checkpoint as a kcompile.knet/1 file in ``work`` (imported once)."""
    weights = work / "mnist.npz"
    if not weights.is_file():
        subprocess.run([sys.executable, "-m", "kcompile", "import-reference", str(CHECKPOINT / "model.pth"),
                        str(CHECKPOINT / "config.yaml"), "-o", str(weights)], cwd=ROOT, check=True)
    return weights


NGSPICE_39 = "/usr/bin/ngspice"
_ACCT = ("Netlist loading time", "Total analysis time", "Transient analysis time", "Transient timepoints",
         "Total iterations", "Matrix load time")


def _acct(run_dir: Path, binary: str) -> dict:
    """Re-run a kept ngspice run directory with ``binary`` and ``.options acct``: its own cost counters."""
    deck = (run_dir / "deck.cir").read_text()
    (run_dir / "deck.cir").write_text(deck.replace("\n.options ", "\n.options acct ", 1))
    cmd = shlex.split((run_dir / "command").read_text())
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", binary, *cmd[1:]], cwd=run_dir,
                          capture_output=True, text=True, check=True)
    (run_dir / "deck.cir").write_text(deck)
    log = (run_dir / "ngspice.log").read_text()
    row = {key: float(line.split("=")[1]) for line in log.splitlines() for key in _ACCT if line.startswith(key)}
    wall, user, system, kb = proc.stderr.strip().splitlines()[-1].split()
    return {**row, "wall_s": float(wall), "cpu_s": float(user) + float(system), "peak_mb": int(kb) / 1024}


def transistor(work: Path, samples: int) -> list:
    """The shipped example at transistor level (generic180, sky130), in ngspice 39 and 46 on the same inputs."""
    rows = []
    for pdk in ("generic180", "sky130"):
        b = build(ROOT / "examples" / "random_relu.npz", work / f"transistor-{pdk}", cells="transistor", pdk=pdk)
        x = b.recorded("inputs")[:samples]
        ideal = integrate(b.knet, x).outputs
        outputs = {}
        for label, binary in (("39", NGSPICE_39), ("46", get_simulator("ngspice").installed())):
            os.environ["KCOMPILE_NGSPICE"] = binary
            runs = work / f"transistor-{pdk}-{label}"
            t, c = time.perf_counter(), children_cpu()
            res = b.simulate(x, jobs=1, run_root=runs)
            wall, cpu = time.perf_counter() - t, children_cpu() - c
            outputs[label] = res.outputs
            row = {"pdk": pdk, "ngspice": get_simulator("ngspice").describe(), "samples": len(x),
                   "seconds_per_sample": wall / len(x), "cpu_seconds_per_sample": cpu / len(x),
                   "max_output_error_vs_ideal": float(np.abs(res.outputs - ideal).max()),
                   "energy_j": res.energy.tolist(), "sample0": _acct(runs / "sample_0", binary),
                   "load_average": _load()}
            rows.append(row)
            print("  transistor", json.dumps(row), flush=True)
        del os.environ["KCOMPILE_NGSPICE"]
        rows[-1]["max_output_diff_46_vs_39"] = float(np.abs(outputs["46"] - outputs["39"]).max())
        print("  transistor", pdk, "46 vs 39:", rows[-1]["max_output_diff_46_vs_39"], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="sweep,laws",
                    help="comma list of sweep, laws, mnist, bundles, transistor")
    ap.add_argument("--sizes", default="1e3,1e4,1e5")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--points-per-layer", type=int, default=100)
    ap.add_argument("--theta-scale", type=float, default=1.0, help="laws: θ uniform in [-s, s]")
    ap.add_argument("--law-points", default="1000,4000", help="laws: points per layer, comma list")
    ap.add_argument("--slots", default="1,4,8", help="bundles: devices per instance, comma list, the default last")
    ap.add_argument("--mnist-bsource", action="store_true", help="also the MNIST image with B-sources (~8 min)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kcompile-bench-osdi")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "bench_osdi.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sections = args.sections.split(",")
    report = {"command": " ".join(sys.argv), "load_average_start": _load(), "cores": os.cpu_count(),
              "simulators": {n: get_simulator(n).describe() for n in ("ngspice", "vacask")}}
    print(json.dumps(report), flush=True)
    if "sweep" in sections and (CHECKPOINT / "model.pth").is_file():
        _import_mnist(args.work)  # θ for the sweep's networks
    if "sweep" in sections:
        report["sweep"] = sweep(args.sizes.split(","), args.samples, args.points_per_layer, args.work)
        print("  exponents", json.dumps(report["sweep"]["exponents"]), "speed-up",
              json.dumps(report["sweep"]["speedup"]))
    if "laws" in sections:
        report["laws"] = laws(args.work, args.theta_scale, [int(p) for p in args.law_points.split(",")])
    if "mnist" in sections:
        report["mnist"] = mnist(args.work, args.mnist_bsource)
    if "bundles" in sections:
        report["bundles"] = bundles(args.work, [int(n) for n in args.slots.split(",")])
    if "transistor" in sections:
        report["transistor"] = transistor(args.work, args.samples if args.samples > 1 else 4)
    report["load_average_end"] = _load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    run = {k: report.pop(k) for k in ("command", "load_average_start", "load_average_end", "cores", "simulators")}
    old.update(report)  # each section replaced by this run's; "runs" says which run wrote which section
    old["runs"] = old.get("runs", []) + [{**run, "sections": sorted(report)}]
    args.out.write_text(json.dumps(old, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
