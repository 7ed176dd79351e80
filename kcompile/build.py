"""The build stage: a weights file becomes a build directory.

``BUILD/`` holds ``circuit.cir`` (the reusable netlist), ``weights.npz``
(the validated network, re-serialised), ``inputs.npy``/``labels.npy`` when
the weights file recorded test data, and ``manifest.json`` (sizes, windows,
scaling, file hashes, kcompile version). A transistor-level build also holds
``devices.npz``: per device the target θ, the θ the calibrated cell achieves,
the instance parameters chosen, and which devices were clipped, and
``models.spice``: the PDK's model cards for its corner, every include
inlined, which ``circuit.cir`` includes by that relative name, so the
directory can move to another machine or into an xschem testbench. With
``testbench=True`` it also holds ``tb.cir``, a run deck for the first input
that runs with plain ``ngspice -b BUILD/tb.cir`` from any directory and
prints the outputs at t_L next to the reference's. The directory appears
whole or not at all: it is written beside the target and renamed into place.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .checks import (CELL_AREA, CELSIUS, POINTS_PER_LAYER, POSITIVE, REFINE_STEPS, SCALING, Number, scaling_problem,
                     short)
from .errors import InputError
from .files import check_writable_parent, sha256, umask
from .inputs import check_inputs, check_labels, load_array, load_inputs
from .knet import FORMAT, KNet, load_extras, load_knet, save_knet
from .laws import LAWS
from . import progress
from .budget import OUTSIDE_SLACK, Budget, estimate
from .mapping import ScalingPlan, ThetaMisses, map_knet, plan_scaling, theta_misses, transistor_scaling
from .netlist import (SOLVERS, TRAN_METHODS, Tran, default_tran, render_deck, render_transistor_circuit,
                      transistor_tran, write_circuit)
from .osdi import DEVICES, default_devices
from .ranges import calibration_inputs, node_ranges
from .scaling import Scaling, rescale, rescaling
from .pdk import get_pdk
from .reference import Trajectory, integrate
from .characterised import characterise, integrate_characterised
from .refine import measure as refined_tables, refine, steps_for
from .simulate import SpiceResult, simulate

MANIFEST = "manifest.json"
#: a transistor-level build's model cards, included by ``circuit.cir`` by this relative name
MODELS = "models.spice"
#: the optional standalone testbench
TESTBENCH = "tb.cir"


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
                 if self.transistor else "behavioural")
        k = self.knet
        return (f"<Build {self.path}: {level}; {k.law}, {k.num_nodes} nodes, {k.num_layers} layers, "
                f"{k.num_devices} devices>")

    @property
    def circuit(self) -> Path:
        return self.path / "circuit.cir"

    @property
    def transistor(self) -> bool:
        """Whether the build's cells are transistor level (calibrated cells on a PDK), not behavioural devices."""
        return self.manifest["cells"].get("level") == "transistor"

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
        if self.transistor:
            options = {"supply": ("vdd", cells["supply"]), "defines": get_pdk(cells["pdk"]).ngspice_defines(),
                       **options}
        with tempfile.TemporaryDirectory(prefix="kcompile-circuit-") as tmp:
            return simulate(self.knet, circuit_for(self, simulator, Path(tmp)), x, self.tran, scaling=self.scaling,
                            simulator=simulator, **options)

    @property
    def alpha(self) -> float:
        """The circuit realises the network ``u = v/α`` (:mod:`kcompile.scaling`; 1 unless automatic scaling
        rescaled it)."""
        plan = self.manifest["cells"].get("scaling_plan")
        return 1.0 if plan is None else float(plan["alpha"])

    def circuit_network(self) -> tuple[KNet, Scaling]:
        """The network the transistor circuit realises (``u = v/α``, current gain β) and its scaling (the cells')."""
        plan = self.manifest["cells"].get("scaling_plan")
        if plan is None:
            return self.knet, self.scaling
        return rescale(self.knet, self.alpha, float(plan["beta"])), Scaling(**plan["cell_scaling"])

    def characterised(self, x: np.ndarray, **options) -> Trajectory | None:
        """For a transistor build: the ideal ODE with every cell's measured DC I–V (cached sweeps; thousands of
        instances from a table over the cell's parameters, :mod:`kcompile.characterised`), in the original units.
        ``options`` go to the integrator (:func:`kcompile.reference.integrate`: ``method``, ``rtol``, ...)."""
        if not self.transistor:
            return None
        cells = self.manifest["cells"]
        network, scaling = self.circuit_network()
        cellmap = map_knet(network, cells["pdk"], cells["corner"], scaling, area=cells.get("area", 1.0))
        cellmap = refine(network, cellmap, cells.get("refine_steps", 0))
        return integrate_characterised(network, characterise(cellmap), x, alpha=self.alpha, **options)

    def recorded(self, name: str) -> np.ndarray | None:
        """``inputs`` ``[B, F]`` or ``labels`` ``[B]`` recorded with the model, if any (checked: a build
        directory is input)."""
        if name not in ("inputs", "labels"):
            raise ValueError(f"The 'name' parameter of Build.recorded must be 'inputs' or 'labels'. Got {name!r}.")
        f = self.path / f"{name}.npy"
        if not f.is_file():
            return None
        if name == "inputs":
            return load_inputs(f, self.knet)
        inputs = self.recorded("inputs")
        return check_labels(load_array(f), 0 if inputs is None else len(inputs), str(f))


