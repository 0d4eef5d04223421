"""Issue 22, defects 1 and 17: the Marchenko-Pastur fit must not run on round-off, and a
Jacobian ESD gets no WeightWatcher "over-trained"/"under-trained" label.

References are independent of jacspec: the Jacobian by ``torch.func.jacrev`` in float64,
its Gram's eigenvalues by numpy's ``eigvalsh``, and the rank rule re-expressed here
(``lambda_max ((64 eps_J)^2 + dim eps_64)``, :mod:`jacspec.spectra.eigen`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jacspec.analysis import analyze
from jacspec.data.datasets import load_dataset
from jacspec.heavytail.columns import heavy_tail_metrics
from jacspec.heavytail.mp import fit_mp
from jacspec.heavytail.randomized import randomized_null
from jacspec.models.builders import mlp

MAIN = "input->output"
NO_BULK = "no MP bulk above the rank tolerance"
MP_COLS = ("num_spikes", "lambda_plus", "mp_softrank", "mp_sigma2")
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_dataset("digits", "train", n=120, seed=0)
    return d.x, d.y


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _reference_eigenvalues(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Eigenvalues (descending) of J J^T / n, J the (n, k d) softmax Jacobian, float64."""
    m64 = mlp_copy64(model)

    def f(v: torch.Tensor) -> torch.Tensor:
        return torch.softmax(m64(v.unsqueeze(0)), dim=-1).squeeze(0)

    x64 = x.double()
    J = torch.stack([torch.func.jacrev(f)(xi).reshape(-1) for xi in x64]).detach().numpy()
    return np.sort(np.linalg.eigvalsh(J @ J.T / J.shape[0]))[::-1]


