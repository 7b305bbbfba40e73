import ctypes, sys, time, torch
from fpstab.cpu_allocator import tune_malloc
print(tune_malloc())
torch.set_num_threads(1)
import fpstab.evaluate as ev
every = int(sys.argv[1])
libc = ctypes.CDLL("libc.so.6")
import fpstab.fixedpoint as fp
orig = fp.solve
def solve(f, h0, **kw):
    n = [0]
    def g(h):
        n[0] += 1
        if every and n[0] % every == 0:
            libc.malloc_trim(0)
        return f(h)
    return orig(g, h0, **kw)
fp.solve = solve
t = time.perf_counter()
R = "results/prefix_grid/runs/prefix_sum-standard_recall-outer-lr0.0001-d128-epochs15-lrmilestones12-s0"
ev.evaluate_run(R, levels=["512"], iters=100, samples=100, batch_size=100, solver="anderson", plots=False, out=f"/tmp/am/trim{every}.json", quiet=True)
print("wall", time.perf_counter() - t)
