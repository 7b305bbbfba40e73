"""`fpstab.fixedpoint.probe` on real cores and toy maps with known answers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from toymaps import TanhCore
from torch import Tensor, nn

from fpstab.architectures import CoreConfig, build_core
from fpstab.fixedpoint import AXES, ProbeSettings, Thresholds, probe, probe_record
from fpstab.fixedpoint.probes.geometry import _step_parameters, weight_spectra
from fpstab.fixedpoint.probes.context import ProbeContext
from fpstab.fixedpoint.probes.records import to_json
from fpstab.reports.probe_table import format_probe


def small_core(arch: str, norm: str = "outer", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_core(CoreConfig(arch=arch, norm=norm, d_model=8, n_heads=2, in_dim=2, out_dim=2)).double()


def one_hot_bits(batch: int, n: int, seed: int) -> Tensor:
    bits = torch.randint(0, 2, (batch, n), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(bits, 2).double()


def test_probe_of_a_contracting_recall_core_agrees_with_finite_differences() -> None:
    report = probe(small_core("standard_recall", seed=2), one_hot_bits(3, 6, 0), iters=300, tol=1e-9)
    reach, dep = report.axes["reachability"], report.axes["input_dependence"]
    assert reach.verdict.status == "pass"
    assert reach.figures["fixed_point_status"].per_sample == ["attracting"] * 3
    assert min(dep.figures["je_norm"].per_sample) > 0
    # float64, an attracting fixed point: the IFT derivative and central differences agree
    assert min(dep.figures["fd_cosine"].per_sample) > 0.9999 and max(dep.figures["fd_rel_error"].per_sample) < 1e-3
    assert dep.verdict.status == "pass"
    assert report.inputs["dtype"] == "float64"
    assert "rho(W_x)" in report.axes["geometry"].figures["weights"].value
    for entry in dep.estimates.values():  # every estimate carries its convergence per sample
        assert len(entry["converged"]) in (3, 6) and entry["products"] > 0


def test_a_repelling_fixed_point_does_not_pass_input_dependence() -> None:
    # This core's loop never settles (r_T ~ 1.7); Anderson finds a fixed point
    # anyway, with rho 1.15: the IFT applies there, but the model never gets there.
    report = probe(small_core("standard_recall", seed=0), one_hot_bits(3, 6, 0), iters=200, tol=1e-9)
    status = report.axes["reachability"].figures["fixed_point_status"].per_sample
    assert "attracting" not in status and "repelling" in status
    for axis in ("input_dependence", "geometry"):
        verdict = report.axes[axis].verdict
        assert verdict.status == "fail" and "repelling" in verdict.reason, axis


class CountingSteps(nn.Module):
    """A core whose step calls are counted (each JVP, VJP or loop step is one call)."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = core, 0

    def encode(self, x: Tensor) -> Tensor:
        return self.inner.encode(x)

    def init_state(self, e: Tensor) -> Tensor:
        return self.inner.init_state(e)

    def step(self, h: Tensor, e: Tensor) -> Tensor:
        self.calls += 1
        return self.inner.step(h, e)

    def readout(self, h: Tensor) -> Tensor:
        return self.inner.readout(h)


def test_without_an_attracting_fixed_point_the_solves_are_left_out_and_the_verdicts_kept() -> None:
    x = one_hot_bits(3, 6, 0)
    lean, full = CountingSteps(small_core("standard_recall", seed=0)), CountingSteps(small_core("standard_recall", seed=0))
    skipped = probe(lean, x, iters=200, tol=1e-9)
    solved = probe(full, x, iters=200, tol=1e-9, always_solve=True)
    assert "attracting" not in skipped.axes["reachability"].figures["fixed_point_status"].per_sample
    assert skipped.verdicts() == solved.verdicts() and skipped.verdicts()["geometry"] == "fail"
    for axis in ("input_dependence", "geometry"):
        assert skipped.axes[axis].verdict == solved.axes[axis].verdict, axis
        assert "skipped" in skipped.axes[axis].figures and "skipped" not in solved.axes[axis].figures, axis
    geo, dep = skipped.axes["geometry"], skipped.axes["input_dependence"]
    assert "sigma_min" not in geo.estimates and "sigma_min" in solved.axes["geometry"].estimates
    assert "ift_solve" not in dep.estimates and "ift_solve" in solved.axes["input_dependence"].estimates
    assert "sigma_max" in geo.figures and "grad_growth" in geo.figures and "je_norm" in dep.figures
    assert lean.calls < full.calls, (lean.calls, full.calls)  # 602 against 988 here, where the solves converge
    assert skipped.settings["always_solve"] is False and solved.settings["always_solve"] is True
    assert "--always-solve" in format_probe(skipped.to_dict())