def mlp_copy64(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()


# widths 4 and 12 leave (k-1) w = 36 / 108 < n = 120 nonzero eigenvalues: no bulk (at most
# half above tol) / a bulk with zeros; width 48 a full spectrum
NETS = [(w, depth, act) for w in (4, 12, 48) for depth in (1, 2) for act in ("relu", "tanh")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("steps", [0, 5])
def test_num_spikes_never_exceeds_rank_over_many_networks(digits, dtype: str, steps: int):
    x, y = digits
    n = x.shape[0]
    checked_no_bulk = checked_bulk = 0
    for w, depth, act in NETS:
        model = mlp(64, 10, width=w, depth=depth, activation=act, seed=w + depth)
        _train(model, x, y, steps)
        a = analyze(model, x, dtype=getattr(torch, dtype), randomize=depth == 1, seed=0)
        row = a.table.loc[MAIN]
        ref = _reference_eigenvalues(model, x)  # float64 reference, n eigenvalues
        lam = ref[0]
        dim = len(a.esds[MAIN].eigenvalues)
        tol_ref = lam * ((64 * EPS[dtype]) ** 2 + dim * EPS["float64"])
        rank_ref = int(np.sum(ref > tol_ref))
        # the structural rank (k-1) w bounds every count
        assert row["rank"] <= min(n, 9 * w)
        assert rank_ref <= min(n, 9 * w)
        assert "over-trained" not in row["warning"] and "under-trained" not in row["warning"]
        cols = 9 * 64
        m = min(n, cols)
        if rank_ref * 2 <= m - 2:  # clearly at most half above tol: no bulk
            assert all(math.isnan(row[c]) for c in MP_COLS), (w, depth, act, row.to_dict())
            assert NO_BULK in row["warning"]
            checked_no_bulk += 1
        else:
            assert row["num_spikes"] <= row["rank"], (w, depth, act, row.to_dict())
            assert row["num_spikes"] <= rank_ref
            assert row["lambda_plus"] > tol_ref  # the bulk edge is above round-off
            checked_bulk += 1
        if depth == 1:
            assert 0 <= row["num_traps"] <= min(n, cols)
    assert checked_no_bulk >= 2 and checked_bulk >= 2


def test_digits_mlp_float64_no_round_off_bulk(digits):
    # the case: width 16 gives rank (k-1) 16 = 144 < 576; the fit used to report
    # num_spikes 230 and lambda_plus 7.6e-20 from the 432 round-off eigenvalues
    data = load_dataset("digits", "train")
    model = mlp(64, 10, width=16, depth=1, seed=0)
    a = analyze(model, data, dtype=torch.float64, randomize=False)
    row = a.table.loc[MAIN]
    assert row["rank"] == 144
    assert all(math.isnan(row[c]) for c in MP_COLS)
    assert row["warning"] == f"{NO_BULK} (144 of 576 eigenvalues above tol)"


@pytest.mark.parametrize("width", [4, 48])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_direct_and_factored_routes_give_the_same_columns(digits, width: int, dtype):
    x, y = digits
    model = mlp(64, 10, width=width, depth=2, seed=1)
    _train(model, x, y, 5)
    direct = analyze(model, x, route="direct", randomize=False, dtype=dtype).table.loc[MAIN]
    fact = analyze(model, x, route="factored", randomize=False, dtype=dtype).table.loc[MAIN]
    assert set(direct.index) == set(fact.index)
    # float32: structural zeros are known on the factored route only, so "unresolved" (the
    # float32 precision note) may differ; every fitted column agrees
    # "side": which Gram was diagonalised (direct: the n x n primal; factored: its (k-1) w
    # dual), a setting, not a column of the spectrum
    skip = {"side"} | ({"unresolved", "warning"} if dtype == torch.float32 else set())
    for col in direct.index:
        if col in skip:
            continue
        a, b = direct[col], fact[col]
        if isinstance(a, str) or isinstance(b, str):
            assert a == b, col
        elif isinstance(a, float) and math.isnan(a):
            assert math.isnan(b), col
        else:
            # float32: the routes round differently; an eigenvalue lambda is known to
            # ~2 (64 eps_32) sqrt(lambda_max lambda) (rank_tolerance), 1e-3 relative here
            rel = 1e-6 if dtype == torch.float64 else 1e-3
            assert b == pytest.approx(a, rel=rel, abs=direct["tol"]), col
    assert (NO_BULK in direct["warning"]) == (NO_BULK in fact["warning"]) == (width == 4)
    # with the randomized null the factored route skips it, but the columns are the same
    with pytest.warns(UserWarning, match="randomized null skipped"):
        f_null = analyze(model, x, route="factored", dtype=dtype).table
    d_null = analyze(model, x, route="direct", dtype=dtype).table
    assert set(d_null.columns) == set(f_null.columns)


def test_untrained_network_has_no_training_label_and_says_no_bulk(digits):
    x, _ = digits
    model = mlp(64, 10, width=4, depth=2, seed=0)  # untrained: alpha < 2, was "over-trained"
    a = analyze(model, x, dtype=torch.float64, layers="all", randomize=False)
    for name, w in a.table["warning"].items():
        assert "over-trained" not in w and "under-trained" not in w, name
    main = a.table.loc[MAIN]
    assert main["alpha"] < 2  # the label would have been given
    assert NO_BULK in main["warning"]
    assert all(math.isnan(main[c]) for c in MP_COLS)


def test_fit_mp_treats_round_off_as_zeros() -> None:
    rng = np.random.default_rng(0)
    rows, cols = 400, 200
    low = rng.standard_normal((rows, 20)) @ rng.standard_normal((20, cols))  # rank 20
    ev = np.sort(np.linalg.eigvalsh(low.T @ low / rows))[::-1]
    assert np.sum(ev > 0) > 20  # round-off shows as tiny positive eigenvalues
    with pytest.raises(ValueError, match=NO_BULK):
        fit_mp(ev, rows / cols, rows=rows)
    m = heavy_tail_metrics(ev, Q=rows / cols, rows=rows, errors="nan")
    assert all(math.isnan(m[c]) for c in MP_COLS)
    assert m["warning"].endswith(f"{NO_BULK} (20 of 200 eigenvalues above tol)")
    # a full Gaussian matrix still fits: sigma^2 = 1, no spikes
    g = rng.standard_normal((rows, cols))
    ev = np.linalg.eigvalsh(g.T @ g / rows)
    fit = fit_mp(ev, rows / cols, rows=rows)
    assert fit.sigma2 == pytest.approx(1.0, rel=0.05) and fit.num_spikes == 0
    # the null: the real spectrum's round-off is zero, the shuffle is full rank
    null = randomized_null(low, seed=0)
    assert int(np.sum(null.eigenvalues > 0)) == 20
    assert null.num_traps >= 0
