#!/usr/bin/env bash
# Everything a device call of this grid needs, made on a CPU first (no device time): the wheels the
# GPU machine lacks (.whl/), the sudoku and chess sets (.cache/fpstab, via make_data.sh) and a dry run
# of device.sh. Both folders are git-ignored, so a fresh checkout has neither; run this at the start
# of a session that has a device, before its first `run` call:
#
#     WORKERS=2 bash results/paper_grid/prepare.sh     # repository root
#
# Steps already done are skipped (a wheel present, a set cached), so a rerun only checks. The GPU
# machine runs Python 3.12 with torch, numpy and scipy installed; torchdeq and chess (pure Python) are
# not there. Their versions here are the ones the test suite ran with.
set -euo pipefail
wheel() {  # wheel NAME VERSION: a py3 wheel for the GPU machine's Python into .whl/
    ls .whl/"$1"-"$2"-*.whl >/dev/null 2>&1 && { echo "wheel $1 $2: present"; return; }
    if python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$1==$2" 2>/dev/null; then
        echo "wheel $1 $2: downloaded"
    else  # published as source only (chess 1.11): build the pure-Python wheel here
        python3 -m pip wheel -q --no-deps -w .whl "$1==$2" && echo "wheel $1 $2: built from its source"
    fi
}
start=$(date +%s)
mkdir -p .whl
wheel torchdeq 0.1.0
wheel chess 1.11.2
WORKERS=${WORKERS:-2} bash results/paper_grid/make_data.sh
echo "data: $(find .cache/fpstab -type f | wc -l) files, $(du -sh .cache/fpstab | cut -f1)"
bash results/paper_grid/dry_run.sh
echo "carry: .whl $(du -sh .whl | cut -f1), .cache $(du -sh .cache | cut -f1); tracked and untracked files" \
     "$(git ls-files -co --exclude-standard -z | du -ch --files0-from=- | tail -n 1 | cut -f1) (limit 64 MiB together)"
echo "prepare.sh: done in $(( $(date +%s) - start )) s"
