# The eval_pair again after trajectory_metrics filled preallocated per-iteration buffers.
run() { /usr/bin/time -v env ${@:2} python3 -m fpstab.cli eval results/prefix_grid/runs/prefix_sum-standard_recall-outer-lr0.0001-d128-epochs15-lrmilestones12-s0 --levels 256 512 --iters 100 --samples 100 --batch-size 100 --solver anderson --no-plots --threads 1 --device cpu --out /tmp/evm2/$1.json > /tmp/evm2/$1.log 2> /tmp/evm2/$1.time.txt; }
run default FPSTAB_MALLOC=default &
run tuned X=1 &
wait
