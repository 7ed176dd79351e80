"""Hostile and nonsensical inputs (issue 16, items 2-4, 6, 7): each is refused in one line naming the file,
the key and the fix, with exit 2, quickly and without using much memory."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import yaml

from kcompile.build import open_build
from kcompile.errors import InputError, WeightsError
from kcompile.flow import load_flow
from kcompile.knet import load_knet, random_knet, save_knet
from kcompile.netlist import Tran
from tests.test_cli import _cli
from tests.test_knet_loader import _arrays


def _one_line_error(result, code=2):
    """The error line of a refused command: the exit status, one "error:" line (the last), no traceback;
    progress lines before it ("inputs: ...", "flow ...") are fine."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and sum(ln.startswith("error:") for ln in lines) == 1, result.output
    return lines[-1]


def _weights(tmp_path, small_weights, **changes):
    arrays = _arrays(small_weights)
    arrays.update(changes)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- weights files: limits read before the data

@pytest.mark.parametrize("changes,message", [
    ({"num_nodes": np.array(2**64 - 1, dtype=np.uint64)}, "value 18446744073709551615 is out of range"),
    ({"num_nodes": np.array(10**9)}, "'num_nodes': must be from 1 to 1,000,000, got 1,000,000,000"),
    ({"input_index": np.array([0, 1, 10**12])}, "'input_index': feature index 1,000,000,000,000 out of range"),
    ({"meta": np.array("[" * 100_000 + "]" * 100_000)}, "'meta': is nested more than 100 levels deep"),
    ({"meta": np.array('{"accuracy": NaN}')}, "'meta': is not valid JSON (NaN is not standard JSON)"),
    ({"capacitance": np.array(5e-324)}, "'capacitance': must be positive and a normal float"),
    ({"test_labels": np.zeros((3, 2))}, "'test_labels': labels must be numeric with shape [3]"),
    ({"layer0_src": np.array([1, 2], dtype=np.uint64)}, "'layer0_dst': has 12 entries but layer0_src has 2"),
])
def test_weights_beyond_limits_exit_2(tmp_path, small_weights, changes, message):
    t0 = time.perf_counter()
    line = _one_line_error(_cli("build", _weights(tmp_path, small_weights, **changes), "-o", tmp_path / "out"))
    assert message in line and time.perf_counter() - t0 < 5
    assert not (tmp_path / "out").exists()


def test_missing_key_points_to_the_contract(tmp_path, small_weights):
    arrays = _arrays(small_weights)
    del arrays["t_bounds"]
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(WeightsError, match="see docs/design.md"):
        load_knet(tmp_path / "w.npz")


def _zip_member(path, name: str, header_shape: tuple, payload: bytes = b"", compress_zeros: int = 0):
    """Add ``name`` to the archive: an .npy header declaring ``header_shape`` float64, then the payload (or
    ``compress_zeros`` MiB of zeros, deflated)."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z, z.open(name, "w") as f:
        f.write(head.getvalue() + payload)
        for _ in range(compress_zeros):
            f.write(bytes(1 << 20))


def test_an_unknown_key_is_never_decompressed(tmp_path, small_weights):
    """A 256 MiB bomb under a key the reader does not know costs nothing (it used to be expanded)."""
    path = tmp_path / "bomb.npz"
    path.write_bytes(small_weights.read_bytes())
    _zip_member(path, "unknown_extra.npy", (1 << 25,), compress_zeros=256)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        knet = load_knet(path)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert knet.num_devices == 24 and seconds < 1.0 and peak < 16 << 20


def test_a_known_key_declaring_a_huge_shape_is_refused_before_reading(tmp_path, small_weights):
    arrays = _arrays(small_weights)
    del arrays["layer0_theta"]
    path = tmp_path / "huge.npz"
    np.savez(path, **arrays)
    _zip_member(path, "layer0_theta.npy", (10**9, 2), payload=bytes(64))
    with pytest.raises(WeightsError, match=r"'layer0_theta': holds 2,000,000,000 values \(shape \(1000000000, 2\)\), "
                                           r"more than the 24 this key may hold"):
        load_knet(path)


def test_stiff_network_is_refused_with_advice_not_a_hang(tmp_path):
    """Capacitances far below the devices' time constants: exit 2 within seconds, with what to change."""
    knet = random_knet(6, 2, 12, "relu", seed=1)
    save_knet(dataclasses.replace(knet, capacitance=np.full(6, 1e-8)), tmp_path / "stiff.npz")
    assert _cli("build", tmp_path / "stiff.npz", "-o", tmp_path / "b").exit_code == 0
    t0 = time.perf_counter()
    line = _one_line_error(_cli("simulate", tmp_path / "b", "--reference-only", "--batch", "2"))
    assert "too stiff" in line and "capacitance 1e-08" in line and time.perf_counter() - t0 < 10