def _test_data(weights: Path, knet: KNet) -> dict[str, np.ndarray]:
    """Optional ``test_inputs [B, F]`` and ``test_labels [B]`` keys of the weights file."""
    extras = load_extras(weights, ("test_inputs", "test_labels"))
    if "test_inputs" not in extras:
        return {}
    data = {"inputs": check_inputs(extras["test_inputs"], knet, f"{weights}: key 'test_inputs'")}
    if "test_labels" in extras:
        data["labels"] = check_labels(extras["test_labels"], len(data["inputs"]), f"{weights}: key 'test_labels'")
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


def _clipped_message(cellmap, law: str, fix: str, limit: int = 4) -> str:
    """The flagged devices, each with the reason its cell gives (:meth:`kcompile.mapping.CellMap.clip_reason`)."""
    items = cellmap.clipped
    cal = cellmap.calibration
    shown = []
    for k, i in items[:limit]:
        theta = cellmap.layers[k].target[i]
        shown.append(f"layer{k}[{i}] θ={np.round(theta, 4).tolist()} ({cellmap.clip_reason(law, k, i)})")
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return (f"{len(items)} device(s) cannot be realised within tolerance by cell {cal.cell} on "
            f"{cal.pdk}/{cal.corner}: {'; '.join(shown)}{more}; {fix} to build them clipped "
            "(devices.npz holds target and achieved θ)")


def compliance_warnings(plan: ScalingPlan, cell: str, pdk: str) -> list[str]:
    """Warn, in volts, when the circuit's node voltages leave the cell's compliance window on the calibration
    inputs, with advice that removes the warning when followed, or the reason no scaling can."""
    if plan.fits:
        return []
    lo, hi = plan.volts
    (w0, w1), sc = plan.window, plan.scaling
    head = (f"node voltages reach {lo:.3g} to {hi:.3g} V on {plan.ranges.source} (±{plan.ranges.peak:.3g} model "
            f"units at {sc.v0:.3g} V per unit), outside cell {cell}'s window {w0:g} to {w1:g} V on {pdk}; the "
            "transistor level will be inaccurate")
    if plan.mode == "manual":
        if not np.isfinite(plan.need):
            return [f"{head}. vcm = {sc.vcm:g} V lies outside the window: no --v0 fits; use the default scaling"]
        return [f"{head}. Suggest --v0 {sc.v0 / plan.need:.3g} (volts per unit, now {sc.v0:.3g}), or leave "
                "the scaling to kcompile (no --v0/--i0: --scaling auto)"]
    return [f"{head}. Fitting them needs α = {plan.need:.3g}, but {plan.limit}; built with α = {plan.alpha:.3g}. No "
            "scaling can fit this network into the window: retrain it with smaller node voltages or slopes "
            "(kcompile train's hardware-aware options, docs/hardware_aware.md)"]


def scaling_lines(cells: dict) -> list[str]:
    """What a transistor build chose and expects, for people: the scaling plan and the budget (from the
    manifest's ``cells``)."""
    plan, budget = cells.get("scaling_plan"), cells.get("budget")
    lines = []
    if plan is not None:
        (lo, hi), (w0, w1) = plan["volts"], plan["window_volts"]
        lines.append(f"scaling ({plan['mode']}): α = {plan['alpha']:.4g}: {plan['reason']}; nodes {lo:.3g} to "
                     f"{hi:.3g} V in the window {w0:g} to {w1:g} V ({plan['ranges']['source']})")
    if budget is not None:
        b = Budget(**{k: v for k, v in budget.items() if k != "relative"})
        lines.append(f"budget: {b.message()}")
    return lines


#: transistor builds are refused above this many devices (``max_devices``): a circuit of 20,000 cells has
#: 0.3-1.4 million transistors, beyond what ngspice simulates in hours
MAX_TRANSISTOR_DEVICES = 20_000
#: the budget gate of a build without ``max_error``: this fraction of the network's swing (or
#: :data:`MIN_BUDGET` model units, whichever is larger)
BUDGET_FRACTION = 0.1
MIN_BUDGET = 0.15


