"""Write examples/autoscale_relu.npz: a random relu network with θ uniform in [-1, 1] (not trained).

Run from the repository root: ``python examples/make_autoscale_example.py``. Its nodes swing to
about ±25 model units on the recorded inputs, six times the transistor cells' compliance window at
the default scaling (±4 units): the case automatic scaling exists for (flows/ci-autoscale.yaml,
docs/transistor.md).
"""

from pathlib import Path

import numpy as np

from kcompile.knet import random_knet, save_knet

knet = random_knet(
    num_nodes=6, num_layers=2, devices_per_layer=12, law="relu", num_outputs=2, theta_scale=1.0, seed=0,
    meta={"task": "none", "note": "random-but-valid network, theta in [-1, 1], not trained: automatic scaling"},
)
inputs = np.random.default_rng(100).uniform(-1, 1, (8, knet.num_features))
save_knet(knet, Path(__file__).with_name("autoscale_relu.npz"), test_inputs=inputs)
