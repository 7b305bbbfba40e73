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

# The grid's own chess schedule at half its width (2026-12-07/08, alone on the box, two threads, compiled
# (auto), 1h53m of training): paper preset, batch 500, 16 epochs of 40,000 (mate1 + mate2, 20,000 each),
# warm-up 1.6 epochs, lr 1e-3 stepped to 1e-4 after epoch 10, activation checkpointing; d 128, 4 heads
# instead of d 256, 8 heads. (Run as /tmp/chess_b500/std_outer_d128, the path its records name.)
python3 -m fpstab.cli train --preset paper --task chess --arch standard_recall --norm outer --train-level mate1+mate2 \
    --n-train 40000 --n-val 500 --epochs 16 --warmup-epochs 1.6 --lr-milestones 10 --lr 1e-3 --d-model 128 \
    --n-heads 4 --threads 2 --activation-checkpointing --log-every 10 \
    --out /tmp/chess_cpu/standard_recall-outer-lr1e-3-b500-d128-16ep
python3 -m fpstab.cli eval /tmp/chess_cpu/standard_recall-outer-lr1e-3-b500-d128-16ep --levels mate1 mate2 mate3 \
    --iters 100 --samples 500 --solver none --threads 2

# The same schedule at batch 100 instead of 500 (2026-12-08, two threads, compiled (auto), no activation
# checkpointing (same gradients), the box otherwise mostly idle): the same 640,000 samples in 6,400 steps
# instead of 1,280. (Run as /tmp/chess_cpu/standard_recall-outer-lr1e-3-b100-d128-16ep.)
python3 -m fpstab.cli train --preset paper --task chess --arch standard_recall --norm outer --train-level mate1+mate2 \
    --n-train 40000 --n-val 500 --epochs 16 --warmup-epochs 1.6 --lr-milestones 10 --lr 1e-3 --d-model 128 \
    --n-heads 4 --batch-size 100 --threads 2 --log-every 50 \
    --out /tmp/chess_cpu/standard_recall-outer-lr1e-3-b100-d128-16ep
python3 -m fpstab.cli eval /tmp/chess_cpu/standard_recall-outer-lr1e-3-b100-d128-16ep --levels mate1 mate2 mate3 \
    --iters 100 --samples 500 --solver none --threads 2