def test_meta_with_nan_is_not_written(tmp_path):
    knet = random_knet(4, 1, 4, "relu", meta={"loss": float("nan")})
    with pytest.raises(InputError, match="NaN or infinity"):
        save_knet(knet, tmp_path / "w.npz")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- flow files

def _flow(tmp_path, small_weights, text: str):
    path = tmp_path / "f.yaml"
    path.write_text(f"model: {small_weights}\n" + text)
    return path


IDEAL = "levels: []\ngates:\n  - {level: ideal, metric: max_output_error, limit: 1.0}\n"


def test_yaml_alias_bomb_is_refused_at_once(tmp_path, small_weights):
    """The issue's 384-byte flow expanded to a 72 MB message; anchors are now refused before expansion."""
    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for name, prev in zip("bcdefgh", "abcdefg"):
        laughs += f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    path = _flow(tmp_path, small_weights, laughs)
    t0 = time.perf_counter()
    line = _one_line_error(_cli("verify", path))
    assert "anchors and aliases" in line and "line 2" in line
    assert len(line) < 300 and time.perf_counter() - t0 < 2


@pytest.mark.parametrize("text,message", [
    ("gates:\n  - {level: ideal, metric: max_output_error, limit: .nan}\n", "'gates[0].limit' must be finite"),
    ("gates:\n  - {level: ideal, metric: max_output_error, limit: -1}\n", "'gates[0].limit' must be at least 0"),
    ("temperature: [27, .nan]\n", "'temperature' must be finite"),
    ("temperature: -300\n", "'temperature' must be more than -273.15"),
    ("batch: -1\n", "'batch' must be at least 1, got -1"),
    ("batch: 0\n", "'batch' must be at least 1, got 0"),
    ("jobs: 0\n", "'jobs' must be at least 1"),
    ("seed: -1\n", "'seed' must be at least 0"),
    ("monte_carlo: {scale: .inf}\nlevels: [transistor]\n", "'monte_carlo.scale' must be finite"),
    ("scaling: {v0: 0}\n", "'scaling.v0' must be more than 0"),
    ("name: \"a\\x1b[31mred\"\n", "'name' contains control characters"),
    ("scheduler: nowhere\n", "'scheduler' must be a Dask scheduler address"),
    ("model: " + "a" * 5000 + "\n", "'model' is not a usable path (File name too long)"),
])
def test_nonsense_flow_values_exit_2(tmp_path, small_weights, text, message):
    path = _flow(tmp_path, small_weights, text)
    with pytest.raises(InputError) as info:
        load_flow(path)
    assert message in str(info.value) and len(str(info.value)) < 400
    assert message in _one_line_error(_cli("verify", path))


def test_flow_without_gates_is_refused(tmp_path, small_weights):
    line = _one_line_error(_cli("verify", _flow(tmp_path, small_weights, "levels: []\n")))
    assert "'gates' is missing or empty" in line


