#!/usr/bin/env bash
# The same probe of one trained core whose loop does not converge, with the fixed-point solves left
# out (the default) and with --always-solve, started together on the 2-core box, one thread each.
# Run from the repository root: bash results/prefix_grid/probe_pair/pair.sh RUN_DIR OUT_DIR [more probe flags]
set -euo pipefail
run=$1 out=$2
shift 2
mkdir -p "$out"
for mode in default always; do
  flag=(); [ "$mode" = always ] && flag=(--always-solve)
  /usr/bin/time -v python3 -m fpstab.cli probe --checkpoint "$run" --json "$out/$mode.json" --device cpu \
    --samples 8 --threads 1 "$@" "${flag[@]}" > "$out/$mode.txt" 2> "$out/$mode.time" &
done
wait
