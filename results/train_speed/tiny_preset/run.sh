#!/bin/bash
# The README's tiny prefix-sum preset from two worktrees side by side (one torch thread each, started
# together on the 2-core box): bash run.sh BEFORE_TREE AFTER_TREE OUT_DIR
set -u
before=$1 after=$2 out=$3
mkdir -p "$out"
run() {
    (cd "$1" && /usr/bin/time -v python3 -m fpstab.cli train --task prefix_sum --arch standard_recall \
        --norm outer --preset tiny --threads 1 --out "$out/$2" > "$out/$2.log" 2> "$out/$2.time.txt")
}
run "$before" before &
run "$after" after &
wait
