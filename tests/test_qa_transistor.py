"""Unseen networks at transistor level, default build (outside-in QA, session 10).

A random tanh_affine network (8 nodes, 3 layers, |θ| ≤ 1, seeds 10-14) was refused for clipped devices with
"pass --allow-clipped"; following that, it was refused again by the budget (its nodes leave the cells' window).
The first refusal now names both flags, and following it builds.
"""

from __future__ import annotations

import pytest

from kcompile.budget import OUTSIDE_SLACK
from kcompile.build import build
from kcompile.errors import InputError
from kcompile.knet import random_knet, save_knet


@pytest.mark.ngspice
def test_a_clipped_refusal_names_every_flag_the_build_needs(tmp_path):
    weights = tmp_path / "tanh_affine-10.npz"
    save_knet(random_knet(8, 3, 16, "tanh_affine", num_inputs=4, seed=10), weights)
    with pytest.raises(InputError) as info:
        build(weights, tmp_path / "b", cells="transistor")
    message = str(info.value)
    assert "pass --allow-clipped to build them clipped" in message
    assert "the nodes also leave the cells' compliance window by" in message
    assert message.endswith("pass --allow-out-of-budget as well")
    assert not (tmp_path / "b").exists()
    b = build(weights, tmp_path / "b", cells="transistor", allow_clipped=True, allow_out_of_budget=True)
    assert b.manifest["cells"]["clipped"] > 0 and b.manifest["cells"]["budget"]["outside"] > OUTSIDE_SLACK
