"""Record figures measured after training in a zoo model's meta (``meta.verification``) and its ``.json``.

Usage (from the repository root)::

    python examples/zoo/record.py ideal MODEL.npz                 # dopri5 classes and accuracy on the test split
    python examples/zoo/record.py flow MODEL.npz KEY VERIFY.json  # a `kcompile verify FLOW --json` summary
    python examples/zoo/record.py mc MODEL.npz PDK[:CORNER] DIES  # surrogate Monte Carlo on the test split
    python examples/zoo/record.py images MODEL.npz KEY N=VERIFY.json ...  # one-image flows, a row each

``images`` keeps a row per test image N (1-based) from each one-image flow's ``kcompile verify --json``
summary (whether its transistor-level class agrees with the ideal one and is right, its largest output
error, CPU and wall seconds, latency and energy) and their totals: the figures of many transistor-level
images without a whole summary each.

``--print`` as the last argument prints the figures without recording them (e.g. for a model under
``tests/golden``).

``mc`` draws every device's δθ from the signed cell's measured mismatch (:class:`kcompile.train.MismatchModel`,
seed 1) and integrates the network with the characterised-cell surrogate (:class:`kcompile.train.CellSurrogate`,
torch RK4 at the training step): the characterised level under mismatch, one die per sample set.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from kcompile.knet import load_extras, load_knet
from kcompile.train import record_figures

#: dopri5 tolerances of the ideal classes (those of ``kcompile train``'s scores)
RTOL, ATOL = 1e-7, 1e-9


def _command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def _recorded(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The test split recorded with the model (read as the loader reads it: no pickle, size checked)."""
    extras = load_extras(path, ("test_inputs", "test_labels"))
    return extras["test_inputs"], extras["test_labels"]


def ideal(path: str) -> dict:
    from kcompile.reference import integrate

    knet = load_knet(path)
    x, labels = _recorded(path)
    t0 = time.perf_counter()
    out = np.concatenate([integrate(knet, x[i:i + 500], method="dopri5", rtol=RTOL, atol=ATOL).outputs
                          for i in range(0, len(x), 500)])
    classes = out.argmax(axis=1)
    return {"samples": int(len(x)), "rtol": RTOL, "atol": ATOL, "accuracy": float(100.0 * (classes == labels).mean()),
            "classes": classes.tolist(), "seconds": round(time.perf_counter() - t0, 1), "command": _command()}


def flow(summary_path: str) -> dict:
    data = json.loads(Path(summary_path).read_text())
    keep = ("flow", "passed", "samples", "levels", "corners", "monte_carlo", "timing", "gates", "overrides")
    return {**{k: data[k] for k in keep if data.get(k) is not None}, "command": _command()}


def images(specs: list[str]) -> dict:
    rows = []
    for spec in specs:
        number, _, summary_path = spec.partition("=")
        data = json.loads(Path(summary_path).read_text())
        level = {lv["level"]: lv for lv in data["levels"]}["transistor"]
        if data["samples"] != 1:
            raise SystemExit(f"{summary_path}: {data['samples']} samples; images takes one-image flows")
        stage = data["timing"]["transistor_stage"]
        rows.append({"image": int(number), "flow": data["flow"], "agrees": level["class_agreement"] == 1,
                     "correct": level["task_metric"] == 100.0, "max_output_error": level["max_output_error"],
                     "cpu_s": round(stage["cpu_s"], 1), "wall_s": round(stage["wall_s"], 1),
                     "latency_s": level["latency_s"], "energy_per_inference_j": level["energy_per_inference_j"]})
    rows.sort(key=lambda r: r["image"])
    cpu = [r["cpu_s"] for r in rows]
    return {"samples": len(rows), "agree": sum(r["agrees"] for r in rows), "correct": sum(r["correct"] for r in rows),
            "cpu_s_per_image": {"min": min(cpu), "median": float(np.median(cpu)), "max": max(cpu)},
            "images": rows, "command": _command()}


def monte_carlo(path: str, spec: str, dies: int) -> dict:
    import torch

    from kcompile.tasks import load_task
    from kcompile.train import CellSurrogate, MismatchModel, TorchKNet, mismatch_monte_carlo

    torch.set_num_threads(1)
    knet = load_knet(path)
    task = load_task(knet.meta["task"]["name"])
    x, labels = _recorded(path)
    model = TorchKNet.from_knet(knet, dtype=torch.float32)
    model.surrogate = CellSurrogate.from_pdk(spec)
    model.mismatch = MismatchModel.from_pdk(spec)
    t0 = time.perf_counter()
    res = mismatch_monte_carlo(model, task, x, labels, knet.meta["training"]["dt"], dies=dies)
    return {**res, "seconds": round(time.perf_counter() - t0, 1), "command": _command()}


def main(argv: list[str]) -> None:
    dry = argv[-1] == "--print"
    what, path, *rest = argv[:-1] if dry else argv
    if what == "ideal":
        key, figures = "ideal", ideal(path)
    elif what == "flow":
        key, figures = rest[0], flow(rest[1])
    elif what == "images":
        key, figures = rest[0], images(rest[1:])
    elif what == "mc":
        key, figures = f"monte_carlo_{rest[0].replace(':', '_')}", monte_carlo(path, rest[0], int(rest[1]))
    else:
        raise SystemExit(f"unknown figure {what!r}: ideal, flow, images or mc")
    if not dry:
        record_figures(path, key, figures)
    print(json.dumps({key: {k: v for k, v in figures.items() if k not in ("classes", "per_die", "images")}}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
