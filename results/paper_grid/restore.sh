#!/usr/bin/env bash
# After a device call: put what device.sh wrote under $OUT back into the repository.
#
#     bash results/paper_grid/restore.sh FROM CALL     # repository root; FROM: the call's files_at
#
# - runs-paper.tar.gz is unpacked over GRID_DIR/runs (the run records: config, status,
#   metrics, eval, probe, sweep records, logs; no checkpoints);
# - each ckpt-RUN.pt becomes GRID_DIR/runs/RUN/checkpoints/last.pt (git-ignored), so the
#   next call resumes RUN when it carries that folder (the lines printed at the end);
# - everything else (device.txt, plan.txt, bench.*, the sweep's log) is copied to
#   GRID_DIR/calls/CALL/, to commit with the records;
# - GRID_DIR/report is regenerated against paper.toml (its title kept), and the sweep's dry run
#   printed: what the next call continues.
#
# GRID_DIR (default results/paper_grid) is the folder holding paper.toml, runs/ and calls/; dry_run.sh
# points it at a scratch copy.
set -euo pipefail
from=${1:?usage: restore.sh FROM CALL (FROM: the folder holding what the call wrote under \$OUT)}
call=${2:?usage: restore.sh FROM CALL (CALL: a name for the call, e.g. 3)}
here=${GRID_DIR:-results/paper_grid}
# This checkout's fpstab, whether or not (or wherever else) it is installed: the report is made from inside $here.
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
[ -f "$here/paper.toml" ] || { echo "restore.sh: no $here/paper.toml (run it from the repository root)" >&2; exit 1; }
[ -f "$from/runs-paper.tar.gz" ] || { echo "restore.sh: $from has no runs-paper.tar.gz (did the sweep start?)" >&2; exit 1; }
tar xzf "$from/runs-paper.tar.gz" -C "$here"
mkdir -p "$here/calls/$call"
carry=()
for f in "$from"/*; do
    name=$(basename "$f")
    case $name in
        runs-paper.tar.gz) ;;
        ckpt-*.pt) run=${name#ckpt-}; run=${run%.pt}
                   [ -d "$here/runs/$run" ] || { echo "restore.sh: $name names no run in $here/runs" >&2; exit 1; }
                   mkdir -p "$here/runs/$run/checkpoints"
                   cp "$f" "$here/runs/$run/checkpoints/last.pt"
                   carry+=("\"$here/runs/$run/checkpoints\"") ;;
        *) cp "$f" "$here/calls/$call/" ;;
    esac
done
echo "restored call $call: records into $here/runs, logs into $here/calls/$call"
if [ "${#carry[@]}" -gt 0 ]; then
    echo "checkpoints to resume; carry them on the call that trains these runs (the working tree may be"
    echo "64 MiB: with more than one, carry only that task's data, .cache/fpstab/TASK, not all of .cache):"
    (IFS=,; echo "  carry: [\".whl\", \".cache\", ${carry[*]}]")
fi
title="The paper's grid on one GPU"
[ -f "$here/report/index.md" ] && title=$(head -1 "$here/report/index.md" | sed 's/^# //')
(cd "$here" && python3 -m fpstab.cli report runs --out report --grid paper.toml --title "$title")
python3 -m fpstab.cli sweep "$here/paper.toml" --out "$here/runs" --dry-run
