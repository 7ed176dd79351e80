#!/usr/bin/env bash
# Fetch an ngspice built with the KLU sparse solver, for large networks (docs/performance.md).
#
# Debian bookworm's ngspice 39 has only Sparse 1.3, which factors the dense-ish matrix of an
# MNIST-size network slowly. bookworm-backports carries ngspice 46 built with KLU for the same
# libraries. This script downloads that one package (no system change, no root needed),
# unpacks it under $KCOMPILE_CACHE/ngspice-klu (default ~/.cache/kcompile/ngspice-klu) and
# prints the line that makes kcompile use it:
#
#   bash scripts/ngspice_klu.sh            # then: export KCOMPILE_NGSPICE=<the printed path>
#
# The system ngspice stays the default (CI and the tests use it).
set -euo pipefail
SUITE="${NGSPICE_KLU_SUITE:-bookworm-backports}"
DEST="${KCOMPILE_CACHE:-$HOME/.cache/kcompile}/ngspice-klu"
BIN="$DEST/root/usr/bin/ngspice"
if [ ! -x "$BIN" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$DEST"
  echo "deb http://deb.debian.org/debian $SUITE main" > "$tmp/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp" -o Debug::NoLocking=1
            -o APT::Sandbox::User=root)
  echo "ngspice_klu: fetching ngspice from Debian $SUITE" >&2
  apt-get "${apt_opts[@]}" update -qq
  (cd "$tmp" && apt-get "${apt_opts[@]}" download ngspice >/dev/null)
  dpkg-deb -x "$tmp"/ngspice_*.deb "$DEST/root"
fi
if ! "$BIN" -v 2>&1 | grep -q "KLU"; then
  echo "ngspice_klu: $BIN is not built with KLU" >&2
  exit 1
fi
"$BIN" -v 2>&1 | grep -m1 "ngspice-" >&2
echo "export KCOMPILE_NGSPICE=$BIN"