@dataclass(frozen=True, eq=False)
class Prepared:
    """A network ready to be rendered at transistor level (:func:`prepare_transistor`)."""

    plan: ScalingPlan
    cellmap: object
    refine_steps: int
    misses: ThetaMisses
    accuracy: object
    budget: Budget | None

    def info(self) -> dict:
        """The manifest's ``cells`` of the build."""
        return {**_cells_info(self.cellmap), "refine_steps": self.refine_steps, "scaling_plan": self.plan.record(),
                "theta_misses": self.misses.record(), "accuracy": self.accuracy.record(),
                "budget": None if self.budget is None else self.budget.record()}

    def warnings(self) -> list[str]:
        """Compliance (in volts, with advice) and θ misses."""
        out = compliance_warnings(self.plan, self.cellmap.cell.name, self.cellmap.pdk.name)
        return out + ([self.misses.message(self.cellmap.corner)] if self.misses.count else [])


def prepare_transistor(knet: KNet, x: np.ndarray, source: str, pdk: str, corner: str, scaling: Scaling | None,
                       mode: str, *, allow_clipped: bool = False, refine_steps: int | None = None,
                       gate: float | None = None, swing_gate: float | None = None, allow_out_of_budget: bool = False,
                       where: str = "", area: float = 1.0,
                       fixes: tuple[str, str, str] = ("pass --allow-clipped", "pass --allow-out-of-budget",
                                                      "pass --c-unit {:g}")) -> Prepared:
    """Range analysis on ``x``, the scaling plan, mapping, refinement, θ misses and the budget of a transistor-level
    circuit of ``knet`` (``build`` and verification flows).

    Parameters
    ----------
    x, source : the calibration inputs and where they came from
    scaling, mode : see :func:`kcompile.mapping.plan_scaling`
    gate : float, optional
        The output error the budget must meet (model units).
    swing_gate : float, optional
        Without ``gate``: this fraction of the network's swing, at least :data:`MIN_BUDGET`; neither: no gate.
    where, fixes : the start of every refusal (a file); how to proceed anyway (clipped, out of budget), and how to
        set the capacitance per unit (a format string).
    area : float
        The cells' gate area relative to their drawn sizes (:meth:`kcompile.cells.base.Cell.with_area`).

    Raises
    ------
    InputError
        Devices clipped beyond tolerance (unless ``allow_clipped``), or a budget above ``gate`` (unless
        ``allow_out_of_budget``).
    """
    with progress.task(f"range analysis on {source}"):
        ranges = node_ranges(knet, x, source)
    plan = plan_scaling(knet, ranges, pdk, corner, scaling, mode, area=area)
    network = plan.network
    cellmap = map_knet(network, pdk, corner, plan.cell_scaling, area=area)
    if cellmap.clipped and not allow_clipped:
        also = ""
        if plan.outside > OUTSIDE_SLACK and not allow_out_of_budget and (gate, swing_gate) != (None, None):
            also = (f"; the nodes also leave the cells' compliance window by {plan.outside:.3g} V, so the "
                    f"dynamic-range budget will refuse it next: {fixes[1]} as well")
        raise InputError(f"{where}: {_clipped_message(cellmap, knet.law, fixes[0])}{also}")
    refine_steps = steps_for(network, refine_steps)
    cellmap = refine(network, cellmap, refine_steps)
    acc = cellmap.cell.accuracy(cellmap.pdk)
    if gate is None and swing_gate is not None:
        gate = max(MIN_BUDGET, swing_gate * ranges.peak)

    # a refined map's every instance is DC-swept (cached): the budget draws on top of those measured tables
    tables = refined_tables(cellmap) if refine_steps else None

    def budget_at(c_factor: float):
        cell_scaling = dataclasses.replace(plan.cell_scaling, c_unit=plan.cell_scaling.c_unit * c_factor)
        return estimate(network, plan.alpha, acc, cell_scaling, x, ranges.peak, gate,
                        [lm.achieved for lm in cellmap.layers], outside=plan.outside, measured=bool(refine_steps),
                        tables=tables)

    with progress.task("dynamic-range budget"):
        budget = budget_at(1.0)
    if budget is not None and not budget.within and not allow_out_of_budget:
        why = ("the cells' accuracy at this scaling cannot meet the gate" if budget.holds else
               "the nodes leave the cells' compliance window, so no accuracy can be promised")
        lever = ""
        if budget.holds:
            with progress.task("dynamic-range budget at larger capacitances per unit"):
                lever = _c_unit_lever(budget_at, (scaling or transistor_scaling(get_pdk(pdk))).c_unit, fixes[2])
        raise InputError(f"{where}: {budget.message()}; {why} (docs/transistor.md, 'Dynamic-range budget'): "
                         f"{lever}{fixes[1]} to proceed anyway")
    return Prepared(plan, cellmap, refine_steps, theta_misses(knet.law, cellmap), acc, budget)


