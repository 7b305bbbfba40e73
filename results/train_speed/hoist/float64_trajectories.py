"""The hoisted loop trains the same model: float64, the tiny preset's config, 40 AdamW steps with the
progressive loss's (n, k) draws, u = loop_input(e) once per step (as fpstab trains) against recomputed
in every iteration; prints the largest relative parameter difference.

    python3 results/train_speed/hoist/float64_trajectories.py
"""
import torch
torch.set_num_threads(1)
from fpstab.config import resolve_config, core_config_for
from fpstab.protocol import make_optimizer, train_step, progressive_depths
from fpstab.architectures import build_core
from fpstab.tasks import get_task
for arch in ["standard_recall", "internal_recall"]:
    cfg = resolve_config(None, dict(task="prefix_sum", arch=arch, norm="outer", preset="tiny"))
    task = get_task("prefix_sum")
    data = task.make("32", 32 * 40, seed=0)
    cores = []
    for hoist in (False, True):
        torch.manual_seed(0)
        core = build_core(core_config_for(cfg, task)).double()
        if not hoist:
            cls = type(core)
            core.loop_input = lambda e: e
            core.step_from = (lambda c: (lambda h, e: cls.step_from(c, h, cls.loop_input(c, e))))(core)
        opt = make_optimizer(core, cfg)
        g = torch.Generator().manual_seed(7)
        for i in range(40):
            depths = progressive_depths(30, g)
            x = data.inputs[32*i:32*(i+1)].double(); y = data.targets[32*i:32*(i+1)]
            st = train_step(core, core.step_from, task, cfg, opt, x, y, depths, "fp32")
        cores.append(core)
    a, b = (dict(c.named_parameters()) for c in cores)
    rel = max(((a[k] - b[k]).norm() / a[k].norm()).item() for k in a)
    print(arch, "max relative parameter difference after 40 steps (float64):", f"{rel:.2e}", "loss", st.loss)
