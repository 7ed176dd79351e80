"""Reports of a flow run: a JSON summary, JUnit XML and one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import __version__
from .files import atomic_write
from .verify import FlowResult


def summary(result: FlowResult) -> dict:
    """Plain data: verdict, gates, per-level errors and task metrics, corners, Monte Carlo, compute."""
    ideal = result.ideal.outputs
    return {
        "flow": result.flow.name,
        "passed": result.passed,
        "kcompile_version": __version__,
        "model": str(result.flow.model),
        "inputs": result.inputs_source,
        "samples": int(len(result.inputs)),
        "task": result.task,
        "levels": [
            {"level": r.level, "corner": r.corner, "seconds": r.seconds, "task_metric": r.metric,
             "max_output_error": float(np.abs(r.outputs - ideal).max()),
             "energy_per_inference_j": None if r.energy is None else float(np.mean(r.energy)),
             "latency_s": r.latency,
             "boundary_error": np.abs(r.states - result.ideal.states).max(axis=(0, 2)).tolist()}
            for r in result.levels
        ],
        "corners": corner_table(result),
        "monte_carlo": monte_carlo_summary(result),
        "timing": result.timing,
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
    ideal = result.ideal.outputs
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
                     "latency_s": r.latency, "seconds": r.seconds})
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
           "nominal_max_output_error": float(np.abs(mc.nominal_outputs - result.ideal.outputs).max()),
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


def write_junit(result: FlowResult, path: Path) -> None:
    """One test case per gate (classname = flow.level), failures carry the detail."""
    failures = sum(not g.passed for g in result.gates)
    suite = ET.Element("testsuite", name=f"kcompile.verify.{result.flow.name}", tests=str(len(result.gates)),
                       failures=str(failures), errors="0")
    for g in result.gates:
        name = g.gate.metric if g.corner == "-" else f"{g.gate.metric}[{g.corner}]"
        case = ET.SubElement(suite, "testcase", classname=f"{result.flow.name}.{g.gate.level}", name=name)
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


def _figures(result: FlowResult, samples: int = 3) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knet, ideal = result.knet, result.ideal
    figs = {}
    outs = knet.output_nodes - 1
    n = min(samples, len(result.inputs))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for b, ax in enumerate(axes[0]):
        for j, node in enumerate(outs):
            line, = ax.plot(ideal.grid, ideal.grid_states[b, :, node], lw=2, alpha=0.5, label=f"ideal n{node + 1}")
            for r in _overlaid(result):
                if r.waveforms:
                    t, v = r.waveforms[b]
                    ax.plot(t, v[:, node], "--", color=line.get_color(), lw=1, label=f"{r.level} n{node + 1}")
        for tb in knet.t_bounds:
            ax.axvline(tb, color="0.8", lw=0.8)
        ax.set_title(f"sample {b}")
        ax.set_xlabel("t (model units)")
    axes[0][0].set_ylabel("output node voltage (model units)")
    axes[0][-1].legend(fontsize=7, loc="best")
    figs["waveforms"] = _png(fig)

    others = _overlaid(result)
    if others:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
        for r in others:
            err = np.abs(r.states - ideal.states).max(axis=(0, 2))
            a1.semilogy(range(len(err)), np.maximum(err, 1e-16), "o-", label=f"{r.level} {r.corner}")
            a2.hist(np.log10(np.maximum(np.abs(r.outputs - ideal.outputs).ravel(), 1e-16)), bins=20, alpha=0.6,
                    label=f"{r.level} {r.corner}")
        a1.set_xlabel("layer boundary k")
        a1.set_ylabel("max |error| over nodes, samples")
        a1.legend(fontsize=7)
        a2.set_xlabel("log10 |output error| (model units)")
        a2.set_ylabel("count")
        a2.legend(fontsize=7)
        figs["errors"] = _png(fig)
    mc = result.monte_carlo
    if mc is not None:
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
                ax.plot(a.measured.ravel(), a.predicted.ravel(), ".", ms=4)
                lim = float(np.abs(np.r_[a.measured.ravel(), a.predicted.ravel()]).max()) or 1.0
                ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8)
                ax.set_xlabel("measured (transistor MC − nominal)")
                ax.set_ylabel("predicted (sensitivity × DC δθ)")
            else:
                ax.hist(values, bins=min(20, max(5, len(values))), color="C0", alpha=0.8)
                ax.set_xlabel(label)
                ax.set_ylabel("runs")
        fig.tight_layout()
        figs["montecarlo"] = _png(fig)
    return figs


def _overlaid(result: FlowResult) -> list:
    """Simulated levels drawn in the waveform and error plots: every level, but of the transistor level only
    the nominal corner (the corner table covers the others)."""
    transistor = result.level("transistor")
    return [r for r in result.levels if r.level != "ideal" and (r.level != "transistor" or r is transistor[0])]


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(result: FlowResult, path: Path) -> None:
    """A single self-contained HTML page (plots embedded as PNG)."""
    s = summary(result)
    figs = _figures(result)
    verdict = '<span class="pass">PASS</span>' if result.passed else '<span class="fail">FAIL</span>'
    gate_rows = [[html.escape(g["name"] + ("" if g["corner"] == "-" else f" [{g['corner']}]")), f"{g['limit']:g}", "—" if g["value"] is None else f"{g['value']:.4g}",
                  '<span class="pass">pass</span>' if g["passed"] else '<span class="fail">FAIL</span>',
                  html.escape(g["detail"])] for g in s["gates"]]
    metric_name = {"classification": "accuracy (%)", "regression": "MSE"}.get(result.task, "task metric")
    ideal_metric = result.levels[0].metric
    level_rows = []
    for lv in s["levels"]:
        m = lv["task_metric"]
        drop = ""
        if m is not None and ideal_metric is not None:
            drop = f"{ideal_metric - m:+.2f} pts" if result.task == "classification" else f"×{m / max(ideal_metric, 1e-300):.3f}"
        level_rows.append([lv["level"], lv["corner"], f"{lv['max_output_error']:.3e}",
                           "—" if m is None else f"{m:.4g}", drop, f"{lv['seconds']:.2f}"])
    mc = _mc_html(result, s, figs, metric_name)
    corners = _corners_html(result, s, metric_name)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>kcompile verify: {html.escape(result.flow.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f3f3f3}}.pass{{color:#080;font-weight:bold}}.fail{{color:#c00;font-weight:bold}}
img{{max-width:100%}}</style></head><body>
<h1>kcompile verify: {html.escape(result.flow.name)} — {verdict}</h1>
<p>Model <code>{html.escape(str(result.flow.model))}</code>, {s['samples']} samples ({html.escape(result.inputs_source)}),
law <code>{html.escape(result.knet.law)}</code>, {result.knet.num_nodes} nodes, {result.knet.num_devices} devices,
{result.knet.num_layers} layers. kcompile {__version__}.</p>
<h2 id="gates">Gates</h2>{_table(gate_rows, ["gate", "limit", "value", "verdict", "detail"])}
<h2 id="levels">Levels and task metrics</h2>
{_table(level_rows, ["level", "corner", "max |output − ideal|", metric_name, "drop vs ideal", "seconds"])}
<h2 id="waveforms">Waveforms (output nodes; solid: ideal, dashed: simulated)</h2>{figs['waveforms']}
<h2 id="errors">Error at each layer boundary, and output error histogram</h2>{figs.get('errors', '<p>No simulated level.</p>')}
<h2 id="montecarlo">Monte Carlo</h2>{mc}
<h2 id="corners">Corners, energy, latency and compute</h2>{corners}
</body></html>
"""
    with atomic_write(path, "w", what="HTML report") as f:
        f.write(page)


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


