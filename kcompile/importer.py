"""Import checkpoints of the KirchhoffNet paper's reference implementation.

The reference code stores only device parameters: one state-dict entry
``circuit.layer_list.{i}.model.param`` (float32 ``[rows, E]``) per layer. The
circuit itself is regenerated from the training config: ``network.net_struct``
lists one topology generator per layer, and column ``e`` of the parameter
matrix belongs to edge ``e`` of that generator's output, in the generator's own
order (duplicated parallel devices included). This module regenerates those
edge lists with vectorised NumPy, maps the device class onto a
:data:`~kcompile.laws.LAWS` entry, and returns a :class:`~kcompile.knet.KNet`.

Conventions of the reference code that the import reproduces:

* node ``k`` of the reference is state index ``k - 1``; node ``0`` is ground;
* an edge ``[s, d]`` carries the device current from ``s`` to ``d``;
* every node has capacitance 1;
* layer ``i`` runs over ``[0, t_end[i+1] - t_end[i]]`` (the system is
  autonomous, so this equals our window ``[t_end[i], t_end[i+1]]``);
* each layer's state width is the largest node id in its edge list; the input
  is padded to layer 0's width by ``network.fill`` (``zeros`` or ``repeat``)
  or cut to it; ``projector: lastK`` / ``firstK`` select the output nodes.

Only ``torch.load(..., weights_only=True)`` is used to read a checkpoint;
anything that would need arbitrary unpickling is refused.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import InputError, KCompileError
from .knet import KNet, make_knet
from .laws import ACTIVATIONS, AFFINE, GAIN, law_for

TORCH_HINT = "pip install torch==2.13.0 (or pip install -e .[torch])"
_PARAM_KEY = re.compile(r"^circuit\.layer_list\.(\d+)\.model\.param$")
_SELECT = re.compile(r"^(last|first)(\d+)$")

#: input width of the shipped checkpoints' test benches (the config does not state it);
#: other benches fall back to the node count of layer 0 or the ``num_features`` argument
TEST_BENCH_FEATURES = {"mnist": 784, "twomoon": 2, "circle": 2, "8gaussians": 2, "potential1": 2, "genmnist": 784}
#: test benches trained as continuous normalising flows: sampling runs the circuit forward from standard-normal
#: latents and the sample is every node's voltage at the end, so their import is ``meta.generative`` with every
#: node an output (a ``projector`` is not applied)
GENERATIVE_BENCHES = {"twomoon", "circle", "8gaussians", "potential1", "genmnist"}

#: ``network`` keys the import understands; any other key is refused
_KNOWN_NETWORK_KEYS = {"adjoint", "initialization", "model", "net_struct", "fill", "projector",
                       "encoder", "residual", "mode"}


# ------------------------------------------------------------ topology generators


def _directed_pairs(a: np.ndarray, b: np.ndarray, repeat) -> tuple[np.ndarray, np.ndarray]:
    """Expand slots ``(a, b)``: per slot ``repeat[0]`` edges ``a→b`` then ``repeat[1]`` edges ``b→a``.

    Parameters
    ----------
    a, b : int arrays ``[S]``
        The two terminals of each slot, in slot order.
    repeat : pair of int
        Copies in the forward and in the backward direction.

    Returns
    -------
    src, dst : int64 arrays ``[S * (repeat[0] + repeat[1])]``
    """
    r0, r1 = _repeat_pair(repeat)
    a = np.asarray(a, np.int64)[:, None]
    b = np.asarray(b, np.int64)[:, None]
    src = np.concatenate([np.repeat(a, r0, axis=1), np.repeat(b, r1, axis=1)], axis=1)
    dst = np.concatenate([np.repeat(b, r0, axis=1), np.repeat(a, r1, axis=1)], axis=1)
    return src.ravel(), dst.ravel()


def _repeat_pair(repeat) -> tuple[int, int]:
    if not (isinstance(repeat, (list, tuple)) and len(repeat) == 2
            and all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 0 for r in repeat)):
        raise ValueError(f"repeat must be a pair of non-negative integers, got {repeat!r}")
    return int(repeat[0]), int(repeat[1])


def fully_connect(num_node: int, include_gnd: bool = True, repeat=(1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the reference's ``_fully_connect``.

    The node set is ``0..num_node-1`` with ``include_gnd`` (ground is one of
    the ``num_node`` nodes), else ``1..num_node``. For every *ordered* pair
    ``(i, j)``, ``i != j``, ``i`` outer and ``j`` inner, it emits
    ``repeat[0]`` edges ``i→j`` followed by ``repeat[1]`` edges ``j→i``; so
    each unordered pair carries ``2 · (repeat[0] + repeat[1])`` devices.

    Returns
    -------
    src, dst : int64 arrays ``[E]``
    """
    nodes = np.arange(0, num_node) if include_gnd else np.arange(1, num_node + 1)
    i, j = np.meshgrid(nodes, nodes, indexing="ij")
    off = i != j
    return _directed_pairs(i[off], j[off], repeat)


