#!/usr/bin/env bash
# The grid's prefix-sum schedule at two batches (README.md, "Third check: the batch"; 2026-12-08, the 2-core box,
# torch 2.13.0+cpu, the two runs side by side with one thread each, both compiled). Records here: config.json,
# metrics.jsonl, status.json, eval.json and the printed logs (no checkpoints).
set -euo pipefail
export FPSTAB_CACHE=${FPSTAB_CACHE:-$PWD/.cache/fpstab}
for b in 500 100; do
    python3 -m fpstab.cli train --preset paper --task prefix_sum --arch no_recall --norm inner --n-train 20000 \
        --n-val 500 --epochs 16 --warmup-epochs 1.6 --lr-milestones 10 --lr 1e-4 --d-model 128 --n-heads 4 \
        --batch-size "$b" --threads 1 --compile --log-every 20 \
        --out "/tmp/prefix_cpu/no_recall-inner-lr1e-4-b$b-d128-16ep" &
done
wait
python3 -m fpstab.cli eval /tmp/prefix_cpu/no_recall-inner-lr1e-4-b100-d128-16ep --levels 32 64 128 256 512 \
    --iters 100 --samples 300 --solver none --threads 1
# batch 500 did not fit, so only its training level (the session's time):
python3 -m fpstab.cli eval /tmp/prefix_cpu/no_recall-inner-lr1e-4-b500-d128-16ep --levels 32 \
    --iters 100 --samples 300 --solver none --threads 2
