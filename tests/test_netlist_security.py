"""Untrusted strings in a weights file never become netlist lines ngspice would execute."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kcompile.build import build
from kcompile.errors import WeightsError
from kcompile.knet import load_knet
from tests.test_knet_loader import _arrays

PAYLOAD = "x\n.control\nshell touch /tmp/kcompile-pwned\n.endc\n.include /etc/passwd\n"


@pytest.mark.parametrize("key", ["device", "format"])
def test_payload_in_law_or_format_is_rejected(tmp_path, small_weights, key):
    arrays = _arrays(small_weights)
    arrays[key] = np.array(PAYLOAD)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(WeightsError, match=f"'{key}': unknown"):
        load_knet(tmp_path / "evil.npz")


def test_payload_in_meta_never_reaches_the_netlist(tmp_path, small_weights):
    arrays = _arrays(small_weights)
    arrays["meta"] = np.array(json.dumps({"task": PAYLOAD, PAYLOAD: PAYLOAD}))
    arrays["extra_string_key"] = np.array(PAYLOAD)
    np.savez(tmp_path / "evil.npz", **arrays)
    b = build(tmp_path / "evil.npz", tmp_path / "b")
    assert b.knet.meta["task"] == PAYLOAD  # kept as data ...
    for f in (tmp_path / "b").glob("*.cir"):
        text = f.read_text().lower()
        for word in (".control", "shell", "/etc/passwd", "pwned", ".endc"):
            assert word not in text, (f.name, word)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["meta"]["task"] == PAYLOAD  # ... and only ever JSON-escaped


def test_every_netlist_line_is_generated(tmp_path, small_weights):
    b = build(small_weights, tmp_path / "b")
    allowed = ("*", "C", "Vclk", "B", "")
    for line in b.circuit.read_text().splitlines():
        assert line.startswith(allowed), line