def test_with_an_attracting_fixed_point_always_solve_changes_nothing() -> None:
    x = one_hot_bits(3, 6, 0)
    plain = probe(small_core("standard_recall", seed=2), x, iters=300, tol=1e-9, axes=["geometry"])
    forced = probe(small_core("standard_recall", seed=2), x, iters=300, tol=1e-9, axes=["geometry"],
                   always_solve=True)
    assert plain.axes["geometry"].verdict == forced.axes["geometry"].verdict
    assert plain.axes["geometry"].figures == forced.axes["geometry"].figures
    assert "skipped" not in plain.axes["geometry"].figures and "sigma_min" in plain.axes["geometry"].estimates


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (["attracting"] * 9 + ["repelling"], None),  # 90 % attracting: the gate is open
        (["attracting"] * 8 + ["still contracting"] * 2, "undetermined"),  # both could still converge
        (["attracting"] * 8 + ["rho unconverged"] * 2, "undetermined"),
        (["repelling"] * 9 + ["still contracting"], "fail"),  # the decided ones already rule 90 % out
        (["not reached"] * 2 + ["rho unconverged"] * 8, "fail"),
        (["attracting"] * 9 + ["diverged"], None),
        (["attracting"] * 8 + ["diverged", "still contracting"], "fail"),
    ],
)
def test_the_fixed_point_gate_is_undetermined_only_where_the_undecided_samples_could_change_it(
        status: list[str], expected: str | None) -> None:
    from fpstab.fixedpoint.probes.records import fixed_point_verdict

    verdict = fixed_point_verdict(status, torch.full((len(status),), 1.5), converged_share=0.9)
    assert (verdict.status if verdict is not None else None) == expected
    if expected == "undetermined":
        assert verdict.remedies


def test_too_small_a_krylov_budget_makes_verdicts_undetermined() -> None:
    core = small_core("internal_recall", seed=1)
    report = probe(core, one_hot_bits(3, 6, 0), iters=200, krylov_steps=2, krylov_restarts=1, inverse_steps=1,
                   axes=["reachability", "geometry"])
    reach, geo = report.axes["reachability"].verdict, report.axes["geometry"].verdict
    assert reach.status == "undetermined" and "--krylov-steps" in reach.remedies and "rho" in reach.reason
    assert geo.status == "undetermined" and "--krylov-steps" in geo.remedies  # rho gates the fixed point
    report = probe(core, one_hot_bits(3, 6, 0), iters=200, inverse_steps=1, gmres_steps=2, gmres_restarts=1,
                   axes=["geometry"])
    geo = report.axes["geometry"].verdict
    assert geo.status == "undetermined" and "sigma_min(I - J_h)" in geo.unconverged
    assert "--inverse-steps" in geo.remedies


class Bistable(nn.Module):
    """h' = tanh(3 h + c e) per coordinate: two attractors near +-1 for small c."""

    looped = True
    has_input_injection = True

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def encode(self, x: Tensor) -> Tensor:
        return x

    def init_state(self, e: Tensor) -> Tensor:
        return e.abs() + 0.5  # every sample starts in the + basin

    def step(self, h: Tensor, e: Tensor) -> Tensor:
        return torch.tanh(3 * h + self.c * e)

    def readout(self, h: Tensor) -> Tensor:
        return torch.stack([h, -h], dim=-1)


