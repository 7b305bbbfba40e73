#!/bin/bash
run() { cd "$1" && /usr/bin/time -v python3 -m fpstab.cli train --task prefix_sum --arch standard_recall --norm outer --preset tiny --threads 1 --out /tmp/tinycmp/$2 > /tmp/tinycmp/$2.log 2> /tmp/tinycmp/$2.time; }
run /work/wt-before before &
run /work/wt-data after &
wait
echo done > /tmp/tinycmp/DONE
