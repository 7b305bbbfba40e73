"""In-process A/B of the loop-invariant recall input, one torch thread, process CPU time.

    python3 results/train_speed/hoist/ab.py TASK ARCH NORM REPS

Two identically seeded cores train on the same random batch (batch 32 for prefix_sum, 16 otherwise;
d 64, 4 heads, the task's training length, a full 30-iteration unroll + AdamW, fp32):
"hoisted" computes u = core.loop_input(e) once per step and iterates core.step_from(h, u), as fpstab
trains; "per_iteration" recomputes loop_input(e) inside every iteration (what core.step(h, e) does).
Their steps alternate, REPS each after one untimed step; the first losses must be equal (same map).
"""
import sys, time, statistics, torch
import torch.nn.functional as F
torch.set_num_threads(1)
from fpstab.config import TrainConfig
from fpstab.protocol import make_optimizer, train_step
from fpstab.architectures import CoreConfig, build_core
from fpstab.tasks import get_task

task_name, arch, norm, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
task = get_task(task_name)
lvl = task.ladder().train
grid = task.grid(lvl)
n = int(torch.tensor(grid).prod()) if grid else int(lvl)
B = 32 if task_name == "prefix_sum" else 16
g = torch.Generator().manual_seed(0)
x = F.one_hot(torch.randint(0, task.in_dim, (B, n), generator=g), task.in_dim).float()
y = torch.randint(0, task.out_dim, (B, n), generator=g)
cfg = TrainConfig(task=task_name, arch=arch, norm=norm, d_model=64, n_heads=4, batch_size=B, n_train=B, train_iters=30)
ccfg = CoreConfig(arch=arch, norm=norm, d_model=64, n_heads=4, in_dim=task.in_dim, out_dim=task.out_dim,
                  grid=tuple(grid) if grid else None, attn_window=task.attn_window)
def make(hoist):
    torch.manual_seed(0); core = build_core(ccfg); opt = make_optimizer(core, cfg)
    if not hoist:
        cls = type(core)
        core.loop_input = lambda e: e
        core.step_from = lambda h, e: cls.step_from(core, h, cls.loop_input(core, e))
    return lambda: train_step(core, core.step_from, task, cfg, opt, x, y, (0, 30), "fp32").loss
fns = {"per_iteration": make(False), "hoisted": make(True)}
l = {k: f() for k, f in fns.items()}
print("first-step losses", l)
times = {k: [] for k in fns}
for rep in range(reps):
    for k, f in fns.items():
        t = time.process_time(); f(); times[k].append(time.process_time() - t)
for k, v in times.items(): print(f"{k:14s} median {1e3*statistics.median(v):7.1f} ms  min {1e3*min(v):7.1f}  n={len(v)}")
print(f"hoisted / per_iteration, median: {statistics.median(times['hoisted'])/statistics.median(times['per_iteration']):.3f}")
