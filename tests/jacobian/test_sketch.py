"""Output sketching (jacspec.jacobian.sketch): unbiased M, exact at r = k', r cotangents,
settings, error bars, bad values, analyze and the CLI's --sketch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cases
import numpy as np
import pytest
import torch
from torch import nn

from jacspec.analysis import analyze
from jacspec.cli.main import main
from jacspec.jacobian import sketch as sk
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.sketch import sketch_estimate, sketch_projections, sketch_source
from jacspec.jacobian.source import JacobianSource
from jacspec.models.builders import build_model, save_checkpoint

K, D, N = 5, 3, 6


def small(k: int = K, d: int = D) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, k)).double().eval()


def exact_m(model: nn.Module, x: torch.Tensor, output: str) -> np.ndarray:
    """M_ij = tr(J_i J_j^T) from torch.autograd.functional.jacobian (independent reference)."""
    rows = cases.reference_jacobians(model, x, output).reshape(x.shape[0], -1)
    return (rows @ rows.T).numpy()


def sketched_m(src: JacobianSource) -> np.ndarray:
    rows = torch.cat([b.rows for b in src]).to(torch.float64)
    return (rows @ rows.T).numpy()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("kind", ["orthonormal", "rademacher"])
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_mean_of_sketches_is_m(x: torch.Tensor, kind: str, output: str) -> None:
    model = small()
    ref = exact_m(model, x, output)
    draws = np.stack([
        sketched_m(sketch_source(model, x, 2, output=output, kind=kind, seed=s,
                                 check_independence=False))
        for s in range(300)
    ])
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - ref) <= 5 * se + 1e-12 * np.abs(ref).max())
    # not trivially: one sketch is off, and the off-diagonal is estimated too
    assert np.abs(draws[0] - ref).max() > 1e-3 * np.abs(ref).max()
    off = ~np.eye(N, dtype=bool)
    assert np.abs(ref[off]).max() > 10 * se[off].max()


def test_projections_have_identity_second_moment() -> None:
    acc = sum(sketch_projections(K, 3, kind="rademacher", seed=s).T
              @ sketch_projections(K, 3, kind="rademacher", seed=s) for s in range(2000)) / 2000
    assert torch.allclose(acc, torch.eye(K, dtype=torch.float64), atol=0.05)
    v = sketch_projections(K, 3, kind="orthonormal", seed=0, rows_sum_to_zero=True)
    assert torch.allclose(v.sum(dim=1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(v @ v.T, (K - 1) / 3 * torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize(("output", "r"), [("logits", K), ("softmax", K - 1)])
def test_full_orthonormal_sketch_is_exact(x: torch.Tensor, output: str, r: int) -> None:
    model = small()
    ref = exact_m(model, x, output)
    got = sketched_m(sketch_source(model, x, r, output=output, seed=3, kind="orthonormal"))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    est = sketch_estimate(model, x, r, output=output, sketch_seed=3, scale="none",
                          sketch_kind="orthonormal")
    lam = np.linalg.eigvalsh(ref)[-1]
    assert est.lambda_max == pytest.approx(lam, rel=1e-10)
    assert est.lambda_max_high - est.lambda_max_low == pytest.approx(0, abs=1e-9 * lam)
    assert est.trace == pytest.approx(np.trace(ref), rel=1e-10)


@pytest.mark.parametrize("method", ["loop", "batched_grad", "replicate"])
def test_r_cotangents_not_k(x: torch.Tensor, method: str, monkeypatch) -> None:
    model = small(k=12)
    seen: list[int] = []
    grad = torch.autograd.grad

    def counting(outputs, inputs, grad_outputs=None, **kw):  # type: ignore[no-untyped-def]
        if method == "batched_grad":
            seen.append(int(grad_outputs.shape[0]))
        elif method == "loop":
            seen.append(1)
        else:
            seen.append(int(inputs.shape[0]) // x.shape[0])  # replicated copies
        return grad(outputs, inputs, grad_outputs=grad_outputs, **kw)

    src = sketch_source(model, x, 3, output="logits", method=method, check_independence=False)
    monkeypatch.setattr(sk.torch.autograd, "grad", counting)
    rows = torch.cat([b.rows for b in src])
    monkeypatch.undo()
    assert sum(seen) == 3
    assert rows.shape == (N, 3 * D)
    v = src.projections
    ref = cases.reference_jacobians(model, x, "logits")
    np.testing.assert_allclose(rows.reshape(N, 3, D).numpy(),
                               torch.einsum("rk,nkd->nrd", v, ref).numpy(), atol=1e-12)


def test_settings_recorded(x: torch.Tensor) -> None:
    src = JacobianSource.from_model(small(), x, JacobianOptions(sketch=2, sketch_kind="rademacher",
                                                                sketch_seed=7))
    assert src.kind == "sketch" and src.k == 2 and not src.rows_sum_to_zero
    info = src.settings["sketch"]
    assert info["r"] == 2 and info["kind"] == "rademacher" and info["seed"] == 7
    assert info["k_full"] == K and info["deflated"] and info["shared"]
    assert src.settings["options"]["sketch"] == 2
    assert src.cached().settings["sketch"] == info
    assert JacobianSource.from_model(small(), x, JacobianOptions(sketch=0)).kind == "model"


def test_auto_sketch_above_threshold(caplog) -> None:
    model = small(k=200, d=2)
    xs = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="jacspec.jacobian.sketch"):
        a = analyze(model, xs, randomize=False)
    assert a.settings["sketch"]["r"] == 64 and a.table.loc["input->output", "sketch_r"] == 64
    assert "sketching them with r=64" in caplog.text
    off = analyze(model, xs, randomize=False, sketch=0)
    assert off.settings["sketch"] is None and off.table.loc["input->output", "sketch_r"] == 0
    assert analyze(small(), torch.zeros(4, D, dtype=torch.float64) + 0.1,
                   randomize=False).settings["sketch"] is None  # k < 200: exact


def test_analyze_sketch_matches_sketched_gram(x: torch.Tensor) -> None:
    model = small()
    a = analyze(model, x, sketch=3, randomize=False)
    m = sketched_m(sketch_source(model, x, 3))
    ev = np.sort(np.linalg.eigvalsh(m / N))[::-1][: len(a.esds["input->output"].eigenvalues)]
    np.testing.assert_allclose(a.esds["input->output"].eigenvalues, np.clip(ev, 0, None),
                               atol=1e-12)
    assert a.settings["sketch"]["r"] == 3


def test_bad_values_are_one_sentence(x: torch.Tensor) -> None:
    model = small()
    with pytest.raises(ValueError, match=r"between 1 and k-1 = 4 .*got 5"):
        sketch_source(model, x, 5)
    with pytest.raises(ValueError, match=r"between 1 and k = 5"):
        sketch_source(model, x, 6, output="logits")
    with pytest.raises((TypeError, ValueError), match="positive integer"):
        sketch_source(model, x, 2.5)
    with pytest.raises(ValueError, match="sketch must be a positive integer"):
        JacobianOptions(sketch=-1)
    with pytest.raises(ValueError, match="sketch_kind"):
        JacobianOptions(sketch_kind="gaussian")
    with pytest.raises(ValueError, match="groups must be"):
        sketch_estimate(model, x, 3, groups=5)
    with pytest.raises(ValueError, match="at least 2 projections"):
        sketch_estimate(model, x, 1)
    with pytest.raises(ValueError, match="sketch must be between"):
        analyze(model, x, sketch=9, randomize=False)
    with pytest.raises(TypeError, match="one-shot|generator|iterat"):
        sketch_source(model, iter([x]), 2)


def test_trace_interval_covers(x: torch.Tensor) -> None:
    model = small(k=20)
    tr = np.trace(exact_m(model, x, "softmax")) / N
    hits = [(e.trace_low <= tr <= e.trace_high)
            for e in (sketch_estimate(model, x, 6, sketch_seed=s) for s in range(30))]
    assert np.mean(hits) >= 0.8
    e = sketch_estimate(model, x, 6)
    est, lo, hi = e.cdf_band(e.grid)
    assert np.all(lo <= est + 1e-12) and np.all(est <= hi + 1e-12)
    assert e.to_dict()["summary"]["r"] == 6 and len(e.to_frame()) == 1


SPEC = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 16, "depth": 1}


def test_cli_sketch(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, build_model(SPEC), SPEC)
    out = tmp_path / "a.json"
    base = ["analyze", str(ckpt), "--data", "digits", "--n", "40", "--no-randomize"]
    assert main([*base, "--sketch", "4", "--json", str(out)]) == 0
    s = json.loads(out.read_text())["settings"]
    assert s["sketch"]["r"] == 4 and s["sketch"]["k_full"] == 10
    assert main([*base, "--sketch", "0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["sketch"] is None
    capsys.readouterr()
    assert main([*base, "--sketch", "12"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sketch must be between 1 and k-1 = 9" in err[0]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--sketch", "many"])
    assert exc.value.code == 2
