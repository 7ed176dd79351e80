#!/usr/bin/env bash
# Fetch ngspice 46 built with KLU and OSDI, kcompile's default simulator (scripts/setup.sh runs this).
#
# Debian bookworm's ngspice 39 has only Sparse 1.3 and cannot load OSDI device libraries (compiled
# Verilog-A). bookworm-backports carries ngspice 46 built with both, for the same libraries. This
# script downloads that one package (no system change, no root needed) and unpacks it under
# $KCOMPILE_CACHE/ngspice-klu (default ~/.cache/kcompile/ngspice-klu), where kcompile finds it without
# any environment variable (KCOMPILE_NGSPICE still overrides). It prints the binary's path as an
# export line, for other tools:
#
#   bash scripts/ngspice_klu.sh            # export KCOMPILE_NGSPICE=<the path>
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
  rm -rf "$DEST/root" "$DEST/root.tmp"
  dpkg-deb -x "$tmp"/ngspice_*.deb "$DEST/root.tmp"
  mv "$DEST/root.tmp" "$DEST/root"  # whole or not at all
fi
if ! "$BIN" -v 2>&1 | grep -q "KLU"; then
  echo "ngspice_klu: $BIN is not built with KLU" >&2
  exit 1
fi
if printf '* osdi probe\n.control\nosdi\n.endc\n.end\n' | "$BIN" -b -n 2>&1 | grep -q "no such command"; then
  echo "ngspice_klu: $BIN cannot load OSDI libraries" >&2
  exit 1
fi
"$BIN" -v 2>&1 | grep -m1 "ngspice-" >&2
echo "export KCOMPILE_NGSPICE=$BIN"
