"""Golden outputs: refactors keep every deck byte-identical and every mapped array and output bit-identical.

Each case builds a network (the shipped examples, a random network of every
law) behaviourally and at transistor level, and hashes what the build wrote:
``circuit.cir`` (absolute paths of the model cache and the checkout replaced
by placeholders), a run deck for the first input, every array of
``devices.npz``, and the reference integrator's output states. The hashes
live in ``tests/golden/hashes.json``; regenerate them only for an intended
change of output, with ``KCOMPILE_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``,
and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from kcompile.build import build
from kcompile.knet import random_knet, save_knet
from kcompile.netlist import render_deck
from kcompile.files import cache_dir
from kcompile.reference import integrate

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).with_name("golden") / "hashes.json"
LAWS = ("relu", "shift_relu", "relu_affine", "tanh_affine", "tanh", "linear")
BSOURCE = {"devices": "bsource"}  # the decks hashed before compiled devices became the default


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def _normalised(text: str) -> bytes:
    for path, mark in ((str(cache_dir()), "<CACHE>"), (str(ROOT), "<ROOT>")):
        text = text.replace(path, mark)
    return text.encode()


def _case(weights: Path, out: Path, **kwargs) -> dict[str, str]:
    b = build(weights, out, **kwargs)
    x = b.recorded("inputs")
    x = x[:4] if x is not None else np.random.default_rng(0).uniform(-1, 1, (4, b.knet.num_features))
    ref = integrate(b.knet, x)
    initial = np.zeros(b.knet.num_nodes)
    initial[b.knet.input_nodes - 1] = x[0, b.knet.input_index]
    supply = "vdd" if b.manifest["cells"]["level"] == "transistor" else None
    hashes = {"circuit.cir": _digest(_normalised(b.circuit.read_text())),
              "deck": _digest(_normalised(render_deck(initial, b.tran, b.scaling, supply=supply))),
              "reference.states": _digest(np.ascontiguousarray(ref.states).tobytes())}
    if (out / "devices.npz").is_file():
        with np.load(out / "devices.npz", allow_pickle=False) as d:
            for key in sorted(d.files):
                hashes[f"devices.{key}"] = _digest(np.ascontiguousarray(d[key]).tobytes() + str(d[key].dtype).encode())
    return hashes


def _cases(tmp: Path):
    yield "example/behavioural", ROOT / "examples" / "random_relu.npz", BSOURCE
    yield "example/generic180", ROOT / "examples" / "random_relu.npz", {"cells": "transistor"}
    yield "example/sky130", ROOT / "examples" / "random_relu.npz", {"cells": "transistor", "pdk": "sky130"}
    yield "moons-hw-transistor/generic180", ROOT / "examples" / "zoo" / "moons-hw-transistor.npz", \
        {"cells": "transistor"}
    for law in LAWS:
        w = tmp / f"{law}.npz"
        save_knet(random_knet(6, 2, 12, law, num_inputs=3, theta_scale=0.3, seed=1), w,
                  test_inputs=np.random.default_rng(2).uniform(-1, 1, (4, 3)))
        yield f"{law}/behavioural", w, BSOURCE
        yield f"{law}/generic180", w, {"cells": "transistor"}
    big = tmp / "segmented.npz"
    save_knet(random_knet(40, 2, 5000, "shift_relu", num_inputs=8, theta_scale=0.3, seed=5), big)
    yield "segmented/behavioural", big, BSOURCE


def _all(tmp: Path) -> dict[str, dict[str, str]]:
    return {name: _case(w, tmp / name.replace("/", "_"), **kw) for name, w, kw in _cases(tmp)}


@pytest.mark.ngspice
def test_golden_outputs_unchanged(tmp_path):
    got = _all(tmp_path)
    if os.environ.get("KCOMPILE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    changed = [f"{case}: {key}" for case in sorted(set(want) | set(got))
               for key in sorted(set(want.get(case, {})) | set(got.get(case, {})))
               if want.get(case, {}).get(key) != got.get(case, {}).get(key)]
    assert not changed, "outputs changed (decks, mapped arrays or reference states):\n" + "\n".join(changed)
