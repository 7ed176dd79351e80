"""Write examples/random_relu.npz: a random-but-valid KirchhoffNet (not trained).

Run from the repository root: ``python examples/make_random_example.py``.
It stays the shipped example until trained models (issue #5) replace it. θ scale 0.3 and
seed 4 keep every node within ±2.8 model units on the recorded inputs, inside the
transistor cells' compliance window (±4 units at the default scaling).
"""

from pathlib import Path

import numpy as np

from kcompile.knet import random_knet, save_knet

knet = random_knet(
    num_nodes=10, num_layers=3, devices_per_layer=30, law="relu", num_inputs=4, num_outputs=2,
    theta_scale=0.3, seed=4,
    meta={"task": "none", "note": "random-but-valid network, not trained; shipped until trained models exist"},
)
inputs = np.random.default_rng(1).uniform(-1, 1, (8, knet.num_features))
save_knet(knet, Path(__file__).with_name("random_relu.npz"), test_inputs=inputs)
