"""Range analysis: every node's voltage range over whole ideal trajectories on calibration inputs.

The transistor cells work inside a window of terminal voltages
(:meth:`kcompile.cells.base.Cell.window`); automatic scaling
(:mod:`kcompile.scaling`) fits the network into it. What it fits is measured
here: the ideal network (:func:`kcompile.reference.integrate`) on a batch of
calibration inputs, its states on a dense time grid (:data:`POINTS_PER_LAYER`
points a layer, every layer boundary included), each node's smallest and
largest voltage over all samples and times. A node's peak can lie inside a
layer window, not only at its boundaries: the paper's generative checkpoints
swing to ±30 units mid-layer and end within ±4.

Calibration inputs, in this order: a file given by the user (``--calibration
X.npy``), the test inputs recorded with the model (``test_inputs``), else a
seeded batch: standard-normal latents for a generative model (``meta.generative``:
what ``simulate --latent`` and a flow's ``inputs: {normal: N}`` feed it; on
the paper's circle checkpoint a uniform batch in [-1, 1] found a swing of ±20
units, 64 latents ±28.6), uniform in [-1, 1] for any other; :func:`calibration_inputs` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .generation import is_generative, latent_batch
from .inputs import load_inputs, random_inputs
from .knet import KNet
from .laws import LAWS
from .reference import integrate

#: grid points per layer window of the range analysis (the layer boundaries are on the grid)
POINTS_PER_LAYER = 100
#: calibration samples taken from recorded test inputs or a calibration file
CALIBRATION_BATCH = 64
#: seed of the random calibration batch
CALIBRATION_SEED = 0
#: devices evaluated at once for the largest device current
CURRENT_CHUNK = 2048


@dataclass(frozen=True, eq=False)
class Ranges:
    """Per-node voltage ranges of the ideal network (model units) and where they were measured.

    Attributes
    ----------
    lo, hi : ndarray, shape (N,)
        Smallest and largest voltage of each node over every sample and grid time.
    samples : int
        Calibration samples integrated.
    current : float
        The largest ``|g|`` of any device while its layer is on (model units).
    source : str
        Where the calibration inputs came from (for messages and the manifest).
    """

    lo: np.ndarray
    hi: np.ndarray
    samples: int
    source: str
    current: float = 0.0

    @property
    def peak(self) -> float:
        """The largest ``|v|`` of any node (the network's swing; 0 for a network without nodes)."""
        return float(max(np.abs(self.lo).max(initial=0.0), np.abs(self.hi).max(initial=0.0)))

    @property
    def low(self) -> float:
        """The lowest voltage of any node (≤ 0: ground and the start state are 0)."""
        return float(min(self.lo.min(initial=0.0), 0.0))

    @property
    def high(self) -> float:
        """The highest voltage of any node (≥ 0)."""
        return float(max(self.hi.max(initial=0.0), 0.0))

    def record(self) -> dict:
        """What the manifest records: the extremes, the peak, the largest device current, the samples and
        their source."""
        return {"low": self.low, "high": self.high, "peak": self.peak, "current": self.current,
                "samples": self.samples, "source": self.source}


def calibration_inputs(knet: KNet, recorded: np.ndarray | None = None, path: str | Path | None = None,
                       batch: int = CALIBRATION_BATCH, seed: int = CALIBRATION_SEED) -> tuple[np.ndarray, str]:
    """The calibration batch ``[B, F]`` and a phrase saying where it came from.

    ``path`` (an ``.npy`` batch, all of its rows) wins; then the first ``batch`` rows of
    ``recorded``; then ``batch`` seeded rows: standard-normal latents for a generative model
    (:func:`kcompile.generation.latent_batch`, the rows ``simulate --latent`` draws with the same seed), else
    uniform in [-1, 1].
    """
    if path is not None:
        x = load_inputs(path, knet)
        return x, f"{len(x)} calibration inputs from {path}"
    if recorded is not None and len(recorded):
        x = np.asarray(recorded[:batch], dtype=float)
        return x, f"the {len(x)} first test inputs recorded with the model"
    if is_generative(knet):
        return latent_batch(knet, batch, seed), f"{batch} standard-normal latents (seed {seed}; a generative model)"
    return random_inputs(knet, batch, seed), f"a random batch of {batch} (uniform in [-1, 1], seed {seed})"


#: dopri5 tolerances of the range analysis: ranges feed a scaling with a 10 % margin (:data:`kcompile.mapping.FILL`),
#: so 1e-6 of relative error is far below what matters; at 1e-9 the range analysis of mnist14-hw's 1,000 test
#: images took as long as the flow's ideal reference (15 min at load 3-4)
RANGE_RTOL, RANGE_ATOL = 1e-6, 1e-8


def time_grid(knet: KNet, points_per_layer: int = POINTS_PER_LAYER) -> np.ndarray:
    """``points_per_layer`` points in every layer window, each boundary once."""
    parts = [np.linspace(layer.t_start, layer.t_stop, points_per_layer + 1)[:-1] for layer in knet.layers]
    return np.concatenate(parts + [knet.t_bounds[-1:]])


def node_ranges(knet: KNet, x: np.ndarray, source: str = "", points_per_layer: int = POINTS_PER_LAYER) -> Ranges:
    """Integrate ``knet`` on ``x`` and record each node's range, and the largest device current, over the dense
    grid (:func:`time_grid`)."""
    grid = time_grid(knet, points_per_layer)
    traj = integrate(knet, x, grid=grid, rtol=RANGE_RTOL, atol=RANGE_ATOL)
    states = traj.grid_states.reshape(-1, knet.num_nodes)
    law, current = LAWS[knet.law], 0.0
    for layer in knet.layers:
        on = traj.grid_states[:, (grid >= layer.t_start) & (grid <= layer.t_stop)].reshape(-1, knet.num_nodes)
        v = np.concatenate([np.zeros((len(on), 1)), on], axis=1)
        for start in range(0, layer.num_devices, CURRENT_CHUNK):
            part = slice(start, start + CURRENT_CHUNK)
            g = law.current(v[:, layer.src[part]], v[:, layer.dst[part]], layer.theta[part])
            current = max(current, float(np.abs(g).max(initial=0.0)))
    return Ranges(states.min(axis=0), states.max(axis=0), int(len(x)), source, current)
