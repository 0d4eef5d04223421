"""Rank statistics of jacspec.zoo.rank.score against scipy and brute-force references."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jacspec.zoo.rank.grid import is_complete_grid
from jacspec.zoo.rank.pgdl import conditional_mutual_information
from jacspec.zoo.rank.score import (
    granulated_kendall,
    kendall_tau,
    paired_comparison,
    robust_sign_error,
    score_metrics,
    worst_factor_sign_error,
)


def _grid(levels: dict[str, list], seed: int, reps: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for combo in itertools.product(*levels.values()):
        for r in range(reps):
            row = dict(zip(levels, combo, strict=True))
            if reps > 1:
                row["seed"] = r
            rows.append(row)
    df = pd.DataFrame(rows)
    df["gap"] = rng.normal(size=len(df))
    df["mu"] = 0.6 * df["gap"] + rng.normal(size=len(df))
    return df


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kendall_tau_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=40).astype(float)  # many ties
    y = x + rng.integers(0, 3, size=40)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    z = rng.normal(size=40)
    assert kendall_tau(z, -z) == pytest.approx(-1.0)
    x[3] = np.nan
    keep = np.isfinite(x)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x[keep], y[keep]).statistic)
    assert math.isnan(kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def _tau_a_groups(df: pd.DataFrame, factor: str, factors: list[str]) -> float:
    """Psi_i by hand: mean over groups (other factors fixed) of scipy's tau."""
    others = [f for f in factors if f != factor]
    taus = []
    for values in itertools.product(*(sorted(df[o].unique()) for o in others)):
        mask = np.ones(len(df), bool)
        for o, v in zip(others, values, strict=True):
            mask &= (df[o] == v).to_numpy()
        grp = df[mask]
        t = stats.kendalltau(grp["mu"], grp["gap"]).statistic
        if np.isfinite(t):
            taus.append(t)
    return float(np.mean(taus))


def test_granulated_kendall_by_hand() -> None:
    df = _grid({"a": [0, 1, 2], "b": ["x", "y"], "c": [1, 2]}, seed=3)
    factors = ["a", "b", "c"]
    psi, per = granulated_kendall(df, "mu", factors)
    for f in factors:
        assert per[f] == pytest.approx(_tau_a_groups(df, f, factors))
    assert psi == pytest.approx(np.mean([per[f] for f in factors]))


def _cmi_by_hand(df: pd.DataFrame, factors: list[str]) -> float:
    """PGDL's score: every ordered pair (self-pairs included), cells weighted equally."""
    rows = df.to_dict("records")
    best = math.inf
    for s in itertools.combinations(factors, 2):
        cells: dict[tuple, Counter] = {}
        for ri in rows:
            for rj in rows:
                key = tuple((ri[f], rj[f]) for f in s)
                vg, vm = ri["gap"] > rj["gap"], ri["mu"] > rj["mu"]
                cells.setdefault(key, Counter())[(vg, vm)] += 1
        mi = h = 0.0
        for c in cells.values():
            n = sum(c.values())
            w = 1 / len(cells)
            pg = {g: sum(v for (gg, _), v in c.items() if gg == g) / n for g in (0, 1)}
            pm = {m: sum(v for (_, mm), v in c.items() if mm == m) / n for m in (0, 1)}
            for (g, m), v in c.items():
                p = v / n
                mi += w * p * math.log(p / (pg[g] * pm[m]))
            h -= w * sum(p * math.log(p) for p in pg.values() if p > 0)
        best = min(best, mi / h)
    return best


@pytest.mark.parametrize("seed", [0, 5])
def test_cmi_by_hand_on_small_grid(seed: int) -> None:
    df = _grid({"a": [0, 1], "b": [0, 1, 2], "c": ["u", "v"]}, seed=seed)
    factors = ["a", "b", "c"]
    cmi, per = conditional_mutual_information(df, "mu", factors)
    assert cmi == pytest.approx(_cmi_by_hand(df, factors), rel=1e-10)
    # seed replicates: PGDL's score needs one model per configuration
    reps = _grid({"a": [0, 1], "b": [0, 1, 2], "c": ["u", "v"]}, seed=seed, reps=2)
    assert math.isnan(conditional_mutual_information(reps, "mu", factors)[0])
    assert set(per) == {"a,b", "a,c", "b,c"}
    # the gap itself carries all the information; a constant metric none
    df["same"] = df["gap"]
    assert conditional_mutual_information(df, "same", factors)[0] == pytest.approx(1.0)
    df["const"] = 0.0
    assert conditional_mutual_information(df, "const", factors)[0] == pytest.approx(0.0)


def test_cmi_needs_complete_grid() -> None:
    df = _grid({"a": [0, 1], "b": [0, 1]}, seed=1).iloc[:3]
    assert not is_complete_grid(df, ["a", "b"])
    assert math.isnan(conditional_mutual_information(df, "mu", ["a", "b"])[0])


def test_robust_sign_error_and_pairs_by_hand() -> None:
    df = _grid({"a": [0, 1, 2], "b": [0, 1]}, seed=7)
    factors = ["a", "b"]
    noise = 0.3
    worst, per = worst_factor_sign_error(df, "mu", factors, noise=noise)
    robust, per_robust = robust_sign_error(df, "mu", factors, noise=noise)
    rows = df.to_dict("records")
    for f in factors:
        errs = []
        for i, j in itertools.combinations(range(len(rows)), 2):
            ri, rj = rows[i], rows[j]
            if ri[f] == rj[f] or any(ri[o] != rj[o] for o in factors if o != f):
                continue
            dg, dm = rj["gap"] - ri["gap"], rj["mu"] - ri["mu"]
            if abs(dg) <= noise:
                continue
            errs.append(0.0 if np.sign(dg) == np.sign(dm) else 1.0)
        assert per[f] == pytest.approx(np.mean(errs))
        # no seeds: each environment is one pair, the robust value its worst pair
        assert per_robust[f] == pytest.approx(max(errs))
    assert worst == pytest.approx(max(per.values()))
    assert robust == pytest.approx(max(per_robust.values()))

    res = paired_comparison(df, "mu", "b", 0, 1, factors)
    a0 = df[df.b == 0].set_index("a")
    a1 = df[df.b == 1].set_index("a")
    assert res["pairs"] == 3
    assert res["gap_diff"] == pytest.approx(float((a1.gap - a0.gap).mean()))
    assert res["metric_larger_b"] == pytest.approx(float((a1.mu > a0.mu).mean()))


def test_score_metrics_table_and_best() -> None:
    df = _grid({"a": [0, 1, 2], "b": [0, 1]}, seed=11, reps=2)
    df["noise"] = np.random.default_rng(0).normal(size=len(df))
    table = score_metrics(df, ["mu", "noise"], ["a", "b"])
    d = table.to_dict()
    assert set(d["metrics"]) == {"mu", "noise"}
    for key in ("kendall_tau", "psi", "cmi", "robust_sign_error"):
        assert key in d["metrics"]["mu"]
    assert d["metrics"]["mu"]["kendall_tau"] == pytest.approx(
        stats.kendalltau(df.mu, df.gap).statistic)
    assert table.best == max(["mu", "noise"], key=lambda m: abs(kendall_tau(df[m], df.gap)))
    assert list(table.to_frame().index) == ["mu", "noise"]
    with pytest.raises(ValueError, match="metric columns"):
        score_metrics(df, ["missing"], ["a"])