def test_path_independence_tells_another_attractor_from_not_converged() -> None:
    x = torch.rand(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    split = probe(Bistable(0.1), x, iters=200, tol=1e-10, starts=("default", "other"), axes=["path_independence"])
    assert split.axes["path_independence"].verdict.status == "pass"  # "other" is also in the + basin
    split = probe(Bistable(0.1), -x, iters=200, tol=1e-10, starts=("default", "random"),
                  axes=["path_independence"])
    axis = split.axes["path_independence"]
    assert axis.verdict.status == "fail" and "another attractor" in axis.verdict.reason
    short = probe(Bistable(0.1), -x, iters=3, tail=2, tol=1e-10, starts=("default", "random"),
                  axes=["path_independence"])
    axis = short.axes["path_independence"]
    assert axis.verdict.status == "undetermined" and set(axis.figures["path_kind"].per_sample) == {"not converged"}


def test_gradient_growth_starts_at_h1_on_the_sphere() -> None:
    # h0 = e is far off the RMS-1 sphere of an outer-norm core; from h0 the
    # first backprop step measured the embedding's scale (growth > 1.05 for a
    # loop that contracts). From h_1 on it shows the contraction.
    torch.manual_seed(0)
    core = build_core(CoreConfig(arch="no_recall", norm="outer", d_model=16, n_heads=2, in_dim=2, out_dim=2)).double()
    with torch.no_grad():
        core.embed.weight.mul_(30.0)
    report = probe(core, one_hot_bits(3, 8, 0), iters=60, axes=["geometry"])
    fig = report.axes["geometry"].figures
    assert max(fig["grad_growth_worst"].per_sample) < 1.05
    assert all(w >= g - 1e-12 for w, g in zip(fig["grad_growth_worst"].per_sample, fig["grad_growth"].per_sample))


def test_implicit_vs_unrolled_compares_the_steps_own_parameters() -> None:
    core = TanhCore(d=6, in_dim=3, gain=0.5, recall=True, seed=0)
    x = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ctx = ProbeContext(core, x, None, ProbeSettings(iters=100), Thresholds())
    assert {id(p) for p in _step_parameters(ctx)} == {id(core.W), id(core.U)}  # not the encoder P, readout R
    report = probe(core, x, iters=100, tol=1e-10, axes=["geometry"])
    geo = report.axes["geometry"]
    # contraction 0.5: 30 unrolled steps from h* match the implicit gradient to 0.5^30
    assert geo.figures["grad_cosine"].value > 1 - 1e-12 and geo.figures["grad_rel_diff"].value < 1e-6
    assert geo.estimates["implicit_backward"]["converged"] == [True] * 3
    assert geo.verdict.status == "pass"


def test_probe_of_a_no_recall_core_says_autonomous() -> None:
    report = probe(small_core("no_recall"), one_hot_bits(3, 6, 1), iters=60)
    dep = report.axes["input_dependence"]
    assert dep.verdict.status == "fail" and "autonomous map" in dep.note
    assert max(dep.figures["je_norm"].per_sample) == 0 and "ift_gain" not in dep.figures  # not estimated
    text = format_probe(report.to_dict())
    assert "autonomous map" in text and "IFT gain" not in text


def test_a_diverging_core_is_a_result_not_a_crash() -> None:
    core = small_core("no_recall", norm="inner")
    with torch.no_grad():
        core.blocks[0].mlp.fc2.bias.fill_(1e307)  # h_t = h_0 + t c overflows to inf, then nan
    report = probe(core, one_hot_bits(2, 5, 2), iters=40)
    reach = report.axes["reachability"]
    assert reach.figures["nonfinite"].per_sample == [True, True]
    assert reach.verdict.status == "fail" and "non-finite" in reach.verdict.reason
    record = json.loads(to_json(probe_record([report])))  # strict JSON: non-finite numbers become null
    assert record["probes"][0]["axes"]["reachability"]["figures"]["final_residual"]["per_sample"] == [None, None]


def test_weight_spectra_of_non_finite_weights_are_nan_not_an_error() -> None:
    core = small_core("standard_recall")
    with torch.no_grad():
        core.blocks[0].recall.W_x.weight[0, 0] = float("nan")  # LAPACK raises on such a matrix
        core.blocks[0].mlp.fc1.weight[1, 1] = float("inf")
    out = weight_spectra(core)
    for key in ("rho(W_x)", "||W_x||_2", "||W_x||_2/||W_e||_2", "||W_1||_2*||W_2||_2"):
        assert math.isnan(out[key]), key
    assert math.isfinite(out["||W_O||_2"]) and math.isfinite(out["||W_Q||_2*||W_K||_2"])


def test_one_pass_baselines_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="not a looped map"):
        probe(small_core("fixed_depth"), one_hot_bits(2, 4, 0), iters=40)
    core, x = small_core("no_recall"), one_hot_bits(2, 4, 0)
    for kwargs, message in [({"krylov_steps": 1}, "krylov_steps"), ({"starts": ("default",)}, "starts"),
                            ({"growth_window": 40}, "growth_window"), ({"krylov_dim": 3}, "unknown probe settings"),
                            ({"always_solve": 1}, "always_solve"),
                            ({"axes": ["speed"]}, "unknown axes")]:
        with pytest.raises(ValueError, match=message):
            probe(core, x, **kwargs)


def test_every_registered_axis_reports_a_verdict_and_the_record_is_strict_json() -> None:
    report = probe(small_core("internal_recall", seed=1), one_hot_bits(3, 6, 0), iters=100)
    assert list(report.axes) == list(AXES)
    record = json.loads(to_json(probe_record([report])))
    assert record["schema"] == "fpstab.probe/2"
    for name, axis in record["probes"][0]["axes"].items():
        assert axis["verdict"]["status"] in ("pass", "fail", "undetermined"), name
        assert axis["seconds"] >= 0 and isinstance(axis["figures"], dict)
    assert math.isfinite(record["probes"][0]["seconds"])
