"""Input batches: read ``.npy`` files safely and check them against a network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checks import COUNT, SEED, short
from .errors import InputError
from .knet import KNet


def check_inputs(x: np.ndarray, knet: KNet, source: str) -> np.ndarray:
    """Return ``x`` as float64 ``[B, F]``; a 1-D array is one sample."""
    if x.dtype.kind not in "fiu":
        raise InputError(f"{source}: inputs must be numeric, got dtype {x.dtype}")
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{source}: inputs must have shape [batch, {knet.num_features}], got {x.shape}"
                         f"{_feature_rule(knet)}")
    if x.shape[1] != knet.num_features:
        raise InputError(f"{source}: inputs have {x.shape[1]} columns but the network takes "
                         f"{knet.num_features} features (one per input_index){_feature_rule(knet)}")
    if not np.all(np.isfinite(x)):
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InputError(f"{source}: row {row} contains NaN or inf")
    return x


def _feature_rule(knet: KNet) -> str:
    """How the model's features are made, as its weights record it (``meta.task.normalisation``), or ""."""
    task = knet.meta.get("task")
    norm = task.get("normalisation") if isinstance(task, dict) else None
    if not isinstance(norm, dict):
        return ""
    rules = [short(norm[key], 160) for key in ("feature_rule", "feature_gain_rule") if isinstance(norm.get(key), str)]
    return f"; make each row as the model's meta.task.normalisation says: {', then '.join(rules)}" if rules else ""


def check_labels(labels: np.ndarray, rows: int, source: str) -> np.ndarray:
    """Return ``labels`` if they are numeric, finite and ``[rows]`` (one per input row)."""
    if labels.dtype.kind not in "fiu" or labels.shape != (rows,):
        raise InputError(f"{source}: labels must be numeric with shape [{rows}] (one per test input), got dtype "
                         f"{labels.dtype} shape {labels.shape}")
    if not np.all(np.isfinite(labels)):
        raise InputError(f"{source}: labels contain NaN or inf")
    return labels


def load_array(path: str | Path) -> np.ndarray:
    """One ``.npy`` array, never unpickled; an :class:`InputError` naming the file otherwise."""
    path = Path(path)
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise InputError(f"{path}: expected a single .npy array, got an archive")
    return x


def load_inputs(path: str | Path, knet: KNet) -> np.ndarray:
    """Read an ``.npy`` batch (never with pickle) and check it against ``knet``."""
    return check_inputs(load_array(path), knet, str(path))


def random_inputs(knet: KNet, batch: int = 8, seed: int = 0) -> np.ndarray:
    """A seeded batch, uniform in [-1, 1]."""
    for name, value, rule in (("batch", batch, COUNT), ("seed", seed, SEED)):
        if rule.problem(value):
            raise InputError(f"The '{name}' parameter of random_inputs {rule.problem(value)}.")
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (batch, knet.num_features))
