#!/bin/bash
# The README's tiny prefix-sum preset, `fpstab train --task prefix_sum --arch standard_recall --norm outer
# --preset tiny --threads 1`, run twice side by side (one torch thread each, started together on the
# 2-core box), each from its own source tree, the second with extra flags if given:
#
#     bash tiny_pair.sh OUT_DIR NAME_A TREE_A NAME_B TREE_B [FLAGS_B ...]
#
# Writes OUT_DIR/NAME.log (the training's output), NAME.time.txt (/usr/bin/time -v) and the run NAME/.
set -u
out=$1 name_a=$2 tree_a=$3 name_b=$4 tree_b=$5
shift 5
mkdir -p "$out"
run() {  # run NAME TREE [FLAGS ...]
    (cd "$2" && /usr/bin/time -v python3 -m fpstab.cli train --task prefix_sum --arch standard_recall \
        --norm outer --preset tiny --threads 1 "${@:3}" --out "$out/$1" > "$out/$1.log" 2> "$out/$1.time.txt")
}
run "$name_a" "$tree_a" &
run "$name_b" "$tree_b" "$@" &
wait
