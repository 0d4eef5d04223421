"""analyze with layers: every row planned first; rows that do not fit are skipped (exact) or
estimated by SLQ on the layer Jacobians (auto), the rest of the table kept; one progress bar
over the rows (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import jacspec.analysis as analysis
from jacspec.analysis import analyze
from jacspec.jacobian.source import JacobianSource

N = 300
#: Fits the 32x32 input->output, 128x128 layer->output duals (<= 0.4 MiB), not the
#: 256x256 input->layer duals (1.5 MiB).
LIMIT = 2**20


def model_and_data() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 5)).double().eval()
    return net, 2 * torch.randn(N, 8, dtype=torch.float64)


def _dense_reference(J: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.eigvalsh(J.T @ J / J.shape[0]))[::-1]


def _layer_rows(model: nn.Module, x: torch.Tensor, name: str) -> np.ndarray:
    """d h / d x per example by autograd.functional, with h the output of module ``name``."""
    cut = int(name) + 1
    rows = [torch.autograd.functional.jacobian(model[:cut], xi).reshape(-1) for xi in x]
    return torch.stack(rows).numpy()


def test_rows_that_do_not_fit_are_skipped_and_the_rest_returned() -> None:
    model, x = model_and_data()
    full = analyze(model, x, layers="all", randomize=False)
    with pytest.warns(UserWarning, match="rows skipped") as record:
        part = analyze(model, x, layers="all", randomize=False, max_memory=LIMIT)
    skip = [str(w.message) for w in record if "rows skipped" in str(w.message)]
    assert len(skip) == 1 and "input->0" in skip[0] and "input->1" in skip[0]
    assert list(part.table.index) == list(full.table.index)
    for label in ("input->0", "input->1"):
        row = part.table.loc[label]
        assert row["method"] == "skipped" and row["warning"].startswith("skipped: the exact")
        assert "method='auto'" in row["warning"] and np.isnan(row["trace"])
        assert label not in part.esds
    for label in ("input->output", "0->output", "1->output"):
        assert part.table.loc[label, "method"] == "exact"
        assert part.table.loc[label, "trace"] == full.table.loc[label, "trace"]
        assert part.table.loc[label, "alpha"] == full.table.loc[label, "alpha"] or np.isnan(
            full.table.loc[label, "alpha"]
        )
    assert part.settings["rows"]["input->1"]["method"] == "skipped"


def test_auto_estimates_the_rows_that_do_not_fit_by_slq() -> None:
    model, x = model_and_data()
    with warnings_none():
        est = analyze(model, x, layers="all", randomize=False, max_memory=LIMIT, method="auto")
    for label in ("input->0", "input->1"):
        row = est.table.loc[label]
        assert row["method"] == "slq" and row["warning"] == "estimated density"
        ref = _dense_reference(_layer_rows(model, x, label.split(">")[1]))
        assert row["trace"] == pytest.approx(ref.sum(), rel=1e-10)  # exact ||𝒥||_F^2 / n
        assert row["lambda_max"] == pytest.approx(ref[0], rel=1e-8)
        assert est.estimates[label].method == "slq"
    assert est.table.loc["input->output", "method"] == "exact" and est.estimate is None


def test_one_progress_bar_over_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm.auto

    bars: list[FakeBar] = []

    class FakeBar:
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            self.total, self.n, self.labels = kwargs.get("total"), 0, []
            bars.append(self)

        def update(self, k: int = 1) -> None:
            self.n += k

        def set_postfix_str(self, s: str) -> None:
            self.labels.append(s)

        def close(self) -> None:
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    model, x = model_and_data()
    result = analyze(model, x[:40], layers="all", randomize=False, progress=True)
    assert len(bars) == 1  # no per-row Jacobian bars inside the row bar
    assert bars[0].total == bars[0].n == len(result.table) == 5
    assert bars[0].labels == list(result.table.index)


def test_rows_are_planned_before_any_jacobian(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer that cannot be analysed fails before the input->output row is computed."""
    model, x = model_and_data()

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a Jacobian was computed before the plan was complete")

    monkeypatch.setattr(JacobianSource, "from_model", boom)
    shared = nn.Tanh()
    twice = nn.Sequential(nn.Linear(8, 8), shared, nn.Linear(8, 8), shared, nn.Linear(8, 3))
    with pytest.raises(ValueError, match="called 2 times"):
        analyze(twice.double().eval(), x, layers=["1"])
    plans = analysis.plan_rows(model, x, layers="all", max_memory=LIMIT)
    assert [(p.label, p.method, p.k, p.d, p.cols) for p in plans] == [
        ("input->output", "exact", 5, 8, 32),
        ("input->0", "skipped", 32, 8, 256),
        ("0->output", "exact", 5, 32, 128),
        ("input->1", "skipped", 32, 8, 256),
        ("1->output", "exact", 5, 32, 128),
    ]


class warnings_none:
    """Context: fail on any UserWarning (nothing is skipped)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", UserWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
