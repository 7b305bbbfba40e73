# The tiny preset with glibc defaults (FPSTAB_MALLOC=default) and with fpstab.cpu_allocator settings, started
# together, one thread each; /work/wt-mal was a worktree holding the code of the commit that added this folder.
run() { (cd /work/wt-mal && /usr/bin/time -v env TORCHINDUCTOR_CACHE_DIR=/tmp/tq/ind_$1 ${@:2} python3 -m fpstab.cli train --task prefix_sum --arch standard_recall --norm outer --preset tiny --threads 1 --out /tmp/tq/$1 > /tmp/tq/$1.log 2> /tmp/tq/$1.time.txt); }
run default FPSTAB_MALLOC=default &
run tuned X=1 &
wait
