"""SHIFT versus the looped core trained from scratch: accuracy and wall time, side by side.

    python benchmarks/shift_vs_looped.py --task prefix_sum --preset tiny --seeds 0 1 2 --out runs/shift_bench
    python benchmarks/shift_vs_looped.py --task prefix_sum --preset tiny --epochs 1 --n-train 256 \\
        --seeds 0 --eval-samples 32 --out /tmp/shift_dry --threads 1          # a dry run (seconds)
    python benchmarks/shift_vs_looped.py --task TASK --preset paper --device cuda --seeds 0 1 2 --out runs/shift_TASK

For every seed it trains the same config (every `fpstab train` config flag is a flag here,
except --arch and --shift) as variants:

    shift    --arch standard_recall --shift: single_attn, then the looped core (fpstab.shift)
    looped   --arch standard_recall from scratch
    single   --arch single_attn throughout (the one-pass baseline; --variants to add it)

then evaluates each run with `fpstab eval` (fpstab.evaluate.evaluate_run: --eval-levels,
default the training level; --eval-iters, default the run's train_iters; no solver, no plots)
and prints one row per run and a summary per variant: mean final validation exact match and token accuracy,
mean eval accuracy at train_iters per level, mean training wall time (the run's elapsed_s:
the loop and its validations, not data generation) and, for shift, the switch step, how
many switches were forced and the wall time of the single_attn stage. `time ratio` is a
variant's mean wall time over looped's, from runs made in this invocation.

The variants of a seed run one after the other in an order that alternates with the seed,
so drift in the machine's load hits both alike. Run directories are OUT/VARIANT-sSEED: a
completed run (and its eval.json) is reused, an unfinished one resumed, so a long
comparison can be continued across sessions with the same command (its wall time then sums
the sessions' training time). --json writes the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: measure the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fpstab.config import FIELDS, SHIFT_KEYS, Runtime, TrainConfig, preset_note, resolve_config  # noqa: E402
from fpstab.options import add_options  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "shift": {"arch": "standard_recall", "shift": True},
    "looped": {"arch": "standard_recall", "shift": False},
    "single": {"arch": "single_attn", "shift": False},
}


def variant_config(preset: str | None, overrides: dict[str, Any], variant: str) -> TrainConfig:
    """The TrainConfig of `variant`: the shared overrides, its arch, and the shift_* keys only for shift."""
    keys = {k: v for k, v in overrides.items() if variant == "shift" or k not in SHIFT_KEYS}
    return resolve_config(preset, {**keys, **VARIANTS[variant]})


def train_or_reuse(cfg: TrainConfig, run_dir: Path, runtime: Runtime) -> dict[str, Any]:
    """Train into run_dir (resuming an unfinished run); its status.json once completed."""
    from fpstab.runs import last_checkpoint_path, read_status
    from fpstab.train import train

    status = read_status(run_dir) if (run_dir / "status.json").is_file() else {}
    if status.get("state") != "completed":
        resume = last_checkpoint_path(run_dir).is_file() or (run_dir / "config.json").is_file()
        result = train(cfg, run_dir, runtime, resume=resume)
        if result.state != "completed":
            return {"state": result.state, "elapsed_s": result.elapsed_s, "val": result.val}
        status = read_status(run_dir)
    return status


def eval_or_reuse(run_dir: Path, cfg: TrainConfig, a: argparse.Namespace) -> dict[str, Any]:
    """eval.json of the run's last checkpoint at --eval-iters (default train_iters), made if missing."""
    from fpstab.evaluate import evaluate_run

    from fpstab.tasks import get_task

    path = run_dir / "eval.json"
    iters = a.eval_iters or cfg.train_iters
    levels = a.eval_levels or [str(cfg.train_level or get_task(cfg.task).ladder().train)]
    if path.is_file():
        record = json.loads(path.read_text())
        done = [str(lv["level"]) for lv in record.get("levels", [])]
        if record.get("iters") == (iters if record.get("looped") else 1) and done == levels and record["levels"][0]["n_samples"] == a.eval_samples:
            return record
    return evaluate_run(run_dir, levels=levels, iters=iters, samples=a.eval_samples, batch_size=a.eval_batch_size,
                        device=a.device, solver=None, plots=False, quiet=True)


