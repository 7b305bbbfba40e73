"""Where the eager CPU step's time goes: torch.profiler over 3 training steps of each model.

    python3 results/train_speed/qk_fusion/profile_step.py    # repository root, one thread, ~1 minute

The models and step of `benchmarks/train_speed.py --small` (sudoku shape: batch 16 x 81 tokens, d 64,
4 heads, 30-iteration unroll + AdamW; fpstab standard_recall + outer), eager fp32; 2 untimed steps
first. Prints, per aten op, the self CPU time over the 3 steps and the call count of both models side
by side, largest difference first.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def load_benchmark():  # benchmarks/ is not a package
    spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_speed"] = module
    spec.loader.exec_module(module)
    return module


def self_times(fn, x, y) -> dict[str, tuple[float, int]]:
    for _ in range(2):
        fn(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            fn(x, y)
    return {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages() if e.key.startswith("aten::")}


def main() -> None:
    torch.set_num_threads(1)
    bench = load_benchmark()
    models = bench.Models(bench.resolve_shape(bench._parser().parse_args(["--small"])), "standard_recall", "outer", 5)
    plain = self_times(models.maker("plain")("eager", "fp32"), models.x, models.y)
    fpstab = self_times(models.maker("fpstab")("eager", "fp32"), models.x, models.y)
    print(f"torch {torch.__version__}, 1 thread; self CPU ms over 3 steps (calls)")
    print(f"{'op':<52} {'plain':>16} {'fpstab':>16} {'fpstab - plain':>15}")
    ops = sorted(set(plain) | set(fpstab), key=lambda k: fpstab.get(k, (0, 0))[0] - plain.get(k, (0, 0))[0], reverse=True)
    for op in ops[:15]:
        (tp, cp), (tf, cf) = plain.get(op, (0.0, 0)), fpstab.get(op, (0.0, 0))
        print(f"{op[:52]:<52} {tp:8.1f} ({cp:5d}) {tf:8.1f} ({cf:5d}) {tf - tp:15.1f}")
    tp, tf = sum(v[0] for v in plain.values()), sum(v[0] for v in fpstab.values())
    print(f"{'all aten ops':<52} {tp:16.1f} {tf:16.1f} {tf - tp:15.1f}")


if __name__ == "__main__":
    main()
