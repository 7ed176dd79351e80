"""Reports of a flow run: a JSON summary, JUnit XML and one self-contained HTML file.

Also the physical conditions of a run in words (:func:`conditions`,
:func:`conditions_lines`, :func:`si`), shared with ``kcompile simulate``.
"""

from __future__ import annotations

import base64
import html
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import __version__
from .files import atomic_write
from .compare import meta_task
from .scaling import Scaling
from .verify import FlowResult

_PREFIXES = {-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G"}


def si(value: float | None, unit: str, digits: int = 3) -> str:
    """``value`` with an SI prefix: ``si(1.34e-9, "J")`` is ``"1.34 nJ"``; ``"—"`` for None or NaN."""
    if value is None or not np.isfinite(value):
        return "—"
    if value == 0:
        return f"0 {unit}"
    exp = int(np.clip(np.floor(np.log10(abs(value)) / 3) * 3, -15, 9))
    scaled = float(f"{value / 10.0 ** exp:.{digits}g}")
    if abs(scaled) >= 1000 and exp < 9:  # 999.7 rounds up to the next prefix
        exp += 3
        scaled = float(f"{value / 10.0 ** exp:.{digits}g}")
    return f"{scaled:g} {_PREFIXES[exp]}{unit}"


def conditions(scaling: Scaling, *, cells: str = "behavioural", cell: str | None = None, pdk: str | None = None,
               corners: list[str] = (), temperatures: list[float] = (), supplies: list[float] = (),
               energy: float | None = None, latency: float | None = None, nominal: str | None = None,
               area: float | None = None, gate_area: float | None = None) -> dict:
    """The physical conditions of a run as plain data: what the devices are (``cells``: "behavioural",
    "osdi" or "transistor"; transistor cells: drawn ``area`` times as large, ``gate_area`` µm² of transistor
    gates in all), where (PDK, corners, temperatures, supplies), what one model unit is in volts,
    amperes, farads and seconds, and the energy per inference, latency and mean power (transistor level; of
    the run ``nominal`` when there are several)."""
    power = energy / latency if energy is not None and np.isfinite(energy) and latency else None
    return {"cells": cells, "cell": cell, "pdk": pdk, "corners": list(corners),
            "temperatures_c": [float(t) for t in temperatures], "supplies_v": [float(v) for v in supplies],
            "volts_per_unit": scaling.v0, "vcm_v": scaling.vcm, "amperes_per_unit": scaling.i0,
            "farads_per_unit": scaling.c_unit, "tau_s": scaling.tau, "energy_per_inference_j": energy,
            "latency_s": latency, "power_w": power, "nominal": nominal, "cell_area": area,
            "gate_area_um2": gate_area}


def conditions_lines(c: dict) -> list[str]:
    """:func:`conditions` in words, one line each: the devices and where, the units, the cost."""
    if c["cells"] == "transistor":
        temps = ", ".join(f"{t:g}" for t in c["temperatures_c"]) or "27"
        supply = ", ".join(si(v, "V") for v in c["supplies_v"])  # none when no transistor level ran
        where = (f"transistor-level {c['cell']} cells on {c['pdk']}, corner {', '.join(c['corners'])}, "
                 f"{temps} °C" + (f", supply {supply}" if supply else ""))
    elif c["cells"] == "osdi":
        where = "compiled Verilog-A devices (OSDI; a node pair's devices share an instance)"
    else:
        where = "behavioural sources (one per device)"
    if Scaling(c["volts_per_unit"], c["vcm_v"], c["amperes_per_unit"], c["farads_per_unit"]).is_identity:
        units = "model units are volts, amperes, farads and seconds"
    else:
        units = (f"1 model unit = {si(c['volts_per_unit'], 'V')} around vcm {si(c['vcm_v'], 'V')}, "
                 f"{si(c['amperes_per_unit'], 'A')}, {si(c['farads_per_unit'], 'F')} per node; "
                 f"τ = {si(c['tau_s'], 's')} per model time unit")
    lines = [f"{where}; {units}"]
    if c["latency_s"] is not None:
        lines.append(f"latency t_L·τ = {si(c['latency_s'], 's')}" + (
            "" if c["energy_per_inference_j"] is None else
            f"; energy {si(c['energy_per_inference_j'], 'J')} per inference from the supply, mean power "
            f"{si(c['power_w'], 'W')}") + (f" (nominal run, {c['nominal']})" if c.get("nominal") else ""))
    if c.get("gate_area_um2") is not None:
        lines.append(f"{c['gate_area_um2']:,.0f} µm² of transistor gates" +
                     (f" (cells drawn {c['cell_area']:g}× as large)" if c["cell_area"] != 1 else ""))
    return lines


def flow_conditions(result: FlowResult) -> dict:
    """:func:`conditions` of a flow: its transistor-level PDK, corners, temperatures and supplies (nominal
    energy and latency), or the behavioural level in model units."""
    from .cells import cell_for_law
    from .pdk import get_pdk

    if result.scaling is None:
        return conditions(Scaling())
    runs = result.level("transistor")
    nominal = runs[0] if runs else None
    supplies = list(dict.fromkeys(r.supply for r in runs))
    cell = cell_for_law(result.knet.law, result.flow.cell_area)
    pdk = get_pdk(result.flow.pdk or "generic180")
    gate_area = result.knet.num_devices * cell.gate_area(pdk)
    return conditions(result.scaling, cells="transistor", cell=cell.name, pdk=pdk.name,
                      corners=list(result.flow.corners), temperatures=list(result.flow.temperature),
                      supplies=supplies or list(result.flow.supply),
                      energy=None if nominal is None or nominal.energy is None else float(np.mean(nominal.energy)),
                      latency=None if nominal is None else nominal.latency,
                      nominal=None if len(runs) < 2 else nominal.corner, area=cell.area, gate_area=gate_area)


def _level(result: FlowResult, r) -> dict:
    """One level's figures against ideal: output error, the node and layer boundary of the largest error over
    every node, class agreement (classifiers), task metric, energy and latency."""
    err = np.abs(r.states - result.ideal_states(r)).max(axis=0)  # [L+1, N]
    k, n = np.unravel_index(np.argmax(err), err.shape)
    ideal_classes = np.argmax(result.ideal_outputs(r), axis=1)
    agree = (int(np.sum(np.argmax(r.outputs, axis=1) == ideal_classes)) if result.knet.output_nodes.size > 1
             and (result.task or meta_task(result.knet)) == "classification" else None)
    return {"level": r.level, "corner": r.corner, "seconds": r.seconds, "task_metric": r.metric,
            "class_agreement": agree, "max_output_error": float(np.abs(r.outputs - result.ideal_outputs(r)).max()),
            "worst_node": {"node": int(n) + 1, "boundary": int(k), "t": float(result.knet.t_bounds[k]),
                           "error": float(err[k, n])},
            "energy_per_inference_j": None if r.energy is None else float(np.mean(r.energy)),
            "latency_s": r.latency, "temperature_c": r.temperature, "supply_v": r.supply,
            "boundary_error": err.max(axis=1).tolist(), "samples": int(len(r.outputs)),
            "distribution": None if r.samples is None else r.samples.as_dict()}


def summary(result: FlowResult) -> dict:
    """Plain data: verdict, gates, conditions, per-level errors and task metrics, corners, Monte Carlo,
    compute; for a generative flow its latents and each level's sample-distribution metrics (``distribution``)."""
    latent = result.flow.latent
    return {
        "flow": result.flow.name,
        "passed": result.passed,
        "kcompile_version": __version__,
        "model": str(result.flow.model),
        "inputs": result.inputs_source,
        "samples": int(len(result.inputs)),
        "task": result.task,
        "overrides": list(result.flow.overrides),
        "reference": result.reference.as_dict(),
        "conditions": flow_conditions(result),
        "generative": None if latent is None else {"latents": latent.n, "seed": latent.seed,
                                                   "per_level": dict(latent.levels)},
        "levels": [_level(result, r) for r in result.levels],
        "corners": corner_table(result),
        "monte_carlo": monte_carlo_summary(result),
        "timing": result.timing,
        "warnings": list(result.warnings),
        "gates": [
            {"name": g.gate.name, "level": g.gate.level, "corner": g.corner, "metric": g.gate.metric,
             "limit": g.gate.limit, "value": g.value, "passed": g.passed, "detail": g.detail}
            for g in result.gates
        ],
    }


def corner_table(result: FlowResult) -> list[dict]:
    """Every transistor-level run (corner, temperature, supply, calibration) against ideal and against the
    nominal run (the first corner, temperature and supply, calibrated there)."""
    runs = result.level("transistor")
    if not runs:
        return []
    nominal = runs[0]
    ideal = result.ideal_outputs(runs[0])
    rows = []
    for r in runs:
        drop = None
        if r.metric is not None and nominal.metric is not None:
            drop = (nominal.metric - r.metric if result.task == "classification"
                    else r.metric / max(nominal.metric, 1e-300))
        rows.append({"label": r.corner, "corner": r.corner.split()[0], "temperature_c": r.temperature,
                     "supply_v": r.supply, "calibrated_at": r.corner.split()[0] if r.recalibrated else
                     result.flow.corners[0], "max_output_error": float(np.abs(r.outputs - ideal).max()),
                     "max_change_vs_nominal": float(np.abs(r.outputs - nominal.outputs).max()),
                     "task_metric": r.metric, "degradation_vs_nominal": drop,
                     "energy_per_inference_j": None if r.energy is None else float(np.mean(r.energy)),
                     "latency_s": r.latency, "power_w": None if r.energy is None or not r.latency else
                     float(np.mean(r.energy)) / r.latency, "seconds": r.seconds})
    return rows


def _stats(values: np.ndarray, low_is_bad: bool) -> dict:
    worst = values.min() if low_is_bad else values.max()
    return {"mean": float(values.mean()), "std": float(values.std()), "worst": float(worst),
            "p5": float(np.percentile(values, 5)), "p95": float(np.percentile(values, 95)),
            "values": values.tolist()}


def monte_carlo_summary(result: FlowResult, top: int | None = None) -> dict | None:
    """The Monte Carlo runs: task metric and output error statistics, and the devices that dominate."""
    mc = result.monte_carlo
    if mc is None:
        return None
    top = top or result.flow.monte_carlo.top
    out = {"corner": mc.corner, "runs": mc.runs, "seed": mc.seed, "scale": mc.scale,
           "nominal_max_output_error": float(np.abs(mc.nominal_outputs
                                                    - result.ideal.outputs[:len(mc.nominal_outputs)]).max()),
           "output_error": _stats(mc.errors, low_is_bad=False),
           "change_vs_nominal": _stats(np.abs(mc.outputs - mc.nominal_outputs[None]).max(axis=(1, 2)), False),
           "energy_per_inference_j": float(mc.energy.mean()),
           "task_metric": None if mc.metrics is None else _stats(mc.metrics, result.task == "classification")}
    a = mc.attribution
    if a is not None:
        out["attribution"] = {
            "seconds": a.seconds, "correlation": a.correlation, "explained_variance": a.explained,
            "sigma_ratio_predicted_to_measured": a.sigma_ratio,
            "top_devices": [{"layer": d.layer, "index": d.index, "src": d.src, "dst": d.dst, "theta": list(d.theta),
                             "rms_output_deviation": d.rms, "share": d.share,
                             "sigma_theta": dict(zip(("theta0_s", "theta1_s", "theta0_d", "theta1_d"), d.sigma_theta))}
                            for d in a.devices[:top]],
            "devices": len(a.devices)}
    return out


def gate_seconds(result: FlowResult, g) -> float:
    """Wall seconds of the run a gate judges: its level (at its corner), or the Monte Carlo runs."""
    if g.gate.is_monte_carlo:
        return 0.0 if result.monte_carlo is None else float(result.monte_carlo.seconds)
    runs = [r for r in result.level(g.gate.level) if g.corner in ("-", r.corner)]
    return float(runs[0].seconds) if runs else 0.0


def write_junit(result: FlowResult, path: Path) -> None:
    """One test case per gate (classname = flow.level) with the ``time`` of the run it judges; failures carry
    the detail."""
    failures = sum(not g.passed for g in result.gates)
    times = [gate_seconds(result, g) for g in result.gates]
    suite = ET.Element("testsuite", name=f"kcompile.verify.{result.flow.name}", tests=str(len(result.gates)),
                       failures=str(failures), errors="0", time=f"{sum(times):.3f}")
    for g, seconds in zip(result.gates, times):
        name = g.gate.metric if g.corner == "-" else f"{g.gate.metric}[{g.corner}]"
        case = ET.SubElement(suite, "testcase", classname=f"{result.flow.name}.{g.gate.level}", name=name,
                             time=f"{seconds:.3f}")
        if not g.passed:
            ET.SubElement(case, "failure", message=g.detail, type="GateFailed").text = g.detail
        else:
            ET.SubElement(case, "system-out").text = g.detail
    root = ET.Element("testsuites")
    root.append(suite)
    with atomic_write(path, what="JUnit report") as f:
        ET.ElementTree(root).write(f, encoding="utf-8", xml_declaration=True)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


#: line style of each level in every plot (ideal solid; the others distinct dashes, markers in the legends)
LEVEL_STYLES = {"ideal": {"ls": "-", "lw": 2.2, "alpha": 0.45}, "behavioural": {"ls": "--", "lw": 1.2},
                "characterised": {"ls": ":", "lw": 1.6}, "transistor": {"ls": "-.", "lw": 1.2}}
LEVEL_MARKERS = {"ideal": "o", "behavioural": "s", "characterised": "^", "transistor": "D"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def integer_axis(axis) -> None:
    """Ticks at whole numbers only (counts, layer boundaries)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def physical_axes(ax, scaling: Scaling | None, voltage: bool = True) -> None:
    """Secondary axes in physical units: time in µs on top, node voltage in volts on the right
    (``V = vcm + v0·v``); nothing for model units that are already physical (identity scaling)."""
    if scaling is None or scaling.is_identity:
        return
    tau_us = scaling.tau * 1e6
    top = ax.secondary_xaxis("top", functions=(lambda t: t * tau_us, lambda u: u / tau_us))
    top.set_xlabel("t (µs)")
    if voltage:
        right = ax.secondary_yaxis("right", functions=(lambda v: scaling.vcm + scaling.v0 * v,
                                                       lambda u: (u - scaling.vcm) / scaling.v0))
        right.set_ylabel("V")


def waveform_panel(ax, result: FlowResult, b: int) -> None:
    """Sample ``b``'s output nodes at every level that has a trajectory: one colour per node, one line style
    per level (:data:`LEVEL_STYLES`), the layer boundaries, a legend."""
    knet, ideal = result.knet, result.ideal
    for j, node in enumerate(knet.output_nodes - 1):
        colour = f"C{j % 10}"
        ax.plot(ideal.grid, ideal.grid_states[b, :, node], color=colour, label=f"ideal n{node + 1}",
                **LEVEL_STYLES["ideal"])
        for r in overlaid(result):
            if b >= len(r.waveforms):  # a level that ran fewer samples, or kept fewer waveforms
                continue
            t, v = r.waveforms[b]
            ax.plot(t, v[:, node], color=colour, label=f"{r.level} n{node + 1}", **LEVEL_STYLES[r.level])
    for tb in knet.t_bounds:
        ax.axvline(tb, color="0.8", lw=0.8)
    ax.set_xlabel("t (model units)")
    ax.legend(fontsize=6, loc="best")


def _figures(result: FlowResult, samples: int = 3) -> dict[str, str]:
    """:func:`figures` as embedded PNG ``<img>`` tags."""
    return {name: _png(fig) for name, fig in figures(result, samples).items()}


def figures(result: FlowResult, samples: int = 3) -> dict:
    """The report's matplotlib figures by section: ``waveforms`` (the first ``samples`` samples), ``errors``,
    ``corners`` (more than one transistor-level run), ``montecarlo``."""
    plt = _pyplot()
    figs = {}
    n = min(samples, len(result.inputs))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6), squeeze=False)
    for b, ax in enumerate(axes[0]):
        waveform_panel(ax, result, b)
        ax.set_title(f"sample {b}" + ("" if result.labels is None else f" (label {result.labels[b]:g})"))
        physical_axes(ax, result.scaling)
    axes[0][0].set_ylabel("output node voltage (model units)")
    fig.tight_layout()
    figs["waveforms"] = fig

    others = [r for r in result.levels if r.level != "ideal"]
    if others:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
        for r in others[:12]:
            err = np.abs(r.states - result.ideal_states(r)).max(axis=(0, 2))
            a1.semilogy(range(len(err)), np.maximum(err, 1e-16), marker=LEVEL_MARKERS[r.level], label=_name(r),
                        **{k: v for k, v in LEVEL_STYLES[r.level].items() if k != "alpha"})
            a2.hist(np.log10(np.maximum(np.abs(r.outputs - result.ideal_outputs(r)).ravel(), 1e-16)), bins=20,
                    alpha=0.5,
                    label=_name(r))
        a1.set_xlabel("layer boundary k (t = t_k)")
        a1.set_ylabel("max |error| over nodes, samples")
        integer_axis(a1.xaxis)
        a2.set_xlabel("log10 |output error| (model units)")
        a2.set_ylabel("count")
        integer_axis(a2.yaxis)
        for ax in (a1, a2):
            ax.legend(fontsize=6)
        fig.tight_layout()
        figs["errors"] = fig
    corners = result.level("transistor")
    if len(corners) > 1:
        figs["corners"] = _corner_figure(result, corners)
    mc = result.monte_carlo
    if mc is not None:
        figs["montecarlo"] = _mc_figure(result, mc)
    return figs


def _name(r) -> str:
    return r.level if r.corner == "-" else f"{r.level} {r.corner}"


def _corner_figure(result: FlowResult, runs: list):
    """Every transistor-level run (corner, temperature, supply, recalibration): its largest output error
    against ideal and its largest change against the nominal run."""
    plt = _pyplot()
    ideal, nominal = result.ideal_outputs(runs[0]), runs[0].outputs
    labels = [r.corner for r in runs]
    err = [float(np.abs(r.outputs - ideal).max()) for r in runs]
    change = [float(np.abs(r.outputs - nominal).max()) for r in runs]
    y = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.28 * len(runs)))
    ax.barh(y - 0.2, err, height=0.4, label="max |output − ideal|", color="C0")
    ax.barh(y + 0.2, change, height=0.4, label="max |output − nominal run|", color="C1")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("model units")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 1.2 / (len(runs) + 3)), ncol=2)
    fig.tight_layout()
    return fig


def _mc_figure(result: FlowResult, mc):
    plt = _pyplot()
    panels = [("largest |output − ideal| per run (model units)", mc.errors)]
    if mc.metrics is not None:
        name = "accuracy (%)" if result.task == "classification" else "MSE"
        panels.insert(0, (f"{name} per run", mc.metrics))
    if mc.attribution is not None:
        panels.append(("predicted vs measured output deviation", None))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels):
        if values is None:
            a = mc.attribution
            ax.plot(a.measured.ravel(), a.predicted.ravel(), ".", ms=4, label="device sums, per run and output")
            lim = float(np.abs(np.r_[a.measured.ravel(), a.predicted.ravel()]).max()) or 1.0
            ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, label="predicted = measured")
            ax.set_xlabel("measured (transistor MC − nominal)")
            ax.set_ylabel("predicted (sensitivity × DC δθ)")
        else:
            ax.hist(values, bins=min(20, max(5, len(values))), color="C0", alpha=0.8, label=f"{mc.runs} runs")
            ax.set_xlabel(label)
            ax.set_ylabel("runs")
            integer_axis(ax.yaxis)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def overlaid(result: FlowResult) -> list:
    """Levels drawn over the ideal waveforms: every level with a trajectory, but of the transistor level only
    the nominal corner (the corner figure and table cover the others)."""
    transistor = result.level("transistor")
    return [r for r in result.levels if r.level != "ideal" and r.waveforms
            and (r.level != "transistor" or r is transistor[0])]


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(result: FlowResult, path: Path) -> None:
    """A single self-contained HTML page (plots embedded as PNG)."""
    s = summary(result)
    figs = _figures(result)
    verdict = '<span class="pass">PASS</span>' if result.passed else '<span class="fail">FAIL</span>'
    gate_rows = [[html.escape(g["name"] + ("" if g["corner"] == "-" else f" [{g['corner']}]")), f"{g['limit']:g}",
                  "—" if g["value"] is None else f"{g['value']:.4g}",
                  '<span class="pass">pass</span>' if g["passed"] else '<span class="fail">FAIL</span>',
                  html.escape(g["detail"])] for g in s["gates"]]
    metric_name = {"classification": "accuracy (%)", "regression": "MSE"}.get(result.task, "task metric")
    ideal_metric = result.levels[0].metric
    level_rows = []
    for lv in s["levels"]:
        m = lv["task_metric"]
        drop = ""
        if m is not None and ideal_metric is not None:
            drop = (f"{ideal_metric - m:+.2f} pts" if result.task == "classification"
                    else f"×{m / max(ideal_metric, 1e-300):.3f}")
        w = lv["worst_node"]
        level_rows.append([html.escape(lv["level"]), html.escape(lv["corner"]), f"{lv['max_output_error']:.3e}",
                           "—" if lv["level"] == "ideal" else
                           f"n{w['node']}, end of layer {max(w['boundary'] - 1, 0)}: {w['error']:.3e}",
                           "—" if lv["class_agreement"] is None else f"{lv['class_agreement']}/{s['samples']}",
                           "—" if m is None else f"{m:.4g}", drop, f"{lv['seconds']:.2f}"])
    mc = _mc_html(result, s, figs, metric_name)
    corners = _corners_html(result, s, metric_name, figs)
    samples = samples_html(result, s)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>kcompile verify: {html.escape(result.flow.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f3f3f3}}.pass{{color:#080;font-weight:bold}}.fail{{color:#c00;font-weight:bold}}
img{{max-width:100%}}</style></head><body>
<h1>kcompile verify: {html.escape(result.flow.name)} — {verdict}</h1>
<p>Model <code>{html.escape(str(result.flow.model))}</code>, {s['samples']} samples
({html.escape(result.inputs_source)}),
law <code>{html.escape(result.knet.law)}</code>, {result.knet.num_nodes} nodes, {result.knet.num_devices} devices,
{result.knet.num_layers} layers. kcompile {__version__}.</p>
<h2 id="conditions">Conditions</h2>{_conditions_html(s)}
<h2 id="gates">Gates</h2>{_table(gate_rows, ["gate", "limit", "value", "verdict", "detail"])}
<h2 id="levels">Levels and task metrics</h2>
{_table(level_rows, ["level", "corner", "max |output − ideal|", "worst node (all nodes)", "class agreement",
                     metric_name, "drop vs ideal", "seconds"])}
<p>Worst node: the node and layer end of the largest error over every node and sample; an internal node can
be far off while the outputs are close.</p>
<h2 id="waveforms">Waveforms (output nodes: one colour per node; ideal solid, behavioural dashed, characterised
dotted, transistor dash-dot)</h2>{figs['waveforms']}
<h2 id="errors">Error at each layer boundary, and output error histogram</h2>
{figs.get('errors', '<p>No simulated level.</p>')}
{samples}
<h2 id="montecarlo">Monte Carlo</h2>{mc}
<h2 id="corners">Corners, energy, latency and compute</h2>{corners}
</body></html>
"""
    with atomic_write(path, "w", what="HTML report") as f:
        f.write(page)


def _conditions_html(s: dict) -> str:
    """The physical conditions and the reference's settings as a short list."""
    c, r = s["conditions"], s["reference"]
    items = [html.escape(line) for line in conditions_lines(c)]
    step = f"rtol {r['rtol']:g}, atol {r['atol']:g}" if r["method"] == "dopri5" else f"dt {r['dt']:g}"
    items.append(html.escape(f"ideal reference: {r['method']}, {step}, {r['precision']} ({r['why']})"))
    if s["overrides"]:
        items.append("flow keys set on the command line: "
                     + html.escape(" ".join(f"--set {o}" for o in s["overrides"])))
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _fmt(value, spec: str = ".4g") -> str:
    return "—" if value is None else format(value, spec)


def _mc_html(result: FlowResult, s: dict, figs: dict, metric_name: str) -> str:
    m = s["monte_carlo"]
    if m is None:
        return "<p>No Monte Carlo mismatch runs in this flow (set monte_carlo.runs).</p>"
    rows = []
    if m["task_metric"] is not None:
        t = m["task_metric"]
        tail = ("5th percentile", t["p5"]) if result.task == "classification" else ("95th percentile", t["p95"])
        rows.append([metric_name, _fmt(t["mean"]), _fmt(t["worst"]), f"{tail[0]}: {_fmt(tail[1])}"])
    e = m["output_error"]
    rows.append(["largest |output − ideal|", _fmt(e["mean"]), _fmt(e["worst"]), f"95th percentile: {_fmt(e['p95'])}"])
    c = m["change_vs_nominal"]
    rows.append(["largest |output − nominal transistor|", _fmt(c["mean"]), _fmt(c["worst"]),
                 f"95th percentile: {_fmt(c['p95'])}"])
    text = (f"<p>{m['runs']} mismatch runs at {html.escape(m['corner'])} (seed {m['seed']}, σ × {m['scale']:g}; "
            f"Pelgrom coefficients of the PDK, see kcompile/pdk.py), calibrated at the nominal corner without "
            f"mismatch. Nominal transistor-level error {m['nominal_max_output_error']:.4g}.</p>"
            + _table(rows, ["quantity", "mean", "worst", "tail"]) + figs.get("montecarlo", ""))
    a = m.get("attribution")
    if a is None:
        return text + "<p>Device ranking not computed (monte_carlo.rank is false).</p>"
    dev_rows = [[f"layer{d['layer']}[{d['index']}]", f"{d['src']} → {d['dst']}",
                 html.escape(", ".join(f"{t:+.3g}" for t in d["theta"])), f"{d['rms_output_deviation']:.3g}",
                 f"{100 * d['share']:.1f} %",
                 html.escape(", ".join(f"{v:.2g}" for v in d["sigma_theta"].values()))] for d in a["top_devices"]]
    return text + (f"<h3>Devices whose mismatch dominates</h3><p>Each device's part of the output spread: the "
                   f"reference integrator's sensitivity of the outputs to its θ (sink and source side separately) "
                   f"times its θ deviation under the same draws, measured by a DC sweep of every mismatched cell. "
                   f"Check against the transistor-level runs: correlation {a['correlation']:.3f}, explained "
                   f"variance {a['explained_variance']:.3f}, predicted/measured RMS "
                   f"{a['sigma_ratio_predicted_to_measured']:.3f}"
                   f" ({a['seconds']:.1f} s).</p>"
                   + _table(dev_rows, ["device", "nodes", "θ", "RMS output deviation", "share of variance",
                                       "σ of δθ0_s, δθ1_s, δθ0_d, δθ1_d"]))


def _corners_html(result: FlowResult, s: dict, metric_name: str, figs: dict) -> str:
    if not s["corners"]:
        return "<p>No transistor-level runs in this flow, so no corners, energy or latency.</p>"
    drop_name = "drop vs nominal (pts)" if result.task == "classification" else "vs nominal (ratio)"
    rows = [[html.escape(c["label"]), f"{c['temperature_c']:g} °C", si(c["supply_v"], "V"),
             html.escape(c["calibrated_at"]), f"{c['max_output_error']:.3e}",
             f"{c['max_change_vs_nominal']:.3e}", _fmt(c["task_metric"]), _fmt(c["degradation_vs_nominal"], "+.3g"),
             si(c["energy_per_inference_j"], "J"), si(c["latency_s"], "s"), si(c["power_w"], "W")]
            for c in s["corners"]]
    text = _table(rows, ["run", "temperature", "supply", "calibrated at", "max |output − ideal|",
                         "max |output − nominal|", metric_name, drop_name, "energy / inference", "latency t_L·τ",
                         "mean power"]) + figs.get("corners", "")
    text += ("<p>Calibrated at the first corner unless the row says otherwise; the others show the degradation "
             "against the nominal run (first row).</p>")
    t = s["timing"]
    comp = t.get("compute", {})
    rows = []
    nominal = s["corners"][0]
    rows.append(["analog circuit, per inference (transistor level, nominal)", f"{nominal['latency_s']:.3g} (t_L·τ)",
                 "—", si(nominal["energy_per_inference_j"], "J")])
    for key in ("reference", "torch"):
        c = comp.get(key)
        if c is None:
            continue
        rows.append([html.escape(c["label"]) + ", per inference", _fmt(c.get("wall_s_per_inference"), ".3g"),
                     _fmt(c.get("cpu_s_per_inference"), ".3g"), "—"])
    if "transistor_stage" in t:
        ts = t["transistor_stage"]
        rows.append(["this flow's characterised and transistor stage, total (ngspice, all runs)", f"{ts['wall_s']:.3g}",
                     f"{ts['cpu_s']:.3g}", "—"])
    return text + "<h3>Energy and latency against software</h3>" + _table(
        rows, ["what", "wall (s)", "CPU (s)", "energy / inference"]) + (
        f"<p>Software timings on this machine, batch of {comp.get('samples', len(result.inputs))}, best of 3.</p>")


# ---- generative flows: each level's samples against the ideal ones of the same latents --------------------------

#: image grids show this many latents at most
IMAGE_SAMPLES = 8
#: 2-D scatter plots draw every sample up to this many (beyond: the density only)
SCATTER_POINTS = 3000


def _sample_runs(result: FlowResult) -> list:
    return [r for r in result.levels if r.samples is not None]


def _image_side(width: int) -> int | None:
    """The side of a square image of ``width`` pixels (at least 4 x 4), else ``None``."""
    side = int(round(np.sqrt(width)))
    return side if side >= 4 and side * side == width else None


def sample_scatter(result: FlowResult) -> str:
    """2-D samples: per level, the ideal samples, the level's (same latents) and the difference of their
    densities, on one grid (about √n/1.5 bins a side)."""
    plt = _pyplot()
    runs = _sample_runs(result)
    fig, axes = plt.subplots(len(runs), 3, figsize=(12.6, 3.9 * len(runs)), squeeze=False)
    for row, r in zip(axes, runs):
        x, y = result.ideal_outputs(r), r.outputs
        bins = int(np.clip(np.sqrt(len(x)) / 1.5, 8, 60))
        both = np.vstack([x, y])
        lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
        pad = 0.05 * (hi - lo + 1e-12)
        edges = [np.linspace(lo[d] - pad[d], hi[d] + pad[d], bins + 1) for d in range(2)]
        hx = np.histogram2d(x[:, 0], x[:, 1], edges, density=True)[0]
        hy = np.histogram2d(y[:, 0], y[:, 1], edges, density=True)[0]
        extent = [edges[0][0], edges[0][-1], edges[1][0], edges[1][-1]]
        top = max(hx.max(), hy.max()) or 1.0
        for ax, h, pts, title in ((row[0], hx, x, f"ideal ({len(x)} latents)"),
                                  (row[1], hy, y, f"{r.level} {'' if r.corner == '-' else r.corner}")):
            ax.imshow(h.T, origin="lower", extent=extent, aspect="auto", cmap="Blues", vmin=0, vmax=top)
            ax.plot(pts[:SCATTER_POINTS, 0], pts[:SCATTER_POINTS, 1], ".", ms=3 if len(pts) < 500 else 1.5,
                    color="C1", alpha=0.6)
            ax.set_title(title)
            ax.set_xlabel("output 1 (model units)")
        row[0].set_ylabel("output 2 (model units)")
        diff = hy - hx
        m = float(np.abs(diff).max()) or 1.0
        im = row[2].imshow(diff.T, origin="lower", extent=extent, aspect="auto", cmap="RdBu_r", vmin=-m, vmax=m)
        row[2].set_title(f"density, level − ideal (MMD ratio {r.samples.mmd_ratio:.2f})")
        fig.colorbar(im, ax=row[2], fraction=0.046)
    fig.tight_layout()
    return _png(fig)


def sample_images(result: FlowResult, side: int) -> str:
    """Image samples: the ideal images of the first latents, then per level its images of the same latents and
    the difference (level − ideal)."""
    plt = _pyplot()
    runs = _sample_runs(result)
    k = min(IMAGE_SAMPLES, *(len(r.outputs) for r in runs))
    ideal = result.ideal.outputs[:k]
    lo, hi = float(ideal.min()), float(ideal.max())
    rows = [("ideal", ideal, "gray", lo, hi)]
    for r in runs:
        name = f"{r.level}{'' if r.corner == '-' else ' ' + r.corner}"
        d = r.outputs[:k] - ideal
        m = float(np.abs(d).max()) or 1.0
        rows += [(name, r.outputs[:k], "gray", lo, hi), (f"{name} − ideal (±{m:.2g})", d, "RdBu_r", -m, m)]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.45 * k, 1.6 * len(rows)), squeeze=False)
    for (label, images, cmap, vmin, vmax), row in zip(rows, axes):
        for j, ax in enumerate(row):
            ax.imshow(images[j].reshape(side, side), cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"first {k} latents; pixel range {lo:.3g} to {hi:.3g} (model units)", fontsize=9)
    return _png(fig)


