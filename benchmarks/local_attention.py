"""Local (window) attention: the dense (n, n) mask vs the blocked form, by sequence length.

    python benchmarks/local_attention.py --threads 1                    # CPU, window 5, the prefix-sum lengths
    python benchmarks/local_attention.py --device cuda --batch 500 --heads 8 --head-dim 32

For each length n, times `architectures.neighborhood.local_attention` on q, k,
v of shape (batch, heads, n, head_dim) in both forms, forward+backward (as in
training) and forward under no_grad (as in evaluation). The two forms'
timed calls alternate, so load on a shared machine hits both alike; the
median is reported. `auto` is the form `local_attention` picks
(use_blocked: n >= BLOCKED_MIN_RATIO x keys per tile).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: measure the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fpstab.architectures.neighborhood import local_attention, use_blocked  # noqa: E402


def alternate(fns: dict[str, Callable[[], None]], reps: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256, 512, 1024, 2048])
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--reps", type=int, default=None, help="timed calls per form (default: scaled to n)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; q, k, v "
          f"({a.batch}, {a.heads}, n, {a.head_dim}) float32, window {a.window}; median ms per call")
    print(f"{'n':>6} {'auto':>8} {'train dense':>12} {'train blocked':>14} {'ratio':>6} "
          f"{'eval dense':>11} {'eval blocked':>13} {'ratio':>6}")
    rows = []
    for n in a.lengths:
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(a.batch, a.heads, n, a.head_dim, generator=g).to(device).requires_grad_()
                   for _ in range(3))
        out_grad = torch.randn_like(q)
        shape = (n,)

        def train(form: str) -> Callable[[], None]:
            return lambda: local_attention(q, k, v, shape, a.window, form=form).backward(out_grad)

        def evaluate(form: str) -> Callable[[], None]:
            def run() -> None:
                with torch.no_grad():
                    local_attention(q, k, v, shape, a.window, form=form)
            return run

        reps = a.reps or max(5, min(50, 4000 // n))
        tr = alternate({"dense": train("dense"), "blocked": train("blocked")}, reps, sync)
        ev = alternate({"dense": evaluate("dense"), "blocked": evaluate("blocked")}, reps, sync)
        auto = "blocked" if use_blocked(shape, a.window) else "dense"
        rows.append({"n": n, "auto": auto, "train_ms": {f: 1e3 * s for f, s in tr.items()},
                     "eval_ms": {f: 1e3 * s for f, s in ev.items()}})
        print(f"{n:>6} {auto:>8} {1e3 * tr['dense']:>12.2f} {1e3 * tr['blocked']:>14.2f} "
              f"{tr['dense'] / tr['blocked']:>6.2f} {1e3 * ev['dense']:>11.2f} {1e3 * ev['blocked']:>13.2f} "
              f"{ev['dense'] / ev['blocked']:>6.2f}", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                      "threads": torch.get_num_threads(), "window": a.window, "batch": a.batch,
                                      "heads": a.heads, "head_dim": a.head_dim, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
