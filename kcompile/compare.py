"""Compare two sets of node voltages at the layer boundaries, score the task, and give a verdict.

Three questions, one answer each:

- how far is a candidate (ngspice, the characterised ODE) from the reference,
  at the outputs and at every node and layer boundary (:func:`compare`);
- what does each level do to the task: classes and their agreement with the
  reference, accuracy or MSE against the recorded labels (:func:`task_scores`);
- how tightly must the reference be integrated for the comparison to mean
  something (:func:`reference_settings`): at its default tolerance up to
  10,000 devices, and from the gate being checked above that, so that a
  large model's check does not wait hours for digits nobody looks at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .knet import KNet
from .netlist import is_large
from .reference import DEFAULT_ATOL, DEFAULT_RTOL, Trajectory, integrate


@dataclass(frozen=True, eq=False)
class Comparison:
    """Errors of ``candidate`` against ``reference`` (model units).

    ``output_error[b, m]`` is the absolute error of output ``m`` for sample ``b``;
    ``boundary_error[k]`` the largest absolute error over all nodes and
    samples at ``t_bounds[k]``; ``node_error[k, n-1]`` that of node ``n`` over
    the samples.
    """

    reference_name: str
    candidate_name: str
    output_error: np.ndarray  # [B, M]
    boundary_error: np.ndarray  # [L+1]
    node_error: np.ndarray | None = None  # [L+1, N]

    @property
    def max_output_error(self) -> float:
        return float(self.output_error.max()) if self.output_error.size else 0.0

    @property
    def worst_sample(self) -> int:
        return int(np.unravel_index(np.argmax(self.output_error), self.output_error.shape)[0])

    @property
    def worst_output(self) -> int:
        """Index (into the output nodes) of the largest output error."""
        return int(np.unravel_index(np.argmax(self.output_error), self.output_error.shape)[1])

    def worst_node(self) -> tuple[int, int, float]:
        """``(k, n, error)``: the node ``n`` (1-based) and boundary ``t_bounds[k]`` of the largest error over
        all nodes and samples."""
        k, n = np.unravel_index(np.argmax(self.node_error), self.node_error.shape)
        return int(k), int(n) + 1, float(self.node_error[k, n])

    def passes(self, max_error: float) -> bool:
        return self.max_output_error <= max_error


def compare(reference_states: np.ndarray, candidate_states: np.ndarray, output_nodes: np.ndarray,
            reference_name: str = "reference", candidate_name: str = "spice") -> Comparison:
    """Compare ``[B, L+1, N]`` state arrays; outputs are read at the last boundary."""
    if reference_states.shape != candidate_states.shape:
        raise ValueError(f"state shapes differ: {reference_states.shape} vs {candidate_states.shape}")
    diff = np.abs(candidate_states - reference_states)
    return Comparison(reference_name, candidate_name, diff[:, -1, np.asarray(output_nodes) - 1],
                      diff.max(axis=(0, 2)), diff.max(axis=0))


# ---------------------------------------------------------------- the task

def meta_task(knet: KNet) -> str | None:
    """The task kind the weights' meta declares (``meta.task.kind``: classification or regression), if any."""
    task = knet.meta.get("task") if isinstance(knet.meta, dict) else None
    kind = task.get("kind") if isinstance(task, dict) else None
    if kind == "classification" and knet.output_nodes.size > 1:
        return kind
    return "regression" if kind == "regression" else None


def task_of(knet: KNet, labels: np.ndarray | None) -> str | None:
    """``classification`` or ``regression`` for a batch with ``labels`` (``None`` without them): what the
    weights' meta declares, else classification for integer labels and several outputs."""
    if labels is None:
        return None
    kind = meta_task(knet)
    if kind == "classification" and labels.dtype.kind not in "iu":
        kind = None  # the labels are not classes: judge by them
    if kind is not None:
        return kind
    if labels.dtype.kind in "iu" and knet.output_nodes.size > 1:
        return "classification"
    return "regression"


