#!/usr/bin/env bash
# Runs on a lent GPU machine from the repository root, with .whl/ (torchdeq and chess
# wheels) and .cache/ (the task data, generated on a CPU beforehand) carried along:
#
#     bash results/paper_grid/device.sh STEP [STEP ...]
#
# STEP: bench | sharing | calibrate | grid:SECONDS[:KEY=VALUE,...] (the paper grid, or the runs whose
# config matches, into results/paper_grid/runs: records committed from earlier calls are skipped there)
#
# grid:auto[:KEY=VALUE,...] sizes the sweep to what is left of DEADLINE_S (seconds from this script's
# start; at least 30 s below the call's timeout_s, since a sweep that ignores SIGTERM is killed 20 s
# later): trainings stop EVAL_RESERVE_S (default 200) before the deadline, so the runs trained by then
# are still evaluated and probed, and the sweep is killed at the deadline. The steps before it (bench)
# count against the same deadline. Size a call's runs to finish: a run whose training is cut off comes
# back only as its records, plus its checkpoint where that fits what a call returns (rescue below).
#
# sharing: benchmarks/gpu_sharing.py, the aggregate training steps/s of N processes on the GPU,
# time-sliced (SHARE_JOBS, default 1,4) and then under MPS (SHARE_MPS_JOBS, default 4,8) when its
# daemon starts and a CUDA context opens through it. MPS=1 runs the grid steps under MPS too.
#
# Writes under $OUT: device.txt (GPU, torch), bench.{txt,json}, sharing*.{txt,json}, mps.txt, plan.txt
# (each sweep's time limits and what it was to do for each run), and for each sweep a tarball of its
# run records (no checkpoints) plus the sweep's log; ckpt-RUN.pt, the checkpoint of each run stopped
# mid-training, while $OUT holds under 8 files and the checkpoint is under 16 MiB (a call returns
# at most 8 files of 16 MiB each; a looped core of the grid is 11-12 MiB, fixed_depth 136 MiB).
# restore.sh puts all of it back into the repository after the call.
#
# DEVICE (default cuda), GRID_FILE (default paper.toml), RUNS_DIR (default results/paper_grid/runs) and
# FPSTAB_CACHE (default .cache/fpstab) exist for dry_run.sh, which runs this script on a CPU.
set -uo pipefail
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
GRID_FILE=${GRID_FILE:-results/paper_grid/paper.toml}
RUNS_DIR=${RUNS_DIR:-results/paper_grid/runs}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
export FPSTAB_CACHE=${FPSTAB_CACHE:-$PWD/.cache/fpstab} PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/device.txt"
else
    python3 -c "import torch; print('torch', torch.__version__, 'on $DEVICE')" | tee "$OUT/device.txt"
fi

mps_control() {  # the MPS control program: on the PATH, or beside the driver's tools
    command -v nvidia-cuda-mps-control || ls /usr/local/nvidia/bin/nvidia-cuda-mps-control \
        /usr/local/cuda/bin/nvidia-cuda-mps-control 2>/dev/null | head -n 1
}

mps_stop() {
    local ctl; ctl=$(mps_control)
    [ -n "$ctl" ] && echo quit | timeout 20 "$ctl" >/dev/null 2>&1
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}

