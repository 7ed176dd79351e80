"""The ``kcompile.knet/1`` weights file: validated load, save, and the circuit IR.

A weights file is untrusted input. It is read with ``allow_pickle=False``;
every rule of the contract (``docs/design.md``) is checked and a violation
raises :class:`~kcompile.errors.WeightsError` naming the file and the key.
No string from the file ever reaches a netlist: the law name is looked up in
:data:`~kcompile.laws.LAWS` and ``meta`` only travels as JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import networkx as nx
import numpy as np

from .errors import InputError, WeightsError
from .files import atomic_write
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


#: Limits on what a weights file may declare (the MNIST checkpoint: 834 nodes, 2 layers, 460,136 devices, 784
#: features). Every array's size is read from its .npy header and checked before a byte of it is decompressed.
MAX_NODES = 1_000_000
MAX_LAYERS = 10_000
MAX_DEVICES = 50_000_000
MAX_FEATURES = 1_000_000
MAX_NAME_CHARS = 256
MAX_META_CHARS = 1_000_000
MAX_META_DEPTH = 100
#: values of an optional array such as ``test_inputs`` (2**27 float64: 1 GiB)
MAX_EXTRA_ITEMS = 1 << 27
_CONTRACT = "see docs/design.md"


class _Reader:
    """Typed, checked, lazy access to the arrays of one npz file.

    Only the keys asked for are read; each array's shape and dtype come from
    its .npy header first and must fit the caller's limit, so an unknown key
    or a decompression bomb is never expanded and an object array is refused
    before anything would be unpickled.
    """

    def __init__(self, path: Path, archive: zipfile.ZipFile):
        self.path, self.zip = path, archive
        self.members = {(n[:-4] if n.endswith(".npy") else n): n for n in archive.namelist()}

    @property
    def keys(self) -> list[str]:
        return list(self.members)

    def fail(self, key: str | None, problem: str, fix: str = "") -> WeightsError:
        return WeightsError(self.path, key, problem, fix)

    def _header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        with self.zip.open(self.members[key]) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        return shape, dtype

    def get(self, key: str, limit: int, required: bool = True, chars: int = MAX_NAME_CHARS) -> np.ndarray | None:
        """The array ``key`` if it holds at most ``limit`` items (strings: at most ``chars`` characters)."""
        if key not in self.members:
            if required:
                raise self.fail(key, "missing", f"a {FORMAT} file must define it; {_CONTRACT}")
            return None
        try:
            shape, dtype = self._header(key)
            if dtype.hasobject:
                raise self.fail(key, "is an object array that would need pickle", "store plain numeric or string "
                                "arrays")
            items = math.prod(shape)
            if items > limit:
                raise self.fail(key, f"holds {items:,} values (shape {shape}), more than the {limit:,} this key may "
                                f"hold here", _CONTRACT)
            if dtype.itemsize > (4 * chars if dtype.kind in "US" else 16):
                raise self.fail(key, f"has dtype {dtype}, whose items are too large ({dtype.itemsize:,} bytes)",
                                _CONTRACT)
            with self.zip.open(self.members[key]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except WeightsError:
            raise
        except (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
                zlib.error) as exc:
            raise self.fail(key, f"is truncated, corrupt or not an .npy array ({exc})") from None

    def string(self, key: str, required: bool = True, chars: int = MAX_NAME_CHARS) -> str | None:
        a = self.get(key, 1, required, chars)
        if a is None:
            return None
        if a.dtype.kind != "U" or a.ndim != 0:
            raise self.fail(key, f"must be a scalar string, got dtype {a.dtype} shape {a.shape}")
        return str(a[()])

    def ints(self, key: str, ndim: int, limit: int, required: bool = True) -> np.ndarray | None:
        a = self.get(key, limit, required)
        if a is None:
            return None
        if a.dtype.kind not in "iu":
            raise self.fail(key, f"must have an integer dtype, got {a.dtype}")
        if a.ndim != ndim:
            raise self.fail(key, f"must have {ndim} dimension(s), got shape {a.shape}")
        if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
            raise self.fail(key, f"value {int(a.max())} is out of range (more than {np.iinfo(np.int64).max})")
        return a.astype(np.int64)

    def floats(self, key: str, shapes: tuple[tuple, ...], limit: int, required: bool = True) -> np.ndarray | None:
        a = self.get(key, limit, required)
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

    def node_ids(self, key: str, lo: int, hi: int, limit: int, required: bool = True) -> np.ndarray | None:
        a = self.ints(key, 1, limit, required)
        if a is not None and a.size and (a.min() < lo or a.max() > hi):
            bad = a[(a < lo) | (a > hi)][0]
            raise self.fail(key, f"node id {bad} out of range {lo}..{hi}")
        return a


@contextlib.contextmanager
def _open_npz(path: Path) -> Iterator[_Reader]:
    if not path.is_file():
        raise WeightsError(path, None, "no such file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        with contextlib.suppress(OSError), open(path, "rb") as f:
            if f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
                raise WeightsError(path, None, "not an .npz archive (a bare .npy array?)",
                                   f"save the arrays with numpy.savez as a {FORMAT} file") from None
        raise WeightsError(path, None, f"not a readable .npz file ({exc})",
                           f"expected a {FORMAT} archive written by numpy.savez") from None
    with archive:
        yield _Reader(path, archive)


def load_extras(path: str | Path, keys: tuple[str, ...], limit: int = MAX_EXTRA_ITEMS) -> dict[str, np.ndarray]:
    """Optional keys a writer added (e.g. ``test_inputs``), read with the loader's care: no pickle, the size
    checked against ``limit`` items before decompression. Absent keys are left out."""
    path = Path(path)
    with _open_npz(path) as r:
        return {key: r.get(key, limit) for key in keys if key in r.members}


def _depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar: 0), without recursion."""
    depth, level = 0, [(value, 0)]
    while level:
        v, d = level.pop()
        depth = max(depth, d)
        if isinstance(v, (dict, list)):
            level.extend((child, d + 1) for child in (v.values() if isinstance(v, dict) else v))
    return depth


