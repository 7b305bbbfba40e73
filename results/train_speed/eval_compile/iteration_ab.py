# In-process A/B of one evaluation iteration (step + scoring), eager vs torch.compile(dynamic=False):
#     python3 iteration_ab.py D_MODEL LEVEL BATCH   (fresh seeded standard_recall+outer core, one thread)
import time, sys, torch
from fpstab.config import resolve_config, core_config_for
from fpstab.architectures import build_core
from fpstab.tasks import get_task
torch.set_num_threads(1)
d, level, B = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
task = get_task("prefix_sum")
cfg = resolve_config("tiny", {"task": "prefix_sum", "d_model": d, "arch": "standard_recall", "norm": "outer"})
torch.manual_seed(0)
core = build_core(core_config_for(cfg, task)).eval()
batch = task.make(level, B, seed=0)
x, y = batch.inputs, batch.targets
tiny = torch.finfo(torch.float32).tiny
def body(h, u, y):
    nxt = core.step_from(h, u)
    rel = (nxt - h).flatten(1).float().norm(dim=1) / (nxt.flatten(1).float().norm(dim=1) + tiny)
    logits = core.readout(nxt).float()
    return nxt, rel, task.correct(logits, y, None), task.token_accuracy(logits, y)
cbody = torch.compile(body, dynamic=False)
with torch.no_grad():
    e = core.encode(x); h0, u = core.init_state(e), core.loop_input(e)
    t = time.process_time(); cbody(h0, u, y); print("first compiled call (compile) s", round(time.process_time() - t, 1))
    for rnd in range(3):
        for name, f in (("eager", body), ("compiled", cbody)):
            h = h0; t = time.perf_counter()
            for _ in range(20): h = f(h, u, y)[0]
            print(rnd, name, "ms/iter", round((time.perf_counter() - t) / 20 * 1e3, 1))
