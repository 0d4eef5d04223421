"""Regression tests of issue 22, defects 3 and 4 (analyze's rows).

Defect 3: the Tracker's metrics are analyze's columns (``mp_lambda_plus`` was always NaN;
``lambda_plus``/``mp_sigma2`` were refused). Defect 4: a sketched row (the default for
``k >= 200`` outputs) was labelled ``method=exact``, had no error bars, and ignored
``analyze``'s ``seed``. References: the Gram built here from
``torch.autograd.functional.jacobian``, and ``numpy.linalg.eigvalsh``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jacspec
from jacspec.analysis import analyze
from jacspec.analysis.columns import ROW_METRICS, SKETCH_COLUMNS
from jacspec.cli.main import main
from jacspec.heavytail.columns import MP_COLUMNS, NULL_COLUMNS, heavy_tail_metrics
from jacspec.jacobian.options import JacobianOptions
from jacspec.models.builders import build_model, mlp, save_checkpoint
from jacspec.track.tracker import METRICS, Tracker

MAIN = "input->output"


# ------------------------------------------------------------------ defect 3: the Tracker


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A digits MLP (64 -> 32 -> 10, float64) trained 300 Adam steps, and a probe of 120
    examples: n = 120 < (k - 1) d = 576, so M/n has full rank and a Marchenko-Pastur bulk."""
    ds = jacspec.load_dataset("digits")
    x, y = ds.x.double(), ds.y
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, x.shape[0], (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    acc = (model(x).argmax(1) == y).double().mean().item()
    assert acc > 0.9  # trained, not a random initialisation
    return model, x[:120], y[:120]


def test_tracker_metrics_are_analyze_columns(trained) -> None:
    """(a) every Tracker metric but jacobian_norm is a column of analyze's table for the same
    model and probe, and every declared column group is in it (no hand copy left over)."""
    model, x, y = trained
    table = analyze(model, (x, y), seed=0).table
    esd = [m for m in METRICS if m != "jacobian_norm"]
    assert set(esd) <= set(table.columns), set(esd) - set(table.columns)
    assert set(MP_COLUMNS) | set(NULL_COLUMNS) | set(SKETCH_COLUMNS) <= set(esd)
    assert {"lambda_plus", "mp_sigma2"} <= set(esd) and "mp_lambda_plus" not in METRICS
    # heavytail's declared groups are the keys heavy_tail_metrics writes
    ev = np.sort(np.random.default_rng(0).pareto(2.0, 200) + 1.0)[::-1]
    null_row = heavy_tail_metrics(ev, Q=0.5, rows=200)
    assert set(MP_COLUMNS) <= set(null_row) and not set(NULL_COLUMNS) & set(null_row)
    # an estimated row has the declared columns too (NaN where SLQ cannot give them)
    slq = analyze(model, (x, y), method="slq", randomize=False).table
    assert set(ROW_METRICS) <= set(slq.columns)
    assert math.isnan(slq.loc[MAIN, "rank"]) and math.isnan(slq.loc[MAIN, "lambda_max_se"])


def test_every_tracker_metric_finite_on_trained_net(trained) -> None:
    """(b) on a trained float64 net with an MP bulk, every Tracker metric is finite (the
    null's counts are -1 only without a null, and the Tracker computes it when asked)."""
    model, x, y = trained
    tracker = Tracker((x, y), METRICS, every=1, dtype=torch.float64)
    row = tracker.step(model, 0)
    assert row is not None
    bad = {m: row[m] for m in METRICS if not (isinstance(row[m], (int, float))
                                              and math.isfinite(row[m]))}
    assert not bad, bad
    assert row["num_traps"] >= 0 and row["num_above_rand_max"] >= 0
    assert row["lambda_plus"] > 0 and row["mp_sigma2"] > 0
    assert row["sketch_r"] == 0 and row["lambda_max_se"] == 0.0  # k = 10: exact


def test_lambda_plus_and_mp_sigma2_equal_analyze(trained) -> None:
    """(c) lambda_plus and mp_sigma2 are accepted and are analyze's values for the same model
    and probe; the old name mp_lambda_plus is refused naming lambda_plus."""
    model, x, y = trained
    tracker = Tracker((x, y), ("lambda_plus", "mp_sigma2"), every=1, dtype=torch.float64)
    row = tracker.step(model, 0)
    px, py = tracker.probe
    ref = analyze(model, (px, py), dtype=torch.float64, randomize=False, seed=0).table.loc[MAIN]
    assert row["lambda_plus"] == ref["lambda_plus"] and row["mp_sigma2"] == ref["mp_sigma2"]
    assert math.isfinite(row["lambda_plus"]) and row["lambda_plus"] > 0
    with pytest.raises(ValueError, match="'mp_lambda_plus'.*'lambda_plus'"):
        Tracker((x, y), ("mp_lambda_plus",))


# ------------------------------------------------------------------ defect 4: sketched rows

K, D, N = 300, 20, 60


@pytest.fixture(scope="module")
def wide() -> tuple[nn.Module, torch.Tensor, float, float]:
    """A 300-class MLP (20 -> 32 -> 300, float64), data, and the exact lambda_max and trace
    of M/n from the Gram built here by torch.autograd.functional.jacobian and eigvalsh."""
    model = mlp(D, K, width=32, depth=1, seed=0).double().eval()
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rows = []
    for i in range(N):
        jac = torch.autograd.functional.jacobian(
            lambda t: torch.softmax(model(t), dim=-1)[0], x[i : i + 1])
        rows.append(jac[:, 0].reshape(-1))
    J = torch.stack(rows).numpy()
    ev = np.linalg.eigvalsh(J @ J.T / N)
    return model, x, float(ev[-1]), float(ev.sum())


def test_sketched_row_says_so_with_error_bars(wide, caplog) -> None:
    """k = 300 sketches by default: method 'sketched' in the table, summary() and settings,
    finite error bars, one logged line naming r and sketch=0; the exact lambda_max lies within
    a few standard errors of every seed's row (and in its band for most seeds)."""
    model, x, lam, tr = wide
    inside = 0
    for s in range(5):
        with caplog.at_level(logging.WARNING, logger="jacspec.analysis"):
            caplog.clear()
            a = analyze(model, x, seed=s, randomize=False)
        row = a.table.loc[MAIN]
        assert row["method"] == "sketched" and row["sketch_r"] == 64 and row["k"] == K
        assert a.settings["rows"][MAIN]["method"] == "sketched"
        assert a.settings["sketch"]["seed"] == s and a.settings["sketch"]["seed_from"] == "seed"
        se = row["lambda_max_se"]
        assert np.isfinite([row[c] for c in SKETCH_COLUMNS]).all()
        assert 0 < se < 0.2 * lam and 0 < row["trace_se"] < 0.2 * tr
        assert abs(row["lambda_max"] - lam) <= 4 * se
        assert abs(row["trace"] - tr) <= 4 * row["trace_se"]
        assert row["lambda_max_low"] <= row["lambda_max"] <= row["lambda_max_high"]
        inside += row["lambda_max_low"] <= lam <= row["lambda_max_high"]
        summary = a.summary()
        assert summary["method"] == "sketched" and summary["lambda_max_se"] == se
        lines = [r.getMessage() for r in caplog.records if "sketched from r=64" in r.getMessage()]
        assert len(lines) == 1 and "sketch=0" in lines[0] and "\n" not in lines[0]
    assert inside >= 4


def test_seed_reaches_the_projections(wide) -> None:
    """analyze(..., sketch=16, seed=s): different seeds give different numbers, the same seed
    the same numbers; options.sketch_seed, when set, wins over seed (and settings say so)."""
    model, x, lam, _ = wide
    lams = [analyze(model, x, sketch=16, seed=s, randomize=False).table.loc[MAIN, "lambda_max"]
            for s in range(12)]
    assert len(set(lams)) == 12
    again = analyze(model, x, sketch=16, seed=3, randomize=False).table
    first = analyze(model, x, sketch=16, seed=3, randomize=False).table
    cols = ["lambda_max", "trace", "alpha", "lambda_max_se", "trace_se"]
    assert again.loc[MAIN, cols].tolist() == first.loc[MAIN, cols].tolist()
    opts = JacobianOptions(sketch_seed=7)
    a = analyze(model, x, sketch=16, seed=0, options=opts, randomize=False)
    b = analyze(model, x, sketch=16, seed=5, options=opts, randomize=False)
    assert a.table.loc[MAIN, "lambda_max"] == b.table.loc[MAIN, "lambda_max"]
    assert a.settings["sketch"]["seed"] == 7
    assert a.settings["sketch"]["seed_from"] == "options.sketch_seed"


def test_sketch_zero_is_exact_reference(wide) -> None:
    """sketch=0: method 'exact', lambda_max and trace equal the reference, zero-width bars."""
    model, x, lam, tr = wide
    row = analyze(model, x, sketch=0, randomize=False).table.loc[MAIN]
    assert row["method"] == "exact" and row["sketch_r"] == 0 and row["k"] == K
    assert row["lambda_max"] == pytest.approx(lam, rel=1e-10)
    assert row["trace"] == pytest.approx(tr, rel=1e-10)
    assert row["lambda_max_se"] == 0.0 and row["lambda_max_low"] == row["lambda_max_high"]


def test_cli_and_report_show_sketched(tmp_path: Path, capsys, wide) -> None:
    """The CLI's JSON and printed table, and the HTML report, carry method 'sketched' and
    the error bars."""
    spec = {"kind": "mlp", "input_shape": [64], "num_classes": K, "width": 16, "depth": 1}
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, build_model(spec), spec)
    base = ["analyze", str(ckpt), "--data", "digits", "--n", "40", "--no-randomize",
            "--dtype", "float64"]
    assert main([*base, "--json", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["metrics"]["method"] == "sketched"
    assert payload["summary"]["method"] == "sketched"
    assert payload["metrics"]["lambda_max_se"] > 0
    assert payload["settings"]["rows"][MAIN]["method"] == "sketched"
    assert main(base) == 0
    printed = capsys.readouterr().out
    assert "sketched" in printed and "lambda_max_se" in printed
    (tmp_path / "a.json").write_text(json.dumps(payload))
    model, x, _, _ = wide
    for result in (analyze(model, x, randomize=False), tmp_path / "a.json"):
        html = jacspec.write_report(result, tmp_path / "r.html").read_text()
        assert "lambda_max_se" in html and "sketched from r=64" in html
        assert "sketch=0 (--sketch 0) gives the exact row" in html
