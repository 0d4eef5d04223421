"""The analysis room (``jacspec/analysis/``): analyze split into a driver over per-row functions.

The user's path gives the numbers it gave before the split: every exact row (input->output
and both layer rows) against ``numpy.linalg.eigvalsh`` of ``J J^T / n``, ``J`` the ``n x kd``
data Jacobian whose row i is example i's Jacobian (``k x d``, from
``torch.autograd.functional.jacobian``) flattened (float64; the class-sum-zero deflation of
softmax rows leaves ``J J^T`` as it is: each example's columns sum to zero over classes).
The layout holds: the old module paths are gone (no shim grows back), the package's names
resolve lazily to their one home, and ``jacspec.analysis.columns`` stays torch-free.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jacspec
import jacspec.analysis
from jacspec.analysis.plan import RowPlan, row_route

N, D, H, K = 24, 5, 7, 3


def _net_and_data(d: int = D, h: int = H, k: int = K) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).double().eval()
    return net, torch.randn(N, d, dtype=torch.float64)


def _reference(f, x: torch.Tensor) -> tuple[float, float]:
    """lambda_max and trace of ``J J^T / n``, row i of ``J`` example i's Jacobian of ``f``
    (autograd) flattened; eigenvalues from eigvalsh."""
    J = torch.stack([torch.autograd.functional.jacobian(f, xi).reshape(-1) for xi in x])
    gram = (J @ J.T).numpy() / len(x)
    return float(np.linalg.eigvalsh(gram).max()), float(np.trace(gram))


def test_analyze_rows_match_autograd_and_eigvalsh() -> None:
    """input->output, input->1 (d tanh(W1 x + b1) / dx) and 1->output (d softmax(W2 h +
    b2) / dh at h = tanh(W1 x + b1)): lambda_max and trace of M/n to 1e-10."""
    model, x = _net_and_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = jacspec.analyze(model, x, layers=["1"], randomize=False)
    first, second = model[:2], model[2]
    references = {
        "input->output": _reference(lambda v: torch.softmax(model(v), -1), x),
        "input->1": _reference(first, x),
        "1->output": _reference(lambda h: torch.softmax(second(h), -1), first(x).detach()),
    }
    assert list(a.table.index) == list(references)
    for label, (lam, tr) in references.items():
        row = a.table.loc[label]
        assert row["method"] == "exact"
        assert row["lambda_max"] == pytest.approx(lam, rel=1e-10), label
        assert row["trace"] == pytest.approx(tr, rel=1e-10), label
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_estimated_and_skipped_rows_keep_their_columns() -> None:
    """method="slq": every row estimated (its trace within SLQ's reach of the exact one);
    layer rows too large for max_memory are skipped with their reason, the table keeps them
    and the input->output row is still exact (k=2, d=3: its Gram is 3 x 3)."""
    model, x = _net_and_data()
    _, tr = _reference(lambda v: torch.softmax(model(v), -1), x)
    est = jacspec.analyze(model, x, method="slq", randomize=False)
    row = est.table.loc["input->output"]
    assert row["method"] == "slq" and row["warning"] == "estimated density"
    assert row["trace"] == pytest.approx(tr, rel=0.3)
    assert est.settings["rows"]["input->output"]["route"] == "direct"
    assert est.estimate is est.estimates["input->output"] and not est.esds
    small, xs = _net_and_data(d=3, h=16, k=2)
    with pytest.warns(UserWarning, match="rows skipped") as caught:
        skip = jacspec.analyze(small, xs, layers=["1"], randomize=False, max_memory=3000)
    assert all(w.filename == __file__ for w in caught)  # the warning names the user's line
    for label in ("input->1", "1->output"):
        assert skip.table.loc[label, "method"] == "skipped"
        assert skip.table.loc[label, "warning"].startswith("skipped: ")
        assert np.isnan(skip.table.loc[label, "lambda_max"])
    lam, _ = _reference(lambda v: torch.softmax(small(v), -1), xs)
    assert skip.table.loc["input->output", "method"] == "exact"
    assert skip.table.loc["input->output", "lambda_max"] == pytest.approx(lam, rel=1e-10)


def _plan(kind: str, method: str, route: str = "direct") -> RowPlan:
    return RowPlan("r", kind, None, "softmax", 4, 3, 2, 6, "dual", method, "", None, route)


@pytest.mark.parametrize("plan, route, randomize, expected", [
    (_plan("main", "exact"), "auto", True, "direct"),  # the null needs the entries of 𝒥
    (_plan("main", "exact"), "auto", False, "auto"),  # auto decides by itself
    (_plan("main", "exact", "factored"), "auto", True, "auto"),  # 𝒥 did not fit
    (_plan("main", "slq"), "auto", False, "direct"),  # an estimate over 𝒥's own dimensions
    (_plan("layer_to_output", "slq"), "auto", True, "direct"),
    (_plan("layer_to_output", "exact"), "auto", True, "auto"),
    (_plan("main", "exact"), "factored", True, "factored"),  # an explicit route is kept
    (_plan("main", "slq"), "factored", False, "factored"),
])
def test_the_plan_owns_each_rows_route(plan: RowPlan, route: str, randomize: bool,
                                       expected: str) -> None:
    assert row_route(plan, route, randomize=randomize) == expected


@pytest.mark.parametrize("old", ["analysis_plan", "analysis_columns"])
def test_old_module_paths_are_gone(old: str) -> None:
    """No shim module grows back: the old files are not in the package (an installed copy
    of an older jacspec elsewhere on the path does not count) and the room is a package."""
    package = Path(jacspec.__file__).parent
    assert not (package / f"{old}.py").exists() and not (package / old).exists()
    assert not (package / "analysis.py").exists()
    assert (package / "analysis" / "__init__.py").exists()
    spec = importlib.util.find_spec(f"jacspec.{old}")
    assert spec is None or package not in Path(spec.origin).parents


def test_the_package_names_resolve_to_their_one_home() -> None:
    from jacspec.analysis import columns, driver, matrix, plan, result

    assert jacspec.analyze is jacspec.analysis.analyze is driver.analyze
    assert jacspec.Analysis is jacspec.analysis.Analysis is result.Analysis
    assert jacspec.analysis.plan_rows is plan.plan_rows
    assert jacspec.analysis.heavy_tail_columns is matrix.heavy_tail_columns
    assert jacspec.analysis.ROW_METRICS is columns.ROW_METRICS
    for name in jacspec.analysis.__all__:
        assert getattr(jacspec.analysis, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        jacspec.analysis.no_such_name  # noqa: B018


def test_the_columns_load_without_torch() -> None:
    code = ("import sys, jacspec.analysis.columns as c; assert c.ROW_METRICS; "
            "assert 'torch' not in sys.modules, 'jacspec.analysis.columns imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
