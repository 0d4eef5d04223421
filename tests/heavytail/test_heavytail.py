"""Tests for jacspec.heavytail.columns: WeightWatcher formulas recomputed by hand from the fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from jacspec.heavytail.columns import HEAVY_TAIL_COLUMNS, heavy_tail_metrics
from jacspec.heavytail.mp import fit_mp
from jacspec.heavytail.powerlaw import fit_powerlaw
from jacspec.heavytail.randomized import matrix_esd, randomized_null


def esd(seed: int = 0, rows: int = 200, cols: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A heavy-tailed matrix (Student-t(3) entries) and its ESD of A A^T / rows."""
    a = np.random.default_rng(seed).standard_t(3.0, size=(rows, cols))
    return a, matrix_esd(a)


def test_columns_and_formulas() -> None:
    _, ev = esd()
    m = heavy_tail_metrics(ev)
    fit = fit_powerlaw(ev)
    assert list(m) == list(HEAVY_TAIL_COLUMNS)
    assert m["alpha"] == fit.alpha and m["xmin"] == fit.xmin and m["D"] == fit.D
    assert m["lambda_max"] == pytest.approx(ev.max())
    assert m["alpha_weighted"] == pytest.approx(fit.alpha * math.log10(ev.max()))
    assert m["log_alpha_norm"] == pytest.approx(math.log10(float(np.sum(ev**fit.alpha))))
    assert m["num_pl_spikes"] == int(np.sum(ev >= fit.xmin))
    json.dumps(m)


def test_log_alpha_norm_does_not_overflow() -> None:
    ev = np.array([1e200, 1e199] + [1.0] * 30)
    fit = fit_powerlaw(ev, xmin=1.0)
    m = heavy_tail_metrics(ev, fit=fit)
    expected = fit.alpha * 200 + math.log10(1 + 10 ** (-fit.alpha))
    assert m["log_alpha_norm"] == pytest.approx(expected, rel=1e-9)


def test_with_mp_and_null() -> None:
    a, ev = esd(1)
    null = randomized_null(a, seed=3)
    m = heavy_tail_metrics(ev, Q=a.shape[0] / a.shape[1], rows=a.shape[0], null=null)
    mp = fit_mp(ev, a.shape[0] / a.shape[1], rows=a.shape[0])
    assert m["mp_softrank"] == pytest.approx(mp.lambda_plus / ev.max())
    assert m["num_spikes"] == mp.num_spikes
    assert m["rand_distance"] == null.rand_distance
    assert m["rand_lambda_max"] == null.rand_lambda_max
    m2 = heavy_tail_metrics(ev, mp=mp)
    assert m2["mp_softrank"] == m["mp_softrank"]
    json.dumps(m)


def test_options_pass_through_and_torch_input() -> None:
    _, ev = esd(2)
    m = heavy_tail_metrics(torch.from_numpy(ev), distribution="truncated_power_law")
    assert "lambda_" in m and m["lambda_"] >= 0
    f = heavy_tail_metrics(ev, fingers="clip")
    assert "num_fingers" in f and "raw_alpha" in f
    with pytest.raises(TypeError):
        heavy_tail_metrics(ev, fit=fit_powerlaw(ev), xmin=1.0)


def test_failed_fit_policy() -> None:
    ev = np.array([0.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        heavy_tail_metrics(ev)
    m = heavy_tail_metrics(ev, errors="nan")
    assert math.isnan(m["alpha"]) and m["warning"] == "failed"
    assert m["lambda_max"] == 2.0
    with pytest.raises(ValueError):
        heavy_tail_metrics(ev, errors="ignore")
    with pytest.raises(ValueError):
        heavy_tail_metrics([np.nan, 1.0])
