"""The cell contract, run over every registered cell × variant × PDK (kcompile.cells.registry).

A cell is covered the moment it is registered. For each one:

* its template renders every variant on every PDK, and the ``.subckt`` line names exactly the
  declared ports and parameters, in order; the mismatch render declares a threshold and a β
  parameter for every transistor the cell reports (unique names: what Monte Carlo varies);
* it characterises (DC sweeps through :mod:`kcompile.cells.sweep`, from the cache when it
  holds them) and, if it realises a law, calibrates;
* on θ drawn inside its calibrated box (``Cell.theta_box``), θ → instance parameters →
  achieved θ round-trips within ``THETA0_RESOLUTION`` on every device the mapping does not
  flag (nearly all of them), and every instance line sets exactly the declared parameters
  of one of its variants;
* refinement, the relu form (Monte Carlo ranking) and the training surrogate are either
  provided or refused with the fix.

Cost: generic180 characterises every cell (all cached after the first run, ~1 s each cold).
On sky130 and gf180mcu the characterisations that take more than ``SLOW_SECONDS`` with an
empty cache (measured: kc_tanh2 17 s / 56 s, kc_atanh 30 s / 28 s, both including kc_tanh2's
table) are marked ``slow`` (``-m slow``); the others take 2–11 s cold (kc_relu 11 s on
gf180mcu), well under 0.5 s cached.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from click.testing import CliRunner

from kcompile.cells import CELLS, Cell, NoCellError, Registry, cell_for_law
from kcompile.cells import registry as registry_module
from kcompile.cells.base import THETA0_RESOLUTION
from kcompile.errors import InputError
from kcompile.pdk import PdkError, get_pdk

PDKS = ("generic180", "sky130", "gf180mcu")
SLOW_SECONDS = 15.0
#: seconds to characterise (and calibrate) with an empty cache, measured on this project's machine
COLD_SECONDS = {("kc_tanh2", "sky130"): 17, ("kc_tanh2", "gf180mcu"): 56, ("kc_atanh", "sky130"): 30,
                ("kc_atanh", "gf180mcu"): 28}


def _marks(cell: Cell, pdk: str) -> list:
    return [pytest.mark.slow] if COLD_SECONDS.get((cell.name, pdk), 0.0) > SLOW_SECONDS else []


VARIANTS = [pytest.param(c, v, p, id=f"{c.name}-{v}-{p}") for c in CELLS for v in c.variants for p in PDKS]
CHARACTERISED = [pytest.param(c, p, id=f"{c.name}-{p}", marks=_marks(c, p)) for c in CELLS for p in PDKS]
ROUND_TRIPS = [pytest.param(c, law, p, id=f"{c.name}-{law}-{p}", marks=_marks(c, p))
               for c in CELLS for law in c.laws for p in PDKS]
LAWS = [pytest.param(c, law, id=f"{c.name}-{law}") for c in CELLS for law in c.laws]


def _installed(pdk: str):
    """The PDK, or a skip naming the package to install."""
    try:
        get_pdk(pdk).model_lines("tt")
    except PdkError as exc:
        pytest.skip(str(exc))
    return get_pdk(pdk)


def _header(text: str, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Ports and parameter names of the ``.subckt name`` statement (with its continuation lines)."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f".subckt {name} "))
    tokens = lines[start].split()[2:]
    for line in lines[start + 1:]:
        if not line.startswith("+"):
            break
        tokens += line[1:].split()
    return tuple(t for t in tokens if "=" not in t), tuple(t.split("=")[0] for t in tokens if "=" in t)


_CALIBRATIONS: dict = {}


def _calibration(cell: Cell, pdk: str):
    if (cell.name, pdk) not in _CALIBRATIONS:
        _CALIBRATIONS[cell.name, pdk] = cell.calibration(pdk)
    return _CALIBRATIONS[cell.name, pdk]


@pytest.mark.parametrize("cell,signs,pdk", VARIANTS)
def test_renders_its_declared_ports_and_parameters(cell, signs, pdk):
    p = get_pdk(pdk)
    name = cell.subckt(signs)
    text = cell.render(p, signs)
    assert _header(text, name) == (cell.ports, cell.params)
    assert text.rstrip().endswith(f".ends {name}")
    transistors = cell.transistors(p, signs)
    names = [t.name for t in transistors]
    assert transistors and len(set(names)) == len(names)
    varied = cell.render(p, signs, mismatch=True)
    ports, params = _header(varied, name)
    assert ports == cell.ports
    assert params == cell.params + tuple(f"{x}_{t}" for t in names for x in ("vt", "bt"))
    assert all(f"{{vt_{t}}}" in varied for t in names)


@pytest.mark.ngspice
@pytest.mark.parametrize("cell,pdk", CHARACTERISED)
def test_characterises_and_calibrates(cell, pdk):
    _installed(pdk)
    table = cell.characterize(pdk)
    assert table is not None
    if not cell.laws:  # a baseline: measured, never mapped
        with pytest.raises(InputError, match="no calibration"):
            cell.calibrate(table)
        return
    cal = _CALIBRATIONS[cell.name, pdk] = cell.calibrate(table)
    assert (cal.pdk, cal.corner, cal.cell) == (pdk, "tt", cell.name)
    for negative in (False, True):
        lo, hi = cal.theta0_range(negative)
        assert 0 < lo < 0.01 and hi > 0.5, (negative, lo, hi)


@pytest.mark.ngspice
@pytest.mark.parametrize("cell,law,pdk", ROUND_TRIPS)
def test_theta_round_trips_through_the_calibration(cell, law, pdk):
    _installed(pdk)
    cal = _calibration(cell, pdk)
    box = np.array(cell.theta_box(law, cal))
    theta = np.random.default_rng(0).uniform(box[:, 0], box[:, 1], (300, len(box)))
    lm = cell.map_layer(law, theta, cal)
    assert lm.target.shape == lm.achieved.shape == theta.shape and len(lm) == 300
    ok = ~lm.clipped
    assert ok.mean() >= 0.95, ok.mean()
    np.testing.assert_allclose(lm.achieved[ok], theta[ok], rtol=1e-9, atol=THETA0_RESOLUTION)
    for i in np.flatnonzero(lm.clipped)[:3]:
        assert cell.clip_reason(law, theta[i], lm.instance(i), cal)
    for i in range(0, 300, 37):
        p = lm.instance(i)
        assert p.signs in cell.variants
        assert tuple(kv.split("=")[0] for kv in p.spice().split()) == cell.params
    assert set(lm.arrays()) >= {"target", "achieved", "clipped"}


@pytest.mark.parametrize("cell,law", LAWS)
def test_capabilities_are_provided_or_refused_with_the_fix(cell, law):
    if cell.refinable:
        assert len(set(cell.refine_columns(law))) == 2
    else:
        with pytest.raises(InputError, match="--refine-steps 0"):
            cell.refine_columns(law)
    if law not in cell.trains:
        with pytest.raises(InputError, match="--device-in-the-loop"):
            cell.surrogate(law, "generic180", "tt")
        with pytest.raises(InputError, match="--theta-range"):
            cell.training_range(law, "generic180", "tt")
    theta = np.full((3, 2), 0.5)
    try:
        t0, t1, swap = cell.relu_targets(law, theta)
    except InputError as exc:
        assert "monte_carlo.rank: false" in str(exc)
    else:
        assert t0.shape == t1.shape == swap.shape == (3,)


def test_registry_maps_each_law_to_one_cell_and_refuses_duplicates():
    assert all(cell_for_law(law) is cell for cell in CELLS for law in cell.laws)
    assert CELLS.variant("kc_atanh_np") == (CELLS["kc_atanh"], "np")
    relu = CELLS["kc_relu"]
    with pytest.raises(ValueError, match="registered twice"):
        Registry([relu, relu])
    with pytest.raises(ValueError, match="law 'relu' has two cells"):
        Registry([relu, dataclasses.replace(relu, name="kc_relu2")])


def test_a_law_without_a_cell_is_refused_with_the_laws_that_have_one_and_the_fix():
    with pytest.raises(NoCellError) as info:
        cell_for_law("leaky_relu")
    message = str(info.value)
    assert "'leaky_relu'" in message and "--cells behavioural" in message
    assert all(law in message for law in CELLS.laws)


def test_build_refuses_a_law_whose_cell_is_not_registered(tmp_path, small_weights, monkeypatch):
    from kcompile.cli import main

    monkeypatch.setattr(registry_module, "CELLS", Registry(c for c in CELLS if "relu" not in c.laws))
    result = CliRunner().invoke(main, ["build", str(small_weights), "-o", str(tmp_path / "b"), "--cells",
                                       "transistor"])
    assert result.exit_code == 2, result.output
    assert "law 'relu' has no transistor-level cell" in result.output and "--cells behavioural" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "b").exists()


def test_characterize_cli_names_the_studies_it_knows(capsys):
    from kcompile.characterize import main

    with pytest.raises(InputError, match=re.escape(", ".join(CELLS.studies))):
        main(["generic180", "tt", "sigmoid"])


@pytest.mark.parametrize("cell", [pytest.param(c, id=c.name) for c in CELLS])
def test_a_larger_cell_keeps_its_ratios_and_halves_its_mismatch(cell):
    """``with_area(4)``: every size but the switches × 2, so W/L (bias, currents) stays, the gate area grows about
    4×, Pelgrom σ halves, and the characterisation cache keys on the new sizes; out of range is refused."""
    g180 = get_pdk("generic180")
    big = cell.with_area(4.0)
    small, large = dict(cell.sizes), dict(big.sizes)
    assert big.area == 4.0 and big.name == cell.name and big.subckt("p") == cell.subckt("p")
    for name, value in small.items():
        assert large[name] == pytest.approx(value if name in Cell.FIXED_SIZES else 2.0 * value)
    assert big.template_hash() != cell.template_hash()
    assert dict(big.with_area(1.0).sizes) == pytest.approx(small) and cell.with_area(1.0) is cell
    switch = sum(t.w * t.l for t in cell.transistors(g180) if t.w == small.get("w_sw"))
    for signs in cell.variants:  # a variant swaps gates, not sizes: one gate area per cell
        assert sum(t.w * t.l for t in cell.transistors(g180, signs)) == pytest.approx(cell.gate_area(g180))
    assert big.gate_area(g180) == pytest.approx(4.0 * (cell.gate_area(g180) - switch) + switch)
    for nominal, scaled in zip(cell.transistors(g180), big.transistors(g180)):
        assert nominal.name == scaled.name and nominal.w / nominal.l == pytest.approx(scaled.w / scaled.l)
    if cell.laws:
        acc, acc4 = cell.accuracy(g180), big.accuracy(g180)
        assert acc4.mismatch_v == pytest.approx(acc.mismatch_v / 2) and acc4.c_cell == pytest.approx(4 * acc.c_cell)
    assert cell_for_law(cell.laws[0], 4.0).sizes == big.sizes if cell.laws else True
    for bad in (0.5, 65.0, float("nan")):
        with pytest.raises(InputError, match="cell area"):
            cell.with_area(bad)


@pytest.mark.ngspice
def test_a_larger_relu_cell_calibrates_to_the_same_law():
    """Real sweeps of kc_relu drawn 4× as large (its own cache entry): the same W/L give the same slopes within
    the cell's 1 % gain accuracy, a few % apart at most."""
    cell = cell_for_law("relu")
    cal, cal4 = cell.calibration("generic180"), cell.with_area(4.0).calibration("generic180")
    assert cal4.r.shape == cal.r.shape
    for negative in (False, True):
        lo, hi = cal.theta0_range(negative), cal4.theta0_range(negative)
        assert hi[1] == pytest.approx(lo[1], rel=0.05)
    assert not np.array_equal(cal.theta0, cal4.theta0)  # measured, not the nominal table reused
    used = np.abs(cal.theta0) >= 0.01  # the tiniest slopes sit on the output conductance's floor
    assert np.allclose(cal4.theta0[used], cal.theta0[used], rtol=0.025)