#: capacitances per unit tried, as multiples of the build's, when its budget exceeds the gate
C_UNIT_FACTORS = (2.0, 4.0)


def _c_unit_lever(budget_at, c_unit: float, fix: str) -> str:
    """Advice for a budget above its gate: the smallest of :data:`C_UNIT_FACTORS` times the capacitance per unit
    whose estimate meets it (a larger node capacitance shrinks the share of the cells' parasitic and switch
    charges), or why none does."""
    for factor in C_UNIT_FACTORS:
        b = budget_at(factor)
        if b.within:
            return (f"{fix.format(c_unit * factor)} ({factor:g}x the capacitance per unit: about {factor:g}x the "
                    f"settling time and energy) brings the estimate to {b.nominal:.3g}, within the gate; or ")
    what = ("the cells' measured DC I-V (the characterised level), not their parasitics, dominates" if b.measured else
            "the cells' offsets and gain errors, not their parasitics, dominate")
    return (f"even {C_UNIT_FACTORS[-1]:g}x the capacitance per unit leaves it at {b.nominal:.3g} ({what}: a smaller "
            "swing or a retrained network is the remedy); ")


def build(weights: str | Path, out_dir: str | Path, scaling: Scaling | None = None, *, cells: str = "behavioural",
          pdk: str = "generic180", corner: str = "tt", allow_clipped: bool = False,
          points_per_layer: int | None = None, refine_steps: int | None = None, solver: str | None = None,
          scaling_mode: str | None = None, calibration: str | Path | None = None, max_error: float | None = None,
          allow_out_of_budget: bool = False, max_devices: int = MAX_TRANSISTOR_DEVICES, devices: str | None = None,
          testbench: bool = False, cell_area: float = 1.0) -> Build:
    """Validate ``weights`` and write the build directory ``out_dir``.

    Parameters
    ----------
    cells : {"behavioural", "transistor"}
        One behavioural current source per device, or one calibrated
        transistor-level cell per device on ``pdk``/``corner``.
    scaling : Scaling, optional
        Default: identity for behavioural, :func:`kcompile.mapping.transistor_scaling`
        for transistor builds (then: the cells' scaling of the circuit, see ``scaling_mode``).
    scaling_mode : {"auto", "manual"}, optional
        Transistor builds: fit every node's range into the cell's compliance window by an exact
        rescaling of the network (``"auto"``, the default without ``scaling``;
        :func:`kcompile.mapping.plan_scaling`), or use ``scaling`` as given (``"manual"``, the default with it).
        The recorded scaling maps the ORIGINAL model units onto the circuit either way.
    calibration : str or Path, optional
        Transistor builds: an ``.npy`` input batch for the range analysis and the budget (default: the
        recorded test inputs, else a seeded uniform batch; :func:`kcompile.ranges.calibration_inputs`).
    cell_area : float
        Transistor builds: every cell drawn this many times as large as declared (1-64; mismatch σ ÷ √area,
        :meth:`kcompile.cells.base.Cell.with_area`).
    max_error : float, optional
        Transistor builds: the output error (model units) the budget must meet (default: 10 % of the
        network's swing, at least 0.15); an estimate above it is refused unless ``allow_out_of_budget``.
    max_devices : int
        Transistor builds of more devices are refused (:data:`MAX_TRANSISTOR_DEVICES`).
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
    testbench : bool
        Also write ``tb.cir`` (:func:`testbench_text`); not for segmented circuits, which run one transient
        per layer.

    An existing ``out_dir`` is replaced only if it is empty or an earlier
    kcompile build holding nothing but the files its manifest lists
    (:func:`check_replaceable`); anything else is refused before any work.
    """
    if cells not in ("behavioural", "transistor"):
        raise InputError(f"The 'cells' parameter must be 'behavioural' or 'transistor'. Got {short(cells)} instead.")
    if solver is not None and solver not in SOLVERS:
        raise InputError(f"The 'solver' parameter must be one of {', '.join(SOLVERS)}. Got {short(solver)} instead.")
    for name, value, rule in (("points_per_layer", points_per_layer, POINTS_PER_LAYER),
                              ("refine_steps", refine_steps, REFINE_STEPS), ("cell_area", cell_area, CELL_AREA)):
        if value is not None and rule.problem(value):
            raise InputError(f"The '{name}' parameter of build {rule.problem(value)}.")
    if scaling is not None and scaling_problem(scaling):
        raise InputError(f"The 'scaling' parameter of build is unusable: {scaling_problem(scaling)}.")
    if devices is not None and (devices not in DEVICES or cells == "transistor"):
        raise InputError(f"The 'devices' parameter must be one of {', '.join(DEVICES)} for behavioural cells "
                         f"(transistor-level cells are subcircuits). Got {short(devices)} with cells {short(cells)} instead.")
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
        if knet.num_devices > max_devices:
            raise InputError(f"{weights}: {knet.num_devices:,} devices are too many for a transistor-level build "
                             f"(limit {max_devices:,}: each cell is 16-71 transistors, and ngspice would need days); "
                             "build it with --cells behavioural, or raise the limit with --max-devices")
        if scaling_mode not in (None, "auto", "manual"):
            raise InputError(f"The 'scaling_mode' parameter of build must be 'auto' or 'manual'. Got "
                             f"{short(scaling_mode)} instead.")
        x, source = calibration_inputs(knet, extras.get("inputs"), calibration)
        prep = prepare_transistor(
            knet, x, source, pdk, corner, scaling, scaling_mode or ("auto" if scaling is None else "manual"),
            allow_clipped=allow_clipped, refine_steps=refine_steps, allow_out_of_budget=allow_out_of_budget,
            gate=max_error, swing_gate=BUDGET_FRACTION, where=str(weights), area=cell_area)
        plan, cellmap, cells_info, warnings = prep.plan, prep.cellmap, prep.info(), prep.warnings()
        scaling = plan.scaling
        tran = plan.tran(transistor_tran(knet, *([points_per_layer] if points_per_layer else [])))
    else:
        scaling = scaling or Scaling()
        tran = default_tran(knet, *([points_per_layer] if points_per_layer else []))
    tran = tran if solver is None else dataclasses.replace(tran, solver=solver)
    if testbench and tran.segmented:
        raise InputError(f"{weights}: a testbench (tb.cir) needs a clocked circuit, but {knet.num_devices:,} devices "
                         "are built segmented (one transient per layer, chained by kcompile simulate); leave out "
                         "--testbench")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 is for temporaries; a build directory is a normal one
        if cellmap is None:
            write_circuit(knet, tmp / "circuit.cir", scaling, segmented=tran.segmented, devices=devices)
            cells_info = {"level": "behavioural", "devices": devices}
        else:
            (tmp / MODELS).write_text(bundle_models(cellmap.pdk.model_lines(cellmap.corner),
                                                    f"{cellmap.pdk.name} corner {cellmap.corner}"))
            with open(tmp / "circuit.cir", "w") as f:
                f.writelines(render_transistor_circuit(plan.network, cellmap, model_lines=[f'.include "{MODELS}"']))
            _save_devices(tmp / "devices.npz", cellmap)
        save_knet(knet, tmp / "weights.npz")
        for name, arr in extras.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        if testbench:
            (tmp / TESTBENCH).write_text(testbench_text(knet, scaling, tran, extras, cellmap))
        files = {f.name: sha256(f) for f in sorted(tmp.iterdir())}
        manifest = manifest_for(knet, weights, scaling, tran, files, cells_info)
        manifest["warnings"] = warnings
        manifest["notes"] = notes
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Build(out_dir, knet, manifest, scaling, tran)


