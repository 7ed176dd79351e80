"""Flow keys a user can combine wrongly (outside-in QA, session 10): one line, exit 2, with the fix.

Before: ``batch: 8`` beside ``inputs: {file: X.npy, labels: Y.npy}`` was ignored without a word (a flow over
40 MNIST images ran all 40 behavioural decks, 4.8 min, instead of 8), and docs/verification.md's second
command stopped on its own Monte Carlo gate without saying how to drop it.
"""

from __future__ import annotations

import numpy as np
import pytest

from kcompile.errors import InputError
from kcompile.flow import load_flow
from tests.test_cli import _cli, _one_line_error


def _files(tmp_path, rows=5):
    np.save(tmp_path / "x.npy", np.zeros((rows, 3)))
    np.save(tmp_path / "y.npy", np.zeros(rows, np.int64))


@pytest.mark.parametrize("inputs", ["{file: x.npy, labels: y.npy}", "x.npy", "{normal: 4, seed: 1}"])
def test_batch_beside_inputs_that_run_whole_is_refused(tmp_path, small_weights, inputs):
    _files(tmp_path)
    flow = tmp_path / "f.yaml"
    flow.write_text(f"model: {small_weights}\ninputs: {inputs}\nbatch: 2\nlevels: [behavioural]\n")
    line = _one_line_error(_cli("verify", flow))
    assert "'batch' applies to recorded and random inputs" in line and "leave batch out" in line
    # --set batch=... is refused the same way, naming the override
    flow.write_text(f"model: {small_weights}\ninputs: {inputs}\nlevels: [behavioural]\n")
    assert "with --set batch=2: 'batch' applies" in _one_line_error(_cli("verify", flow, "--set", "batch=2"))


def test_batch_still_counts_recorded_and_random_inputs(tmp_path, small_weights):
    for inputs in ("recorded", "random"):
        flow = tmp_path / "f.yaml"
        flow.write_text(f"model: {small_weights}\ninputs: {inputs}\nbatch: 2\nlevels: [behavioural]\n")
        assert load_flow(flow).batch == 2


def test_a_monte_carlo_gate_without_runs_says_how_to_drop_it(tmp_path, small_weights):
    flow = tmp_path / "f.yaml"
    flow.write_text(f"model: {small_weights}\nlevels: [transistor]\npdk: generic180\nmonte_carlo: {{runs: 0}}\n"
                    "gates:\n  - {level: transistor, metric: mc_p95_output_error, limit: 1}\n")
    with pytest.raises(InputError, match=r"set monte_carlo.runs to 2 or more, or leave the gate out"):
        load_flow(flow)


@pytest.mark.parametrize("inputs,message", [
    ("{file: 3}", "'inputs.file' must be a str, got 3"),
    ("{file: x.npy, labels: 5}", "'inputs.labels' must be a str, got 5"),
    ("{labels: y.npy}", "'inputs.file' is missing: labels go with the inputs file"),
    ("{files: x.npy}", "'inputs' must be recorded, random, an .npy path, {file: X.npy, labels: Y.npy} or {normal"),
])
def test_inputs_mapping_errors_name_the_dotted_key(tmp_path, small_weights, inputs, message):
    flow = tmp_path / "f.yaml"
    flow.write_text(f"model: {small_weights}\ninputs: {inputs}\nlevels: [behavioural]\n")
    assert message in _one_line_error(_cli("verify", flow))
