"""The ``kcompile.knet/1`` weights file: validated load, save, and the circuit IR.

A weights file is untrusted input. It is read with ``allow_pickle=False``;
every rule of the contract (``shared/DESIGN.md``) is checked and a violation
raises :class:`~kcompile.errors.WeightsError` naming the file and the key.
No string from the file ever reaches a netlist: the law name is looked up in
:data:`~kcompile.laws.LAWS` and ``meta`` only travels as JSON.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from .errors import WeightsError
from .laws import LAWS

FORMAT = "kcompile.knet/1"
_LAYER_KEY = re.compile(r"^layer(\d+)_(src|dst|theta)$")


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Layer:
    """The devices switched on during one layer window ``[t_start, t_stop]``."""

    src: np.ndarray  # int64 [E], node ids 0..N
    dst: np.ndarray  # int64 [E]
    theta: np.ndarray  # float64 [E, P]
    t_start: float
    t_stop: float

    @property
    def num_devices(self) -> int:
        return int(self.src.shape[0])


@dataclass(frozen=True, eq=False)
class KNet:
    """A KirchhoffNet: nodes ``1..N`` with capacitors to ground, devices per layer."""

    num_nodes: int
    law: str
    layers: tuple[Layer, ...]
    t_bounds: np.ndarray  # float64 [L+1]
    capacitance: np.ndarray  # float64 [N]
    input_nodes: np.ndarray  # int64 [K]
    input_index: np.ndarray  # int64 [K]
    output_nodes: np.ndarray  # int64 [M]
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"<KNet {self.law}: {self.num_nodes} nodes, {self.num_layers} layers, {self.num_devices} devices, "
                f"{self.num_features} features -> {self.output_nodes.size} outputs>")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_devices(self) -> int:
        return sum(layer.num_devices for layer in self.layers)

    @property
    def num_features(self) -> int:
        """Width of an input row: one more than the largest ``input_index``."""
        return int(self.input_index.max()) + 1 if self.input_index.size else 0

    def initial_state(self, inputs: np.ndarray) -> np.ndarray:
        """Node voltages at t = 0, ``[B, N]``: inputs on input nodes, 0 elsewhere."""
        inputs = np.atleast_2d(np.asarray(inputs, dtype=float))
        v0 = np.zeros((inputs.shape[0], self.num_nodes))
        v0[:, self.input_nodes - 1] = inputs[:, self.input_index]
        return v0

    def graph(self) -> nx.MultiDiGraph:
        """The circuit as a networkx graph (node 0 is ground).

        Node attributes: ``capacitance`` and ``role`` (``ground``, ``input``,
        ``output``, ``input+output`` or ``hidden``). Edge attributes: ``layer``,
        ``law`` and ``theta``; edge keys are ``(layer, index)``.
        """
        g = nx.MultiDiGraph(law=self.law, t_bounds=tuple(self.t_bounds))
        g.add_node(0, capacitance=0.0, role="ground")
        inputs, outputs = set(self.input_nodes.tolist()), set(self.output_nodes.tolist())
        for n in range(1, self.num_nodes + 1):
            role = "+".join(r for r, s in (("input", inputs), ("output", outputs)) if n in s) or "hidden"
            g.add_node(n, capacitance=float(self.capacitance[n - 1]), role=role)
        for k, layer in enumerate(self.layers):
            g.add_edges_from(
                (int(s), int(d), (k, i), {"layer": k, "law": self.law, "theta": tuple(t)})
                for i, (s, d, t) in enumerate(zip(layer.src, layer.dst, layer.theta.tolist()))
            )
        return g


# ---------------------------------------------------------------- reading


class _Reader:
    """Typed, checked access to the arrays of one npz file."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray]):
        self.path, self.arrays = path, arrays

    def fail(self, key: str | None, problem: str, fix: str = "") -> WeightsError:
        return WeightsError(self.path, key, problem, fix)

    def get(self, key: str, required: bool = True) -> np.ndarray | None:
        if key not in self.arrays:
            if required:
                raise self.fail(key, "missing", f"a {FORMAT} file must define it; see DESIGN.md")
            return None
        return self.arrays[key]

    def string(self, key: str, required: bool = True) -> str | None:
        a = self.get(key, required)
        if a is None:
            return None
        if a.dtype.kind != "U" or a.ndim != 0:
            raise self.fail(key, f"must be a scalar string, got dtype {a.dtype} shape {a.shape}")
        return str(a[()])

    def ints(self, key: str, ndim: int, required: bool = True) -> np.ndarray | None:
        a = self.get(key, required)
        if a is None:
            return None
        if a.dtype.kind not in "iu":
            raise self.fail(key, f"must have an integer dtype, got {a.dtype}")
        if a.ndim != ndim:
            raise self.fail(key, f"must have {ndim} dimension(s), got shape {a.shape}")
        return a.astype(np.int64)

    def floats(self, key: str, shapes: tuple[tuple, ...], required: bool = True) -> np.ndarray | None:
        a = self.get(key, required)
        if a is None:
            return None
        if a.dtype.kind != "f":
            raise self.fail(key, f"must have a floating-point dtype, got {a.dtype}")
        if not any(len(s) == a.ndim and all(x in (None, y) for x, y in zip(s, a.shape)) for s in shapes):
            want = " or ".join(str(tuple("*" if x is None else x for x in s)) for s in shapes)
            raise self.fail(key, f"must have shape {want}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise self.fail(key, "contains NaN or inf", "all values must be finite")
        return a.astype(np.float64)

    def node_ids(self, key: str, lo: int, hi: int, required: bool = True) -> np.ndarray | None:
        a = self.ints(key, 1, required)
        if a is not None and a.size and (a.min() < lo or a.max() > hi):
            bad = a[(a < lo) | (a > hi)][0]
            raise self.fail(key, f"node id {bad} out of range {lo}..{hi}")
        return a


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise WeightsError(path, None, "no such file")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise WeightsError(path, None, "not an .npz archive (a bare .npy array?)",
                               f"save the arrays with numpy.savez as a {FORMAT} file")
        with npz:
            arrays = {}
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:
                    if "pickle" in str(exc):
                        raise WeightsError(path, key, "is an object array that would need pickle",
                                           "store plain numeric or string arrays") from None
                    raise WeightsError(path, key, f"cannot be read: {exc}") from None
                except (OSError, EOFError, zipfile.BadZipFile) as exc:
                    raise WeightsError(path, key, f"is truncated or corrupt: {exc}") from None
            return arrays
    except WeightsError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise WeightsError(path, None, f"not a readable .npz file ({exc})",
                           f"expected a {FORMAT} archive written by numpy.savez") from None


def load_knet(path: str | Path) -> KNet:
    """Read and validate a ``kcompile.knet/1`` weights file.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.

    Returns
    -------
    KNet
        The validated network, arrays read-only.

    Raises
    ------
    WeightsError
        On any breach of the contract, naming the file and key.
    """
    path = Path(path)
    r = _Reader(path, _open_npz(path))

    fmt = r.string("format")
    if fmt != FORMAT:
        raise r.fail("format", f"unknown format {fmt!r}", f"this reader understands {FORMAT!r}")
    law = r.string("device")
    if law not in LAWS:
        raise r.fail("device", f"unknown device law {law!r}", f"choose one of {', '.join(LAWS)}")
    num_params = LAWS[law].num_params

    nn = r.ints("num_nodes", 0)
    n = int(nn)
    if n < 1:
        raise r.fail("num_nodes", f"must be at least 1, got {n}")

    t_bounds = r.floats("t_bounds", ((None,),))
    if t_bounds.size < 2:
        raise r.fail("t_bounds", "needs at least two entries (one layer)")
    if t_bounds[0] != 0.0:
        raise r.fail("t_bounds", f"must start at 0, starts at {t_bounds[0]}")
    if np.any(np.diff(t_bounds) <= 0):
        raise r.fail("t_bounds", "must be strictly increasing")
    num_layers = t_bounds.size - 1

    cap = r.floats("capacitance", ((), (n,)), required=False)
    cap = np.ones(n) if cap is None else np.broadcast_to(cap, (n,)).copy()
    if np.any(cap <= 0):
        raise r.fail("capacitance", "must be positive")

    for key in r.arrays:
        m = _LAYER_KEY.match(key)
        if m and int(m.group(1)) >= num_layers:
            raise r.fail(key, f"names layer {m.group(1)} but t_bounds declares {num_layers} layer(s)",
                         "add the layer's window to t_bounds or drop the key")

    layers = []
    for k in range(num_layers):
        src = r.node_ids(f"layer{k}_src", 0, n)
        dst = r.node_ids(f"layer{k}_dst", 0, n)
        if dst.shape != src.shape:
            raise r.fail(f"layer{k}_dst", f"has {dst.size} entries but layer{k}_src has {src.size}")
        theta = r.floats(f"layer{k}_theta", ((src.size, num_params),))
        loops = np.flatnonzero(src == dst)
        if loops.size:
            raise r.fail(f"layer{k}_src", f"device {loops[0]} has src == dst == {src[loops[0]]}",
                         "a device needs two distinct terminals")
        layers.append(Layer(_frozen(src), _frozen(dst), _frozen(theta),
                            float(t_bounds[k]), float(t_bounds[k + 1])))

    input_nodes = r.node_ids("input_nodes", 1, n)
    if np.unique(input_nodes).size != input_nodes.size:
        raise r.fail("input_nodes", "lists a node twice")
    input_index = r.ints("input_index", 1, required=False)
    if input_index is None:
        input_index = np.arange(input_nodes.size)
    if input_index.shape != input_nodes.shape:
        raise r.fail("input_index", f"must have one entry per input node ({input_nodes.size}), got {input_index.size}")
    if input_index.size and input_index.min() < 0:
        raise r.fail("input_index", "must be non-negative")
    output_nodes = r.node_ids("output_nodes", 1, n)
    if output_nodes.size == 0:
        raise r.fail("output_nodes", "is empty", "name at least one node to read")

    meta_text = r.string("meta", required=False)
    try:
        meta = json.loads(meta_text) if meta_text else {}
    except json.JSONDecodeError as exc:
        raise r.fail("meta", f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(meta, dict):
        raise r.fail("meta", "must be a JSON object")

    return KNet(n, law, tuple(layers), _frozen(t_bounds), _frozen(cap), _frozen(input_nodes),
                _frozen(input_index), _frozen(output_nodes), meta)


def save_knet(knet: KNet, path: str | Path, **extra: np.ndarray) -> None:
    """Write ``knet`` as a ``kcompile.knet/1`` file; ``extra`` adds keys (e.g. test data)."""
    arrays = {
        "format": np.array(FORMAT),
        "num_nodes": np.array(knet.num_nodes, dtype=np.int64),
        "device": np.array(knet.law),
        "t_bounds": np.asarray(knet.t_bounds, dtype=np.float64),
        "capacitance": np.asarray(knet.capacitance, dtype=np.float64),
        "input_nodes": np.asarray(knet.input_nodes, dtype=np.int64),
        "input_index": np.asarray(knet.input_index, dtype=np.int64),
        "output_nodes": np.asarray(knet.output_nodes, dtype=np.int64),
        "meta": np.array(json.dumps(knet.meta)),
    }
    for k, layer in enumerate(knet.layers):
        arrays[f"layer{k}_src"] = np.asarray(layer.src, dtype=np.int64)
        arrays[f"layer{k}_dst"] = np.asarray(layer.dst, dtype=np.int64)
        arrays[f"layer{k}_theta"] = np.asarray(layer.theta, dtype=np.float64)
    arrays.update(extra)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def make_knet(num_nodes: int, law: str, layers: list[tuple], t_bounds, *, capacitance=1.0,
              input_nodes, input_index=None, output_nodes, meta: dict | None = None) -> KNet:
    """Build a :class:`KNet` from arrays (``layers``: ``(src, dst, theta)`` per layer)."""
    t_bounds = np.asarray(t_bounds, dtype=float)
    input_nodes = np.asarray(input_nodes, dtype=np.int64)
    built = tuple(
        Layer(_frozen(np.asarray(s, np.int64)), _frozen(np.asarray(d, np.int64)),
              _frozen(np.asarray(t, float).reshape(len(s), LAWS[law].num_params)),
              float(t_bounds[k]), float(t_bounds[k + 1]))
        for k, (s, d, t) in enumerate(layers)
    )
    return KNet(
        num_nodes, law, built, _frozen(t_bounds),
        _frozen(np.broadcast_to(np.asarray(capacitance, float), (num_nodes,)).copy()),
        _frozen(input_nodes),
        _frozen(np.arange(input_nodes.size) if input_index is None else np.asarray(input_index, np.int64)),
        _frozen(np.asarray(output_nodes, np.int64)), dict(meta or {}),
    )


def random_knet(num_nodes: int, num_layers: int, devices_per_layer: int, law: str = "relu", *,
                num_inputs: int | None = None, num_outputs: int = 2, theta_scale: float = 1.0,
                t_layer: float = 1.0, seed: int = 0, meta: dict | None = None) -> KNet:
    """A random-but-valid network: uniform terminals (ground included), θ of both signs."""
    rng = np.random.default_rng(seed)
    num_inputs = num_nodes if num_inputs is None else num_inputs
    layers = []
    for _ in range(num_layers):
        src = rng.integers(0, num_nodes + 1, devices_per_layer)
        dst = (src + rng.integers(1, num_nodes + 1, devices_per_layer)) % (num_nodes + 1)
        theta = rng.uniform(-theta_scale, theta_scale, (devices_per_layer, LAWS[law].num_params))
        layers.append((src, dst, theta))
    return make_knet(
        num_nodes, law, layers, np.arange(num_layers + 1) * t_layer,
        input_nodes=np.arange(1, num_inputs + 1),
        output_nodes=np.arange(num_nodes - num_outputs + 1, num_nodes + 1),
        meta={"kind": "random", "seed": seed, **(meta or {})},
    )
