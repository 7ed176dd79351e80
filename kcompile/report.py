"""Reports of a flow run: a JSON summary, JUnit XML and one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import __version__
from .verify import FlowResult


def summary(result: FlowResult) -> dict:
    """Plain data: verdict, gates, per-level errors and task metrics."""
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
        "gates": [
            {"name": g.gate.name, "level": g.gate.level, "corner": g.corner, "metric": g.gate.metric,
             "limit": g.gate.limit, "value": g.value, "passed": g.passed, "detail": g.detail}
            for g in result.gates
        ],
    }


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
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


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
            for r in result.levels:
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

    others = [r for r in result.levels if r.level != "ideal"]
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
    return figs


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
    mc = "<p>No Monte Carlo mismatch runs in this flow (set monte_carlo.runs).</p>"
    transistor = [lv for lv in s["levels"] if lv["level"] == "transistor"]
    if transistor:
        rows = [[html.escape(lv["corner"]), f"{lv['max_output_error']:.3e}",
                 "—" if lv["task_metric"] is None else f"{lv['task_metric']:.4g}",
                 "—" if lv["energy_per_inference_j"] is None else f"{lv['energy_per_inference_j']:.3g}",
                 "—" if lv["latency_s"] is None else f"{lv['latency_s']:.3g}"] for lv in transistor]
        corners = _table(rows, ["corner, temperature", "max |output − ideal|", metric_name,
                                "energy / inference (J)", "latency t_L·τ (s)"])
        ideal_s = result.levels[0].seconds / max(len(result.inputs), 1)
        corners += (f"<p>Calibrated at the first corner; the others show the degradation. For comparison, the "
                    f"NumPy reference integrator took {ideal_s:.3g} s per sample on this machine (wall time, "
                    f"batch of {len(result.inputs)}).</p>")
    else:
        corners = "<p>No transistor-level runs in this flow, so no corners, energy or latency.</p>"
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
<h2 id="corners">Corners, energy and latency</h2>{corners}
</body></html>
"""
    Path(path).write_text(page)
