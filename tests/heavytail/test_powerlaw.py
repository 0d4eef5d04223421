"""Tests for jacspec.heavytail.powerlaw: accuracy on Pareto samples, exactness against a brute-force
Clauset-Shalizi-Newman scan written here with plain loops, options and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.integrate import trapezoid

from jacspec.heavytail.powerlaw import PowerLawFit, fit_powerlaw


def pareto(alpha: float, n: int, seed: int, xmin: float = 1.0) -> np.ndarray:
    """Inverse-CDF sample of p(x) = (alpha-1)/xmin (x/xmin)^-alpha, x >= xmin."""
    u = np.random.default_rng(seed).random(n)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def brute_force_csn(values: np.ndarray, min_tail: int) -> tuple[float, float, float]:
    """O(n^2) CSN scan with loops: every distinct value with >= min_tail tail points is a
    candidate xmin; alpha = 1 + m / sum ln(x/xmin); D = exact two-sided KS sup. Returns
    (xmin, alpha, D) of the first candidate with the smallest D."""
    x = sorted(float(v) for v in values if v > 0)
    n = len(x)
    best = (math.inf, math.nan, math.nan)
    for i in range(n):
        if i > 0 and x[i] == x[i - 1]:
            continue
        m = n - i
        if m < min_tail:
            break
        s = 0.0
        for j in range(i, n):
            s += math.log(x[j] / x[i])
        if s <= 0:
            continue
        a = 1.0 + m / s
        d = 0.0
        for j in range(i, n):
            f = 1.0 - (x[j] / x[i]) ** (1.0 - a)
            d = max(d, f - (j - i) / m, (j - i + 1) / m - f)
        if d < best[0]:
            best = (d, x[i], a)
    return best[1], best[2], best[0]


@pytest.mark.parametrize("alpha", [1.5, 2.0, 2.5, 3.0, 4.0])
@pytest.mark.parametrize("n", [500, 8000])
def test_alpha_median_error_on_pareto(alpha: float, n: int) -> None:
    errors = [abs(fit_powerlaw(pareto(alpha, n, seed)).alpha - alpha) for seed in range(20)]
    assert np.median(errors) <= 0.1


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_scan(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    alpha = [1.7, 2.3, 3.5][seed % 3]
    n = [300, 600][seed % 2]
    # a bulk below the power-law tail, as in an ESD, so xmin is not the minimum
    bulk = rng.uniform(0.2, 1.0, size=n // 2)
    x = np.concatenate([bulk, pareto(alpha, n, seed)])
    xmin, a, d = brute_force_csn(x, min_tail=10)
    fit = fit_powerlaw(x)
    assert fit.exact
    assert fit.xmin == xmin
    assert fit.alpha == pytest.approx(a, rel=1e-9)
    assert fit.D == pytest.approx(d, rel=1e-9, abs=1e-12)
    assert fit.num_pl_spikes == int(np.sum(x >= xmin))
    assert fit.sigma == pytest.approx((a - 1) / math.sqrt(fit.num_pl_spikes))


def test_matches_brute_force_with_ties_and_zeros() -> None:
    rng = np.random.default_rng(7)
    x = np.round(pareto(2.5, 400, 3), 2)  # many ties
    x = np.concatenate([x, np.zeros(25), rng.uniform(0.1, 0.9, 50)])
    xmin, a, d = brute_force_csn(x, min_tail=5)
    fit = fit_powerlaw(x, min_tail=5)
    assert fit.num_zeros == 25
    assert fit.num_values == x.size - 25
    assert fit.xmin == xmin
    assert fit.alpha == pytest.approx(a, rel=1e-9)
    assert fit.D == pytest.approx(d, rel=1e-9)


def test_candidate_cap_is_close_and_marked() -> None:
    x = pareto(2.5, 3000, 11)
    full = fit_powerlaw(x)
    capped = fit_powerlaw(x, max_candidates=50)
    assert not capped.exact and full.exact
    assert capped.num_candidates < full.num_candidates
    assert capped.D >= full.D - 1e-15
    assert abs(capped.alpha - full.alpha) < 0.1


def test_explicit_candidates_restrict_the_scan() -> None:
    x = np.sort(pareto(2.5, 1000, 21))
    chosen = x[[100, 200, 300]] - 1e-12  # snapped up to those data values
    fit = fit_powerlaw(x, xmin_candidates=chosen)
    ds = [fit_powerlaw(x, xmin=float(x[i])).D for i in (100, 200, 300)]
    assert fit.xmin == x[[100, 200, 300][int(np.argmin(ds))]]
    assert fit.D == pytest.approx(min(ds))
    assert fit.num_candidates == 3


def test_fixed_xmin_closed_form() -> None:
    x = pareto(3.0, 2000, 5)
    fit = fit_powerlaw(x, xmin=1.5)
    tail = x[x >= 1.5]
    assert fit.num_pl_spikes == tail.size
    assert fit.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / 1.5)))
    assert fit.xmin == 1.5


def test_xmax_clips_values() -> None:
    x = pareto(2.5, 2000, 8)
    xmax = float(np.quantile(x, 0.99))
    fit = fit_powerlaw(x, xmax=xmax)
    assert fit.xmax <= xmax
    assert fit.num_values == int(np.sum(x <= xmax))


def test_xmin_window_restricts_search() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.lognormal(0.0, 0.3, 3000), pareto(2.5, 300, 2, xmin=3.0)])
    fit = fit_powerlaw(x, xmin_window=(2.0, 4.0))
    assert 2.0 <= fit.xmin <= 4.0
    assert fit.xmin_window == (2.0, 4.0)
    peak = fit_powerlaw(x, xmin_window="peak")
    lo, hi = peak.xmin_window
    assert lo <= peak.xmin <= hi
    # the ESD's log-histogram peak is near 1 (lognormal bulk centred at 1)
    assert 0.5 < lo < 1.5


def heavy_tailed_esd(seed: int) -> np.ndarray:
    """Eigenvalues of W W^T / 600 for a 300 x 600 Student-t(2.5) matrix."""
    w = np.random.default_rng(seed).standard_t(2.5, size=(300, 600))
    return np.linalg.eigvalsh(w @ w.T / 600)


@pytest.mark.parametrize("seed", [2, 3, 8])
def test_fingers_clip_follows_its_rule(seed: int) -> None:
    x = np.sort(heavy_tailed_esd(seed))
    raw = fit_powerlaw(x)
    # reference: first k with alpha_k + 1 < alpha_0, stopping once alpha_k <= 2
    expected_k, expected_alpha = 0, raw.alpha
    for k in range(1, 11):
        ak = fit_powerlaw(x[: x.size - k]).alpha
        if ak + 1.0 < raw.alpha:
            expected_k, expected_alpha = k, ak
            break
        if ak <= 2.0:
            break
    fixed = fit_powerlaw(x, fingers="clip")
    assert fixed.raw_alpha == pytest.approx(raw.alpha)
    assert fixed.num_fingers == expected_k
    assert fixed.alpha == pytest.approx(expected_alpha)
    assert fixed.alpha <= raw.alpha
    if seed == 2:  # a spurious alpha ~ 6.7 from a 22-point tail is brought down
        assert expected_k > 0 and fixed.alpha < raw.alpha - 1.0
        assert fixed.xmax < x[-1]


def test_fingers_clip_leaves_clean_pareto_alone() -> None:
    clean = fit_powerlaw(pareto(2.5, 2000, 9), fingers="clip")
    assert clean.num_fingers == 0
    assert clean.alpha == clean.raw_alpha


def test_truncated_power_law_recovers_cutoff() -> None:
    # rejection sample of x^-1.5 e^{-x/50} on [1, inf)
    rng = np.random.default_rng(3)
    out: list[np.ndarray] = []
    while sum(o.size for o in out) < 4000:
        cand = pareto(1.5, 20000, int(rng.integers(1 << 30)))
        keep = rng.random(cand.size) < np.exp(-(cand - 1.0) / 50.0)
        out.append(cand[keep])
    x = np.concatenate(out)[:4000]
    fit = fit_powerlaw(x, xmin=1.0, distribution="truncated_power_law")
    assert fit.distribution == "truncated_power_law"
    assert fit.alpha == pytest.approx(1.5, abs=0.1)
    assert fit.lambda_ == pytest.approx(1 / 50, rel=0.35)
    assert 0 <= fit.D < 0.05
    # the density integrates to one
    grid = np.geomspace(1.0, 5000.0, 20001)
    assert trapezoid(fit.pdf(grid), grid) == pytest.approx(1.0, abs=2e-3)
    pl = fit_powerlaw(x, xmin=1.0)
    assert pl.lambda_ == 0.0


def test_pure_power_law_pdf_integrates_to_one() -> None:
    fit = fit_powerlaw(pareto(2.5, 1000, 1))
    grid = np.geomspace(fit.xmin, fit.xmin * 1e7, 200001)
    assert trapezoid(fit.pdf(grid), grid) == pytest.approx(1.0, abs=2e-3)


def test_no_weightwatcher_training_label() -> None:
    # WeightWatcher's alpha < 2 / > 6 labels are calibrated on weight matrices; jacspec's
    # spectra are Jacobian ESDs, so no exponent gives a label (issue 22, defect 17)
    for a in (1.5, 3.0, 9.0):
        fit = fit_powerlaw(pareto(a, 3000, 0))
        assert fit.warning == "" and abs(fit.alpha - a) < 0.35 * a


def test_result_is_frozen_and_json_able() -> None:
    fit = fit_powerlaw(pareto(2.5, 500, 0), xmin_window=(1.0, 2.0))
    assert isinstance(fit, PowerLawFit)
    with pytest.raises(AttributeError):
        fit.alpha = 3.0  # type: ignore[misc]
    d = json.loads(json.dumps(fit.to_dict()))
    for key in ("alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "warning", "lambda_"):
        assert key in d
    assert d["xmin_window"] == [1.0, 2.0]
    assert fit.to_frame().shape[0] == 1


@pytest.mark.parametrize(
    "values, kwargs, exc",
    [
        ([1.0, np.nan] + [2.0] * 20, {}, ValueError),
        ([1.0, np.inf] + [2.0] * 20, {}, ValueError),
        ([-1.0] + [2.0] * 20, {}, ValueError),
        ([1.0, 2.0, 3.0], {}, ValueError),
        ([0.0] * 50 + [1.0, 2.0], {}, ValueError),
        (list(range(1, 40)), {"distribution": "lognormal"}, ValueError),
        (list(range(1, 40)), {"fingers": "bogus"}, ValueError),
        (list(range(1, 40)), {"xmin_window": "valley"}, ValueError),
        (list(range(1, 40)), {"xmin_window": (5.0, 1.0)}, ValueError),
        (list(range(1, 40)), {"xmin_window": (100.0, 200.0)}, ValueError),
        (list(range(1, 40)), {"min_tail": 1}, ValueError),
        (list(range(1, 40)), {"xmin": -1.0}, ValueError),
        (list(range(1, 40)), {"xmax": 0.0}, ValueError),
        ("abc", {}, TypeError),
        (list(range(1, 40)), {"xmin_candidates": []}, ValueError),
        (list(range(1, 40)), {"xmin_candidates": "some"}, ValueError),
    ],
)
def test_bad_input(values: object, kwargs: dict, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        fit_powerlaw(values, **kwargs)
