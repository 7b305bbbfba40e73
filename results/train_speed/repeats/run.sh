#!/bin/bash
# The step benchmark at the CPU shape, 3 rounds, each measuring two source trees one after the other
# (their plain-block rows are the same code): bash run.sh AFTER_TREE BEFORE_TREE OUT_DIR
# Run from the repository root. Here: AFTER_TREE a worktree at a7485d2, BEFORE_TREE one at 1bdce80.
set -u
after=$1 before=$2 out=$3
mkdir -p "$out"
for r in 1 2 3; do
    for side in after before; do
        tree=$after; [ "$side" = before ] && tree=$before
        python3 benchmarks/train_speed.py --small --variants eager_fp32,compile_fp32 --iters 30 \
            --arch standard_recall --norm outer --threads 1 --steps 8 --checkout "$tree" \
            --json "$out/$side-$r.json" > "$out/$side-$r.txt" 2>&1
    done
done
