# malloc_trim during the Anderson solve of `fpstab eval`, one run after the other on the idle 2-core box.
# trim.py K: the evaluation in process, with the solver's function calling malloc_trim(0) every K calls
# (K = 0: never, the behaviour before fpstab.cpu_allocator.trimming), tune_malloc's settings applied.
set -e
mkdir -p /tmp/am
for k in 1 0 10; do /usr/bin/time -v python3 results/train_speed/malloc/trim/trim.py $k > /tmp/am/trim$k.log 2>&1; done
# Then the command line with trimming built in (every 10 calls):
R=results/prefix_grid/runs/prefix_sum-standard_recall-outer-lr0.0001-d128-epochs15-lrmilestones12-s0
/usr/bin/time -v python3 -m fpstab.cli eval $R --levels 512 --iters 100 --samples 100 --batch-size 100 \
  --solver anderson --no-plots --threads 1 --device cpu --out /tmp/am/cli_trim.json > /tmp/am/cli_trim.log 2>&1
