"""Input batches: read ``.npy`` files safely and check them against a network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .knet import KNet


def check_inputs(x: np.ndarray, knet: KNet, source: str) -> np.ndarray:
    """Return ``x`` as float64 ``[B, F]``; a 1-D array is one sample."""
    if x.dtype.kind not in "fiu":
        raise InputError(f"{source}: inputs must be numeric, got dtype {x.dtype}")
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{source}: inputs must have shape [batch, {knet.num_features}], got {x.shape}")
    if x.shape[1] != knet.num_features:
        raise InputError(f"{source}: inputs have {x.shape[1]} columns but the network takes "
                         f"{knet.num_features} features (one per input_index)")
    if not np.all(np.isfinite(x)):
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InputError(f"{source}: row {row} contains NaN or inf")
    return x


def _load_npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(x, np.ndarray):
        raise InputError(f"{path}: expected a single .npy array, got an archive")
    return x


def load_inputs(path: str | Path, knet: KNet) -> np.ndarray:
    """Read an ``.npy`` batch (never with pickle) and check it against ``knet``."""
    return check_inputs(_load_npy(Path(path)), knet, str(path))


def load_labels(path: str | Path, rows: int) -> np.ndarray:
    """Read ``.npy`` labels (never with pickle): one per input row, integer class ids or finite numbers."""
    y = _load_npy(Path(path))
    if y.ndim != 1 or y.shape[0] != rows:
        raise InputError(f"{path}: labels must have shape [{rows}] (one per input row), got {y.shape}")
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind != "f" or not np.all(np.isfinite(y)):
        raise InputError(f"{path}: labels must be integer class ids or finite numbers, got dtype {y.dtype}")
    return y.astype(np.float64)


def random_inputs(knet: KNet, batch: int = 8, seed: int = 0) -> np.ndarray:
    """A seeded batch, uniform in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (batch, knet.num_features))
