# Peak memory only (4 runs at once): glibc defaults, then glibc env settings (mmap 1 GiB with trim 256 MiB, default, 32 MiB).
run() { /usr/bin/time -v env FPSTAB_MALLOC=default ${@:2} python3 -m fpstab.cli eval results/prefix_grid/runs/prefix_sum-standard_recall-outer-lr0.0001-d128-epochs15-lrmilestones12-s0 --levels 512 --iters 20 --samples 100 --batch-size 100 --solver anderson --no-plots --threads 1 --device cpu --out /tmp/rss/$1.json > /tmp/rss/$1.log 2> /tmp/rss/$1.time.txt; }
run d X=1 &
run t256 MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=268435456 &
run tdef MALLOC_MMAP_THRESHOLD_=1073741824 &
run t32 MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=33554432 &
wait
