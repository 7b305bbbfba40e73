"""Hessian probes against dense Hessians: the tiny core's training loss (P = 322) and synthetic
symmetric matrices with known, indefinite and near-degenerate spectra."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fpstab.cli import main as cli_main
from fpstab.config import Runtime, resolve_config
from fpstab.fixedpoint.hessian import SpectrumSettings, hessian_spectrum, hvp_operator, operator_noise
from fpstab.fixedpoint.lanczos import extreme_eigenvalues
from fpstab.hessian_options import HessianOptions
from fpstab.hessian_probe import HESSIAN_FILE, flat_loss, hessian_record
from fpstab.train import RunKilled, train


@pytest.fixture(scope="module")
def tiny() -> dict[str, object]:
    """A d_model 4 core (P = 322), its 2-iteration training loss on 4 samples, the dense Hessian."""
    from fpstab.architectures import build_core
    from fpstab.config import core_config_for
    from fpstab.tasks import get_task

    cfg = resolve_config(None, dict(task="prefix_sum", arch="internal_recall", norm="outer", d_model=4, n_heads=1,
                                    train_iters=2, train_level="16"))
    task = get_task("prefix_sum")
    torch.manual_seed(0)
    core = build_core(core_config_for(cfg, task)).double()
    batch = task.make("16", 4, seed=0)
    x, y = batch.inputs.double(), batch.targets
    loss_of, theta = flat_loss(core, task, cfg, x, y)
    dense = torch.func.hessian(loss_of)(theta)
    return {"cfg": cfg, "task": task, "core": core, "x": x, "y": y, "loss_of": loss_of, "theta": theta,
            "dense": (dense + dense.T) / 2, "eig": torch.linalg.eigvalsh((dense + dense.T) / 2)}


def _apply(tiny: dict[str, object]):  # type: ignore[no-untyped-def]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return hvp_operator(tiny["loss_of"], tiny["theta"])[0]  # type: ignore[arg-type]


def test_hvp_double_backward_and_forward_over_reverse_match_the_dense_hessian(tiny: dict[str, object]) -> None:
    v = torch.randn(tiny["theta"].numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = tiny["dense"] @ v
    fwd = hvp_operator(tiny["loss_of"], tiny["theta"], "forward-over-reverse")[0](v)
    for got in (_apply(tiny)(v), fwd):
        assert (got - want).norm() <= 1e-7 * want.norm()


def test_extreme_eigenvalues_within_their_reported_bound_with_few_steps(tiny: dict[str, object]) -> None:
    """k = 3 per end from 40 Lanczos steps on P = 322: each converged Ritz value is the dense j-th
    largest / smallest eigenvalue within the bound the probe reports (residual + measured noise
    of the products, which carry the task loss's float32 rounding)."""
    eig = tiny["eig"]
    v0 = torch.randn(eig.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    apply = _apply(tiny)
    measured = operator_noise(apply, tiny["theta"], 0, hvp_operator(tiny["loss_of"], tiny["theta"],
                                                                    "forward-over-reverse")[0])["value"]
    ends = extreme_eigenvalues(apply, v0, k=3, steps=40, tol=1e-6)
    noise = max(measured, torch.finfo(torch.float32).eps * ends.norm)  # as hessian_record's floor
    assert ends.steps <= 40 < eig.numel() and noise < 1e-6
    assert bool(ends.largest.converged.all()) and bool(ends.smallest.converged.all())
    for got, want in ((ends.largest, eig.flip(0)[:3]), (ends.smallest, eig[:3])):
        bound = got.details["residual"] + noise
        assert bool(((got.value - want).abs() <= bound).all()), (got.value, want, bound)


def _spectrum_of(eigenvalues: torch.Tensor, settings: SpectrumSettings, seed: int = 0):  # type: ignore[no-untyped-def]
    """hessian_spectrum of Q diag(eigenvalues) Q^T for a seeded random orthogonal Q."""
    n = eigenvalues.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    a = q @ torch.diag(eigenvalues.double()) @ q.T
    return hessian_spectrum(lambda v: a @ v, torch.zeros(n, dtype=torch.float64), settings)


def test_slq_trace_moments_entropy_and_valley_dimension_against_dense(tiny: dict[str, object]) -> None:
    """Each SLQ figure of the probe lies within 3x the error it reports of the dense value."""
    eig = tiny["eig"]
    opts = HessianOptions(hessian_k=2, hessian_steps=30, hessian_probes=6, hessian_slq_steps=20, hessian_eps=0.1)
    rec = hessian_record(tiny["core"], tiny["task"], tiny["cfg"], tiny["x"], tiny["y"], opts)
    p = eig.abs() / eig.abs().sum()
    dense = {"trace": float(eig.sum()), "frobenius_sq": float((eig ** 2).sum()),
             "entropy": float(-torch.xlogy(p, p).sum())}
    for key, want in dense.items():
        assert abs(rec[key]["value"] - want) <= 3 * rec[key]["error"], (key, rec[key], want)
    count = int((eig.abs() > rec["eps"]["value"]).sum())
    assert abs(rec["valley"]["dimension"]["value"] - count) <= 3 * rec["valley"]["dimension"]["error"]
    assert rec["loss"]["params"] == eig.numel() == rec["dim"]


def test_kappa_against_dense_when_resolved_and_undetermined_when_not(tiny: dict[str, object]) -> None:
    eig = tiny["eig"]
    rec = hessian_record(tiny["core"], tiny["task"], tiny["cfg"], tiny["x"], tiny["y"],
                         HessianOptions(hessian_k=2, hessian_steps=60, hessian_probes=2, hessian_slq_steps=4,
                                        hessian_eps=0.15))
    kappa = rec["valley"]["kappa"]
    valley = eig.abs()[eig.abs() > rec["eps"]["value"]]
    assert kappa["status"] == "determined", kappa
    assert kappa["interval"][0] <= float(valley.max() / valley.min()) <= kappa["interval"][1]
    assert len(kappa["resolved_valley_eigenvalues"]) == valley.numel()
    few = hessian_record(tiny["core"], tiny["task"], tiny["cfg"], tiny["x"], tiny["y"],
                         HessianOptions(hessian_k=2, hessian_steps=12, hessian_probes=2, hessian_slq_steps=4,
                                        hessian_eps=0.01))
    small = few["valley"]["kappa"]
    wide = eig.abs()[eig.abs() > few["eps"]["value"]]
    assert small["status"] == "undetermined" and small["value"] is None and "not resolved" in small["reason"]
    assert small["lower_bound"] <= float(wide.max() / wide.min()) * (1 + 1e-6)


def test_indefinite_near_degenerate_spectrum() -> None:
    """+-5 (equal magnitude), a pair 3 and 3 + 1e-6, a 20-fold eigenvalue 2, a dense river at 1e-4
    scale: every converged Ritz value has a dense eigenvalue within its bound, the valley ones (well
    separated) are the j-th from their end; kappa = 5 / 2 from both signs; the SLQ valley dimension
    counts the multiplicity (one Lanczos run sees few of the 20 copies)."""
    river = 1e-4 * torch.linspace(-1, 1, 170, dtype=torch.float64)
    eig = torch.cat([torch.tensor([5.0, -5.0, 3.0, 3.0 + 1e-6, -2.5], dtype=torch.float64),
                     torch.full((20,), 2.0, dtype=torch.float64), river])
    spec = _spectrum_of(eig, SpectrumSettings(k=5, steps=40, probes=30, slq_steps=20, eps=0.1))
    rec = spec.record()
    dense = eig.sort().values
    for part, want in (("largest", dense.flip(0)[:5]), ("smallest", dense[:5])):
        got = rec[part]["eigenvalues"]
        assert all(e["converged"] for e in got)
        assert all(float((dense - e["value"]).abs().min()) <= e["error_bound"] for e in got)
        assert all(abs(e["value"] - float(w)) <= e["error_bound"] for e, w in zip(got, want) if abs(w) > 0.1)
    assert sorted(abs(e["value"]) for e in rec["top_magnitude"])[-2:] == pytest.approx([5, 5])
    kappa = rec["valley"]["kappa"]
    assert kappa["status"] == "determined" and kappa["value"] == pytest.approx(2.5, rel=1e-8)
    dim = rec["valley"]["dimension"]
    assert abs(dim["value"] - 25) <= 3 * dim["error"] and dim["value"] > 10  # the 20-fold 2 counted


def test_entropy_uses_absolute_eigenvalues() -> None:
    """c * diag(+-1): every |lambda| equal, so the entropy is log P exactly (one step per probe is
    exact); a positive-part entropy would be log(P/2)."""
    eig = torch.tensor([1.5, -1.5] * 50, dtype=torch.float64)
    spec = hessian_spectrum(lambda v: eig * v, torch.zeros(100, dtype=torch.float64),
                            SpectrumSettings(k=1, steps=10, probes=3, slq_steps=5))
    rec = spec.record()
    assert rec["entropy"]["value"] == pytest.approx(math.log(100), abs=1e-8)
    assert rec["entropy"]["normalized"] == pytest.approx(1.0, abs=1e-8)
    assert rec["trace"]["value"] == pytest.approx(0.0, abs=1e-6 * 150) or abs(rec["trace"]["value"]) <= 3 * rec[
        "trace"]["error"]


def test_diverged_operator_gives_non_finite_figures_not_a_crash() -> None:
    spec = hessian_spectrum(lambda v: v * math.nan, torch.zeros(30, dtype=torch.float64),
                            SpectrumSettings(k=2, steps=5, probes=2, slq_steps=3))
    rec = spec.record()
    assert not any(e["converged"] for e in rec["largest"]["eigenvalues"])
    assert rec["valley"]["kappa"]["status"] == "undetermined"


def _tiny_train(out: Path, **runtime: object) -> None:
    cfg = resolve_config(None, dict(task="prefix_sum", arch="standard_recall", norm="outer", d_model=4, n_heads=1,
                                    n_train=16, n_val=0, batch_size=4, epochs=2, lr=3e-3, warmup_epochs=1.5,
                                    lr_milestones=[1], train_iters=2, train_level="16"))
    train(cfg, out, Runtime(quiet=True, hessian_samples=4, hessian_k=1, hessian_steps=6, hessian_probes=2,
                            hessian_slq_steps=3, **runtime), resume=(out / "config.json").is_file())


def _hessian_lines(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / HESSIAN_FILE).read_text().splitlines()]


def test_train_records_every_k_steps_resume_safe_and_leaves_training_alone(tmp_path: Path) -> None:
    """8 steps, K = 2: records at steps 0, 2, 4, 6, 8. A run killed at step 7 (checkpoint at 4,
    records 0, 2, 4, 6 written) and resumed holds the same records, once each (6 is dropped and
    written again, 4 is kept); the trained weights equal those of a run without the probe."""
    _tiny_train(tmp_path / "whole", hessian_every=2)
    with pytest.raises(RunKilled):
        _tiny_train(tmp_path / "killed", hessian_every=2, stop_after_steps=7)
    assert [r["step"] for r in _hessian_lines(tmp_path / "killed")] == [0, 2, 4, 6]
    with (tmp_path / "killed" / HESSIAN_FILE).open("a") as f:
        f.write('{"kind": "hessian", "step": 6, "torn')  # a kill mid-line
    _tiny_train(tmp_path / "killed", hessian_every=2)
    _tiny_train(tmp_path / "plain")
    whole, killed = _hessian_lines(tmp_path / "whole"), _hessian_lines(tmp_path / "killed")
    assert [r["step"] for r in whole] == [r["step"] for r in killed] == [0, 2, 4, 6, 8]
    for a, b in zip(whole, killed):
        assert a["largest"]["eigenvalues"][0]["value"] == pytest.approx(b["largest"]["eigenvalues"][0]["value"],
                                                                        rel=1e-5)
    assert not (tmp_path / "plain" / HESSIAN_FILE).exists()
    weights = [torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["model"]
               for r in ("whole", "plain")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_probe_command_writes_the_hessian_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe.json"
    code = cli_main(["probe", "--arch", "single_attn", "--d-model", "4", "--n-heads", "1", "--hessian",
                     "--hessian-samples", "2", "--hessian-steps", "6", "--hessian-probes", "2",
                     "--hessian-slq-steps", "3", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["probes"] == [] and record["hessian"]["schema"] == "fpstab.hessian/1"
    assert record["hessian"]["loss"]["iterations"] == 1
    assert "kappa(H_valley)" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [(["--hessian-k", "0"], "--hessian-k 0 must be an int >= 1"),
                                            (["--hessian-eps", "1.5"], "relative threshold must be < 1"),
                                            (["--hessian-eps-kind", "log"], "invalid choice")])
def test_bad_hessian_flags_are_refused_in_one_line(flags: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli_main(["probe", "--hessian", *flags])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) <= 2, err
