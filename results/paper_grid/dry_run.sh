#!/usr/bin/env bash
# A CPU dry run of device.sh (its bench, sharing and grid steps), before spending device time: paper.toml with a tiny model,
# a few samples and T = 20, one config per task (standard_recall + outer), every stage (train, eval,
# probe, report), against a copy of the carried data cache. Fails if the cache lacks a set the full
# grid reads at its full size (check_cache.py), if any stage fails, or if a data set had to be generated.
#
#     bash results/paper_grid/dry_run.sh        # repository root; about 1.5 minutes on 2 cores
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "${FPSTAB_CACHE_SRC:-.cache/fpstab}" "$work/cache"
# The full grid's sets at full size (the tiny grid below reads slices of them and cannot tell).
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} python3 results/paper_grid/check_cache.py results/paper_grid/paper.toml "$work/cache"
before=$(find "$work/cache" -type f | wc -l)
python3 - "$work/tiny.toml" <<'PY'
import re, sys
text = open("results/paper_grid/paper.toml").read()
head, sep, tasks = text.partition("\n[task.")
tasks, n = re.subn(r"(?m)^n_train = .*\n", "", tasks)  # the tasks' own sizes: the tiny one in [base] below
if n != 2:
    sys.exit("dry_run.sh: paper.toml no longer sets n_train under [task.sudoku] and [task.chess]")
text = head + sep + tasks
text = re.sub(r"(?m)^batch_size = .*\n", "", text)  # a task's or an include's own batch: the tiny one in [base] below
subs = [(r"(?m)^n_train = .*$", "n_train = 64\nd_model = 32\nn_heads = 2\nbatch_size = 16"),
        (r"(?m)^n_val = .*$", "n_val = 16"), (r"(?m)^epochs = .*$", "epochs = 1"),
        (r"(?m)^warmup_epochs = .*$", "warmup_epochs = 0.5"), (r"(?m)^lr_milestones = .*$", "lr_milestones = []"),
        (r"(?m)^iters = .*$", "iters = 20"), (r"(?m)^solver_max_iter = .*$", "solver_max_iter = 20"),
        (r"(?m)^samples = 300$", "samples = 16"), (r"(?m)^samples = 8$", "samples = 2")]
for pattern, repl in subs:
    text, n = re.subn(pattern, repl, text)
    if n != 1:
        sys.exit(f"dry_run.sh: paper.toml no longer has exactly one line matching {pattern!r}")
open(sys.argv[1], "w").write(text)
PY
# device.sh itself, as the GPU machine runs it, with the CPU and the tiny grid swapped in.
OUT="$work/out" DEVICE=cpu GRID_FILE="$work/tiny.toml" RUNS_DIR="$work/runs" FPSTAB_CACHE="$work/cache" \
    JOBS=2 THREADS=1 VARIANTS=eager_fp32 BENCH_FLAGS="--small --iters 4 --threads 1" STEPS=1 \
    SHARE_JOBS=1,2 SHARE_S=2 SHARE_FLAGS="--warmup 1" \
    DEADLINE_S=600 EVAL_RESERVE_S=300 bash results/paper_grid/device.sh bench sharing grid:auto:arch=standard_recall,norm=outer
for f in device.txt bench.json sharing-time-sliced.json plan.txt sweep-paper.log runs-paper.tar.gz; do
    [ -s "$work/out/$f" ] || { echo "dry run: device.sh wrote no $f under \$OUT" >&2; exit 1; }
done
runs=("$work"/runs/*-s0)
[ "${#runs[@]}" = 3 ] || { echo "dry run: expected 3 runs, found ${#runs[@]}" >&2; exit 1; }
for run in "${runs[@]}"; do
    for f in eval.json probe.json; do
        [ -s "$run/$f" ] || { echo "dry run: $run has no $f" >&2; exit 1; }
    done
done
python3 -m fpstab.cli report "$work/runs" --out "$work/report"
grep -Eq '^The grid \(.*; [0-9]+ runs\): 3 done, [0-9]+ not started\.' "$work/report/index.md" \
    || { echo "dry run: the report does not list the grid's progress (3 runs done, the rest not started)" >&2; exit 1; }
# grid:auto with too little of DEADLINE_S left starts no sweep and says so.
OUT="$work/late" DEVICE=cpu GRID_FILE="$work/tiny.toml" RUNS_DIR="$work/late-runs" FPSTAB_CACHE="$work/cache" \
    DEADLINE_S=100 bash results/paper_grid/device.sh grid:auto:arch=standard_recall >/dev/null 2>&1
grep -q "no sweep" "$work/late/plan.txt" && [ ! -e "$work/late-runs" ] \
    || { echo "dry run: grid:auto started a sweep with too little time left" >&2; exit 1; }
# A training the deadline cuts off comes back as its checkpoint, and restore.sh puts it where the next
# sweep resumes it (grid:12: trainings stop at 12 s; 800 eager steps take longer).
mkdir -p "$work/rescue"
sed 's/^epochs = 1$/epochs = 200/' "$work/tiny.toml" >"$work/rescue/paper.toml"
OUT="$work/rescue-out" DEVICE=cpu GRID_FILE="$work/rescue/paper.toml" RUNS_DIR="$work/rescue/runs" FPSTAB_CACHE="$work/cache" \
    JOBS=1 THREADS=1 HARD_S=90 bash results/paper_grid/device.sh grid:12:task=prefix_sum,arch=standard_recall,norm=outer \
    >"$work/rescue.log" 2>&1
ls "$work/rescue-out"/ckpt-*.pt >/dev/null 2>&1 \
    || { cat "$work/rescue.log" >&2; echo "dry run: no checkpoint came back from a training cut off by the deadline" >&2; exit 1; }
rm -rf "$work/rescue/runs"  # the repository has only what came back
GRID_DIR="$work/rescue" bash results/paper_grid/restore.sh "$work/rescue-out" dry >"$work/restore.txt" 2>&1 \
    && grep -q "resuming at its last checkpoint" "$work/restore.txt" \
    && grep -Eq "\| training \| train, eval, probe \| interrupted at step [0-9]+ of [0-9]+; resumes from its checkpoint \|" "$work/rescue/report/index.md" \
    || { cat "$work/restore.txt" >&2; echo "dry run: restore.sh did not leave the cut-off run to resume (or its report does not say so)" >&2; exit 1; }
# The real grid against the committed records: every run must be one the sweep will continue, not refuse.
python3 -m fpstab.cli sweep results/paper_grid/paper.toml --out results/paper_grid/runs --dry-run >"$work/next.txt" \
    || { cat "$work/next.txt" >&2; echo "dry run: the sweep would refuse a run directory in results/paper_grid/runs" >&2; exit 1; }
after=$(find "$work/cache" -type f | wc -l)
if [ "$after" != "$before" ]; then
    echo "dry run: the data cache grew from $before to $after files: a set the grid reads is not carried" >&2
    exit 1
fi
echo "dry run OK: device.sh bench, sharing and grid:auto ran (and declined a late sweep); 3 runs trained, evaluated, probed and reported; a cut-off training came back as its checkpoint and restore.sh left it to resume; paper.toml's runs continue from the records; no data set generated ($before cached files)"