mps_start() {  # 0 when the MPS daemon runs and a CUDA context opens through it within 90 s; else MPS is off
    [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && return 0  # already on
    [ "$DEVICE" = cuda ] || { echo "MPS: not on $DEVICE" | tee -a "$OUT/mps.txt"; return 1; }
    local ctl; ctl=$(mps_control)
    [ -n "$ctl" ] || { echo "MPS: nvidia-cuda-mps-control not found; off" | tee -a "$OUT/mps.txt"; return 1; }
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if "$ctl" -d && timeout 90 python3 -c "import torch; print(torch.ones(8, device='cuda').sum().item())" >/dev/null; then
        echo "MPS: on ($ctl)" | tee -a "$OUT/mps.txt"; return 0
    fi
    echo "MPS: the daemon did not start or no CUDA context opened through it; off" | tee -a "$OUT/mps.txt"
    cat "$CUDA_MPS_LOG_DIRECTORY"/*.log >>"$OUT/mps.txt" 2>/dev/null
    mps_stop; return 1
}

sharing() {  # sharing LABEL JOBS: benchmarks/gpu_sharing.py on the grid's sudoku shape
    local flags="${SHARE_FLAGS:-}"
    [ "$DEVICE" = cuda ] || flags="--tiny --threads 1 $flags"
    timeout -k 10 "${SHARE_HARD_S:-200}" python3 benchmarks/gpu_sharing.py --device "$DEVICE" --jobs "$2" \
        --seconds "${SHARE_S:-25}" --threads "${THREADS:-2}" --label "$1" $flags \
        --json "$OUT/sharing-$1.json" 2>&1 | tee "$OUT/sharing-$1.txt"
}

sweep() {  # sweep GRID_FILE SECONDS|auto OUT_DIR NAME [sweep flags]: the time limits from grid_seconds
    local train hard
    read -r train hard <<<"$(grid_seconds "$2")"
    [ -n "${train:-}" ] || return 0
    echo "sweep $4: trainings stop at ${train} s, the sweep at ${hard} s (script time ${SECONDS} s)" | tee -a "$OUT/plan.txt"
    python3 -m fpstab.cli sweep "$1" --out "$3" --dry-run "${@:5}" >>"$OUT/plan.txt" 2>&1  # what each run does next
    timeout -k 20 "$hard" python3 -m fpstab.cli sweep "$1" --out "$3" --device "$DEVICE" \
        --jobs "${JOBS:-7}" --threads "${THREADS:-2}" --stop-after "$train" "${@:5}" 2>&1 | tee "$OUT/sweep-$4.log"
    tar czf "$OUT/runs-$4.tar.gz" --exclude='checkpoints' -C "$(dirname "$3")" "$(basename "$3")"
    rescue "$3"
}

rescue() {  # rescue RUNS_DIR: $OUT/ckpt-RUN.pt for each run whose training stopped before the end, so
    # the next call resumes it instead of training it again from step 0 (restore.sh puts it back)
    local ckpt run state
    for ckpt in "$1"/*/checkpoints/last.pt; do
        [ -f "$ckpt" ] || continue
        run=$(basename "$(dirname "$(dirname "$ckpt")")")
        state=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("state", "?"))' \
                "$1/$run/status.json" 2>/dev/null || echo "?")
        case $state in completed|diverged) continue ;; esac
        if [ "$(stat -c %s "$ckpt")" -ge $(( 16 * 1024 * 1024 )) ]; then
            echo "rescue: $run ($state): its checkpoint is 16 MiB or more, not brought back" | tee -a "$OUT/plan.txt"
        elif [ "$(find "$OUT" -maxdepth 1 -type f | wc -l)" -ge 8 ]; then
            echo "rescue: $run ($state): \$OUT holds 8 files already, checkpoint not brought back" | tee -a "$OUT/plan.txt"
        else
            cp "$ckpt" "$OUT/ckpt-$run.pt" && echo "rescue: $run ($state): checkpoint -> ckpt-$run.pt" | tee -a "$OUT/plan.txt"
        fi
    done
}

grid_seconds() {  # grid_seconds SECONDS|auto: "TRAIN HARD" (trainings stop at TRAIN, the sweep is killed at
    # HARD: HARD_S, default TRAIN + 150; or auto, from DEADLINE_S), or nothing when too little time is left
    if [ "$1" != auto ]; then echo "$1 ${HARD_S:-$(( $1 + 150 ))}"; return; fi
    local left=$(( ${DEADLINE_S:?grid:auto needs DEADLINE_S} - SECONDS )) reserve=${EVAL_RESERVE_S:-200}
    if [ $(( left - reserve )) -lt 60 ]; then
        echo "grid:auto: ${left} s left of DEADLINE_S=${DEADLINE_S}, under EVAL_RESERVE_S=${reserve} + 60; no sweep" \
            | tee -a "$OUT/plan.txt" >&2
        return
    fi
    echo "$(( left - reserve )) $left"
}

[ "${MPS:-0}" = 1 ] && mps_start
for step in "$@"; do
    case $step in
        bench) # both models in one process, their timed steps alternating (the per-FLOP ratio is
               # measured side by side); the JSON is rewritten after every variant, so a timeout keeps
               # the variants already measured, and --budget-s starts none after BENCH_BUDGET_S
               timeout -k 10 "${BENCH_S:-330}" python3 benchmarks/train_speed.py --arch standard_recall --norm outer \
                   --device "$DEVICE" ${BENCH_FLAGS:-} --models plain,fpstab \
                   --variants "${VARIANTS:-eager_bf16,compile_bf16,eager_fp32}" --budget-s "${BENCH_BUDGET_S:-200}" \
                   --steps "${STEPS:-10}" --warmup 3 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt" ;;
        sharing) mps_was_on=${CUDA_MPS_PIPE_DIRECTORY:+1}  # MPS=1: off for the time-sliced rows, then on again
                 [ -n "$mps_was_on" ] && mps_stop
                 sharing time-sliced "${SHARE_JOBS:-1,4}"
                 if mps_start; then sharing mps "${SHARE_MPS_JOBS:-4,8}"; [ -n "$mps_was_on" ] || mps_stop; fi ;;
        calibrate) sweep results/paper_grid/calibrate.toml "${CALIBRATE_S:-300}" /tmp/runs/calibrate calibrate ;;
        grid:*) IFS=: read -r _ seconds filter <<<"$step"
                only=(); for kv in ${filter//,/ }; do only+=(--only "$kv"); done
                sweep "$GRID_FILE" "$seconds" "$RUNS_DIR" paper "${only[@]}" ;;
        *) echo "unknown step $step" >&2 ;;
    esac
done
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && mps_stop
ls -la "$OUT"