def row_of(variant: str, seed: int, cfg: TrainConfig, run_dir: Path, status: dict[str, Any],
           evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """One run's figures: wall time, final validation, eval accuracy per level, SHIFT's switch."""
    row: dict[str, Any] = {"variant": variant, "seed": seed, "run": str(run_dir), "state": status.get("state"),
                           "steps": cfg.total_steps, "train_s": status.get("elapsed_s"),
                           "val_exact": (status.get("val") or {}).get("exact_match"),
                           "val_token": (status.get("val") or {}).get("token_acc")}
    if evaluation is not None:
        row["eval"] = {str(lv["level"]): lv["accuracy_at_train_iters"] if lv.get("accuracy_at_train_iters") is not None
                       else lv["final_accuracy"] for lv in evaluation["levels"]}
    if cfg.shift and (run_dir / "shift.json").is_file():
        switch = json.loads((run_dir / "shift.json").read_text())["switch"]
        row.update(switch_step=switch and switch["step"], forced=switch and switch["forced"],
                   stage1_s=switch and switch["elapsed_s"])
    return row


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.fmean(nums) if nums else None


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows, then per variant the means over seeds and the wall-time ratio to looped."""
    levels = sorted({lv for r in rows for lv in r.get("eval", {})}, key=lambda s: (len(s), s))
    head = ["variant", "seed", "state", "train s", "val exact", "val token"] + [f"eval {lv}" for lv in levels] + [
        "switch step", "forced", "stage I s"]
    print(" | ".join(head))
    for r in rows:
        cells = [r["variant"], r["seed"], r["state"], _fmt(r["train_s"], ".1f"), _fmt(r["val_exact"]),
                 _fmt(r["val_token"])]
        cells += [_fmt(r.get("eval", {}).get(lv)) for lv in levels]
        cells += [_fmt(r.get("switch_step")), _fmt(r.get("forced")), _fmt(r.get("stage1_s"), ".1f")]
        print(" | ".join(str(c) for c in cells))
    by = {v: [r for r in rows if r["variant"] == v] for v in dict.fromkeys(r["variant"] for r in rows)}
    base = _mean([r["train_s"] for r in by.get("looped", [])])
    print("\nmean over seeds: variant | runs | train s | time ratio to looped | val exact | val token | "
          + " | ".join(f"eval {lv}" for lv in levels) + " | switch step | forced")
    for v, rs in by.items():
        t = _mean([r["train_s"] for r in rs])
        cells = [v, len(rs), _fmt(t, ".1f"), _fmt(t / base if t is not None and base else None, ".2f"),
                 _fmt(_mean([r["val_exact"] for r in rs])), _fmt(_mean([r["val_token"] for r in rs]))]
        cells += [_fmt(_mean([r.get("eval", {}).get(lv) for r in rs])) for lv in levels]
        cells += [_fmt(_mean([r.get("switch_step") for r in rs]), ".0f"),
                  _fmt(sum(bool(r.get("forced")) for r in rs) if v == "shift" else None)]
        print(" | ".join(str(c) for c in cells))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, required=True, help="folder of the run directories (OUT/VARIANT-sSEED)")
    p.add_argument("--preset", default="tiny", help="TrainConfig preset (default: tiny)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    p.add_argument("--variants", nargs="+", default=["shift", "looped"], choices=list(VARIANTS))
    p.add_argument("--eval-levels", nargs="+", default=None, help="levels to evaluate (default: the training level)")
    p.add_argument("--eval-iters", type=int, default=None, help="iterations scored (default: train_iters)")
    p.add_argument("--eval-samples", type=int, default=500, help="test samples per level (default 500)")
    p.add_argument("--eval-batch-size", type=int, default=250)
    p.add_argument("--no-eval", action="store_true", help="report the final validation only")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    add_options(p.add_argument_group("runtime"), Runtime, exclude=("quiet", "stop_after_steps"))
    add_options(p.add_argument_group("training config (as fpstab train; arch and shift are set per variant)"),
                TrainConfig, exclude=("preset", "arch", "shift"), note=preset_note)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    overrides = {k: getattr(a, k) for k in FIELDS if getattr(a, k, None) is not None}
    runtime_keys = {f.name for f in dataclasses.fields(Runtime)}
    runtime = Runtime(**{k: v for k, v in vars(a).items() if k in runtime_keys and v is not None}, quiet=True)
    a.device = runtime.device
    rows = []
    for i, seed in enumerate(a.seeds):
        order = a.variants if i % 2 == 0 else a.variants[::-1]
        for variant in order:
            cfg = variant_config(a.preset, {**overrides, "seed": seed}, variant)
            run_dir = a.out / f"{variant}-s{seed}"
            print(f"[shift_vs_looped] {variant} seed {seed}: {cfg.total_steps} steps -> {run_dir}", flush=True)
            status = train_or_reuse(cfg, run_dir, runtime)
            done = status.get("state") == "completed"
            evaluation = eval_or_reuse(run_dir, cfg, a) if done and not a.no_eval else None
            rows.append(row_of(variant, seed, cfg, run_dir, status, evaluation))
    rows.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))
    print_table(rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
