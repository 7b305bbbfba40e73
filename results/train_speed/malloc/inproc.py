import ctypes, resource, sys, time, torch
torch.set_num_threads(1)
if sys.argv[1] == "tuned":
    libc = ctypes.CDLL("libc.so.6")
    print("mmap", libc.mallopt(-3, int(sys.argv[2])), "trim", libc.mallopt(-1, int(sys.argv[3])))
x = torch.randn(100, 512, 128); w1 = torch.randn(128, 512); w2 = torch.randn(512, 128)
def it(x): return torch.nn.functional.gelu(x @ w1) @ w2 * 0.01 + x
r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter()
for _ in range(60): x = it(x)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(sys.argv[1], "wall %.2f sys %.2f faults %d maxrss MB %d" % (time.perf_counter() - t, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt, r1.ru_maxrss // 1024))
