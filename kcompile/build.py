"""The build stage: a weights file becomes a build directory.

``BUILD/`` holds ``circuit.cir`` (the reusable netlist), ``weights.npz``
(the validated network, re-serialised), ``inputs.npy``/``labels.npy`` when
the weights file recorded test data, and ``manifest.json`` (sizes, windows,
scaling, file hashes, kcompile version). A transistor-level build also holds
``devices.npz``: per device the target θ, the θ the calibrated cell achieves,
the instance parameters chosen, and which devices were clipped. The
directory appears whole or not at all: it is written beside the target and
renamed into place.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError
from .files import sha256
from .inputs import check_inputs
from .knet import FORMAT, KNet, load_knet, save_knet
from .mapping import map_knet, transistor_scaling
from .osdi import DEVICES, default_devices
from .netlist import SOLVERS, Tran, default_tran, render_transistor_circuit, transistor_tran, write_circuit
from .scaling import Scaling
from .pdk import get_pdk
from .reference import integrate
from .refine import refine, steps_for
from .simulate import SpiceResult, simulate

MANIFEST = "manifest.json"


@dataclass(frozen=True, eq=False)
class Build:
    """An opened build directory."""

    path: Path
    knet: KNet
    manifest: dict
    scaling: Scaling
    tran: Tran

    def __repr__(self) -> str:
        cells = self.manifest["cells"]
        level = (f"transistor {cells['cell']} cells on {cells['pdk']}/{cells['corner']}"
                 if cells["level"] == "transistor" else "behavioural")
        k = self.knet
        return (f"<Build {self.path}: {level}; {k.law}, {k.num_nodes} nodes, {k.num_layers} layers, "
                f"{k.num_devices} devices>")

    @property
    def circuit(self) -> Path:
        return self.path / "circuit.cir"

    def simulate(self, x: np.ndarray, simulator: str = "ngspice", **options) -> SpiceResult:
        """Run every row of ``x`` (``[B, F]``; one row ``[F]``) through ``circuit.cir`` in ngspice.

        The defaults of ``kcompile simulate``: the build's analysis and
        scaling and, for a transistor-level build, its supply (energy per
        sample) and its PDK's ngspice variables. ``options`` go to
        :func:`kcompile.simulate.simulate` (``jobs``, ``timeout``, ``waveforms``,
        ``run_root``, ``cache_dir``, ``executor``, ``progress``). ``simulator``:
        another back end runs the circuit written in its dialect (:func:`circuit_for`).
        """
        x = check_inputs(np.asarray(x), self.knet, "x")
        cells = self.manifest["cells"]
        if cells["level"] == "transistor":
            options = {"supply": ("vdd", cells["supply"]), "defines": get_pdk(cells["pdk"]).ngspice_defines(),
                       **options}
        with tempfile.TemporaryDirectory(prefix="kcompile-circuit-") as tmp:
            return simulate(self.knet, circuit_for(self, simulator, Path(tmp)), x, self.tran, scaling=self.scaling,
                            simulator=simulator, **options)

    def recorded(self, name: str) -> np.ndarray | None:
        """``inputs`` or ``labels`` recorded with the model, if any."""
        f = self.path / f"{name}.npy"
        return np.load(f, allow_pickle=False) if f.is_file() else None


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


def manifest_for(knet: KNet, weights: Path, scaling: Scaling, tran: Tran, files: dict[str, str],
                 cells: dict | None = None) -> dict:
    return {
        "kcompile_version": __version__,
        "format": FORMAT,
        "source": {"path": str(weights), "sha256": sha256(weights)},
        "cells": cells or {"level": "behavioural"},
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


COMPLIANCE_SPAN = 4.0  # model units around vcm over which the cells are characterised


def _clipped_message(cellmap, law: str, limit: int = 4) -> str:
    """The flagged devices, each with the reason its cell gives (:meth:`kcompile.mapping.CellMap.clip_reason`)."""
    items = cellmap.clipped
    cal = cellmap.calibration
    shown = []
    for k, i in items[:limit]:
        theta = cellmap.layers[k].target[i]
        shown.append(f"layer{k}[{i}] θ={np.round(theta, 4).tolist()} ({cellmap.clip_reason(law, k, i)})")
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return (f"{len(items)} device(s) cannot be realised within tolerance by cell {cal.cell} on "
            f"{cal.pdk}/{cal.corner}: {'; '.join(shown)}{more}; pass --allow-clipped to build them clipped "
            "(devices.npz holds target and achieved θ)")


def compliance_warnings(knet: KNet, inputs: np.ndarray, scaling: Scaling, supply: float) -> list[str]:
    """Warn when the ideal trajectories leave the window the cells were characterised on."""
    grid = np.linspace(0.0, knet.t_bounds[-1], 50 * knet.num_layers + 1)
    peak = float(np.abs(integrate(knet, inputs, grid=grid).grid_states).max())
    if peak <= COMPLIANCE_SPAN:
        return []
    v0 = scaling.v0 * COMPLIANCE_SPAN / peak
    return [f"node voltages reach ±{peak:.3g} model units ({scaling.vcm - peak * scaling.v0:.3g} to "
            f"{scaling.vcm + peak * scaling.v0:.3g} V) on these inputs, beyond the cells' characterised window of "
            f"±{COMPLIANCE_SPAN:g} units; the transistor level will be inaccurate. Suggest --v0 {v0:.3g} "
            f"(volts per unit, now {scaling.v0:g}) within the {supply:g} V supply"]


def build(weights: str | Path, out_dir: str | Path, scaling: Scaling | None = None, *, cells: str = "behavioural",
          pdk: str = "generic180", corner: str = "tt", allow_clipped: bool = False,
          points_per_layer: int | None = None, refine_steps: int | None = None, solver: str | None = None,
          devices: str | None = None) -> Build:
    """Validate ``weights`` and write the build directory ``out_dir``.

    Parameters
    ----------
    cells : {"behavioural", "transistor"}
        One behavioural current source per device, or one calibrated
        transistor-level cell per device on ``pdk``/``corner``.
    scaling : Scaling, optional
        Default: identity for behavioural, :func:`kcompile.mapping.transistor_scaling`
        for transistor builds.
    allow_clipped : bool
        Build devices whose θ lies outside the cells' calibrated range, clipped.
    points_per_layer : int, optional
        Step cap of the transient, 1/points of the shortest layer (default 1000
        behavioural, 500 for a large segmented network, 400 transistor). ngspice's error falls as its square; its
        cost grows linearly (docs/foundation.md, docs/performance.md).
    refine_steps : int, optional
        Per-device refinement steps of transistor cells (:mod:`kcompile.refine`);
        default: 2 for networks up to 2,000 devices, else 0.
    solver : {"sparse", "klu"}, optional
        ngspice's linear solver (default: ``"klu"`` for large networks, see
        :func:`kcompile.netlist.default_tran`; an ngspice without KLU ignores it).
    devices : {"osdi", "bsource"}, optional
        Behavioural devices as compiled Verilog-A modules (the build holds their
        ``.va``; :mod:`kcompile.osdi`) or as ngspice B-sources. Default:
        :func:`kcompile.osdi.default_devices` (``osdi`` where ngspice loads OSDI;
        otherwise ``bsource``, with a note in the manifest's ``notes``).

    An existing ``out_dir`` is replaced only if it is empty or an earlier
    kcompile build holding nothing but the files its manifest lists
    (:func:`check_replaceable`); anything else is refused before any work.
    """
    if cells not in ("behavioural", "transistor"):
        raise InputError(f"The 'cells' parameter must be 'behavioural' or 'transistor'. Got {cells!r} instead.")
    if solver is not None and solver not in SOLVERS:
        raise InputError(f"The 'solver' parameter must be one of {', '.join(SOLVERS)}. Got {solver!r} instead.")
    if devices is not None and (devices not in DEVICES or cells == "transistor"):
        raise InputError(f"The 'devices' parameter must be one of {', '.join(DEVICES)} for behavioural cells "
                         f"(transistor-level cells are subcircuits). Got {devices!r} with cells {cells!r} instead.")
    notes = []
    if cells == "behavioural" and devices is None:
        devices, note = default_devices()
        notes += [note] if note else []
    weights, out_dir = Path(weights), Path(out_dir)
    check_replaceable(out_dir)
    knet = load_knet(weights)
    extras = _test_data(weights, knet)
    cellmap, warnings = None, []
    if cells == "transistor":
        scaling = scaling or transistor_scaling(get_pdk(pdk))
        cellmap = map_knet(knet, pdk, corner, scaling)
        if cellmap.clipped and not allow_clipped:
            raise InputError(f"{weights}: {_clipped_message(cellmap, knet.law)}")
        refine_steps = steps_for(knet, refine_steps)
        cellmap = refine(knet, cellmap, refine_steps)
        tran = transistor_tran(knet, *([points_per_layer] if points_per_layer else []))
        probe = extras.get("inputs")
        probe = probe[:64] if probe is not None else np.random.default_rng(0).uniform(-1, 1, (16, knet.num_features))
        warnings = compliance_warnings(knet, probe, scaling, cellmap.pdk.supply)
    else:
        scaling = scaling or Scaling()
        tran = default_tran(knet, *([points_per_layer] if points_per_layer else []))
    tran = tran if solver is None else dataclasses.replace(tran, solver=solver)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if cellmap is None:
            write_circuit(knet, tmp / "circuit.cir", scaling, segmented=tran.segmented, devices=devices)
            cells_info = {"level": "behavioural", "devices": devices}
        else:
            with open(tmp / "circuit.cir", "w") as f:
                f.writelines(render_transistor_circuit(knet, cellmap))
            _save_devices(tmp / "devices.npz", cellmap)
            cells_info = {**_cells_info(cellmap), "refine_steps": refine_steps}
        save_knet(knet, tmp / "weights.npz")
        for name, arr in extras.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        files = {f.name: sha256(f) for f in sorted(tmp.iterdir())}
        manifest = manifest_for(knet, weights, scaling, tran, files, cells_info)
        manifest["warnings"] = warnings
        manifest["notes"] = notes
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Build(out_dir, knet, manifest, scaling, tran)


def _is_own_build(path: Path) -> str | None:
    """``None`` if ``path`` is a kcompile build holding only the files it wrote, else why not."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        return f"it has no readable {MANIFEST} written by kcompile"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "kcompile_version" not in manifest \
            or not isinstance(manifest.get("files"), dict):
        return f"its {MANIFEST} was not written by kcompile"
    own = set(manifest["files"]) | {MANIFEST}
    foreign = sorted(p.name for p in path.iterdir() if p.name not in own or p.is_symlink() or not p.is_file())
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds files kcompile did not write ({', '.join(foreign[:3])}{more})"
    return None


def check_replaceable(out_dir: Path) -> None:
    """Refuse an output directory that a build could not replace without losing someone's data.

    A build may write into a missing or empty directory, or replace an
    earlier kcompile build that holds nothing but the files its manifest
    lists. It never replaces the current directory, one of its parents, a
    symbolic link or anything else.
    """
    if out_dir.is_symlink():
        raise InputError(f"{out_dir}: is a symbolic link; kcompile writes build directories only to real paths, "
                         "choose another -o")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory; choose another -o")
    here, target = Path.cwd().resolve(), out_dir.resolve()
    if target == here or target in here.parents:
        raise InputError(f"{out_dir}: is the current directory or one of its parents; a build is written into a "
                         "directory of its own: choose another -o, e.g. build/NAME")
    if not any(out_dir.iterdir()):
        return
    why = _is_own_build(out_dir)
    if why is not None:
        raise InputError(f"{out_dir}: exists and is not a kcompile build directory that can be replaced ({why}); "
                         "nothing was changed: choose another -o or move the files away")


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``out_dir``; an earlier build there is moved aside first, then removed.

    The swap holds an exclusive lock on the parent directory (``flock``, which
    leaves no file behind), so concurrent builds into one directory each end
    whole and the last one wins; the target is checked again under the lock.
    """
    fd = os.open(out_dir.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if out_dir.is_symlink() or (out_dir.exists() and any(out_dir.iterdir())):
            why = "it is a symbolic link" if out_dir.is_symlink() else _is_own_build(out_dir)
            if why is not None:
                raise InputError(f"{out_dir}: changed during the build and is no longer a replaceable kcompile "
                                 f"build ({why}); nothing was changed there")
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            tmp.replace(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(out_dir)  # over a missing or empty directory
    finally:
        os.close(fd)  # releases the lock


def _save_devices(path: Path, cellmap) -> None:
    """``devices.npz``: per layer what the cell's mapping records (:meth:`kcompile.cells.base.LayerMap.arrays`)."""
    arrays = {f"layer{k}_{name}": np.asarray(a)
              for k, lm in enumerate(cellmap.layers) for name, a in lm.arrays().items()}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _cells_info(cellmap) -> dict:
    err = [np.abs(lm.achieved - lm.target).max() if lm.target.size else 0.0 for lm in cellmap.layers]
    cal = cellmap.calibration
    return {
        "level": "transistor", "cell": cellmap.cell.name, "pdk": cellmap.pdk.name, "corner": cellmap.corner,
        "supply": cellmap.pdk.supply, "clipped": len(cellmap.clipped),
        "max_theta_error": float(max(err)) if err else 0.0,
        "theta0_range": {"positive": cal.theta0_range(False), "negative": cal.theta0_range(True)},
    }


def open_build(path: str | Path) -> Build:
    """Open a build directory written by :func:`build`."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{path}: not a kcompile build directory (no {MANIFEST}); run 'kcompile build' first")
    try:
        manifest = json.loads(manifest_path.read_text())
        scaling = Scaling(**{k: v for k, v in manifest["scaling"].items() if k != "tau"})
        if manifest["cells"]["level"] not in ("behavioural", "transistor"):
            raise KeyError("cells.level")
        tran = Tran(**manifest["tran"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{manifest_path}: unreadable manifest ({exc}); rebuild with 'kcompile build'") from None
    knet = load_knet(path / "weights.npz")
    return Build(path, knet, manifest, scaling, tran)


def modified_files(b: Build) -> list[str]:
    """Files whose hash no longer matches the manifest (hand edits, corruption)."""
    return [name for name, digest in b.manifest.get("files", {}).items()
            if not (b.path / name).is_file() or sha256(b.path / name) != digest]


def circuit_for(b: Build, simulator: str, folder: Path) -> Path:
    """The build's circuit in ``simulator``'s dialect: ``circuit.cir`` for ngspice (what the build wrote); for
    another back end, written into ``folder`` from the build's network, scaling, form and devices (VACASK takes
    only compiled devices: a ``bsource`` build is refused, never silently compiled)."""
    from .backends import get_simulator

    sim = get_simulator(simulator)
    if sim.name == "ngspice":
        return b.circuit
    if b.manifest["cells"]["level"] != "behavioural":
        raise InputError(f"{b.path}: a transistor-level build runs only in ngspice (its cells and models are "
                         f"ngspice text), not in {sim.name}")
    devices = b.manifest["cells"].get("devices", "bsource")
    if devices not in sim.devices:
        raise InputError(f"{b.path}: built with --devices {devices}, which {sim.name} cannot simulate; rebuild "
                         f"with --devices {sim.devices[0]}")
    path = Path(folder) / sim.circuit_name
    write_circuit(b.knet, path, b.scaling, segmented=b.tran.segmented, simulator=sim.name, devices=devices)
    for name in b.manifest["files"]:  # the build's own modules, so that both simulators compile the same text
        if name.endswith(".va"):
            shutil.copyfile(b.path / name, Path(folder) / name)
    return path