def _is_own_build(path: Path) -> str | None:
    """``None`` if ``path`` is a kcompile build holding only the files it wrote, else why not."""
    try:
        manifest, _, _ = check_manifest(path / MANIFEST, _read_manifest(path / MANIFEST))
    except OSError:
        return f"it has no readable {MANIFEST} written by kcompile"
    except InputError:
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
    symbolic link or anything else, and the nearest existing parent must take
    new files (:func:`kcompile.files.check_writable_parent`).
    """
    if out_dir.is_symlink():
        raise InputError(f"{out_dir}: is a symbolic link; kcompile writes build directories only to real paths, "
                         "choose another -o")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"{out_dir}: exists and is not a directory; choose another -o")
        here, target = Path.cwd().resolve(), out_dir.resolve()
        if target == here or target in here.parents:
            raise InputError(f"{out_dir}: is the current directory or one of its parents; a build is written into "
                             "a directory of its own: choose another -o, e.g. build/NAME")
        why = _is_own_build(out_dir) if any(out_dir.iterdir()) else None
        if why is not None:
            raise InputError(f"{out_dir}: exists and is not a kcompile build directory that can be replaced "
                             f"({why}); nothing was changed: choose another -o or move the files away")
    check_writable_parent(out_dir, "build directory")  # the build is assembled beside it, then renamed


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
        "supply": cellmap.pdk.supply, "clipped": len(cellmap.clipped), "area": cellmap.cell.area,
        "gate_area_um2": cellmap.cell.gate_area(cellmap.pdk) * sum(len(lm) for lm in cellmap.layers),
        "max_theta_error": float(max(err)) if err else 0.0,
        "theta0_range": {"positive": cal.theta0_range(False), "negative": cal.theta0_range(True)},
    }


#: the largest manifest.json read (its meta is at most 1 MB; the rest grows with the node count)
MAX_MANIFEST_BYTES = 64 << 20
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_WORD = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_FORMS = {_SHA256: "a hex SHA-256", _WORD: "a word of letters, digits and ._+-"}
_SIZE = Number(0, 2**63 - 1, integer=True)


class _Manifest:
    """Checks one field of a manifest at a time; every failure names the file, the dotted key and the fix."""

    def __init__(self, path: Path, data):
        self.path = path
        if not isinstance(data, dict):
            raise self.fail("", "must hold a JSON object")
        self.data = data

    def fail(self, key: str, problem: str) -> InputError:
        where = f"'{key}' " if key else ""
        return InputError(f"{self.path}: {where}{problem}; this build directory was not written by this kcompile "
                          "or was edited: rebuild it with 'kcompile build'")

    def get(self, key: str, kind, rule=None, default=None):
        """The value at dotted ``key``: of type ``kind`` (a tuple of allowed values for a word), checked by
        ``rule`` (a :class:`~kcompile.checks.Number` or a regular expression); ``default`` when absent
        (``...``: required)."""
        node = self.data
        *parents, last = key.split(".")
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise self.fail(name, "is missing or not a JSON object")
        if last not in node:
            if default is ...:
                raise self.fail(key, "is missing")
            return default
        value = node[last]
        if isinstance(kind, tuple):
            if value not in kind:
                raise self.fail(key, f"must be one of {', '.join(map(str, kind))}, got {short(value)}")
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"must be a JSON {_JSON_NAMES[kind]}, got {short(value)}")
        if isinstance(rule, Number) and rule.problem(value):
            raise self.fail(key, rule.problem(value))
        if isinstance(rule, re.Pattern) and not rule.match(value):
            raise self.fail(key, f"must be {_FORMS[rule]}, got {short(value)}")
        return value


_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "true/false", dict: "object", list: "array"}


def check_manifest(path: Path, data) -> tuple[dict, Scaling, Tran]:
    """Validate a build manifest against its schema before any of it is used.

    Every field that reaches a deck, a file name or a simulator option is
    checked: enumerations (law, ``tran.method``, ``tran.solver``, cell level,
    PDK and corner) against the known sets, numbers finite and positive where
    physical, file names plain names inside the directory, hashes hex
    SHA-256. Unknown keys outside ``tran`` and ``scaling`` are ignored (a newer
    writer may add some). This protects against accidents and against a
    manifest smuggling text into a deck; it is not a signature (see
    docs/reliability.md, "Trust model").

    Returns
    -------
    (manifest, scaling, tran)
    """
    from .pdk import PDKS

    m = _Manifest(path, data)
    m.get("format", (FORMAT,), default=...)
    m.get("kcompile_version", str, _WORD, ...)
    m.get("law", tuple(LAWS), default=...)
    for key in ("num_nodes", "num_devices", "num_features"):
        m.get(key, int, _SIZE, ...)
    for key in ("input_nodes", "output_nodes", "layers", "warnings", "notes"):
        m.get(key, list, default=[])
    for i, layer in enumerate(data.get("layers", [])):
        if not isinstance(layer, dict) or not isinstance(layer.get("devices"), int) or layer["devices"] < 0:
            raise m.fail(f"layers[{i}]", "must be an object with a 'devices' count")
    m.get("source.path", str, default=...)
    m.get("source.sha256", str, _SHA256, ...)
    m.get("meta", dict, default={})
    for name, digest in m.get("files", dict, default=...).items():
        if not _FILE_NAME.match(name) or name == MANIFEST:
            raise m.fail("files", f"lists {short(name)}, which is not a plain file name inside the build directory")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise m.fail(f"files.{name}", f"must be {_FORMS[_SHA256]}, got {short(digest)}")
    for name in ("circuit.cir", "weights.npz"):
        if name not in data["files"]:
            raise m.fail("files", f"does not list {name}")

    level = m.get("cells.level", ("behavioural", "transistor"), default=...)
    if level == "behavioural":
        m.get("cells.devices", DEVICES, default="bsource")  # written since compiled devices; bsource before
    if level == "transistor":
        pdk = PDKS[m.get("cells.pdk", tuple(PDKS), default=...)]
        m.get("cells.corner", pdk.corners, default=...)
        m.get("cells.supply", float, POSITIVE, ...)
        m.get("cells.refine_steps", int, REFINE_STEPS, 0)
        m.get("cells.area", float, CELL_AREA, 1.0)
        m.get("cells.gate_area_um2", float, POSITIVE, None)

    scaling = m.get("scaling", dict, default=...)
    for key in set(scaling) - set(SCALING) - {"tau"}:
        raise m.fail(f"scaling.{key}", "is not a scaling field")
    values = {key: m.get(f"scaling.{key}", float, rule, ...) for key, rule in SCALING.items()}
    if scaling_problem(Scaling(**values)):
        raise m.fail("scaling", scaling_problem(Scaling(**values)))
    if level == "transistor" and m.get("cells.scaling_plan", dict, default=None) is not None:
        _check_plan(m, data["law"], Scaling(**values))

    fields = {f.name: f for f in dataclasses.fields(Tran)}
    tran = m.get("tran", dict, default=...)
    for key in set(tran) - set(fields):
        raise m.fail(f"tran.{key}", "is not a field of the transient analysis")
    args = {}
    for key in tran:
        if key in ("method", "solver"):
            args[key] = m.get(f"tran.{key}", TRAN_METHODS if key == "method" else SOLVERS, default=...)
        elif key in ("uic", "segmented"):
            args[key] = m.get(f"tran.{key}", bool, default=...)
        elif key == "temp" and tran[key] is None:
            args[key] = None
        else:
            args[key] = m.get(f"tran.{key}", float, CELSIUS if key == "temp" else POSITIVE, ...)
    try:
        return data, Scaling(**values), Tran(**args)
    except (InputError, TypeError) as exc:
        raise m.fail("tran", f"is not a valid analysis ({exc})") from None


def _check_plan(m: _Manifest, law: str, scaling: Scaling) -> None:
    """``cells.scaling_plan``: α, β and the cells' scaling reach the decks of the characterised level; the recorded
    scaling must be the one they imply (:meth:`kcompile.scaling.Rescaling.physical`)."""
    alpha = m.get("cells.scaling_plan.alpha", float, POSITIVE, ...)
    beta = m.get("cells.scaling_plan.beta", float, POSITIVE, ...)
    cell = m.get("cells.scaling_plan.cell_scaling", dict, default=...)
    for key in set(cell) - set(SCALING):
        raise m.fail(f"cells.scaling_plan.cell_scaling.{key}", "is not a scaling field")
    cells = Scaling(**{key: m.get(f"cells.scaling_plan.cell_scaling.{key}", float, rule, ...)
                       for key, rule in SCALING.items()})
    try:
        implied = rescaling(law).physical(cells, alpha, beta)
    except ValueError as exc:
        raise m.fail("cells.scaling_plan", str(exc)) from None
    if not all(np.isclose(getattr(implied, k), getattr(scaling, k), rtol=1e-9, atol=0.0) for k in SCALING):
        raise m.fail("scaling", f"disagrees with cells.scaling_plan (α = {alpha:g}, β = {beta:g} imply {implied})")


def _read_manifest(path: Path) -> dict:
    """``manifest.json`` parsed: bounded in size, standard JSON only (no NaN), or an :class:`InputError`."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
        if len(text) > MAX_MANIFEST_BYTES:
            raise InputError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB, not a manifest kcompile wrote")
        return json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: unreadable manifest ({short(str(exc), 120)}); rebuild with 'kcompile build'") \
            from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not standard JSON")


