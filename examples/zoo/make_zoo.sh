#!/usr/bin/env bash
# Rebuild the model zoo and the MLP baselines of docs/training.md (CPU, one torch thread each).
# Usage: bash examples/zoo/make_zoo.sh [a|b|hw|all]   (a and b can run in parallel on two cores)
# `python -m kcompile.train` is the same command as `kcompile train`. Every shipped NAME.json also
# records, under provenance.command, the exact command (per-task defaults spelled out) that made it.
# The first models were trained in float64, before float32 became the default; --dtype float64 keeps them.
set -euo pipefail
cd "$(dirname "$0")/../.."
T="python -m kcompile.train --quiet"
Z=examples/zoo
B=$Z/baselines
stream_a() {
  $T --task friedman --size small --dtype float64 -o $Z/friedman-small.npz
  $T --task friedman --size small --dtype float64 --baseline mlp -o $B/mlp-friedman-small.json
  for s in medium large; do
    $T --task friedman --size $s -o $Z/friedman-$s.npz
    $T --task friedman --size $s --baseline mlp -o $B/mlp-friedman-$s.json
  done
}
stream_b() {
  $T --task moons --dtype float64 -o $Z/moons.npz
  $T --task moons --dtype float64 --baseline mlp -o $B/mlp-moons-small.json
  $T --task circles --dtype float64 -o $Z/circles.npz
  # hardware-aware options (θ range, noise during training)
  $T --task moons --theta-max 0.5 --theta-noise 0.02 --voltage-noise 0.02 -o $Z/moons-hw.npz
  $T --task diabetes --size small --dtype float64 -o $Z/diabetes-small.npz
  $T --task diabetes --size small --dtype float64 --baseline mlp -o $B/mlp-diabetes-small.json
  for s in medium large; do
    $T --task diabetes --size $s -o $Z/diabetes-$s.npz
    $T --task diabetes --size $s --baseline mlp -o $B/mlp-diabetes-$s.json
  done
  $T --task digits -o $Z/digits.npz
  $T --task digits --baseline mlp -o $B/mlp-digits-small.json
  for s in small medium large; do  # Boston housing, from the CSV shipped in the mlxtend wheel
    $T --task housing --size $s -o $Z/housing-$s.npz
    $T --task housing --size $s --baseline mlp -o $B/mlp-housing-$s.json
  done
}
stream_hw() {  # the transistor-level model of docs/hardware_aware.md (needs ngspice: characterises the cell)
  $T --task moons --epochs 40 --batch-size 32 --dt 0.1 --voltage-max 3.0 --voltage-weight 100.0 \
    --theta-range cell:generic180 --device-in-the-loop generic180 --law relu --size small --lr 0.02 \
    --dtype float32 -o $Z/moons-hw-transistor.npz
}
case "${1:-all}" in
  a) stream_a ;;
  b) stream_b ;;
  hw) stream_hw ;;
  all) stream_a; stream_b; stream_hw ;;
esac
