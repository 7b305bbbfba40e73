#!/bin/bash
# The tiny prefix-sum preset, eager and with --compile, side by side (one torch thread each, started
# together on the 2-core box) from a worktree of the commit measured: bash run.sh WORKTREE OUT_DIR
set -u
tree=$1 out=$2
mkdir -p "$out"
run() {
    (cd "$tree" && /usr/bin/time -v python3 -m fpstab.cli train --task prefix_sum --arch standard_recall \
        --norm outer --preset tiny --threads 1 "${@:2}" --out "$out/$1" > "$out/$1.log" 2> "$out/$1.time.txt")
}
run eager &
run compiled --compile &
wait