def sample_marginals(result: FlowResult, dims: int = 4) -> str:
    """Samples of any other width: histograms of the first ``dims`` outputs, ideal and each level."""
    plt = _pyplot()
    runs = _sample_runs(result)
    dims = min(dims, result.ideal.outputs.shape[1])
    fig, axes = plt.subplots(1, dims, figsize=(3.6 * dims, 3.0), squeeze=False)
    for d, ax in enumerate(axes[0]):
        ax.hist(result.ideal.outputs[:, d], bins=30, alpha=0.5, density=True, label="ideal")
        for r in runs:
            ax.hist(r.outputs[:, d], bins=30, histtype="step", density=True, label=f"{r.level} {r.corner}")
        ax.set_xlabel(f"output {d + 1}")
    axes[0][-1].legend(fontsize=7)
    return _png(fig)


def displacement_histograms(result: FlowResult) -> str:
    """Per level, how far each sample moved from the ideal one of the same latent (log10, model units)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for r in _sample_runs(result):
        disp = np.linalg.norm(r.outputs - result.ideal_outputs(r), axis=1)
        ax.hist(np.log10(np.maximum(disp, 1e-16)), bins=30, alpha=0.6,
                label=f"{r.level} {'' if r.corner == '-' else r.corner} (max {disp.max():.2g})")
    ax.set_xlabel("log10 |level sample − ideal sample| (same latent, model units)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=7)
    return _png(fig)


def samples_html(result: FlowResult, s: dict) -> str:
    """The section of a generative flow: distribution metrics per level, sample plots, displacements."""
    runs = _sample_runs(result)
    if not runs:
        return ""
    g = s["generative"]
    rows = []
    for lv in s["levels"]:
        d = lv["distribution"]
        if d is None:
            continue
        rows.append([html.escape(lv["level"]), html.escape(lv["corner"]), str(d["n"]), f"{d['mmd2']:.3g}",
                     f"{d['floor_mmd2']:.3g}", f"{d['sample_mmd_ratio']:.3g}", f"{d['energy']:.3g}",
                     f"{d['floor_energy']:.3g}", f"{d['sample_energy_ratio']:.3g}", f"{d['displacement_mean']:.3g}",
                     f"{d['displacement_p95']:.3g}", f"{d['max_displacement']:.3g}"])
    width = result.ideal.outputs.shape[1]
    side = _image_side(width)
    plot = (sample_scatter(result) if width == 2 else sample_images(result, side) if side
            else sample_marginals(result))
    pool = s["timing"].get("samples", {}).get("pool_samples", "?")
    return (f'<h2 id="samples">Samples of the generative model</h2><p>{g["latents"]} standard-normal latents '
            f'(seed {g["seed"]}); a level runs the first n of them. Each level\'s samples are compared with the '
            f'ideal model\'s samples of the same latents: unbiased MMD² (RBF kernel, median-heuristic bandwidth) '
            f'and energy distance, each divided by its noise floor (95th percentile of the same distance between '
            f'two independent ideal draws of n, from a pool of {pool} ideal samples of other latents; a ratio '
            f'≤ 1 means indistinguishable at this n), and the displacement |level − ideal| per latent.</p>'
            + _table(rows, ["level", "corner", "n", "MMD²", "floor", "MMD ratio", "energy", "floor", "energy ratio",
                            "displacement mean", "p95", "max"])
            + plot + "<h3>Displacement per latent</h3>" + displacement_histograms(result))
