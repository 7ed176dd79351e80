"""ngspice cost levers on one sample (issue #6, a benchmark, not a test).

Runs one input through a network in ngspice with ``.options acct`` and
prints, as one JSON line: ngspice CPU (``getrusage`` of the children),
timepoints, Newton iterations, rejected points, load and factor times per
segment, and the largest state and output errors against an rtol-1e-10
reference. The tables of docs/performance.md §3 come from this script.

Usage::

    python benchmarks/spice_levers.py --size 1e4 --form clocked --ppl 100 --opts "trtol=7"
    python benchmarks/spice_levers.py --size 1e4 --form segmented --ppl 20 --opts "trtol=1000"
    python benchmarks/spice_levers.py --size 1e4 --form pairs --ppl 100      # one source per node pair
    python benchmarks/spice_levers.py --size 1e4 --form xspice --ppl 20      # XSPICE 'limit' per device
    python benchmarks/spice_levers.py --knet mnist.npz --form segmented --ppl 100 --opts "reltol=1e-3 trtol=1e7"

``--opts`` overrides the Tran fields reltol, abstol, vntol, trtol, method
and adds any other ``.options`` (e.g. ``maxord=4``). Forms: ``clocked`` and
``segmented`` are kcompile's own netlists (``write_circuit``); ``pairs``
(shift_relu only: forward and reverse device in one source) and ``xspice``
(shift_relu only: the stock ``limit`` code model, loaded with
``pre_codemodel``) are experiments written here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import MIX_SIZES, mix_knet, mnist_inputs  # noqa: E402
from kcompile.knet import load_knet  # noqa: E402
from kcompile.laws import LAWS  # noqa: E402
from kcompile.netlist import default_tran, render_deck, write_circuit  # noqa: E402
from kcompile.scaling import Scaling  # noqa: E402
from kcompile.ngspice import binary, parse_raw  # noqa: E402
from kcompile.reference import integrate  # noqa: E402
from kcompile.simulate import at_times, start_voltages  # noqa: E402
from kcompile.timing import children_cpu  # noqa: E402

CODEMODELS = "/usr/lib/x86_64-linux-gnu/ngspice/analog.cm"
ACCT = re.compile(r"^(Transient iterations|Transient timepoints|Rejected timepoints|Netlist loading time|"
                  r"Netlist parsing time|Transient load time|Transient factor time|Transient analysis time|"
                  r"Circuit fill-in non-zeroes|Circuit original non-zeroes)\s*=\s*(\S+)", re.M)



def _layer_text(knet, k: int, form: str) -> str:
    """One layer's sources, no clock, in an experimental form (shift_relu)."""
    if knet.law != "shift_relu":
        raise SystemExit(f"form {form!r} is written for shift_relu only (got {knet.law})")
    layer = knet.layers[k]
    node = lambda n: f"n{n}" if n else "0"  # noqa: E731
    term = lambda n: f"v(n{n})" if n else "0"  # noqa: E731
    lines = []
    if form == "pairs":
        groups: dict = {}
        for s, d, th in zip(layer.src.tolist(), layer.dst.tolist(), layer.theta.tolist()):
            key = (min(s, d), max(s, d))
            expr = LAWS["shift_relu"].spice(term(s), term(d), th)
            groups.setdefault(key, []).append(expr if s == key[0] else f"-{expr}")
        for i, ((a, b), terms) in enumerate(groups.items()):
            lines.append(f"B{k}_{i} {node(a)} {node(b)} I={'+'.join(terms).replace('+-', '-')}")
    else:  # xspice: out = gain*(in + in_offset) clamped at 0 on the side the sign of θ1 allows
        for i, (s, d, (t0, t1)) in enumerate(zip(layer.src.tolist(), layer.dst.tolist(), layer.theta.tolist())):
            lo, hi = (0, 1e6) if t1 >= 0 else (-1e6, 0)
            lines.append(f"a{k}_{i} %vd({node(s)} {node(d)}) %id({node(s)} {node(d)}) m{k}_{i}")
            lines.append(f".model m{k}_{i} limit(in_offset={-t0!r} gain={t1!r} out_lower_limit={lo} "
                         f"out_upper_limit={hi} limit_range=1e-9 fraction=false)")
    return "\n".join(lines) + "\n"


def _experimental_circuit(knet, path: Path, form: str) -> None:
    with open(path, "w") as f:
        f.write(f"* spice_levers {form} (segmented behavioural circuit, experimental)\n.lib nodes\n")
        if form == "xspice":
            f.write(f".control\npre_codemodel {CODEMODELS}\n.endc\n")
        f.writelines(f"C{n} n{n} 0 {c!r}\n" for n, c in enumerate(knet.capacitance.tolist(), 1))
        f.write(".endl nodes\n")
        for k in range(knet.num_layers):
            f.write(f".lib layer{k}\n{_layer_text(knet, k, form)}.endl layer{k}\n")


