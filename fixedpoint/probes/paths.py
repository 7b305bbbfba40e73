"""Path independence: do loops from different starts end at the same fixed point?

The loop runs T iterations from each start (default h0, zeros, a seeded
normal state, and the state another input's loop reached); per sample the
largest relative distance between the states reached, the smallest cosine,
and what the runs show: one fixed point, another attractor (two runs both
converged, far apart), or not converged (some run did not reach tol, and no
two converged runs disagree).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fpstab.fixedpoint.probes.context import ProbeContext
from fpstab.fixedpoint.probes.records import AxisReport, Figure, Verdict, per_sample
from fpstab.fixedpoint.trajectory import Trajectory, iterate

KINDS: tuple[str, ...] = ("one fixed point", "another attractor", "not converged")


def _start_state(ctx: ProbeContext, kind: str) -> Tensor:
    if kind == "zeros":
        return torch.zeros_like(ctx.h0)
    if kind == "random":
        gen = ctx.generator(11)
        return torch.randn(ctx.h0.shape, generator=gen, dtype=torch.float64).to(ctx.h0)
    if kind == "other":  # where the next input's loop ended
        return ctx.loop.final.roll(1, dims=0)
    raise ValueError(f"start {kind!r} has no state rule")


def _runs(ctx: ProbeContext) -> dict[str, Trajectory]:
    """One trajectory per start; the non-default starts run as one batch
    (k * B samples), far cheaper than k runs."""
    starts = ctx.settings.starts
    runs = {"default": ctx.loop} if "default" in starts else {}
    others = [k for k in starts if k != "default"]
    if others:
        stacked = torch.cat([_start_state(ctx, k) for k in others])
        e_rep = ctx.e.repeat(len(others), *[1] * (ctx.e.dim() - 1))
        joint = iterate(lambda h: ctx.core.step(h, e_rep), stacked, ctx.settings.iters)
        finals, traces = joint.final.chunk(len(others)), joint.residuals.chunk(len(others))
        runs.update({k: Trajectory(f, r) for k, f, r in zip(others, finals, traces)})
    return runs


def _compare(runs: dict[str, Trajectory], tol: float, far: float) -> tuple[Tensor, Tensor, list[str]]:
    """(max relative distance (B,), min cosine (B,), kind per sample)."""
    names = list(runs)
    some = runs[names[0]].final
    dist = torch.zeros(some.shape[0], dtype=torch.float64)
    cos = torch.ones_like(dist)
    split = torch.zeros(some.shape[0], dtype=torch.bool)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ha, hb = runs[a].final.flatten(1).double().cpu(), runs[b].final.flatten(1).double().cpu()
            d = ((ha - hb).norm(dim=1) / ha.norm(dim=1).clamp_min(1e-300)).nan_to_num(float("inf"))
            c = ((ha * hb).sum(1) / (ha.norm(dim=1) * hb.norm(dim=1)).clamp_min(1e-300)).nan_to_num(-1.0)
            both = (runs[a].converged(tol) & runs[b].converged(tol)).cpu()
            split |= both & (d >= far)
            dist, cos = torch.maximum(dist, d), torch.minimum(cos, c)
    every = torch.stack([r.converged(tol).cpu() for r in runs.values()]).all(dim=0)
    kinds = ["another attractor" if s else ("one fixed point" if e and d < far else "not converged")
             for s, e, d in zip(split.tolist(), every.tolist(), dist.tolist())]
    return dist, cos, kinds


def _far_from_first(runs: dict[str, Trajectory], far: float) -> dict[str, int]:
    """Per start after the first: samples whose state ends >= far (relative) from the first start's."""
    names = list(runs)
    ref = runs[names[0]].final.flatten(1).double().cpu()
    out = {}
    for name in names[1:]:
        d = (runs[name].final.flatten(1).double().cpu() - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-300)
        out[name] = int((d.nan_to_num(float("inf")) >= far).sum())
    return out


def path_independence(ctx: ProbeContext) -> AxisReport:
    s, t = ctx.settings, ctx.thresholds
    runs = _runs(ctx)
    dist, cos, kinds = _compare(runs, s.tol, t.path_distance)
    first = next(iter(runs))
    figures = {
        "starts": Figure("starts", value=list(runs)),
        "start_converged": Figure(f"loops converged per start (r_T < {s.tol:g})",
                                  value={k: int(r.converged(s.tol).sum()) for k, r in runs.items()}),
        "far_from_first": Figure(f"samples ending >= {t.path_distance:g} from the {first} start's state",
                                 value=_far_from_first(runs, t.path_distance)),
        "path_distance": per_sample("largest relative distance between the states reached", dist),
        "path_cosine": per_sample("smallest cosine between the states reached", cos),
        "path_kind": per_sample("what the runs show", kinds),
    }
    return AxisReport("path_independence", "Path independence", _verdict(kinds, dist, len(runs), s, t), figures)


def _verdict(kinds: list[str], dist: Tensor, n_runs: int, s, t) -> Verdict:
    n = len(kinds)
    split = [i for i, k in enumerate(kinds) if k == "another attractor"]
    if split:
        return Verdict("fail", f"{len(split)}/{n} samples reach another attractor from another start (both runs "
                       f"converged, relative distance up to {float(dist[split].max()):.3g} >= {t.path_distance:g})")
    open_ = sum(1 for k in kinds if k == "not converged")
    if open_:
        return Verdict("undetermined", f"{open_}/{n} samples have a run (of {n_runs} starts) that did not converge "
                       f"to r<{s.tol:g} in {s.iters} iters", remedies=("--iters",))
    return Verdict("pass", f"all {n_runs} starts reach one fixed point per sample (relative distance up to "
                   f"{float(dist.max()):.2e} < {t.path_distance:g})")
