"""How much of the input survives T iterations of an untrained no_recall core, by width.

For each d_model, a freshly initialized no_recall core (outer norm, seed 0) on 4 easy sudoku puzzles
(data seed 0) iterates h <- step(h, e) from h0 = e. After t steps it prints the relative spread of the
state across samples, ||h - mean_samples(h)|| / ||h||, and across the 81 cells,
||h - mean_cells(h)|| / ||h||. A spread near 0 means the state no longer says which puzzle it came
from, or which cell it is. The readout can then do no better than chance, and a loss at depth t
carries almost no gradient toward keeping the input.

    python3 results/paper_grid/no_recall/collapse.py        # repository root, about 10 s on a CPU
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from fpstab.architectures import CoreConfig, build_core  # noqa: E402
from fpstab.tasks import get_task  # noqa: E402

WIDTHS = ((32, 2), (64, 4), (128, 4), (256, 8))
STEPS = (1, 2, 5, 10, 20, 30)


def spreads(core: torch.nn.Module, x: torch.Tensor) -> list[tuple[float, float]]:
    """(across samples, across cells) after each t in STEPS; x (B, 81, in_dim)."""
    out = []
    with torch.no_grad():
        e = core.encode(x)
        h = e
        for t in range(1, max(STEPS) + 1):
            h = core.step(h, e)
            if t in STEPS:
                out.append((float((h - h.mean(0, keepdim=True)).norm() / h.norm()),
                            float((h - h.mean(1, keepdim=True)).norm() / h.norm())))
    return out


def main() -> None:
    torch.set_num_threads(2)
    task = get_task("sudoku")
    x = task.make("easy", 4, 0).inputs
    print("d_model | " + " | ".join(f"t={t} samples / cells" for t in STEPS))
    for d, heads in WIDTHS:
        torch.manual_seed(0)
        core = build_core(CoreConfig(arch="no_recall", norm="outer", d_model=d, n_heads=heads, in_dim=task.in_dim,
                                     out_dim=task.out_dim, grid=(9, 9)))
        cells = " | ".join(f"{a:.3f} / {b:.4f}" for a, b in spreads(core, x))
        print(f"{d} | {cells}")


if __name__ == "__main__":
    main()
