"""Reading run records (eval.json, metrics.jsonl) and summarizing them as tables.

Plain JSON in, plain text out: no model or training code is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fpstab.reports.run_files import EVAL_FILE, EVAL_SCHEMA, EVAL_SCHEMA_VERSION, load_metrics  # noqa: F401

EVAL_SCHEMA_VERSIONS: tuple[int, ...] = (EVAL_SCHEMA_VERSION,)
_EVAL_KEYS = ("task", "arch", "norm", "iters", "levels")
_LEVEL_KEYS = ("level", "n_samples", "accuracy", "final_accuracy", "best_accuracy", "best_iteration",
               "overthinking_penalty")


def check_eval_record(record: Mapping[str, Any]) -> None:
    """Raise ValueError naming what is wrong if `record` is not an eval.json we read."""
    if record.get("schema") != EVAL_SCHEMA:
        raise ValueError(f"not an fpstab eval record: schema={record.get('schema')!r}, expected {EVAL_SCHEMA!r}")
    if record.get("schema_version") not in EVAL_SCHEMA_VERSIONS:
        raise ValueError(f"eval schema_version={record.get('schema_version')!r}; "
                         f"this reader knows {list(EVAL_SCHEMA_VERSIONS)}")
    missing = [k for k in _EVAL_KEYS if k not in record]
    if missing:
        raise ValueError(f"eval record lacks keys {missing}")
    for i, lv in enumerate(record["levels"]):
        missing = [k for k in _LEVEL_KEYS if k not in lv]
        if missing:
            raise ValueError(f"eval record level #{i} lacks keys {missing}")


def load_eval(path: str | Path) -> dict[str, Any]:
    """Read and check an eval.json (a file, or a run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run `fpstab eval` first)")
    record = json.loads(path.read_text())
    check_eval_record(record)
    return record


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def eval_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table, one row per (run, level): accuracy at T and at training
    depth, best iteration, overthinking, adaptive halting and solver results
    (accuracies in %)."""
    head = ("| arch | norm | level | n | acc@T (%) | acc@m (%) | best (%) @ t | overthinking (pp) "
            "| halting acc (%) / nfe | solver acc (%) / nfe |")
    rows = [head, "|" + "---|" * 10]
    for rec in records:
        check_eval_record(rec)
        for lv in rec["levels"]:
            h, s = lv.get("halting"), lv.get("solver")
            rows.append(
                f"| {rec['arch']} | {rec['norm']} | {lv['level']} | {lv['n_samples']} "
                f"| {_pct(lv['final_accuracy'])} | {_pct(lv.get('accuracy_at_train_iters'))} "
                f"| {_pct(lv['best_accuracy'])} @ {lv['best_iteration']} "
                f"| {100 * lv['overthinking_penalty']:.1f} "
                f"| {(_pct(h['accuracy']) + ' / ' + format(h['mean_nfe'], '.1f')) if h else '—'} "
                f"| {(_pct(s['accuracy']) + ' / ' + format(s['nfe'], '.1f')) if s else '—'} |"
            )
    return "\n".join(rows)


def accuracy_by_level(records: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: rows = runs (arch+norm), columns = levels, cells = acc@T (%)."""
    levels: list[str] = []
    for rec in records:
        check_eval_record(rec)
        for lv in rec["levels"]:
            if str(lv["level"]) not in levels:
                levels.append(str(lv["level"]))
    rows = ["| run | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
    for rec in records:
        by = {str(lv["level"]): lv["final_accuracy"] for lv in rec["levels"]}
        rows.append(f"| {rec['arch']}+{rec['norm']} | " + " | ".join(_pct(by.get(lv)) for lv in levels) + " |")
    return "\n".join(rows)
