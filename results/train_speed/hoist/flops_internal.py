"""FLOPs of one training step (fwd+bwd, 30-iteration unroll, torch's FlopCounterMode, attention as
the MATH backend's matmuls) of internal_recall + outer at d 256, 8 heads, sudoku's 81 tokens, batch 4,
with the loop input computed per iteration or once (as fpstab trains), for linear and concat recall.

    python3 results/train_speed/hoist/flops_internal.py
"""
import torch
from torch.utils.flop_counter import FlopCounterMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from fpstab.config import TrainConfig
from fpstab.protocol import make_optimizer, compute_loss
from fpstab.architectures import CoreConfig, build_core
from fpstab.tasks import get_task
import torch.nn.functional as F
task = get_task("sudoku")
x = F.one_hot(torch.randint(0, task.in_dim, (4, 81)), task.in_dim).float(); y = torch.randint(0, 9, (4, 81))
for recall in ["linear", "concat"]:
    for hoist in (False, True):
        cfg = TrainConfig(task="sudoku", arch="internal_recall", norm="outer", recall=recall, d_model=256, n_heads=8, batch_size=4, n_train=4, train_iters=30)
        torch.manual_seed(0)
        core = build_core(CoreConfig(arch="internal_recall", norm="outer", recall=recall, d_model=256, n_heads=8, in_dim=task.in_dim, out_dim=task.out_dim, grid=(9, 9), attn_window=task.attn_window))
        if not hoist:
            cls = type(core); core.loop_input = lambda e: e
            core.step_from = (lambda c: (lambda h, e: cls.step_from(c, h, cls.loop_input(c, e))))(core)
        c = FlopCounterMode(display=False)
        with c, sdpa_kernel(SDPBackend.MATH):
            compute_loss(core, core.step_from, task, cfg, x, y, (0, 30)).loss.backward()
        print(recall, "hoisted" if hoist else "per-iteration", f"{c.get_total_flops()/1e9:.2f} GFLOP")