def open_build(path: str | Path) -> Build:
    """Open a build directory written by :func:`build`.

    The directory is input: the manifest is checked against its schema
    (:func:`check_manifest`), the weights are loaded with the weights
    file's own checks, and the manifest must describe those weights.

    Raises
    ------
    InputError
        Not a build directory, an invalid manifest, or one that disagrees with ``weights.npz``.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{path}: not a kcompile build directory (no {MANIFEST}); run 'kcompile build' first")
    manifest, scaling, tran = check_manifest(manifest_path, _read_manifest(manifest_path))
    knet = load_knet(path / "weights.npz")
    said = (manifest["law"], manifest["num_nodes"], manifest["num_devices"], len(manifest["layers"]))
    holds = (knet.law, knet.num_nodes, knet.num_devices, knet.num_layers)
    if said != holds:
        raise InputError(f"{manifest_path}: describes a {said[0]} network of {said[1]} nodes, {said[2]} devices and "
                         f"{said[3]} layers, but weights.npz holds {holds[0]}, {holds[1]}, {holds[2]} and {holds[3]}; "
                         "the build directory was edited: rebuild it with 'kcompile build'")
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
    if b.transistor:
        raise InputError(f"{b.path}: a transistor-level build runs only in ngspice (its cells and models are "
                         f"ngspice text), not in {sim.name}")
    devices = b.manifest["cells"].get("devices", "bsource")
    if devices not in sim.devices:
        raise InputError(f"{b.path}: built with --devices {devices}, which {sim.name} cannot simulate; rebuild "
                         f"with --devices {sim.devices[0]}")
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / sim.circuit_name
    write_circuit(b.knet, path, b.scaling, segmented=b.tran.segmented, simulator=sim.name, devices=devices)
    for name in b.manifest["files"]:  # the build's own modules, so that both simulators compile the same text
        if name.endswith(".va"):  # linked, not copied: a compiler error names the build's file, not a copy
            (Path(folder) / name).unlink(missing_ok=True)
            os.symlink((b.path / name).resolve(), Path(folder) / name)
    return path
# ---------------------------------------------------------------- portable builds

#: ``.include FILE`` and ``.lib FILE SECTION`` (a section header ``.lib NAME`` has no second word)
_CALL = re.compile(r"""^\s*\.(include|inc|lib)\s+(?:"([^"]+)"|'([^']+)'|(\S+))(?:\s+(\S+))?\s*$""", re.I)
_MAX_NESTING = 16