def _run(deck: str, circuit: Path, run_dir: Path, n: int):
    run_dir.mkdir(parents=True)
    os.symlink(circuit, run_dir / "circuit.cir")
    (run_dir / "deck.cir").write_text(deck.replace(".options ", ".options acct ", 1))
    c = children_cpu()
    subprocess.run([binary(), "-b", "-n", "-r", "out.raw", "-o", "ng.log", "deck.cir"], cwd=run_dir,
                   capture_output=True, timeout=7200, check=False)
    cpu = children_cpu() - c
    log = (run_dir / "ng.log").read_text(errors="replace")
    raw = parse_raw(run_dir / "out.raw")
    t = raw.time
    v = np.column_stack([raw[f"v(n{i})"] for i in range(1, n + 1)])
    return t, v, cpu, dict(ACCT.findall(log))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1e4", help=f"mix size, one of {', '.join(MIX_SIZES)}")
    ap.add_argument("--knet", type=Path, help="a kcompile.knet/1 file instead (e.g. the imported MNIST checkpoint)")
    ap.add_argument("--form", choices=("clocked", "segmented", "pairs", "xspice"), default="segmented")
    ap.add_argument("--ppl", type=int, default=100, help="step cap: points per layer")
    ap.add_argument("--opts", default="", help="'key=value ...': Tran fields or extra .options")
    ap.add_argument("--theta-from", type=Path, help="draw the mix network's θ from this knet file's devices "
                    "(docs/performance.md: the imported MNIST checkpoint)")
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the run directories here")
    args = ap.parse_args()

    if args.knet:
        knet = load_knet(args.knet)
        x = mnist_inputs(args.sample + 1)[0][args.sample:args.sample + 1] if knet.num_features == 784 else \
            np.random.default_rng(0).uniform(0, 1, (args.sample + 1, knet.num_features))[args.sample:]
    else:
        pool = None
        if args.theta_from:
            pool = np.concatenate([layer.theta for layer in load_knet(args.theta_from).layers])
        knet = mix_knet(*MIX_SIZES[args.size], theta_pool=pool, seed=1)
        x = np.random.default_rng(0).uniform(0, 1, (args.sample + 1, knet.num_features))[args.sample:]
    ref = integrate(knet, x, rtol=1e-10, atol=1e-10).states[0]
    segmented = args.form != "clocked"
    tran = default_tran(knet, args.ppl, segmented=segmented)
    fields = {f.name for f in dataclasses.fields(tran)}
    extra = []
    for item in args.opts.split():
        key, _, value = item.partition("=")
        if key in fields:
            tran = dataclasses.replace(tran, **{key: value if key == "method" else float(value)})
        else:
            extra.append(item)
    work = Path(tempfile.mkdtemp(prefix="spice-levers-")) if args.keep is None else args.keep
    circuit = work / "circuit.cir"
    if args.form in ("clocked", "segmented"):
        write_circuit(knet, circuit, segmented=segmented)
    else:
        _experimental_circuit(knet, circuit, args.form)
    init = knet.initial_state(x)[0]
    accts, cpu = [], 0.0
    if not segmented:
        deck = render_deck(init, tran).replace(".options ", f".options {' '.join(extra)} ", 1)
        t, v, cpu, acct = _run(deck, circuit, work / "run", init.size)
        t, v = np.r_[0.0, t], np.vstack([start_voltages(t, v), v])
        states, accts = at_times(t, v, knet.t_bounds), [acct]
    else:
        states, state = [init], init
        for k in range(knet.num_layers):
            span = float(knet.t_bounds[k + 1] - knet.t_bounds[k])
            deck = render_deck(state, dataclasses.replace(tran, tstop=span), layer=k)
            deck = deck.replace(".options ", f".options {' '.join(extra)} ", 1)
            t, v, c, acct = _run(deck, circuit, work / f"run{k}", init.size)
            state = v[-1]
            states.append(state)
            cpu += c
            accts.append(acct)
        states = np.array(states)
    out = knet.output_nodes - 1
    print(json.dumps({
        "network": str(args.knet or f"mix {args.size}"), "devices": knet.num_devices, "form": args.form,
        "points_per_layer": args.ppl, "options": f"{tran.options(Scaling())} {' '.join(extra)}".strip(),
        "cpu_seconds": round(cpu, 3), "max_state_error": float(np.abs(states - ref).max()),
        "max_output_error": float(np.abs(states[-1, out] - ref[-1, out]).max()),
        "same_class": bool(states[-1, out].argmax() == ref[-1, out].argmax()),
        "load_average": os.getloadavg()[0], "acct": accts}))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
