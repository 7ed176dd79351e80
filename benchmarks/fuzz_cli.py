"""Longer fuzz run of the command line: the generators of tests/test_reliability_fuzz.py over many seeds.

Every case is a generated malformed weights file, flow file, build manifest, input batch or numeric option
given to the real CLI in-process; a case must end in a clean exit (0 accepted, 1 a gate failed, 2 refused,
3 the simulator failed), never a crash (an escaped exception, a traceback, the "kcompile defect" line) nor a
hang (past 20 s). Prints the case count, the outcome histogram per family, and every crash or hang.

Usage: python benchmarks/fuzz_cli.py [--seeds 10] [--scale 1.0] [--ngspice]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_reliability_fuzz import campaign  # noqa: E402

#: cases per family and seed at --scale 1
COUNTS = {"weights": 150, "flows": 100, "manifests": 60, "inputs": 20, "options": 60}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10, help="campaigns, seeded 0..N-1")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the cases per family")
    ap.add_argument("--ngspice", action="store_true", help="also simulate every accepted weights file in ngspice")
    args = ap.parse_args()
    counts = {family: max(1, round(n * args.scale)) for family, n in COUNTS.items()}
    total: collections.Counter = collections.Counter()
    bad = []

    def report(family, case, outcome, output):
        if outcome in ("crash", "hang"):
            bad.append(f"{family} [{case}]: {outcome}: {output.strip()[-300:]}")

    t0 = time.perf_counter()
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="kcompile-fuzz-") as tmp:
            total.update(campaign(Path(tmp) / "campaign", counts, seed=seed, report=report,
                                  ngspice=args.ngspice))
        print(f"seed {seed}: {sum(total.values())} cases so far, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    outcomes = sorted({o for _, o in total})
    families = sorted({f for f, _ in total})
    print(f"{sum(total.values())} cases in {time.perf_counter() - t0:.0f} s ({args.seeds} seeds)\n")
    print("| family | " + " | ".join(outcomes) + " | cases |")
    print("|---|" + "---|" * (len(outcomes) + 1))
    for f in families:
        row = [total[f, o] for o in outcomes]
        print(f"| {f} | " + " | ".join(str(n) for n in row) + f" | {sum(row)} |")
    row = [sum(total[f, o] for f in families) for o in outcomes]
    print("| all | " + " | ".join(str(n) for n in row) + f" | {sum(row)} |")
    print(f"\ncrashes and hangs: {len(bad)}")
    for line in bad:
        print(line)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