def _section(lines: list[str], name: str, path: Path) -> list[str]:
    """The body of ``.lib NAME`` ... ``.endl`` in ``lines``."""
    head = re.compile(rf"^\s*\.lib\s+{re.escape(name)}\s*$", re.I)
    for i, line in enumerate(lines):
        if head.match(line):
            for j in range(i + 1, len(lines)):
                if re.match(r"^\s*\.endl\b", lines[j], re.I):
                    return lines[i + 1:j]
            break
    raise InputError(f"{path}: has no complete section {name!r} (.lib {name} ... .endl); reinstall the PDK package")


def _inlined(path: Path, section: str | None, depth: int = 0) -> list[str]:
    """``path`` (or its ``section``) with every include and section call replaced by the text it names,
    resolved as ngspice does: relative to the including file."""
    if depth > _MAX_NESTING:
        raise InputError(f"{path}: model includes nest deeper than {_MAX_NESTING} levels")
    lines = path.read_text(errors="replace").splitlines()
    if section is not None:
        lines = _section(lines, section, path)
    out = [f"* ---- {path.name}" + (f", section {section}" if section else "")]
    for line in lines:
        m = _CALL.match(line)
        kind, target, sub = (m.group(1).lower(), m.group(2) or m.group(3) or m.group(4), m.group(5)) if m else (
            None, None, None)
        if kind is None or (kind == "lib") != (sub is not None):
            out.append(line)  # a statement, or a section header of a file included whole
        else:
            out += _inlined(path.parent / target, sub, depth + 1)
    return out


