#!/usr/bin/env bash
# The CPU check of chess training behind README.md's "Will the runs fit?" (2026-12-07, the 2-core box,
# torch 2.13.0+cpu, one thread per run, two runs at a time; the step was compiled (auto: >= 1,000 steps)).
# Records here: config.json, metrics.jsonl, status.json, eval.json and the printed logs (no checkpoints).
# The data is the paper grid's cache (make_data.sh): mate1 and mate2 at seed 0 (training), 1 (validation).
set -euo pipefail
export FPSTAB_CACHE=${FPSTAB_CACHE:-$PWD/.cache/fpstab}
train() {  # train NAME ARCH LR EPOCHS
    python3 -m fpstab.cli train --task chess --arch "$2" --norm outer --train-level mate1+mate2 --n-train 20000 \
        --n-val 500 --batch-size 32 --epochs "$4" --lr "$3" --warmup-epochs 0.2 --lr-milestones --d-model 128 \
        --n-heads 4 --threads 1 --out "/tmp/chess_cpu/$1"
    python3 -m fpstab.cli eval "/tmp/chess_cpu/$1" --levels mate1 mate2 mate3 --iters 100 --samples 500 \
        --solver none --threads 1
}
train standard_recall-outer-lr3e-4-2ep standard_recall 3e-4 2
train no_recall-outer-lr1e-4-2ep no_recall 1e-4 2
train standard_recall-outer-lr3e-4-8ep standard_recall 3e-4 8
train standard_recall-outer-lr1e-3-8ep standard_recall 1e-3 8
train no_recall-outer-lr3e-4-2ep no_recall 3e-4 2
train internal_recall-outer-lr1e-3-2ep internal_recall 1e-3 2
