"""Compare two sets of node voltages at the layer boundaries and give a verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Comparison:
    """Errors of ``candidate`` against ``reference`` (model units).

    ``output_error[b, m]`` is the absolute error of output ``m`` for sample ``b``;
    ``boundary_error[k]`` the largest absolute error over all nodes and
    samples at ``t_bounds[k]``.
    """

    reference_name: str
    candidate_name: str
    output_error: np.ndarray  # [B, M]
    boundary_error: np.ndarray  # [L+1]

    @property
    def max_output_error(self) -> float:
        return float(self.output_error.max()) if self.output_error.size else 0.0

    @property
    def worst_sample(self) -> int:
        return int(np.unravel_index(np.argmax(self.output_error), self.output_error.shape)[0])

    def passes(self, max_error: float) -> bool:
        return self.max_output_error <= max_error


def compare(reference_states: np.ndarray, candidate_states: np.ndarray, output_nodes: np.ndarray,
            reference_name: str = "reference", candidate_name: str = "spice") -> Comparison:
    """Compare ``[B, L+1, N]`` state arrays; outputs are read at the last boundary."""
    if reference_states.shape != candidate_states.shape:
        raise ValueError(f"state shapes differ: {reference_states.shape} vs {candidate_states.shape}")
    diff = np.abs(candidate_states - reference_states)
    return Comparison(reference_name, candidate_name, diff[:, -1, np.asarray(output_nodes) - 1],
                      diff.max(axis=(0, 2)))