def simple_connect(num_node: int, include_gnd: bool = True, repeat=(1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the reference's ``_simple_connect``: a chain ``i→i+1``.

    ``i`` runs over ``0..num_node-1`` with ``include_gnd``, else
    ``1..num_node``; each link is repeated ``repeat[0]`` times (the reference
    ignores ``repeat[1]``).

    Returns
    -------
    src, dst : int64 arrays ``[E]``
    """
    r0, _ = _repeat_pair(repeat)
    nodes = np.arange(0, num_node) if include_gnd else np.arange(1, num_node + 1)
    return np.repeat(nodes, r0), np.repeat(nodes + 1, r0)


def window_pairs(num_channel: int, width: int, height: int, neighbor_size: int, padding: bool = False,
                 kernel_repeat: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Edges inside every sliding window of a ``[C, W, H]`` grid of nodes.

    Nodes ``1..C·W·H`` are laid out row-major over ``(channel, width,
    height)``. Windows are ``neighbor_size × neighbor_size`` with stride 1,
    ordered like ``torch.nn.functional.unfold`` (row-major over window
    positions); ``padding`` pads ``neighbor_size - 1`` zeros on each side.
    Inside a window its ``P = C·k²`` entries are ordered (channel, row, col);
    every ordered pair ``(j, k)``, ``j != k``, ``j`` outer, gives
    ``kernel_repeat`` consecutive edges, except pairs touching padding.
    Overlapping windows repeat a pair: those are parallel devices.

    Returns
    -------
    src, dst : int64 arrays ``[E]``
    """
    k = int(neighbor_size)
    grid = np.arange(1, 1 + num_channel * width * height, dtype=np.int64).reshape(num_channel, width, height)
    if padding:
        grid = np.pad(grid, ((0, 0), (k - 1, k - 1), (k - 1, k - 1)))
    if k < 1 or grid.shape[1] < k or grid.shape[2] < k:
        raise ValueError(f"neighbor_size {k} does not fit a {width} x {height} grid")
    patches = sliding_window_view(grid, (k, k), axis=(1, 2))  # [C, Wo, Ho, k, k]
    patches = patches.transpose(1, 2, 0, 3, 4).reshape(-1, num_channel * k * k)  # [L, P]
    j, m = np.nonzero(~np.eye(patches.shape[1], dtype=bool))  # row-major: j outer
    src, dst = patches[:, j].ravel(), patches[:, m].ravel()
    keep = (src != 0) & (dst != 0)
    return np.repeat(src[keep], kernel_repeat), np.repeat(dst[keep], kernel_repeat)


def replicate_parallel(src: np.ndarray, dst: np.ndarray, parallel: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ``parallel`` option of ``_neighbor_index``, quirk included.

    For ``i = 1..parallel-1`` the reference appends *everything built so far*
    shifted by ``i · max_node`` (``max_node`` of the original edges). So
    ``parallel = 2`` gives offsets ``0, 1``, but ``parallel = 3`` gives
    ``0, 1, 2, 3`` and ``parallel = 4`` gives ``0, 1, 2, 3, 3, 4, 5, 6``
    (``2**(parallel-1)`` copies). Reproduced as is, since the checkpoint's
    parameter columns follow it.
    """
    incre = int(max(src.max(), dst.max()))
    for i in range(1, int(parallel)):
        src = np.concatenate([src, src + incre * i])
        dst = np.concatenate([dst, dst + incre * i])
    return src, dst


def mix_connect(num_channel: int, width: int, height: int, neighbor_size: int, fully_connect_node: int,
                repeat=(1, 0), padding: bool = False, kernel_repeat: int = 1, sharing: bool = False,
                parallel: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the reference's ``_mix_connect``, in its order.

    1. :func:`window_pairs` over the pixel grid (``sharing`` only changes the
       reference's unused third column, not the edges), then
       :func:`replicate_parallel`; ``M`` is the largest node id so far;
    2. for each node ``n = 1..M``: ``repeat[0]`` edges ``n→0`` then
       ``repeat[1]`` edges ``0→n``;
    3. for each extra node ``f = M+1..M+fully_connect_node`` (outer) and each
       ``i = 0..M`` (inner, ground first): ``repeat[0]`` edges ``i→f`` then
       ``repeat[1]`` edges ``f→i``. The extra nodes are not linked to each other.

    Returns
    -------
    src, dst : int64 arrays ``[E]``
    """
    del sharing  # same edges either way; the reference keeps one column per edge
    src, dst = window_pairs(num_channel, width, height, neighbor_size, padding, kernel_repeat)
    if src.size == 0:
        raise ValueError("the window part has no edges")
    src, dst = replicate_parallel(src, dst, parallel)
    top = int(max(src.max(), dst.max()))
    nodes = np.arange(1, top + 1)
    g_src, g_dst = _directed_pairs(nodes, np.zeros_like(nodes), repeat)
    extra = np.arange(top + 1, top + 1 + int(fully_connect_node))
    f_src, f_dst = _directed_pairs(np.tile(np.arange(top + 1), extra.size), np.repeat(extra, top + 1), repeat)
    return np.concatenate([src, g_src, f_src]), np.concatenate([dst, g_dst, f_dst])


#: reference generator name -> our implementation
GENERATORS = {
    "_fully_connect": fully_connect,
    "_mix_connect": mix_connect,
    "_simple_connect": simple_connect,
}


# ------------------------------------------------------------ device classes


@dataclass(frozen=True)
class DeviceClass:
    """How one reference device class maps onto a law: ``theta[:, j] = param[rows[j], :]``."""

    law: str
    rows: tuple[int, ...]
    formula: str

    def theta(self, param: np.ndarray) -> np.ndarray:
        """``[E, P]`` float64 law parameters from a reference ``[rows, E]`` matrix."""
        return np.ascontiguousarray(param[list(self.rows), :].T, dtype=np.float64)


#: reference device class (without arguments) -> law and parameter rows
DEVICE_CLASSES = {
    "ShiftRelu1": DeviceClass("shift_relu", (0, 1), "p1·relu(Δ − p0)"),
    "ShiftRelu2": DeviceClass("relu_affine", (0, 1, 2), "relu(p0·vs + p1·vd + p2)"),
    "ShiftLeakyRelu1": DeviceClass("shift_leaky_relu", (0, 1), "p1·leaky_relu(Δ − p0)"),
    "ShiftLeakyRelu2": DeviceClass("leaky_relu_affine", (0, 1, 2), "leaky_relu(p0·vs + p1·vd + p2)"),
    "ShiftTanh1": DeviceClass("tanh", (1, 0), "tanh(p1·Δ + p0)"),
    "ShiftTanh2": DeviceClass("tanh_affine", (0, 1, 2), "tanh(p0·vs + p1·vd + p2)"),
    "Conductance": DeviceClass("linear", (0,), "p0·Δ"),
}

#: the reference's generic ``Device(negation, activation)``; ``activation`` is a ``torch.nn.functional`` name
GENERIC_DEVICE = "Device"


def generic_device(negation: bool, activation: str) -> DeviceClass:
    """The law of ``Device(negation, activation)``.

    ``negation: true`` is ``act(p1·Δ + p0)`` (the law named after the
    activation, θ = (p1, p0)); ``false`` is ``act(p0·vs + p1·vd + p2)`` (its
    ``_affine`` law). ``KeyError`` for an activation no law has.
    """
    act = ACTIVATIONS[activation]
    if negation:
        return DeviceClass(law_for(GAIN, act).name, (1, 0), f"{activation}(p1·Δ + p0)")
    return DeviceClass(law_for(AFFINE, act).name, (0, 1, 2), f"{activation}(p0·vs + p1·vd + p2)")


# ------------------------------------------------------------ reading the inputs


def _read_config(path: Path) -> dict:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        raise KCompileError("importing a reference checkpoint needs PyYAML: pip install pyyaml") from None
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable YAML config ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: the config must be a YAML mapping")
    return config


def _load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Parameters of a checkpoint as float32 arrays, read with ``weights_only=True``."""
    try:
        import torch
    except ImportError:
        raise KCompileError(f"reading a PyTorch checkpoint needs torch: {TORCH_HINT}") from None
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not loadable with torch.load(weights_only=True) ({first}); "
                         "only plain state dicts of tensors are accepted") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict, got {type(state).__name__}")
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        arrays[str(key)] = value.detach().cpu().numpy()
    return arrays


def _layer_params(state: dict[str, np.ndarray], path: Path, num_layers: int) -> list[np.ndarray]:
    found = {}
    for key, value in state.items():
        m = _PARAM_KEY.match(key)
        if not m:
            raise InputError(f"{path}: unsupported state-dict entry {key!r}; only "
                             "'circuit.layer_list.{i}.model.param' (a plain circuit, no encoder, "
                             "projector weights or reparametrised devices) can be imported")
        found[int(m.group(1))] = value
    if sorted(found) != list(range(num_layers)):
        raise InputError(f"{path}: has parameters for layers {sorted(found)}, but the config's "
                         f"net_struct declares {num_layers} layer(s)")
    params = [found[i] for i in range(num_layers)]
    for i, p in enumerate(params):
        if p.ndim != 2 or p.dtype.kind != "f":
            raise InputError(f"{path}: layer {i} parameters must be a 2-D float matrix, "
                             f"got {p.dtype} {p.shape}")
        if not np.all(np.isfinite(p)):
            raise InputError(f"{path}: layer {i} parameters contain NaN or inf")
    return params


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------ config interpretation


def _refuse_unsupported(net: dict, config_path: Path) -> None:
    unknown = sorted(set(net) - _KNOWN_NETWORK_KEYS)
    if unknown:
        raise InputError(f"{config_path}: unsupported network option(s) {', '.join(unknown)}; "
                         "the importer only knows " + ", ".join(sorted(_KNOWN_NETWORK_KEYS)))
    if net.get("encoder") not in (None, "none"):
        raise InputError(f"{config_path}: unsupported feature 'encoder' ({net['encoder']!r}): "
                         "an MLP in front of the circuit cannot be compiled to a KirchhoffNet")
    if net.get("residual") is not None:
        raise InputError(f"{config_path}: unsupported feature 'residual' ({net['residual']!r}): "
                         "a residual addition between layers is not part of the circuit model")
    if net.get("mode", "ode") != "ode":
        raise InputError(f"{config_path}: unsupported feature 'mode: {net['mode']}': only ODE circuits "
                         "can be imported")


def _device_class(net: dict, config_path: Path) -> tuple[str, DeviceClass]:
    model = net.get("model")
    if not isinstance(model, dict) or "name" not in model:
        raise InputError(f"{config_path}: network.model.name is missing")
    name, args = model["name"], model.get("args") or {}
    if name == GENERIC_DEVICE:
        return name, _generic_device(args, config_path)
    if name not in DEVICE_CLASSES:
        raise InputError(f"{config_path}: unsupported device class {name!r}; "
                         f"supported: {', '.join([*DEVICE_CLASSES, GENERIC_DEVICE])}")
    if args:
        raise InputError(f"{config_path}: unsupported device arguments {sorted(args)} for {name} "
                         f"(only {GENERIC_DEVICE} takes arguments: negation, activation)")
    return name, DEVICE_CLASSES[name]


def _generic_device(args, config_path: Path) -> DeviceClass:
    where = f"{config_path}: network.model.args of {GENERIC_DEVICE}"
    if not isinstance(args, dict) or set(args) != {"negation", "activation"}:
        got = sorted(args) if isinstance(args, dict) else args
        raise InputError(f"{where} must be exactly negation and activation, got {got}")
    negation, activation = args["negation"], args["activation"]
    if not isinstance(negation, bool):
        raise InputError(f"{where}: negation must be true or false, got {negation!r}")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise InputError(f"{where}: unsupported activation {activation!r}; supported: {', '.join(ACTIVATIONS)}")
    return generic_device(negation, activation)


def _topology(entry, k: int, config_path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(entry, dict) or "name" not in entry:
        raise InputError(f"{config_path}: network.net_struct[{k}] must be a mapping with a 'name'")
    name, args = entry["name"], entry.get("args") or {}
    if name not in GENERATORS:
        raise InputError(f"{config_path}: network.net_struct[{k}]: unsupported topology generator "
                         f"{name!r}; supported: {', '.join(GENERATORS)}")
    gen = GENERATORS[name]
    try:
        inspect.signature(gen).bind(**args)
    except TypeError as exc:
        raise InputError(f"{config_path}: network.net_struct[{k}] ({name}): bad arguments ({exc})") from None
    try:
        src, dst = gen(**args)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{config_path}: network.net_struct[{k}] ({name}): {exc}") from None
    if src.size == 0:
        raise InputError(f"{config_path}: network.net_struct[{k}] ({name}) generates no edges")
    return src, dst


def _t_bounds(sim: dict, num_layers: int, config_path: Path) -> np.ndarray:
    try:
        t = np.array([float(x) for x in sim["t_end"]])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{config_path}: simulation.t_end must be a list of numbers") from None
    if t.size != num_layers + 1:
        raise InputError(f"{config_path}: simulation.t_end has {t.size} entries but net_struct has "
                         f"{num_layers} layer(s); expected {num_layers + 1}")
    if t[0] != 0.0 or np.any(np.diff(t) <= 0):
        raise InputError(f"{config_path}: simulation.t_end must start at 0 and increase strictly, got {t.tolist()}")
    return t


def _solver_settings(sim: dict) -> dict:
    out = {}
    for key, value in sim.items():
        if key == "t_end":
            continue
        try:
            out[key] = float(value) if isinstance(value, str) and key != "method" else value
        except ValueError:
            out[key] = value
    return out


def _check_widths(widths: list[int], fill, config_path: Path) -> None:
    """Layer widths must not shrink, and may only grow after layer 0 with zero fill."""
    for k in range(1, len(widths)):
        if widths[k] < widths[k - 1]:
            raise InputError(f"{config_path}: layer {k} has {widths[k]} nodes, fewer than layer {k - 1} "
                             f"({widths[k - 1]}); the reference would drop nodes between layers, "
                             "which a single circuit cannot express")
        if widths[k] > widths[k - 1] and fill not in ("zeros", "zero"):
            raise InputError(f"{config_path}: layer {k} grows from {widths[k - 1]} to {widths[k]} nodes "
                             f"with fill {fill!r}; only 'zeros' fill between layers is supported")


def _input_mapping(num_features: int, width0: int, fill, config_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Input nodes and their feature indices for the reference's layer-0 fill."""
    if num_features >= width0:  # equal, or the reference cuts x[:, :width0]
        return np.arange(1, width0 + 1), np.arange(width0)
    if fill in ("zeros", "zero"):
        return np.arange(1, num_features + 1), np.arange(num_features)
    if fill == "repeat":
        return np.arange(1, width0 + 1), np.arange(width0) % num_features
    raise InputError(f"{config_path}: the input has {num_features} features but layer 0 has {width0} "
                     f"nodes and network.fill is {fill!r}; supported fills: zeros, repeat")


def _output_nodes(projector, num_nodes: int, config_path: Path) -> np.ndarray:
    """Output nodes selected by ``projector`` (``none``, ``lastK``, ``firstK`` or a list of them)."""
    nodes = np.arange(1, num_nodes + 1)
    for proj in projector if isinstance(projector, list) else [projector]:
        if proj in (None, "none"):
            continue
        m = _SELECT.match(proj) if isinstance(proj, str) else None
        if not m:
            raise InputError(f"{config_path}: unsupported feature 'projector: {proj}'; only none, lastK and "
                             "firstK (a choice of output nodes) map onto a circuit (an mlp projector does not)")
        count = int(m.group(2))
        if not 1 <= count <= nodes.size:
            raise InputError(f"{config_path}: projector {proj} selects {count} of {nodes.size} nodes")
        nodes = nodes[-count:] if m.group(1) == "last" else nodes[:count]
    return nodes


# ------------------------------------------------------------ the import


def import_reference(model_path: str | Path, config_path: str | Path, *,
                     num_features: int | None = None) -> KNet:
    """Convert a checkpoint of the KirchhoffNet reference code into a :class:`KNet`.

    Parameters
    ----------
    model_path : str or Path
        The ``model.pth`` state dict (read with ``torch.load(weights_only=True)``).
    config_path : str or Path
        The ``config.yaml`` it was trained with.
    num_features : int, optional
        Width of an input row. By default taken from ``test_bench``
        (:data:`TEST_BENCH_FEATURES`), else the node count of layer 0.

    Returns
    -------
    KNet
        Same device law in every layer, capacitance 1, ``t_bounds`` from
        ``simulation.t_end``; ``meta`` records task and provenance.

    Raises
    ------
    KCompileError
        torch is missing (with the install command), or the files are
        unreadable, inconsistent, or use a feature the circuit model cannot
        express (encoder, residual, mlp projector, unknown generator or device
        class); the message names the file and the feature.
    """
    model_path, config_path = Path(model_path), Path(config_path)
    config = _read_config(config_path)
    net = config.get("network")
    if not isinstance(net, dict):
        raise InputError(f"{config_path}: the 'network' section is missing")
    _refuse_unsupported(net, config_path)
    class_name, device = _device_class(net, config_path)
    struct = net.get("net_struct")
    if not isinstance(struct, list) or not struct:
        raise InputError(f"{config_path}: network.net_struct must be a non-empty list")
    sim = config.get("simulation")
    if not isinstance(sim, dict):
        raise InputError(f"{config_path}: the 'simulation' section is missing")
    t_bounds = _t_bounds(sim, len(struct), config_path)
    topologies = [_topology(entry, k, config_path) for k, entry in enumerate(struct)]

    # everything the config decides is checked before the checkpoint is opened
    fill = net.get("fill")
    widths = [int(max(src.max(), dst.max())) for src, dst in topologies]
    _check_widths(widths, fill, config_path)
    num_nodes = widths[-1]
    bench = config.get("test_bench")
    if num_features is None:
        num_features = TEST_BENCH_FEATURES.get(bench, widths[0])
        feature_source = "test_bench" if bench in TEST_BENCH_FEATURES else "nodes of layer 0"
    else:
        feature_source = "given"
    if int(num_features) < 1:
        raise InputError(f"num_features must be positive, got {num_features}")
    input_nodes, input_index = _input_mapping(int(num_features), widths[0], fill, config_path)
    generative = bench in GENERATIVE_BENCHES
    output_nodes = np.arange(1, num_nodes + 1) if generative else _output_nodes(net.get("projector"), num_nodes,
                                                                                config_path)

    params = _layer_params(_load_state_dict(model_path), model_path, len(struct))
    layers = []
    for k, ((src, dst), param) in enumerate(zip(topologies, params)):
        if param.shape[1] != src.size:
            raise InputError(f"{model_path}: layer {k} has {param.shape[1]} parameter columns but "
                             f"{struct[k]['name']} generates {src.size} edges")
        if param.shape[0] <= max(device.rows):
            raise InputError(f"{model_path}: layer {k} has {param.shape[0]} parameter rows; "
                             f"{class_name} needs {max(device.rows) + 1}")
        layers.append((src, dst, device.theta(param)))

    meta = {
        "task": bench,
        "provenance": {
            "source": "KirchhoffNet reference implementation checkpoint",
            "model_file": model_path.name,
            "config_file": config_path.name,
            "source_dir": model_path.resolve().parent.name,
            "model_sha256": _sha256(model_path),
            "config_sha256": _sha256(config_path),
            "device_class": class_name,
            "device_formula": device.formula,
            **({"device_args": net["model"]["args"]} if class_name == GENERIC_DEVICE else {}),
            "theta_from_param_rows": list(device.rows),
            "net_struct": struct,
            "fill": fill,
            "projector": net.get("projector"),
            "num_features": int(num_features),
            "num_features_from": feature_source,
            "t_end": t_bounds.tolist(),
            "solver": _solver_settings(sim),
            "param_dtype": str(params[0].dtype),
        },
    }
    if generative:
        meta["generative"] = True
    if bench is None:
        del meta["task"]
    try:
        json.dumps(meta)  # fail here, not in save_knet, if the config held odd YAML types
    except (TypeError, ValueError) as exc:
        raise InputError(f"{config_path}: config values cannot be recorded as JSON meta ({exc})") from None
    return make_knet(num_nodes, device.law, layers, t_bounds, capacitance=1.0, input_nodes=input_nodes,
                     input_index=input_index, output_nodes=output_nodes, meta=meta)
