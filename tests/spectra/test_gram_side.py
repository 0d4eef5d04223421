"""One Gram-side rule for every entry point, the deflated dimension in plan_esd, and the
engine's backward method (``jacobian_method``) passed through whole (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import jacspec.jacobian.engine as engine
from jacspec.analysis import analyze
from jacspec.spectra.estimate import estimate_esd
from jacspec.spectra.exact import esd
from jacspec.spectra.gram import gram, gram_bytes, gram_cols, gram_side
from jacspec.spectra.operators import gram_operator
from jacspec.spectra.plan import plan_esd

K, D = 4, 12  # kd = 48, (k-1)d = 36


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, K)).double().eval()


def _x(n: int) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(n), dtype=torch.float64)


# (n, output, deflate) -> side: dual exactly when the rows' width cols <= n, with
# cols = (k-1)d = 36 for deflated softmax rows and kd = 48 otherwise (ties: dual).
TABLE = [
    (30, "softmax", True, "primal"),
    (36, "softmax", True, "dual"),  # tie
    (40, "softmax", True, "dual"),  # (k-1)d < n < kd: dual on the deflated side
    (40, "softmax", False, "primal"),
    (40, "logits", True, "primal"),
    (48, "logits", True, "dual"),  # tie
    (60, "logits", True, "dual"),
]


@pytest.mark.parametrize("n,output,deflate,side", TABLE)
def test_every_entry_point_picks_the_same_side(
    n: int, output: str, deflate: bool, side: str
) -> None:
    cols = (K - 1) * D if (output == "softmax" and deflate) else K * D  # written out here
    assert gram_cols(K, D, output, deflate) == cols
    assert gram_side("auto", n, cols) == side
    assert plan_esd(n, K * D, cols=cols).side == side
    model, x = _model(), _x(n)
    kw = dict(output=output, deflate=deflate)
    assert gram(model, x, **kw).side == side
    assert esd(model, x, **kw).side == side
    assert estimate_esd(model, x, method="exact", **kw).side == side
    assert estimate_esd(model, x, method="slq", num_steps=8, num_vectors=2, **kw).side == side
    for method in ("exact", "slq"):
        result = analyze(model, x, method=method, randomize=False, **kw)
        assert result.table.loc["input->output", "side"] == side, method


def test_raw_rows_follow_the_rule_with_kd() -> None:
    for n, side in ((47, "primal"), (48, "dual"), (49, "dual")):
        assert gram_operator(np.ones((n, K * D))).side == side


def test_both_sides_give_the_same_min_n_kd_eigenvalues() -> None:
    """n = 40 sits between (k-1)d = 36 and kd = 48: the deflated dual and the primal agree."""
    model, x = _model(), _x(40)
    dual = esd(model, x, side="dual")
    primal = esd(model, x, side="primal")
    assert dual.side == "dual" and primal.side == "primal"
    assert len(dual.eigenvalues) == len(primal.eigenvalues) == 40  # min(n, kd)
    top = primal.eigenvalues[0]
    np.testing.assert_allclose(dual.eigenvalues, primal.eigenvalues, atol=1e-12 * top)


def test_plan_esd_sizes_the_deflated_gram() -> None:
    n, cols = 100, (K - 1) * D
    p = plan_esd(n, K * D, cols=cols, itemsize=8)
    assert p.side == "dual" and p.dim == cols
    assert p.exact_bytes == cols * cols * (16 + 8)  # the deflated dual, not kd x kd
    assert p.jacobian_bytes == n * K * D * 8  # SLQ stores the raw rows
    assert p.exact_bytes == gram_bytes("dual", n, cols, 8)
    # the deflated dimension decides exact vs SLQ: (k-1)d = 36 <= 40 < kd = 48
    est = estimate_esd(_model(), _x(n), max_exact_dim=40)
    assert est.method == "exact"
    assert estimate_esd(_model(), _x(n), max_exact_dim=40, deflate=False).method == "slq"


def test_analyze_slq_passes_side_and_deflate_through() -> None:
    model, x = _model(), _x(60)
    kw = dict(method="slq", randomize=False)
    forced = analyze(model, x, side="primal", **kw)
    assert forced.table.loc["input->output", "side"] == "primal"
    assert forced.estimate.side == "primal" and forced.estimate.dim == 60
    on = analyze(model, x, **kw).estimate
    off = analyze(model, x, deflate=False, **kw).estimate
    assert on.params["null_dim"] == D and off.params["null_dim"] == 0


# --------------------------------------------------------------------------- jacobian_method


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which backward the engine runs (wrapping its table of methods)."""
    seen: list[str] = []
    for name, fn in list(engine._METHODS.items()):

        def spy(*args, _fn=fn, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setitem(engine._METHODS, name, spy)
    return seen


@pytest.mark.parametrize("method", ["replicate", "batched_grad", "loop"])
def test_jacobian_method_reaches_the_engine_and_gives_the_same_numbers(
    method: str, calls: list[str]
) -> None:
    model, x = _model(), _x(50)
    ref = esd(model, x, jacobian_method="loop").eigenvalues
    calls.clear()
    g = gram(model, x, jacobian_method=method)
    assert set(calls) == {method} and g.settings["jacobian_method"] == method
    calls.clear()
    e = esd(model, x, jacobian_method=method)
    assert set(calls) == {method} and e.settings["jacobian_method"] == method
    np.testing.assert_allclose(e.eigenvalues, ref, rtol=0, atol=1e-10 * ref[0])
    for est_method in ("exact", "slq"):
        calls.clear()
        est = estimate_esd(
            model, x, method=est_method, jacobian_method=method, num_steps=10, num_vectors=2
        )
        assert set(calls) == {method} and est.params["jacobian_method"] == method
        assert est.lambda_max == pytest.approx(ref[0], rel=1e-10)
    for an_method in ("exact", "slq"):
        calls.clear()
        a = analyze(model, x, method=an_method, jacobian_method=method, randomize=False)
        assert set(calls) == {method} and a.settings["jacobian_method"] == method
        assert a.table.loc["input->output", "lambda_max"] == pytest.approx(ref[0], rel=1e-10)


def test_bad_jacobian_method_is_refused_by_name() -> None:
    model, x = _model(), _x(10)
    for fn in (gram, esd, estimate_esd, analyze):
        with pytest.raises(ValueError, match="jacobian_method='fast'"):
            fn(model, x, jacobian_method="fast")


def test_cli_jacobian_method(tmp_path, calls: list[str]) -> None:
    from jacspec.cli.main import main
    from jacspec.models.builders import build_model, save_checkpoint

    spec = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 8, "depth": 1}
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model(spec), spec)
    # --jacobian-method picks the direct route's backward; the factored first-layer route
    # (the default for this MLP, w = 8 < d = 64) has its own, so ask for the direct route.
    args = ["analyze", str(path), "--data", "digits", "--n", "40", "--no-randomize",
            "--route", "direct"]
    assert main([*args, "--jacobian-method", "replicate", "--json", str(tmp_path / "a.json")]) == 0
    assert set(calls) == {"replicate"}
