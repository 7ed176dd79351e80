"""Write small checkpoints of the paper's reference code for the device classes kcompile imports since issue 11.

Run from the repository root (needs torch and torchdiffeq)::

    python3 tests/data/reference/make_checkpoints.py

For each case it writes ``tests/data/reference/<case>/`` with ``model.pth``
(the state dict the reference code saves: ``circuit.layer_list.{i}.model.param``,
float32), ``config.yaml`` (shaped like the reference's ``results/*/config.yaml``)
and ``io.npz`` (``inputs [16, 3]``, seeded standard normal, and ``outputs
[16, 3]``: the reference forward pass in float64, torchdiffeq dopri5 at
rtol = atol = 1e-10). The device classes, the circuit layer's right-hand side
(``scatter_add`` of the device currents) and the ``_fully_connect`` edge order
are written here the way the reference repository defines them
(github.com/zhengqigao/kirchhoffnet, ``src/utils/circuit_block.py`` and
``src/utils/topology.py``), independently of kcompile's importer, so
tests/test_importer.py checks the importer against them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchdiffeq
import yaml
from torch import nn

HERE = Path(__file__).resolve().parent
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "softplus", "elu", "silu", "gelu")
T_END = [0.0, 0.5, 1.0]
NUM_NODE = 4  # _fully_connect counts ground: signal nodes 1..3
REPEAT = [2, 1]


# ------------------------------------------------------------ device classes, as the reference defines them

class ShiftLeakyRelu1(nn.Module):
    """``p1 · leaky_relu(vs − vd − p0)``."""

    def __init__(self, num_edge):
        super().__init__()
        self.param = nn.Parameter(torch.ones(2, num_edge))

    def forward(self, x_src, x_des):
        return self.param[1] * F.leaky_relu(x_src - x_des - self.param[0])


class ShiftLeakyRelu2(nn.Module):
    """``leaky_relu(p0·vs + p1·vd + p2)``."""

    def __init__(self, num_edge):
        super().__init__()
        self.param = nn.Parameter(torch.ones(3, num_edge))

    def forward(self, x_src, x_des):
        return F.leaky_relu(x_src * self.param[0] + x_des * self.param[1] + self.param[2])


class Device(nn.Module):
    """``act(p1·(vs − vd) + p0)`` with ``negation``, else ``act(p0·vs + p1·vd + p2)``."""

    def __init__(self, num_edge, negation, activation):
        super().__init__()
        self.param = nn.Parameter(torch.ones(2 if negation else 3, num_edge))
        self.negation = negation
        self.act = getattr(F, activation)

    def forward(self, x_src, x_des):
        if self.negation:
            return self.act(self.param[1] * (x_src - x_des) + self.param[0])
        return self.act(x_src * self.param[0] + x_des * self.param[1] + self.param[2])


def fully_connect_edges(num_node, repeat):
    """The reference's ``_fully_connect(num_node, include_gnd=True, repeat)``, loop by loop."""
    edges = []
    for i in range(num_node):
        for j in range(num_node):
            if i != j:
                edges += [[i, j]] * repeat[0] + [[j, i]] * repeat[1]
    return torch.tensor(edges)


class CircuitLayer(nn.Module):
    """One layer: ``dv/dt`` subtracts each device current at its source and adds it at its destination."""

    def __init__(self, edges, model):
        super().__init__()
        self.src, self.des = edges[:, 0], edges[:, 1]
        self.model = model

    def forward(self, t, x):
        aux = torch.cat((torch.zeros_like(x[..., :1]), x), dim=-1)
        current = self.model(aux[..., self.src], aux[..., self.des])
        out = torch.zeros_like(aux)
        out.scatter_add_(-1, self.src.expand_as(current), -current)
        out.scatter_add_(-1, self.des.expand_as(current), current)
        return out[..., 1:]


class Circuit(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layer_list = nn.ModuleList(layers)


class Model(nn.Module):
    """Holds the circuit under the attribute name that gives the reference's state-dict keys."""

    def __init__(self, layers):
        super().__init__()
        self.circuit = Circuit(layers)

    def forward(self, x):
        for i, layer in enumerate(self.circuit.layer_list):
            t = torch.tensor([0.0, T_END[i + 1] - T_END[i]], dtype=x.dtype)
            x = torchdiffeq.odeint(layer, x, t, rtol=1e-10, atol=1e-10, method="dopri5")[-1]
        return x


# ------------------------------------------------------------ the cases

def cases():
    yield "ShiftLeakyRelu1", "ShiftLeakyRelu1", {}
    yield "ShiftLeakyRelu2", "ShiftLeakyRelu2", {}
    for act in ACTIVATIONS:
        for negation in (True, False):
            yield f"Device-{act}-{'negation' if negation else 'affine'}", "Device", \
                {"negation": negation, "activation": act}


def make(case: str, name: str, args: dict, seed: int) -> None:
    torch.manual_seed(seed)
    edges = fully_connect_edges(NUM_NODE, REPEAT)
    cls = {"ShiftLeakyRelu1": ShiftLeakyRelu1, "ShiftLeakyRelu2": ShiftLeakyRelu2, "Device": Device}[name]
    layers = []
    for _ in range(len(T_END) - 1):
        model = cls(edges.shape[0], **args)
        nn.init.normal_(model.param, mean=0.0, std=0.5)
        layers.append(CircuitLayer(edges, model))
    net = Model(layers)
    folder = HERE / case
    folder.mkdir(exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pth")
    config = {
        "batch_size": 16,
        "network": {
            "adjoint": False,
            "initialization": "gauss",
            "model": {"name": name, "args": args},
            "net_struct": [{"name": "_fully_connect", "args": {"num_node": NUM_NODE, "repeat": list(REPEAT)}}
                           for _ in layers],
        },
        "simulation": {"first_step": "1e-3", "method": "dopri5", "min_step": "1e-6", "step_size": "1e-6",
                       "t_end": T_END, "tol": "1e-10"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal((16, NUM_NODE - 1)))
    with torch.no_grad():
        y = net.double()(x)
    np.savez(folder / "io.npz", inputs=x.numpy(), outputs=y.numpy())


if __name__ == "__main__":
    for seed, (case, name, args) in enumerate(cases()):
        make(case, name, args, seed)
        print(case)