def test_flow_files_that_are_not_small_utf8_yaml(tmp_path, small_weights):
    path = tmp_path / "f.yaml"
    path.write_bytes(f"model: {small_weights}\nname: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8 text (byte" in _one_line_error(_cli("verify", path))
    path.write_text(f"model: {small_weights}\n" + "# padding\n" * 120_000)
    assert "too large for a flow file" in _one_line_error(_cli("verify", path))
    path.write_text("[" * 50_000)
    _one_line_error(_cli("verify", path))
    path.write_text("!!python/object/apply:os.system ['touch PWNED']\n")
    assert "not valid YAML" in _one_line_error(_cli("verify", path))
    assert not (tmp_path / "PWNED").exists()


def test_cache_naming_a_file_is_refused(tmp_path, small_weights):
    (tmp_path / "cache").write_text("not a folder")
    line = _one_line_error(_cli("verify", _flow(tmp_path, small_weights, IDEAL + "cache: cache\n")))
    assert "'cache' names" in line and "not a directory" in line


# ---------------------------------------------------------------- build directories are input

@pytest.fixture
def built(tmp_path, small_weights):
    out = tmp_path / "b"
    assert _cli("build", small_weights, "-o", out).exit_code == 0
    return out


def _tamper(build, change):
    path = build / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("where", ["method", "solver"])
def test_manifest_cannot_run_shell_commands(tmp_path, built, where):
    """The issue's exploit: tran.method was pasted into the run deck, so a .control block ran `shell`."""
    mark = tmp_path / "PWNED"
    _tamper(built, lambda m: m["tran"].__setitem__(where, f"trap\n.control\nshell touch {mark}\n.endc\n"))
    line = _one_line_error(_cli("simulate", built, "--batch", "1"))
    assert f"'tran.{where}' must be one of" in line and "rebuild it with 'kcompile build'" in line
    assert not mark.exists()


def test_tran_refuses_text_that_is_not_its_own(tmp_path):
    good = dict(tstop=1.0, tstep=1e-3, tmax=1e-3)
    for bad in ({"method": "trap\n.control"}, {"solver": "klu\nshell"}, {"tstep": float("nan")}, {"tmax": -1.0},
                {"temp": float("nan")}, {"uic": "yes"}):
        with pytest.raises(InputError, match="parameter of Tran"):
            Tran(**{**good, **bad})


@pytest.mark.parametrize("change,message", [
    (lambda m: m["files"].__setitem__("../../etc/passwd", "0" * 64), "not a plain file name inside the build"),
    (lambda m: m["files"].__setitem__("circuit.cir", "not-a-hash"), "'files.circuit.cir' must be a hex SHA-256"),
    (lambda m: m["tran"].__setitem__("tstep", -1), "'tran.tstep' must be more than 0"),
    (lambda m: m["tran"].__setitem__("extra", 1), "'tran.extra' is not a field of the transient analysis"),
    (lambda m: m["scaling"].__setitem__("i0", 1e-320), "'scaling' c_unit·v0/i0"),
    (lambda m: m["cells"].update(level="transistor", pdk="nope", corner="tt", supply=1.8), "'cells.pdk' must be one"),
    (lambda m: m["cells"].update(level="transistor", pdk="sky130", corner="zz", supply=1.8),
     "'cells.corner' must be one of"),
    (lambda m: m.__setitem__("num_nodes", 7), "describes a relu network of 7 nodes"),
    (lambda m: m.__setitem__("law", "tanh"), "describes a tanh network"),
    (lambda m: m.pop("tran"), "'tran' is missing"),
])
def test_tampered_manifests_exit_2(built, change, message):
    _tamper(built, change)
    assert message in _one_line_error(_cli("simulate", built, "--reference-only"))


def test_manifest_text_that_is_not_a_manifest(built):
    path = built / "manifest.json"
    for text in ('{"format": NaN}', "[" * 100_000, "\xff\xfe"):
        path.write_bytes(text.encode("latin-1"))
        assert "unreadable manifest" in _one_line_error(_cli("simulate", built, "--reference-only"))


def test_recorded_data_is_checked(built):
    np.save(built / "inputs.npy", np.zeros((2, 5)))
    assert "have 5 columns" in _one_line_error(_cli("simulate", built, "--reference-only"))
    np.save(built / "inputs.npy", np.zeros((2, 3)))
    np.save(built / "labels.npy", np.zeros((2, 2)))
    with pytest.raises(InputError, match="labels must be numeric with shape"):
        open_build(built).recorded("labels")


def test_build_directories_follow_the_umask(tmp_path, small_weights):
    old = os.umask(0o022)
    try:
        assert _cli("build", small_weights, "-o", tmp_path / "b").exit_code == 0
        os.umask(0o077)
        assert _cli("build", small_weights, "-o", tmp_path / "p").exit_code == 0
    finally:
        os.umask(old)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "b" / "manifest.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- options and messages

@pytest.mark.parametrize("args,option", [
    (["simulate", "{b}", "--reference-only", "--batch", "0"], "--batch"),
    (["simulate", "{b}", "--reference-only", "--batch", "-1"], "--batch"),
    (["simulate", "{b}", "--reference-only", "--seed", "-1"], "--seed"),
    (["simulate", "{b}", "--timeout", "nan"], "--timeout"),
    (["simulate", "{b}", "--timeout", "0"], "--timeout"),
    (["simulate", "{b}", "--timeout", "-5"], "--timeout"),
    (["simulate", "{b}", "--jobs", "0"], "--jobs"),
    (["verify", "{b}", "--max-error", "nan"], "--max-error"),
    (["build", "{w}", "-o", "{o}", "--v0", "0"], "--v0"),
    (["build", "{w}", "-o", "{o}", "--v0", "nan"], "--v0"),
    (["build", "{w}", "-o", "{o}", "--i0", "-1"], "--i0"),
    (["build", "{w}", "-o", "{o}", "--c-unit", "inf"], "--c-unit"),
    (["build", "{w}", "-o", "{o}", "--points-per-layer", "5"], "--points-per-layer"),
    (["build", "{w}", "-o", "{o}", "--refine-steps", "-1"], "--refine-steps"),
    (["verify", "flow.yaml", "--scheduler", "nowhere"], "--scheduler"),
])
def test_numeric_options_are_checked(tmp_path, built, small_weights, args, option):
    args = [a.format(b=built, w=small_weights, o=tmp_path / "o") for a in args]
    result = _cli(*args)
    assert result.exit_code == 2 and f"Invalid value for '{option}" in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_tau_must_be_a_finite_time(tmp_path, small_weights):
    line = _one_line_error(_cli("build", small_weights, "-o", tmp_path / "o", "--i0", "1e-320"))
    assert "not a finite positive time unit" in line and not (tmp_path / "o").exists()


def test_brackets_in_messages_and_names_print_as_written(tmp_path, small_weights):
    """Messages are plain text: rich markup neither eats "[batch, F]" nor trips over "[/]"."""
    assert _cli("build", small_weights, "-o", tmp_path / "b").exit_code == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 1)))
    line = _one_line_error(_cli("simulate", tmp_path / "b", "--reference-only", "--inputs", tmp_path / "x.npy"))
    assert "inputs must have shape [batch, 3], got (2, 3, 1)" in line
    odd = tmp_path / "a[" / "]b[/]" / "w[bold].npz"
    odd.parent.mkdir(parents=True)
    odd.write_bytes(small_weights.read_bytes())
    result = _cli("build", odd, "-o", tmp_path / "c[/]")
    assert result.exit_code == 0 and "c[/]" in result.output, result.output
    missing = f"{odd.parent}/none[/].npz"
    assert f"{missing}: no such file" in _one_line_error(_cli("build", missing, "-o", tmp_path / "d"))
    flow = tmp_path / "a[" / "f].yaml"
    flow.write_text(yaml.safe_dump({"name": "[/]bold[red]", "model": str(odd), "levels": [],
                                    "gates": [{"level": "ideal", "metric": "max_output_error", "limit": 1.0}]}))
    result = _cli("verify", flow)
    assert result.exit_code == 0 and "flow [/]bold[red]" in result.output, result.output
