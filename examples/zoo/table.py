"""Print the Table I-style comparison of docs/training.md from the zoo's JSON files.

Usage: python examples/zoo/table.py   (after bash examples/zoo/make_zoo.sh)
"""

from __future__ import annotations

import json
from pathlib import Path

ZOO = Path(__file__).resolve().parent


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(x: float, key: str) -> str:
    return f"{x:.4f}" if key == "accuracy" else f"{x:.3e}"


def rows():
    out = ["| task | size | model | params | metric | train (RK4) | test (RK4) | test (dopri5) | "
           "max abs / rel RK4−dopri5 | train s | file |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, key, sizes in (("friedman", "mse", ("small", "medium", "large")),
                             ("diabetes", "mse", ("small", "medium", "large")),
                             ("housing", "mse", ("small", "medium", "large")),
                             ("moons", "accuracy", ("small",)), ("moons-hw", "accuracy", ("small",)),
                             ("circles", "accuracy", ("small",)),
                             ("digits", "accuracy", ("small",))):
        for size in sizes:
            names = [f"{task}-{size}.json", f"{task}.json"] if size == "small" else [f"{task}-{size}.json"]
            kn = next((d for n in names if (d := _load(ZOO / n))), None)
            mlp = _load(ZOO / "baselines" / f"mlp-{task}-{size}.json")
            if kn:
                m = kn["metrics"]
                rel = m.get("max_rel_output_diff_rk4_vs_dopri5")
                out.append(
                    f"| {task} | {size} | KirchhoffNet ({kn['model']['law']}, {kn['model']['num_nodes']} nodes) | "
                    f"{kn['model']['num_params']} | {key} | {_fmt(m['rk4']['train'][key], key)} | "
                    f"{_fmt(m['rk4']['test'][key], key)} | {_fmt(m['dopri5']['test'][key], key)} | "
                    f"{m['max_abs_output_diff_rk4_vs_dopri5']:.1e} / {'—' if rel is None else f'{rel:.1e}'} | "
                    f"{kn['training']['seconds']:.0f} | `{kn['provenance'].get('command', '')}` |")
            if mlp:
                m = mlp["metrics"]
                out.append(
                    f"| {task} | {size} | MLP (2×{mlp['model']['width']} ReLU) | {mlp['model']['num_params']} | "
                    f"{key} | {_fmt(m['train'][key], key)} | {_fmt(m['test'][key], key)} | — | — | "
                    f"{mlp['training']['seconds']:.0f} | `{mlp['provenance'].get('command', '')}` |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
