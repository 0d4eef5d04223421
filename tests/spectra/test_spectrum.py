"""Gram sides and exact eigenvalues against numpy's eigvalsh of the dense M (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jacspec.jacobian.engine import data_jacobian
from jacspec.spectra.exact import eigenvalues_from_jacobian, esd
from jacspec.spectra.gram import gram, gram_bytes
from jacspec.spectra.metrics import METRIC_COLUMNS, metrics_table, spectral_metrics


def model_and_data(n: int, d: int = 12, k: int = 4) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(d, 20), nn.ReLU(), nn.Linear(20, k)).double().eval()
    return model, torch.randn(n, d, dtype=torch.float64)


def dense_reference(model: nn.Module, x: torch.Tensor, scale: str = "n") -> np.ndarray:
    J = data_jacobian(model, x).numpy()
    M = J @ J.T
    if scale == "n":
        M = M / x.shape[0]
    return np.sort(np.linalg.eigvalsh(M))[::-1]


@pytest.mark.parametrize("n", [30, 100])  # kd = 48: n < kd and n > kd
@pytest.mark.parametrize("scale", ["n", "none"])
def test_dual_and_primal_match_dense_eigvalsh(n: int, scale: str) -> None:
    model, x = model_and_data(n)
    ref = dense_reference(model, x, scale)
    m = min(n, 48)
    results = {}
    for side in ("dual", "primal", "auto"):
        e = esd(model, x, side=side, scale=scale, batch_size=7)
        assert e.scale == scale and e.describe()["matrix"] == ("M/n" if scale == "n" else "M")
        results[side] = e.eigenvalues[:m]
        np.testing.assert_allclose(e.eigenvalues[:m], ref[:m], rtol=0, atol=1e-8 * ref[0])
    np.testing.assert_allclose(results["dual"], results["primal"], rtol=0, atol=1e-8 * ref[0])
    assert esd(model, x).side == ("dual" if 48 < n else "primal")


def test_rank_counts_softmax_deficiency() -> None:
    model, x = model_and_data(200)  # kd = 48 < n: rank <= (k-1) d = 36
    e = esd(model, x)
    assert e.side == "dual"
    assert e.rank == 36
    assert len(e.eigenvalues) == 48
    assert (e.eigenvalues >= 0).all()
    assert e.eigenvalues[36:].max() <= e.tol


def test_streamed_unknown_length_switches_to_dual() -> None:
    model, x = model_and_data(120)
    loader = (batch for batch in DataLoader(TensorDataset(x), batch_size=16))  # length unknown
    e = esd(model, loader)
    assert e.side == "dual" and e.n == 120
    ref = dense_reference(model, x)
    np.testing.assert_allclose(e.eigenvalues, ref[:48], rtol=0, atol=1e-8 * ref[0])


def test_eigenvalues_from_jacobian_and_float32() -> None:
    model, x = model_and_data(60)
    J = data_jacobian(model, x)
    ref = dense_reference(model, x)
    np.testing.assert_allclose(eigenvalues_from_jacobian(J), ref[:48], atol=1e-8 * ref[0])
    e32 = esd(model.float(), x.float())
    assert e32.dtype == "float32"
    np.testing.assert_allclose(e32.eigenvalues[:10], ref[:10], rtol=1e-4)


def test_memory_refusal_names_alternative() -> None:
    model, x = model_and_data(100, d=40)  # kd = 160 > n: the primal side is the small one
    need = gram_bytes("dual", 100, 160, 8)
    assert gram_bytes("primal", 100, 160, 8) < need // 2
    # The direct route's sizes (the factored route would make this model's dual Gram small).
    from jacspec.jacobian.options import JacobianOptions

    direct = JacobianOptions(route="direct")
    with pytest.raises(ValueError, match=r"dual Gram .* needs about .*side='primal'"):
        gram(model, x, side="dual", max_memory=need // 2, options=direct)
    with pytest.raises(ValueError, match="subset of at most"):
        gram(model, x, side="primal", max_memory=1000, options=direct)


def test_metrics_against_formulas() -> None:
    lam = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    m = spectral_metrics(lam)
    assert tuple(m) == METRIC_COLUMNS
    assert m["num_evals"] == 5 and m["rank"] == 4
    assert m["trace"] == pytest.approx(8.0)
    assert m["stable_rank"] == pytest.approx(2.0)
    assert m["log_norm"] == pytest.approx(np.log10(8.0))
    assert m["log_spectral_norm"] == pytest.approx(np.log10(4.0))
    p = np.array([0.5, 0.25, 0.125, 0.125])
    assert m["entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(4))
    assert m["effective_rank"] == pytest.approx(64.0 / 22.0)
    table = metrics_table({"a": lam, "b": lam * 2})
    assert list(table.index) == ["a", "b"]
    assert table.loc["b", "trace"] == pytest.approx(16.0)


def test_esd_to_dict_has_three_keys() -> None:
    model, x = model_and_data(20)
    d = esd(model, x).to_dict()
    assert set(d) == {"settings", "eigenvalues", "metrics"}
    assert d["settings"]["scale"] == "n" and d["settings"]["output"] == "softmax"
    assert len(d["eigenvalues"]) == 20


@pytest.mark.parametrize("n", [30, 100])
def test_softmax_deflation_keeps_the_spectrum(n: int) -> None:
    model, x = model_and_data(n)
    full = esd(model, x, deflate=False)
    defl = esd(model, x, deflate=True)
    assert defl.settings["deflated"] and not full.settings["deflated"]
    assert len(defl.eigenvalues) == len(full.eigenvalues) == min(n, 48)
    np.testing.assert_allclose(
        defl.eigenvalues, full.eigenvalues, rtol=0, atol=1e-10 * full.eigenvalues[0]
    )
    assert defl.rank == full.rank
    logits = esd(model, x, output="logits")
    assert not logits.settings["deflated"]  # logit rows need not sum to zero
