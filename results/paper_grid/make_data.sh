#!/usr/bin/env bash
# The sudoku and chess sets of the paper grid, generated and cached on a CPU before a GPU
# session (into .cache/fpstab, which device.sh carries). Seeds: training data_seed 0,
# validation +1, evaluation +2, probes +3. One worker per set; run from the repository root.
set -euo pipefail
export FPSTAB_CACHE=${FPSTAB_CACHE:-$PWD/.cache/fpstab}
data() { python3 -m fpstab.cli data --task "$1" --level "$2" --n "$3" --seed "$4" --workers "${WORKERS:-1}" >/dev/null
         echo "$1 $2 n=$3 seed=$4 cached"; }
for lv in easy medium; do data sudoku $lv 20000 0; data sudoku $lv 500 1; done
for lv in easy medium hard extreme; do data sudoku $lv 500 2; data sudoku $lv 16 3; done
for lv in mate1 mate2; do data chess $lv 20000 0; data chess $lv 500 1; done
for lv in mate1 mate2 mate3; do data chess $lv 500 2; data chess $lv 16 3; done
