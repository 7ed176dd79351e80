"""Faults of compiled devices and their simulators, through the CLI (issue 12, "Bad input and faults").

A Verilog-A module that does not compile, a missing module, a missing or corrupt compiled library, an absent
simulator or compiler: each exits 3 (2 for what the user must rebuild) with one line that names the tool, the file
and the fix, and nothing falls back silently to another simulator or device form. The one allowed fallback, an
ngspice without KLU factoring with Sparse 1.3, is printed. Real tools throughout: ngspice 46, VACASK, openvaf-r
and, where installed, Debian's ngspice 39.
"""

from __future__ import annotations

import os
import shutil

import pytest

from kcompile import osdi
from kcompile.build import open_build
from tests.test_cli import _cli
from tests.test_osdi import NGSPICE_39, _osdi_ngspice, cache  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.ngspice, pytest.mark.usefixtures("_osdi_ngspice")]


@pytest.fixture
def built(tmp_path, small_weights, cache):  # noqa: F811
    """A build of compiled devices (the default) and its module, with a private cache of compiled libraries."""
    assert _cli("build", small_weights, "-o", tmp_path / "b", "--devices", "osdi").exit_code == 0
    return tmp_path / "b", tmp_path / "b" / osdi.circuit_module(open_build(tmp_path / "b").knet, False).va_name


def _error(result, code: int) -> str:
    """The run's one error line (exit status ``code``, no traceback); warnings may precede it."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    return errors[0]


@pytest.mark.vacask
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
def test_module_that_does_not_compile_names_compiler_file_line_and_fix(built, simulator):
    b, va = built
    va.write_text(va.read_text().replace("total = total + w0*", "total = total + frobnicate(w0)*"))
    line = _error(_cli("simulate", b, "--batch", "1", "-q", "--simulator", simulator), 3)
    assert f"openvaf-r could not compile {va}: line " in line and "frobnicate" in line
    assert line.endswith("the module is written by 'kcompile build': rebuild, or fix the file if you edited it")


def test_missing_module_says_rebuild(built):
    b, va = built
    va.unlink()
    line = _error(_cli("simulate", b, "--batch", "1", "-q"), 2)
    assert line == f"error: {va}: cannot read the Verilog-A module (No such file or directory); rebuild with " \
                   "'kcompile build'"


@pytest.mark.vacask
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
def test_corrupt_or_missing_compiled_library_names_it_and_the_fix(built, cache, simulator):  # noqa: F811
    b, va = built
    assert _cli("simulate", b, "--batch", "1", "-q", "--simulator", simulator).exit_code == 0
    (lib,) = (cache / "osdi").glob(f"*/{va.stem}.osdi")
    lib.write_bytes(lib.read_bytes()[:4096])  # truncated
    fix = f"delete {lib.parent} and rerun: kcompile compiles it again"
    line = _error(_cli("simulate", b, "--batch", "1", "-q", "--simulator", simulator), 3)
    assert line.startswith(f"error: openvaf-r: the cached compiled model {lib} is missing or corrupt") and \
        line.endswith(fix)
    lib.unlink()
    assert _error(_cli("simulate", b, "--batch", "1", "-q", "--simulator", simulator), 3).endswith(fix)
    shutil.rmtree(lib.parent)  # the fix
    assert _cli("simulate", b, "--batch", "1", "-q", "--simulator", simulator).exit_code == 0


@pytest.mark.vacask
@pytest.mark.parametrize("simulator, variable", [("ngspice", "KCOMPILE_NGSPICE"), ("vacask", "KCOMPILE_VACASK")])
def test_absent_simulator_names_it_the_variable_and_the_fix(built, tmp_path, monkeypatch, simulator, variable):
    """The variable wins even when it is wrong: no other binary of that simulator, and no other simulator."""
    monkeypatch.setenv(variable, str(tmp_path / "nowhere" / simulator))
    line = _error(_cli("simulate", built[0], "--batch", "1", "-q", "--simulator", simulator), 3)
    assert line.startswith(f"error: {simulator} not found: {variable}={tmp_path / 'nowhere' / simulator} is not "
                           "an executable file; ")
    assert "scripts/setup.sh" in line


def test_absent_compiler_names_it_and_the_fix_and_a_default_build_says_what_it_chose(built, tmp_path, small_weights,
                                                                                      monkeypatch):
    monkeypatch.setenv(osdi.ENV_OPENVAF, str(tmp_path / "no-openvaf"))
    line = _error(_cli("simulate", built[0], "--batch", "1", "-q"), 3)
    assert line == (f"error: openvaf-r (the Verilog-A compiler for --devices osdi) not found: KCOMPILE_OPENVAF="
                    f"{tmp_path / 'no-openvaf'} is not an executable file; {osdi.OPENVAF_HINT}")
    result = _cli("build", small_weights, "-o", tmp_path / "c")  # no device form asked for: the allowed fallback
    assert result.exit_code == 0 and "note: devices: behavioural sources (--devices bsource) because openvaf-r, " \
        "the Verilog-A compiler, is not installed" in result.output
    assert open_build(tmp_path / "c").manifest["cells"]["devices"] == "bsource"


@pytest.mark.skipif(not os.access(NGSPICE_39, os.X_OK), reason="no Debian ngspice 39 at /usr/bin/ngspice")
def test_ngspice_without_klu_or_osdi(built, tmp_path, small_weights, monkeypatch):
    """Without OSDI a compiled-device build is refused (test_osdi.py has the message); without KLU a build that
    asks for it runs with Sparse 1.3, and says so."""
    monkeypatch.setenv("KCOMPILE_NGSPICE", NGSPICE_39)
    line = _error(_cli("simulate", built[0], "--batch", "1", "-q"), 3)
    assert "cannot load the compiled devices (OSDI)" in line and "rebuild with --devices bsource" in line
    args = ("-o", tmp_path / "k", "--devices", "bsource", "--solver", "klu")
    assert _cli("build", small_weights, *args).exit_code == 0
    result = _cli("simulate", tmp_path / "k", "--batch", "1", "-q")
    assert result.exit_code == 0 and "note: this ngspice has no KLU solver, so it factors with Sparse 1.3" in \
        result.output and "scripts/setup.sh installs one that has it" in result.output