def task_metric(task: str | None, outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Accuracy in percent, or mean squared error (first output against the labels)."""
    if task == "classification":
        return float(100.0 * np.mean(np.argmax(outputs, axis=1) == labels))
    if task == "regression":
        return float(np.mean((outputs[:, 0] - labels.astype(float)) ** 2))
    return None


@dataclass(frozen=True)
class TaskScore:
    """One level's task figures over a whole batch.

    ``agreement``: samples whose class (largest output) equals the
    reference's; ``accuracy``: percent of samples whose class equals the
    label; ``mse``: mean squared error of the first output against the
    labels. Each is ``None`` where it does not apply.
    """

    level: str
    samples: int
    agreement: int | None = None
    accuracy: float | None = None
    mse: float | None = None

    def as_dict(self) -> dict:
        return {"level": self.level, "samples": self.samples, "class_agreement": self.agreement,
                "accuracy": self.accuracy, "mse": self.mse}


def task_scores(kind: str | None, outputs: dict[str, np.ndarray], labels: np.ndarray | None,
                reference: str = "reference") -> list[TaskScore]:
    """:class:`TaskScore` of every level in ``outputs`` (``{level: [B, M]}``, ``reference`` among them).

    ``kind`` is ``classification`` (classes, agreement with ``reference``, and
    accuracy when there are labels), ``regression`` (MSE when there are
    labels) or ``None`` (nothing to score: an empty list).
    """
    if kind not in ("classification", "regression"):
        return []
    ref = np.argmax(outputs[reference], axis=1)
    scores = []
    for level, out in outputs.items():
        n = len(out)
        if kind == "classification":
            agree = None if level == reference else int(np.sum(np.argmax(out, axis=1) == ref))
            scores.append(TaskScore(level, n, agree, task_metric(kind, out, labels) if labels is not None else None))
        elif labels is not None:
            scores.append(TaskScore(level, n, mse=task_metric(kind, out, labels)))
    return scores


# ---------------------------------------------------------------- how tight the reference must be

#: the reference's default relative tolerance for networks of 10,000 devices or more without a gate: its error
#: is then ~1e-5, well under what ngspice's own large-network analysis reaches (8.4e-4 on MNIST)
LARGE_RTOL = 1e-6
#: a gate's limit over this is the reference's relative tolerance on a large network (its output error is
#: about 10x its rtol there: docs/verification.md)
GATE_MARGIN = 1000.0
#: the loosest and tightest tolerance chosen from a gate
GATE_RTOL = (DEFAULT_RTOL, 1e-4)
#: float32 arithmetic cannot meet a relative tolerance much below this; a default in float32 is at least the second
FLOAT32_RTOL, FLOAT32_DEFAULT_RTOL = 1e-6, 1e-5
METHODS = ("dopri5", "rk4")
PRECISIONS = ("float64", "float32")


@dataclass(frozen=True)
class ReferenceSettings:
    """How the NumPy reference is integrated (:func:`kcompile.reference.integrate`) and why so."""

    method: str = "dopri5"
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    dt: float = 1e-2
    precision: str = "float64"
    why: str = "the default"

    def integrate(self, knet: KNet, inputs: np.ndarray, **options) -> Trajectory:
        """:func:`kcompile.reference.integrate` with these settings (``options``: ``grid``, ``threads``...)."""
        return integrate(knet, inputs, method=self.method, rtol=self.rtol, atol=self.atol, dt=self.dt,
                         dtype=np.dtype(self.precision), **options)

    def describe(self) -> str:
        step = f"rtol {self.rtol:g}, atol {self.atol:g}" if self.method == "dopri5" else f"dt {self.dt:g}"
        return f"{self.method}, {step}, {self.precision} ({self.why})"

    def as_dict(self) -> dict:
        return {"method": self.method, "precision": self.precision, "why": self.why,
                **({"rtol": self.rtol, "atol": self.atol} if self.method == "dopri5" else {"dt": self.dt})}


def reference_settings(knet: KNet, gate: float | None = None, *, method: str = "dopri5", rtol: float | None = None,
                       atol: float | None = None, dt: float | None = None,
                       precision: str = "float64") -> ReferenceSettings:
    """The reference's settings for checking ``knet`` against ``gate`` (the largest output error allowed).

    Given values are kept. A missing ``rtol`` is the integrator's default
    (1e-9) below 10,000 devices, where it costs milliseconds; from 10,000
    devices on it is ``gate / 1000`` within [1e-9, 1e-4] (the reference's error
    is then ~1 % of the gate), or :data:`LARGE_RTOL` without a gate; in
    float32 at least 1e-5. A missing ``atol`` is ``rtol / 100``.

    Raises
    ------
    ValueError
        ``method`` or ``precision`` unknown.
    """
    if method not in METHODS or precision not in PRECISIONS:
        raise ValueError(f"method must be one of {METHODS} and precision one of {PRECISIONS}; "
                         f"got {method!r}, {precision!r}")
    if method == "rk4":
        return ReferenceSettings("rk4", dt=1e-2 if dt is None else dt, precision=precision,
                                 why="fixed step, as given" if dt is not None else "fixed step, the default dt")
    if rtol is not None:
        why = "as given"
    elif not is_large(knet):
        rtol, why = DEFAULT_RTOL, "the default below 10,000 devices"
    elif gate is not None and gate > 0:
        rtol = float(np.clip(gate / GATE_MARGIN, *GATE_RTOL))
        why = f"from the gate {gate:g}: rtol = gate/{GATE_MARGIN:g} within {GATE_RTOL[0]:g}..{GATE_RTOL[1]:g}"
    else:
        rtol, why = LARGE_RTOL, "the default from 10,000 devices"
    if precision == "float32" and why != "as given" and rtol < FLOAT32_DEFAULT_RTOL:
        rtol, why = FLOAT32_DEFAULT_RTOL, f"{why}, raised to float32's reach"
    if atol is None:
        atol = DEFAULT_ATOL if rtol == DEFAULT_RTOL else float(f"{rtol / 100:.12g}")
    return ReferenceSettings("dopri5", rtol, atol, precision=precision, why=why)