def bundle_models(model_lines: list[str], what: str) -> str:
    """One self-contained model file from a PDK's model lines (:meth:`kcompile.pdk.Pdk.model_lines`).

    Every ``.include`` is replaced by the file it names and every
    ``.lib FILE SECTION`` by that section, recursively, so the text holds no
    path: a build that includes it by a relative name runs on any machine
    (ngspice resolves a relative include against the including file's
    directory). Only the build's corner is bundled.
    """
    out = [f"* kcompile {__version__}: the {what} model cards, bundled for a portable build", ""]
    for line in model_lines:
        m = _CALL.match(line)
        if m is None:
            raise InputError(f"cannot bundle the model line {short(line, 120)}: expected .include or .lib")
        out += _inlined(Path(m.group(2) or m.group(3) or m.group(4)), m.group(5))
    return "\n".join(out) + "\n"


def testbench_text(knet: KNet, scaling: Scaling, tran: Tran, extras: dict, cellmap=None) -> str:
    """``tb.cir``: the run deck of the first recorded test input (zeros without one) with ``.meas`` lines
    that print every output at t_L in model units, and a header with the reference's values to compare.

    It includes ``circuit.cir`` by a relative name, so ``ngspice -b BUILD/tb.cir`` runs from any directory.
    """
    x = extras.get("inputs")
    row = np.zeros(knet.num_features) if x is None else x[0]
    ref = integrate(knet, row[None]).outputs[0]
    label = extras.get("labels")
    what = ("all-zero inputs (the weights record no test inputs)" if x is None else
            "the first recorded test input" + ("" if label is None else f" (label {label[0]:g})"))
    t_end = float(knet.t_bounds[-1]) * scaling.tau
    defines = "" if cellmap is None else " ".join(f"-D {d}" for d in cellmap.pdk.ngspice_defines())
    head = [f"* kcompile {__version__} standalone testbench: circuit.cir with {what}",
            f"* run from any directory: ngspice -b {defines + ' ' if defines else ''}path/to/tb.cir",
            "* prints y_n<N>: output node N at t_L in model units, (V - vcm)/v0",
            "* the reference integrator gives: " + ", ".join(f"n{n} = {v:.6g}" for n, v in
                                                          zip(knet.output_nodes.tolist(), ref.tolist()))]
    deck = render_deck(knet.initial_state(row[None])[0], tran, scaling, None)
    meas = [f".meas tran y_n{n} find par('(v(n{n})-{scaling.vcm!r})/{scaling.v0!r}') at={t_end!r}"
            for n in knet.output_nodes.tolist()]
    body = deck.rstrip("\n").splitlines()
    assert body[-1] == ".end"
    return "\n".join(head + body[:-1] + meas + [".end"]) + "\n"
