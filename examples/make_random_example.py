"""Write examples/random_relu.npz: a random-but-valid KirchhoffNet (not trained).

Run from the repository root: ``python examples/make_random_example.py``.
It stays the shipped example until trained models (issue #5) replace it.
"""

from pathlib import Path

import numpy as np

from kcompile.knet import random_knet, save_knet

knet = random_knet(
    num_nodes=10, num_layers=3, devices_per_layer=40, law="relu", num_inputs=4, num_outputs=2,
    theta_scale=0.5, seed=7,
    meta={"task": "none", "note": "random-but-valid network, not trained; shipped until trained models exist"},
)
inputs = np.random.default_rng(1).uniform(-1, 1, (8, knet.num_features))
save_knet(knet, Path(__file__).with_name("random_relu.npz"), test_inputs=inputs)
