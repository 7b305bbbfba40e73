"""Terminal table of a Hessian record (schema fpstab.hessian/1, from `fpstab probe --hessian`
or a line of RUN/hessian.jsonl). Reads the plain dict only: no torch, no models."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fpstab.reports.probe_table import format_number

# The writer (fixedpoint.hessian) holds the same string; tests/test_report.py checks they agree.
HESSIAN_SCHEMA = "fpstab.hessian/1"


def _pm(entry: Mapping[str, Any]) -> str:
    """value +- error, marked where the relative error is above the record's tol."""
    mark = "" if entry.get("converged") else "  (relative error > tol)"
    return f"{format_number(entry.get('value'))} +- {format_number(entry.get('error'))}{mark}"


def _eigen_cells(part: Mapping[str, Any]) -> str:
    return ", ".join(f"{format_number(e['value'])}{'' if e['converged'] else '?'}" for e in part["eigenvalues"])


def format_hessian_record(rec: Mapping[str, Any]) -> str:
    """A short table: loss, extreme eigenvalues, SLQ figures, valley split and kappa."""
    if rec.get("schema") != HESSIAN_SCHEMA:
        raise ValueError(f"not a Hessian record (schema {rec.get('schema')!r}, expected {HESSIAN_SCHEMA!r})")
    loss, valley, kappa, eps = rec["loss"], rec["valley"], rec["valley"]["kappa"], rec["eps"]
    worst = max((e["error_bound"] for part in ("largest", "smallest") for e in rec[part]["eigenvalues"]),
                default=math.nan)
    if kappa["status"] == "determined":
        lo, hi = kappa["interval"]
        kappa_text = f"{format_number(kappa['value'])} in [{format_number(lo)}, {format_number(hi)}]"
    else:
        bound = f" (>= {format_number(kappa['lower_bound'])})" if kappa.get("lower_bound") is not None else ""
        kappa_text = f"UNDETERMINED{bound}: {kappa['reason']}"
    rows = [
        ("loss", f"{format_number(loss['value'])} ({loss['what']}; {loss['samples']} samples, P = {loss['params']}, "
                 f"{loss['dtype']})"),
        ("largest (algebraic)", _eigen_cells(rec["largest"])),
        ("smallest (algebraic)", _eigen_cells(rec["smallest"])),
        ("eigenvalue error", f"<= {format_number(worst)} ({rec['lanczos']['steps']} Lanczos steps; "
                             f"operator noise {format_number(rec['operator_noise'])}; '?' = unconverged)"),
        ("trace", _pm(rec["trace"])),
        ("||H||_F^2", _pm(rec["frobenius_sq"])),
        ("eps", f"{format_number(eps['value'])} ({eps['kind']}, factor {format_number(eps['factor'])})"),
        ("valley dimension", f"{_pm(valley['dimension'])} of {rec['dim']} (|lambda| > eps)"),
        ("negative dimension", f"{_pm(valley['negative_dimension'])} (lambda < -eps)"),
        ("kappa(H_valley)", kappa_text),
        ("matrix entropy", f"{_pm(rec['entropy'])} nats; / log P = {format_number(rec['entropy']['normalized'])}, "
                           f"exp = {format_number(rec['entropy']['effective_rank'])}"),
        ("cost", f"{rec['products']} Hessian-vector products ({rec['hvp']}), {format_number(rec['seconds'])} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "Hessian of the training loss\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in rows)
