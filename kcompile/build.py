"""The build stage: a weights file becomes a build directory.

``BUILD/`` holds ``circuit.cir`` (the reusable netlist), ``weights.npz``
(the validated network, re-serialised), ``inputs.npy``/``labels.npy`` when
the weights file recorded test data, and ``manifest.json`` (sizes, windows,
scaling, file hashes, kcompile version). The directory appears whole or not
at all: it is written beside the target and renamed into place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError
from .inputs import check_inputs
from .knet import FORMAT, KNet, load_knet, save_knet
from .netlist import Scaling, Tran, default_tran, write_circuit

MANIFEST = "manifest.json"


@dataclass(frozen=True, eq=False)
class Build:
    """An opened build directory."""

    path: Path
    knet: KNet
    manifest: dict
    scaling: Scaling
    tran: Tran

    @property
    def circuit(self) -> Path:
        return self.path / "circuit.cir"

    def recorded(self, name: str) -> np.ndarray | None:
        """``inputs`` or ``labels`` recorded with the model, if any."""
        f = self.path / f"{name}.npy"
        return np.load(f, allow_pickle=False) if f.is_file() else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _test_data(weights: Path, knet: KNet) -> dict[str, np.ndarray]:
    """Optional ``test_inputs [B, F]`` and ``test_labels [B]`` keys of the weights file."""
    with np.load(weights, allow_pickle=False) as npz:
        if "test_inputs" not in npz.files:
            return {}
        data = {"inputs": check_inputs(npz["test_inputs"], knet, f"{weights}: key 'test_inputs'")}
        if "test_labels" in npz.files:
            labels = npz["test_labels"]
            if labels.shape[:1] != data["inputs"].shape[:1] or labels.dtype.kind not in "fiu":
                raise InputError(f"{weights}: key 'test_labels' must be numeric with one entry per test input")
            data["labels"] = labels
    return data


def manifest_for(knet: KNet, weights: Path, scaling: Scaling, tran: Tran, files: dict[str, str]) -> dict:
    return {
        "kcompile_version": __version__,
        "format": FORMAT,
        "source": {"path": str(weights), "sha256": sha256(weights)},
        "cells": "behavioural",
        "law": knet.law,
        "num_nodes": knet.num_nodes,
        "num_devices": knet.num_devices,
        "num_features": knet.num_features,
        "input_nodes": knet.input_nodes.tolist(),
        "output_nodes": knet.output_nodes.tolist(),
        "layers": [
            {"index": k, "t_start": layer.t_start, "t_stop": layer.t_stop, "devices": layer.num_devices}
            for k, layer in enumerate(knet.layers)
        ],
        "scaling": {**dataclasses.asdict(scaling), "tau": scaling.tau},
        "tran": dataclasses.asdict(tran),
        "files": files,
        "meta": knet.meta,
    }


def build(weights: str | Path, out_dir: str | Path, scaling: Scaling = Scaling()) -> Build:
    """Validate ``weights`` and write the build directory ``out_dir``.

    An existing ``out_dir`` is replaced only if it is an earlier kcompile build
    (it holds ``manifest.json``) or empty; anything else is refused.
    """
    weights, out_dir = Path(weights), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file())):
        raise InputError(f"{out_dir}: exists and is not a kcompile build directory; choose another -o")
    knet = load_knet(weights)
    extras = _test_data(weights, knet)
    tran = default_tran(knet)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write_circuit(knet, tmp / "circuit.cir", scaling)
        save_knet(knet, tmp / "weights.npz")
        for name, arr in extras.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        files = {f.name: sha256(f) for f in sorted(tmp.iterdir())}
        manifest = manifest_for(knet, weights, scaling, tran, files)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Build(out_dir, knet, manifest, scaling, tran)


def open_build(path: str | Path) -> Build:
    """Open a build directory written by :func:`build`."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{path}: not a kcompile build directory (no {MANIFEST}); run 'kcompile build' first")
    try:
        manifest = json.loads(manifest_path.read_text())
        scaling = Scaling(**{k: v for k, v in manifest["scaling"].items() if k != "tau"})
        tran = Tran(**manifest["tran"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{manifest_path}: unreadable manifest ({exc}); rebuild with 'kcompile build'") from None
    knet = load_knet(path / "weights.npz")
    return Build(path, knet, manifest, scaling, tran)


def modified_files(b: Build) -> list[str]:
    """Files whose hash no longer matches the manifest (hand edits, corruption)."""
    return [name for name, digest in b.manifest.get("files", {}).items()
            if not (b.path / name).is_file() or sha256(b.path / name) != digest]
