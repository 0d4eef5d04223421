"""analyze() against the pieces it is made of, computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jacspec.analysis import analyze
from jacspec.heavytail.nulls import randomized_null
from jacspec.heavytail.powerlaw import fit_powerlaw
from jacspec.jacobian.engine import data_jacobian


def model_and_data() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 5)).double().eval()
    return net, 2 * torch.randn(300, 8, dtype=torch.float64)


def test_row_matches_independent_pieces() -> None:
    model, x = model_and_data()
    result = analyze(model, x, seed=3)
    row = result.table.loc["input->output"]
    J = data_jacobian(model, x).numpy()
    dense = np.sort(np.linalg.eigvalsh(J.T @ J / 300))[::-1]
    e = result.esds["input->output"]
    np.testing.assert_allclose(e.eigenvalues, dense, atol=1e-10 * dense[0])
    fit = fit_powerlaw(e.eigenvalues[: e.rank])
    assert row["alpha"] == pytest.approx(fit.alpha)
    assert row["xmin"] == pytest.approx(fit.xmin)
    assert row["alpha_weighted"] == pytest.approx(fit.alpha * np.log10(dense[0]))
    null = randomized_null(J, seed=3)  # recomputes the real ESD itself
    assert row["rand_distance"] == pytest.approx(null.rand_distance)
    assert row["rand_lambda_max"] == pytest.approx(null.rand_lambda_max)
    assert row["num_traps"] == null.num_traps
    assert row["trace"] == pytest.approx((J**2).sum() / 300)
    summary = result.summary()
    assert summary["alpha"] == pytest.approx(fit.alpha)


def test_layers_rows_and_seed_reproducibility() -> None:
    model, x = model_and_data()
    a = analyze(model, x, layers="all", seed=1)
    b = analyze(model, x, layers="all", seed=1)
    # layers="all": every activation and parametrised module but the output layer
    assert list(a.table.index) == [
        "input->output", "input->0", "0->output", "input->1", "1->output"
    ]
    assert a.table.equals(b.table)
    d = a.to_dict()
    assert [r["name"] for r in d["layers"]] == list(a.table.index)
    no_null = analyze(model, x, randomize=False)
    assert np.isnan(no_null.table.loc["input->output", "rand_distance"])


def test_auto_method_runs_exact_when_it_fits_and_slq_keeps_the_trace() -> None:
    model, x = model_and_data()
    exact = analyze(model, x, randomize=False)
    auto = analyze(model, x, method="auto", randomize=False)
    assert auto.settings["estimate_method"] == "exact" and auto.estimate is None
    assert auto.table.equals(exact.table)
    est = analyze(model, x, method="slq", randomize=False)
    row = est.table.loc["input->output"]
    assert row["warning"] == "estimated density"
    assert row["trace"] == pytest.approx(exact.table.loc["input->output", "trace"], rel=1e-8)
    assert row["lambda_max"] == pytest.approx(
        exact.table.loc["input->output", "lambda_max"], rel=1e-6
    )


@pytest.mark.parametrize(
    "bad,hint", [({"layer": "all"}, "'layers'"), ({"xmin_windw": 3}, "'xmin_window'")]
)
def test_misspelt_keyword_fails_before_any_work(
    bad: dict, hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jacspec.analysis.driver as driver
    from jacspec.jacobian.source import JacobianSource

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("work started before the keywords were checked")

    monkeypatch.setattr(driver, "plan_rows", boom)  # the name analyze calls
    monkeypatch.setattr(JacobianSource, "from_model", boom)
    model, x = model_and_data()
    with pytest.raises(ValueError) as err:
        analyze(model, x, **bad)
    msg = str(err.value)
    (name,) = bad
    assert f"unexpected keyword {name!r}" in msg and f"did you mean {hint}" in msg
    assert "xmin_window" in msg and "layers" in msg and "fingers" in msg  # what is accepted
    assert "\n" not in msg


def test_fit_keywords_reach_fit_powerlaw() -> None:
    model, x = model_and_data()
    row = analyze(model, x, randomize=False, xmin_window="peak").table.loc["input->output"]
    e = analyze(model, x, randomize=False).esds["input->output"]
    fit = fit_powerlaw(e.eigenvalues[: e.rank], xmin_window="peak")
    assert row["alpha"] == pytest.approx(fit.alpha)


def test_row_without_a_power_law_fit_says_why():
    """A first Linear layer's input->layer Jacobian is W for every example (rank 1): the row
    has no power-law fit and its warning says why instead of a bare 'failed'."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(40, 12, dtype=torch.float64)
    table = analyze(model, x, layers=["0"], randomize=False).table
    row = table.loc["input->0"]
    assert row["rank"] == 1
    assert row["warning"].startswith("no power-law fit: ")
    assert "positive" in row["warning"]


def test_plan_sizes_the_main_row_for_the_factored_route():
    """A narrow first layer (w = 4 < d = 60): analyze plans the exact input->output Gram at
    the factored route's size, so a memory limit the direct Gram would exceed still gives the
    exact row (not a refusal or an estimate), equal to the direct route's eigenvalues."""
    from jacspec.spectra.gram import gram_bytes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(60, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(500, 60, dtype=torch.float64)
    direct_need = gram_bytes("dual", 500, 2 * 60, 8)
    limit = direct_need // 2
    assert gram_bytes("dual", 500, 2 * 4, 8) < limit
    res = analyze(model, x, randomize=False, max_memory=limit)
    assert res.settings["rows"]["input->output"]["route"] == "factored"
    assert res.table.loc["input->output", "method"] == "exact"
    ref = analyze(model, x, randomize=False, route="direct")
    lam, lam_ref = res.esds["input->output"].eigenvalues, ref.esds["input->output"].eigenvalues
    m = min(len(lam), len(lam_ref))
    np.testing.assert_allclose(lam[:m], lam_ref[:m], rtol=0, atol=1e-10 * lam_ref[0])
    with pytest.raises(ValueError, match="needs"):
        analyze(model, x, randomize=False, max_memory=limit, route="direct")