def _meta(r: _Reader) -> dict:
    """``meta``: a JSON object of bounded size and depth, standard JSON only (no NaN or Infinity)."""
    text = r.string("meta", required=False, chars=MAX_META_CHARS)
    if not text:
        return {}

    def constant(name):
        raise ValueError(f"{name} is not standard JSON")

    try:
        meta = json.loads(text, parse_constant=constant)
        deep = _depth(meta) > MAX_META_DEPTH
    except json.JSONDecodeError as exc:
        raise r.fail("meta", f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        deep = True
    except ValueError as exc:
        raise r.fail("meta", f"is not valid JSON ({exc})") from None
    if deep:
        raise r.fail("meta", f"is nested more than {MAX_META_DEPTH} levels deep", "flatten it")
    if not isinstance(meta, dict):
        raise r.fail("meta", "must be a JSON object")
    return meta


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
    with _open_npz(path) as r:
        return _read_knet(r)


def _read_knet(r: _Reader) -> KNet:
    fmt = r.string("format")
    if fmt != FORMAT:
        raise r.fail("format", f"unknown format {fmt!r}", f"this reader understands {FORMAT!r}")
    law = r.string("device")
    if law not in LAWS:
        raise r.fail("device", f"unknown device law {law!r}", f"choose one of {', '.join(LAWS)}")
    num_params = LAWS[law].num_params

    n = int(r.ints("num_nodes", 0, 1))
    if not 1 <= n <= MAX_NODES:
        raise r.fail("num_nodes", f"must be from 1 to {MAX_NODES:,}, got {n:,}")

    t_bounds = r.floats("t_bounds", ((None,),), MAX_LAYERS + 1)
    if t_bounds.size < 2:
        raise r.fail("t_bounds", "needs at least two entries (one layer)")
    if t_bounds[0] != 0.0:
        raise r.fail("t_bounds", f"must start at 0, starts at {t_bounds[0]}")
    if np.any(np.diff(t_bounds) <= 0):
        raise r.fail("t_bounds", "must be strictly increasing")
    num_layers = t_bounds.size - 1

    cap = r.floats("capacitance", ((), (n,)), n, required=False)
    cap = np.ones(n) if cap is None else np.broadcast_to(cap, (n,)).copy()
    with np.errstate(divide="ignore", over="ignore"):
        if np.any(cap <= 0) or not np.all(np.isfinite(1.0 / cap)):
            raise r.fail("capacitance", "must be positive and a normal float (at least 2.2e-308, so that 1/C "
                         "is finite)")

    for key in r.keys:
        m = _LAYER_KEY.match(key)
        if m and int(m.group(1)) >= num_layers:
            raise r.fail(key, f"names layer {m.group(1)} but t_bounds declares {num_layers} layer(s)",
                         "add the layer's window to t_bounds or drop the key")

    layers, devices = [], 0
    for k in range(num_layers):
        src = r.node_ids(f"layer{k}_src", 0, n, MAX_DEVICES - devices)
        dst = r.node_ids(f"layer{k}_dst", 0, n, MAX_DEVICES - devices)
        if dst.shape != src.shape:
            raise r.fail(f"layer{k}_dst", f"has {dst.size} entries but layer{k}_src has {src.size}")
        theta = r.floats(f"layer{k}_theta", ((src.size, num_params),), src.size * num_params)
        loops = np.flatnonzero(src == dst)
        if loops.size:
            raise r.fail(f"layer{k}_src", f"device {loops[0]} has src == dst == {src[loops[0]]}",
                         "a device needs two distinct terminals")
        layers.append(Layer(_frozen(src), _frozen(dst), _frozen(theta),
                            float(t_bounds[k]), float(t_bounds[k + 1])))
        devices += src.size

    input_nodes = r.node_ids("input_nodes", 1, n, n)
    if np.unique(input_nodes).size != input_nodes.size:
        raise r.fail("input_nodes", "lists a node twice")
    input_index = r.ints("input_index", 1, n, required=False)
    if input_index is None:
        input_index = np.arange(input_nodes.size)
    if input_index.shape != input_nodes.shape:
        raise r.fail("input_index", f"must have one entry per input node ({input_nodes.size}), got {input_index.size}")
    if input_index.size and (input_index.min() < 0 or input_index.max() >= MAX_FEATURES):
        bad = input_index[(input_index < 0) | (input_index >= MAX_FEATURES)][0]
        raise r.fail("input_index", f"feature index {bad:,} out of range 0..{MAX_FEATURES - 1:,}",
                     "an input row has max(input_index) + 1 features")
    output_nodes = r.node_ids("output_nodes", 1, n, MAX_NODES)
    if output_nodes.size == 0:
        raise r.fail("output_nodes", "is empty", "name at least one node to read")

    return KNet(n, law, tuple(layers), _frozen(t_bounds), _frozen(cap), _frozen(input_nodes),
                _frozen(input_index), _frozen(output_nodes), _meta(r))


def save_knet(knet: KNet, path: str | Path, **extra: np.ndarray) -> None:
    """Write ``knet`` as a ``kcompile.knet/1`` file, whole or not at all; ``extra`` adds keys (e.g. test data)."""
    try:
        meta = json.dumps(knet.meta, allow_nan=False)
    except ValueError:
        raise InputError(f"{path}: the network's meta holds NaN or infinity, which standard JSON cannot store; "
                         "replace them (e.g. by null) before saving") from None
    arrays = {
        "format": np.array(FORMAT),
        "num_nodes": np.array(knet.num_nodes, dtype=np.int64),
        "device": np.array(knet.law),
        "t_bounds": np.asarray(knet.t_bounds, dtype=np.float64),
        "capacitance": np.asarray(knet.capacitance, dtype=np.float64),
        "input_nodes": np.asarray(knet.input_nodes, dtype=np.int64),
        "input_index": np.asarray(knet.input_index, dtype=np.int64),
        "output_nodes": np.asarray(knet.output_nodes, dtype=np.int64),
        "meta": np.array(meta),
    }
    for k, layer in enumerate(knet.layers):
        arrays[f"layer{k}_src"] = np.asarray(layer.src, dtype=np.int64)
        arrays[f"layer{k}_dst"] = np.asarray(layer.dst, dtype=np.int64)
        arrays[f"layer{k}_theta"] = np.asarray(layer.theta, dtype=np.float64)
    arrays.update(extra)
    with atomic_write(path, what="weights file") as f:
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
