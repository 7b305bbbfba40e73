# Run from the repository root: eager and compiled eval side by side after trajectory_metrics filled preallocated
# per-iteration buffers (both with fpstab.cpu_allocator settings, the default).
run() { /usr/bin/time -v python3 -m fpstab.cli eval results/prefix_grid/runs/prefix_sum-standard_recall-outer-lr0.0001-d128-epochs15-lrmilestones12-s0 --levels 256 512 --iters 300 --samples 100 --batch-size 100 --solver none --no-plots --threads 1 --device cpu --out /tmp/evd/$1.json "${@:2}" > /tmp/evd/$1.log 2> /tmp/evd/$1.time.txt; }
export TORCHINDUCTOR_CACHE_DIR=/tmp/ind_evd
run eager --no-compile &
run compiled --compile &
wait