def _corners_html(result: FlowResult, s: dict, metric_name: str) -> str:
    if not s["corners"]:
        return "<p>No transistor-level runs in this flow, so no corners, energy or latency.</p>"
    drop_name = "drop vs nominal (pts)" if result.task == "classification" else "vs nominal (ratio)"
    rows = [[html.escape(c["label"]), html.escape(c["calibrated_at"]), f"{c['max_output_error']:.3e}",
             f"{c['max_change_vs_nominal']:.3e}", _fmt(c["task_metric"]), _fmt(c["degradation_vs_nominal"], "+.3g"),
             _fmt(c["energy_per_inference_j"], ".3g"), _fmt(c["latency_s"], ".3g")] for c in s["corners"]]
    text = _table(rows, ["corner, temperature, supply", "calibrated at", "max |output − ideal|",
                         "max |output − nominal|", metric_name, drop_name, "energy / inference (J)",
                         "latency t_L·τ (s)"])
    text += ("<p>Calibrated at the first corner unless the row says otherwise; the others show the degradation "
             "against the nominal run (first row).</p>")
    t = s["timing"]
    comp = t.get("compute", {})
    rows = []
    nominal = s["corners"][0]
    rows.append(["analog circuit, per inference (transistor level, nominal)", f"{nominal['latency_s']:.3g} (t_L·τ)",
                 "—", _fmt(nominal["energy_per_inference_j"], ".3g") + " J"])
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
