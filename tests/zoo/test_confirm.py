"""Study 2's pre-registered test (jacspec.zoo.rank.confirm) against hand-written references: each
formula of docs/results/mnist_study2.md re-expressed here with plain loops over pairs,
configurations and draws, on small synthetic zoos."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from jacspec.cli.main import main
from jacspec.zoo.rank.confirm import (
    clopper_pearson_bound,
    cluster_bootstrap_indices,
    confirmatory_test,
    converged_cmi,
    icc1,
    inclusion,
    kendall_tau_b_within,
    max_t,
    other_seeds_gap,
    partial_kendall,
    psi_within_strata,
    sign_error_summary,
    verdict,
)
from jacspec.zoo.rank.confirm_stats import pair_counts, within_group_pairs
from jacspec.zoo.run.store import Store


def _zoo(n_factors: int = 4, seeds: int = 4, seed: int = 0, signal: float = 1.0,
         families: tuple[str, ...] = ("mlp", "cnn")) -> tuple[pd.DataFrame, list[str]]:
    """A zoo of two-level factors: the gap follows a configuration-level scale (read by Z
    and the comparators, with noise) and, with ``signal``, a second cause that only the
    metric ``good`` reads; ``null*`` read nothing."""
    rng = np.random.default_rng(seed)
    fs = [f"f{i}" for i in range(n_factors)]
    rows = []
    for fam in families:
        for lv in itertools.product([0, 1], repeat=n_factors):
            c = rng.normal(size=2)
            for s in range(seeds):
                rows.append({"model": fam, **dict(zip(fs, lv, strict=True)), "seed": 200 + s,
                             "_scale": c[0], "_info": c[1]})
    d = pd.DataFrame(rows)
    n = len(d)
    scale = d["_scale"] + 0.3 * rng.normal(size=n)
    info = d["_info"] + 0.3 * rng.normal(size=n)
    d["train_jacobian_norm"] = np.exp(scale)
    d["gap"] = np.round(0.05 + 0.02 * scale + 0.02 * signal * info
                        + 0.003 * rng.normal(size=n), 4)
    d["good"] = info + 0.2 * rng.normal(size=n)
    d["null0"] = rng.normal(size=n)
    d["comp0"] = scale + 0.5 * rng.normal(size=n)
    d["comp1"] = scale + 0.5 * rng.normal(size=n)
    return d.drop(columns=["_scale", "_info"]), fs


# --------------------------------------------------------------------- tau-b, partial tau

def _hand_tau_b(x: list[float], y: list[float], g: list[str]) -> float:
    num = sx = sy = 0.0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if g[i] != g[j]:
                continue
            a = (x[i] > x[j]) - (x[i] < x[j])
            b = (y[i] > y[j]) - (y[i] < y[j])
            num += a * b
            sx += a * a
            sy += b * b
    return num / math.sqrt(sx * sy)


def test_partial_kendall_by_explicit_pair_loops_with_ties() -> None:
    rng = np.random.default_rng(3)
    n = 14
    x = np.round(rng.normal(size=n), 1)  # ties in every variable
    y = np.round(x + rng.normal(size=n), 1)
    z = np.round(0.5 * x + rng.normal(size=n), 1)
    g = ["a"] * 8 + ["b"] * 6
    assert len(set(x)) < n and len(set(y)) < n  # ties present
    txy, txz, tyz = (_hand_tau_b(u.tolist(), v.tolist(), g) for u, v in ((x, y), (x, z), (y, z)))
    want = (txy - txz * tyz) / math.sqrt((1 - txz ** 2) * (1 - tyz ** 2))
    assert kendall_tau_b_within(x, y, g) == pytest.approx(txy, abs=1e-14)
    assert partial_kendall(x, y, z, g) == pytest.approx(want, abs=1e-14)
    # pairs across groups are left out: pooling the groups changes the number
    assert abs(partial_kendall(x, y, z) - want) > 1e-3
    # one group: tau-b with ties is scipy's
    assert kendall_tau_b_within(x, y) == pytest.approx(scipy.stats.kendalltau(x, y)[0],
                                                       abs=1e-12)
    # a NaN point drops out of every pair
    xn = x.copy()
    xn[0] = np.nan
    keep = np.arange(1, n)
    assert partial_kendall(xn, y, z, g) == pytest.approx(
        partial_kendall(x[keep], y[keep], z[keep], [g[i] for i in keep]), abs=1e-14)


def test_partial_kendall_is_nan_when_z_orders_x_or_y_exactly() -> None:
    x = np.array([1.0, 2, 3, 4, 5, 6])
    y = np.array([2.0, 1, 4, 3, 6, 5])
    assert np.isnan(partial_kendall(x, y, 10 * x))  # |tau_xz| = 1
    assert np.isnan(partial_kendall(x, y, -y))  # |tau_yz| = 1
    assert np.isfinite(partial_kendall(x, y, np.array([3.0, 1, 2, 6, 4, 5])))


# --------------------------------------------------------------------- cluster bootstrap

def test_cluster_bootstrap_draws_configurations_then_seeds_within_each_family() -> None:
    fam = np.array(["b"] * 7 + ["a"] * 5)
    conf = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4])  # sizes 3, 2, 2 | 3, 2
    draws = cluster_bootstrap_indices(fam, conf, 300, rng=7)
    assert len(draws) == 300
    repeated_seed = False
    for rows in draws:
        pos, blocks = 0, []
        while pos < rows.size:  # the draw is a sequence of blocks, one per drawn config
            c = conf[rows[pos]]
            size = int(np.sum(conf == c))
            block = rows[pos:pos + size]
            assert np.all(conf[block] == c)  # seeds drawn within the configuration only
            repeated_seed |= np.unique(block).size < block.size
            blocks.append(c)
            pos += size
        fams = [fam[conf == c][0] for c in blocks]
        assert fams == sorted(fams)  # families in order, never mixed
        assert fams.count("a") == 2 and fams.count("b") == 3  # K configurations per family
    assert repeated_seed  # seeds are drawn with replacement
    again = cluster_bootstrap_indices(fam, conf, 300, rng=7)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again, strict=True))
    other = cluster_bootstrap_indices(fam, conf, 300, rng=8)
    assert not all(np.array_equal(a, b) for a, b in zip(draws, other, strict=True))
    with pytest.raises(ValueError, match="spans two families"):
        cluster_bootstrap_indices(["a", "b"], [0, 0], 5)
    with pytest.raises(ValueError, match="B must be"):
        cluster_bootstrap_indices(fam, conf, 0)


def test_pair_counts_equal_the_drawn_sample_without_pairs_of_copies() -> None:
    rng = np.random.default_rng(0)
    fam = np.array(["a"] * 6 + ["b"] * 5)
    conf = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4])
    x, y = np.round(rng.normal(size=11), 1), rng.normal(size=11)
    pi, pj = within_group_pairs(fam)
    cols = np.column_stack([np.ones(pi.size), np.sign(x[pi] - x[pj]) * np.sign(y[pi] - y[pj])])
    for rows in cluster_bootstrap_indices(fam, conf, 20, rng=1):
        w = np.bincount(rows, minlength=11)[None, :]
        got = pair_counts(w, pi, pj, cols)[0]
        pairs = num = 0.0
        for p in range(rows.size):  # the drawn sample itself, position by position
            for q in range(p + 1, rows.size):
                i, j = rows[p], rows[q]
                if i == j or fam[i] != fam[j]:  # a network and its copy; across families
                    continue
                pairs += 1
                num += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        assert got == pytest.approx([pairs, num], abs=0)


# --------------------------------------------------------------------- max-T

def test_max_t_by_hand_loops() -> None:
    rng = np.random.default_rng(2)
    B, m, k = 60, 3, 2
    sp = np.array([0.3, 0.05, -0.2])
    cp = np.array([0.1, -0.15])
    sd = sp + 0.05 * rng.normal(size=(B, m))
    cd = cp + 0.05 * rng.normal(size=(B, k))
    res = max_t(sp, sd, cp, cd, names=["a", "b", "c"])
    delta = [abs(s) - max(abs(c) for c in cp) for s in sp]
    dd = [[abs(sd[b, s]) - max(abs(cd[b, c]) for c in range(k)) for s in range(m)]
          for b in range(B)]
    se = []
    for s in range(m):
        mean = sum(dd[b][s] for b in range(B)) / B
        se.append(math.sqrt(sum((dd[b][s] - mean) ** 2 for b in range(B)) / (B - 1)))
    M = [max((dd[b][s] - delta[s]) / se[s] for s in range(m)) for b in range(B)]
    c = np.quantile(M, 0.95)
    for s in range(m):
        assert res.delta[s] == pytest.approx(delta[s], abs=1e-14)
        assert res.se[s] == pytest.approx(se[s], rel=1e-12)
        assert res.lower[s] == pytest.approx(delta[s] - c * se[s], rel=1e-12)
        hits = sum(1 for b in range(B) if M[b] >= delta[s] / se[s])
        assert res.p_adjusted[s] == pytest.approx((1 + hits) / (B + 1), abs=1e-15)
    assert res.critical == pytest.approx(c, rel=1e-12)
    # per-shape comparator draws (B, m, k) reduce to the same when identical
    same = max_t(sp, sd, np.tile(cp, (m, 1)), np.repeat(cd[:, None, :], m, axis=1))
    assert np.allclose(same.lower, res.lower)


def test_confirmatory_test_rejects_the_informative_metric_and_not_the_null() -> None:
    d, fs = _zoo(seed=0, signal=1.0)
    res = confirmatory_test(d, ["good", "null0"], ["comp0", "comp1"],
                            config_keys=[*fs, "model", "seed"], B=200, cmi=False)
    rows = res.rows
    assert rows["good"]["lower_bound"] > 0 and rows["good"]["p_adjusted"] < 0.05
    assert rows["null0"]["lower_bound"] < 0 and rows["null0"]["p_adjusted"] > 0.5
    assert res.verdict.best["metric"] == "good"
    # the point estimates are the hand formulas on the full data
    g, z = d["gap"], d["train_jacobian_norm"]
    pts = {m: partial_kendall(d[m], g, z, d["model"]) for m in ("good", "null0", "comp0",
                                                                "comp1")}
    for m in ("good", "null0"):
        assert rows[m]["partial_tau"] == pytest.approx(pts[m], abs=1e-12)
        assert rows[m]["delta"] == pytest.approx(
            abs(pts[m]) - max(abs(pts["comp0"]), abs(pts["comp1"])), abs=1e-12)
    fam = d["model"].to_numpy()
    num = den = 0
    for i in range(len(d)):
        for j in range(i + 1, len(d)):
            if fam[i] == fam[j]:
                num += np.sign(d["good"][i] - d["good"][j]) * np.sign(g[i] - g[j])
                den += 1
    assert rows["good"]["tau"] == pytest.approx(num / den, abs=1e-12)  # tau-a within family
    assert np.isnan(rows["train_jacobian_norm"]["partial_tau"])  # tau_ZZ = 1
    # reproducible: same generator seed, same numbers
    again = confirmatory_test(d, ["good", "null0"], ["comp0", "comp1"],
                              config_keys=[*fs, "model", "seed"], B=200, cmi=False)
    assert json.dumps(again.to_dict()) == json.dumps(res.to_dict())
    assert res.to_frame().loc["good", "role"] == "shape"
    json.dumps(res.to_dict())
    json.dumps(res.summary())


# --------------------------------------------------------------------- Clopper-Pearson

def _binom_tail(k: int, n: int, p: float, upper: bool) -> float:
    ks = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in ks)


@pytest.mark.parametrize("k,n", [(0, 7), (7, 7), (3, 10), (9, 10), (1, 40), (25, 25)])
def test_clopper_pearson_against_beta_and_binomial_tails(k: int, n: int) -> None:
    lo = clopper_pearson_bound(k, n, side="lower")
    hi = clopper_pearson_bound(k, n, side="upper")
    if k == 0:
        assert lo == 0.0
        assert hi == pytest.approx(1 - 0.05 ** (1 / n), abs=1e-14)
    else:
        assert lo == pytest.approx(scipy.stats.beta.ppf(0.05, k, n - k + 1), abs=1e-12)
        assert _binom_tail(k, n, lo, upper=True) == pytest.approx(0.05, abs=1e-10)
    if k == n:
        assert hi == 1.0
        assert lo == pytest.approx(0.05 ** (1 / n), abs=1e-14)
    else:
        assert hi == pytest.approx(scipy.stats.beta.ppf(0.95, k + 1, n - k), abs=1e-12)
        assert _binom_tail(k, n, hi, upper=False) == pytest.approx(0.05, abs=1e-10)
    auto = clopper_pearson_bound(k, n)
    assert auto == (lo if 2 * k > n else hi)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson_bound(n + 1, n)
    with pytest.raises(TypeError, match="k must be an integer"):
        clopper_pearson_bound(0.5, n)  # type: ignore[arg-type]


# --------------------------------------------------------------------- Psi within strata

def _hand_psi_z(d: pd.DataFrame, metric: str, fs: list[str], strata: int,
                min_pairs: int) -> tuple[float, dict[str, float], list[str]]:
    fam_vals, thin = {}, []
    for fam in sorted(d["model"].unique()):
        sub = d[d["model"] == fam].reset_index(drop=True)
        st = pd.qcut(sub["train_jacobian_norm"], strata, labels=False).to_numpy()
        means = []
        for f in fs:
            vals = []
            for i in range(len(sub)):
                for j in range(i + 1, len(sub)):
                    a, b = sub.iloc[i], sub.iloc[j]
                    if a[f] == b[f] or a["seed"] != b["seed"]:
                        continue
                    if any(a[o] != b[o] for o in fs if o != f) or st[i] != st[j]:
                        continue
                    vals.append(np.sign(a[metric] - b[metric]) * np.sign(a["gap"] - b["gap"]))
            if len(vals) < min_pairs:
                thin.append(f"{fam}:{f}")
            else:
                means.append(sum(vals) / len(vals))
        fam_vals[fam] = sum(means) / len(means)
    return sum(fam_vals.values()) / len(fam_vals), fam_vals, thin


def test_psi_within_strata_by_hand_loop() -> None:
    d, fs = _zoo(n_factors=3, seeds=3, seed=4)
    d["f0"] = d["f0"] * 3  # f0 moves Z strongly: fewer of its pairs share a stratum
    d["train_jacobian_norm"] = d["train_jacobian_norm"] * np.exp(2.0 * d["f0"])
    value, per_family, thin = _hand_psi_z(d, "good", fs, strata=3, min_pairs=4)
    res = psi_within_strata(d, "good", z="train_jacobian_norm", factors=[*fs, "model", "seed"],
                            strata=3, min_pairs=4)
    assert res["value"] == pytest.approx(value, abs=1e-14)
    assert res["per_family"] == pytest.approx(per_family, abs=1e-14)
    assert sorted(res["thin"]) == sorted(thin) and thin  # a thin factor is named
    plain, _, none_thin = _hand_psi_z(d, "good", fs, strata=1, min_pairs=1)
    res1 = psi_within_strata(d, "good", z="train_jacobian_norm", factors=fs, strata=1,
                             min_pairs=1)
    assert res1["value"] == pytest.approx(plain, abs=1e-14) and not none_thin


def test_psi_within_strata_bootstrap_bound_collapses_when_every_pair_agrees() -> None:
    d, fs = _zoo(n_factors=3, seeds=2, seed=1)
    d["gap"] = np.random.default_rng(0).permutation(len(d)) * 1e-3  # no tied gaps
    d["same"] = d["gap"] * 2  # every pair agrees with the gap
    kw = {"z": "train_jacobian_norm", "factors": fs, "strata": 2, "min_pairs": 1, "B": 100}
    res = psi_within_strata(d, "same", rng=0, **kw)
    assert res["value"] == 1.0 and res["draws"].shape == (100,)
    assert res["q05"] == res["q95"] == res["lo"] == res["hi"] == 1.0
    null = psi_within_strata(d, "null0", rng=0, **kw)
    assert np.ptp(null["draws"]) > 0 and null["q05"] < null["value"] < null["q95"]
    again = psi_within_strata(d, "null0", rng=0, **kw)
    assert np.array_equal(again["draws"], null["draws"])


# --------------------------------------------------------------------- sign errors, CMI

def test_sign_error_summary_by_hand_loop() -> None:
    d, fs = _zoo(n_factors=3, seeds=3, seed=5)
    errs = []
    for fam in sorted(d["model"].unique()):
        sub = d[d["model"] == fam]
        diffs = [abs(a - b) for _, grp in sub.groupby(fs) for a, b in
                 itertools.combinations(grp["gap"].tolist(), 2)]
        noise = sum(diffs) / len(diffs)
        configs = sorted({tuple(r) for r in sub[fs].to_numpy().tolist()})
        for c1, c2 in itertools.combinations(configs, 2):
            if sum(u != v for u, v in zip(c1, c2, strict=True)) != 1:
                continue
            e, dg = [], []
            for s in sorted(sub["seed"].unique()):
                r1 = sub[(sub[fs].to_numpy() == c1).all(axis=1) & (sub["seed"] == s)].iloc[0]
                r2 = sub[(sub[fs].to_numpy() == c2).all(axis=1) & (sub["seed"] == s)].iloc[0]
                dm, g = r2["good"] - r1["good"], r2["gap"] - r1["gap"]
                e.append((1 - np.sign(dm) * np.sign(g)) / 2)
                dg.append(g)
            if abs(sum(dg) / len(dg)) > noise:
                errs.append(sum(e) / len(e))
    got = sign_error_summary(d, "good", factors=fs)
    assert got["count"] == len(errs) > 10
    assert got["mean"] == pytest.approx(np.mean(errs), abs=1e-14)
    assert got["max"] == max(errs)
    assert [got["p50"], got["p75"], got["p90"]] == pytest.approx(
        np.quantile(errs, [0.5, 0.75, 0.9]).tolist(), abs=1e-14)


def _hand_cmi(mu: list[float], g: list[float], levels: list[tuple[int, ...]]) -> float:
    """PGDL's scoring program: every ordered pair (self-pairs too), cells by two factors."""
    n, nf = len(mu), len(levels[0])
    best = math.inf
    for h1, h2 in itertools.combinations(range(nf), 2):
        cells: dict[tuple[int, ...], list[int]] = {}
        for a in range(n):
            for b in range(n):
                key = (levels[a][h1], levels[b][h1], levels[a][h2], levels[b][h2])
                t = cells.setdefault(key, [0, 0, 0, 0])
                t[2 * (g[a] > g[b]) + (mu[a] > mu[b])] += 1
        mis, hs = [], []
        for t in cells.values():
            tot = sum(t)
            p = [[t[0] / tot, t[1] / tot], [t[2] / tot, t[3] / tot]]
            pg = [p[0][0] + p[0][1], p[1][0] + p[1][1]]
            pm = [p[0][0] + p[1][0], p[0][1] + p[1][1]]
            mis.append(sum(p[i][j] * math.log2(p[i][j] / (pg[i] * pm[j]))
                           for i in range(2) for j in range(2) if p[i][j] > 0))
            hs.append(-sum(q * math.log2(q + 1e-12) for q in pg))
        best = min(best, (sum(mis) / len(mis)) / (sum(hs) / len(hs)))
    return best


def test_converged_cmi_by_hand_loop() -> None:
    d, fs = _zoo(n_factors=3, seeds=1, seed=6, families=("mlp",))
    one = converged_cmi(d, ["good", "null0"], factors=fs, B=5, rng=0)
    for m in ("good", "null0"):
        want = _hand_cmi(d[m].tolist(), d["gap"].tolist(),
                         [tuple(r) for r in d[fs].to_numpy().tolist()])
        got = one[m]["mlp"]
        assert got["value"] == pytest.approx(want, abs=1e-12)
        assert got["lo"] == pytest.approx(want, abs=1e-12) and got["missing"] == 0
    # two seeds: every draw is one of the 2^8 grids of a 2 x 2 x 2 design
    d2, fs2 = _zoo(n_factors=3, seeds=2, seed=7, families=("mlp",))
    d2 = d2.reset_index(drop=True)
    possible = []
    for pick in itertools.product([0, 1], repeat=8):
        rows = [d2.index[(d2[fs2].to_numpy() == lv).all(axis=1)][p]
                for lv, p in zip(itertools.product([0, 1], repeat=3), pick, strict=True)]
        sub = d2.loc[rows]
        possible.append(_hand_cmi(sub["good"].tolist(), sub["gap"].tolist(),
                                  [tuple(r) for r in sub[fs2].to_numpy().tolist()]))
    got = converged_cmi(d2, "good", factors=fs2, B=40, rng=3)["good"]["mlp"]
    assert np.isfinite(possible).all() and np.ptp(possible) > 0
    assert min(possible) - 1e-12 <= got["lo"] <= got["value"] <= got["hi"] <= \
        max(possible) + 1e-12
    # a configuration with no converged seed: undefined, with the count missing
    gone = d2[~((d2["f0"] == 1) & (d2["f1"] == 1) & (d2["f2"] == 1))]
    res = converged_cmi(gone, "good", factors=fs2, B=10)["good"]["mlp"]
    assert np.isnan(res["value"]) and res["missing"] == 1


# --------------------------------------------------------------------- noise ceiling, ICC

def test_other_seeds_gap_and_icc1_by_hand() -> None:
    d, fs = _zoo(n_factors=2, seeds=3, seed=8)
    d.loc[0, "gap"] = np.nan
    d = d.iloc[:-2]  # the last configuration keeps one seed
    got = other_seeds_gap(d, [*fs, "model", "seed"])
    for i in range(len(d)):
        others = [d["gap"].iloc[j] for j in range(len(d)) if j != i
                  and all(d[k].iloc[j] == d[k].iloc[i] for k in [*fs, "model"])
                  and np.isfinite(d["gap"].iloc[j])]
        want = sum(others) / len(others) if others else np.nan
        assert got.iloc[i] == pytest.approx(want, abs=1e-15, nan_ok=True)
    # ICC(1) of a balanced layout: (MSB - MSW) / (MSB + (k - 1) MSW)
    x = np.array([[1.0, 1.2, 0.9], [2.0, 2.5, 2.2], [0.1, 0.4, 0.0], [1.5, 1.1, 1.3]])
    a, k = x.shape
    grand = x.mean()
    msb = k * sum((row.mean() - grand) ** 2 for row in x) / (a - 1)
    msw = sum((v - row.mean()) ** 2 for row in x for v in row) / (a * (k - 1))
    assert icc1(x.ravel(), np.repeat(np.arange(a), k)) == pytest.approx(
        (msb - msw) / (msb + (k - 1) * msw), abs=1e-14)


# --------------------------------------------------------------------- verdict, inclusion

def _table(**rows: dict[str, float]) -> pd.DataFrame:
    base = {"role": "shape", "partial_tau": 0.2, "partial_tau_lo": 0.1, "partial_tau_hi": 0.3,
            "partial_abs_q95": 0.28, "delta": 0.1, "se": 0.03, "studentised": 3.3,
            "lower_bound": 0.02, "delta_lo": 0.04, "delta_hi": 0.16, "p_adjusted": 0.01,
            "psi_z": 0.2, "psi_z_q05": 0.05, "psi_z_q95": 0.3}
    return pd.DataFrame([{"metric": k, **base, **v} for k, v in rows.items()]).set_index(
        "metric")


def test_verdict_applies_the_three_conditions() -> None:
    yes = verdict(_table(a={}, b={"lower_bound": -0.1, "studentised": 1.0}))
    assert yes.answer == "yes" and yes.supported == ("a",) and yes.best["metric"] == "a"
    # condition 3: Psi_Z must have the sign of a negative partial tau and its upper bound < 0
    neg = verdict(_table(a={"partial_tau": -0.2, "psi_z": -0.1, "psi_z_q05": -0.3,
                            "psi_z_q95": 0.01}))
    assert neg.answer == "no" and neg.failed == {"a": ["psi_z_consistent"]}
    small = verdict(_table(a={"partial_tau": 0.08, "partial_abs_q95": 0.15},
                           b={"lower_bound": -0.01, "partial_abs_q95": 0.31}))
    assert small.answer == "no" and small.failed == {"a": ["abs_partial_at_least"]}
    assert small.largest_upper_abs_partial == {"metric": "b", "value": 0.31}
    with pytest.raises(ValueError, match="lacks the columns"):
        verdict(pd.DataFrame({"role": ["shape"]}))


def test_inclusion_rules_leave_columns_out_and_report_them() -> None:
    d, fs = _zoo(seed=9)
    d["sparse"] = d["null0"]
    d.loc[: int(0.06 * len(d)), "sparse"] = np.nan  # just over 5% non-finite
    d["rank"] = (d["null0"] > 0).astype(float) * 3  # 2 distinct values
    d["comp_few"] = np.round(d["comp1"] > 0)
    rules = inclusion(d, ["sparse", "rank", "good"])
    assert "5%" in rules["sparse"]["reason"] and "10 distinct" in rules["rank"]["reason"]
    assert rules["good"]["reason"] is None and rules["rank"]["distinct"] == 2
    res = confirmatory_test(d, ["good", "sparse", "rank"], ["comp0", "comp_few"],
                            config_keys=[*fs, "model", "seed"], B=20, cmi=False)
    assert set(res.excluded) == {"sparse", "rank", "comp_few"}
    assert res.settings["confirmatory"] == ["good"] and res.settings["comparator_set"] == \
        ["comp0"]
    frame = res.to_frame()
    assert frame.loc["sparse", "role"] == "excluded_shape" and np.isnan(
        frame.loc["sparse", "delta"])
    assert frame.loc["comp_few", "role"] == "excluded_comparator"
    assert frame.loc["sparse", "networks"] == int(np.isfinite(d["sparse"]).sum())


def test_unconverged_rows_are_excluded_and_counted() -> None:
    d, fs = _zoo(seed=10)
    d["converged"] = True
    d.loc[[0, 5, 9], "converged"] = False
    res = confirmatory_test(d, ["good"], ["comp0"], config_keys=[*fs, "model", "seed"], B=10,
                            cmi=False)
    assert res.counts["excluded_not_converged"] == 3 and res.counts["networks"] == len(d) - 3


# --------------------------------------------------------------------- CLI

@pytest.fixture
def store(tmp_path: Path) -> Path:
    d, fs = _zoo(n_factors=3, seeds=3, seed=11)
    path = tmp_path / "zoo.sqlite"
    metrics = ["gap", "train_jacobian_norm", "good", "null0", "comp0", "comp1"]
    with Store(path) as st:
        configs = [{**{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()
                       if k in [*fs, "model", "seed"]}, "dataset": "digits"}
                   for r in d.to_dict("records")]
        hashes = st.add(configs)
        st.mark_running(hashes)
        for h, r in zip(hashes, d.to_dict("records"), strict=True):
            st.finish(h, {"metrics": {**{m: float(r[m]) for m in metrics}, "converged": True}})
    return path


def test_cli_zoo_score_confirm_prints_the_table_and_writes_json(
        store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "confirm.json"
    rc = main(["zoo", "score", str(store), "--confirm", "--shape", "good,null0",
               "--comparators", "comp0,comp1", "--given", "train_jacobian_norm",
               "--family", "model", "--confirm-draws", "50", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "partial_tau" in text and "lower_bound" in text and "verdict:" in text
    payload = json.loads(out.read_text())
    assert payload["verdict"]["answer"] in ("yes", "no")
    assert payload["settings"]["B"] == 50 and payload["settings"]["z"] == "train_jacobian_norm"
    assert set(payload["rows"]) >= {"good", "null0", "comp0", "comp1", "train_jacobian_norm",
                                    "other_seeds_gap"}


@pytest.mark.parametrize("argv,needle", [
    (["--confirm", "--comparators", "comp0"], "--shape takes"),
    (["--confirm", "--shape", "good"], "--comparators takes"),
    (["--shape", "good", "--comparators", "comp0"], "add --confirm"),
    (["--confirm", "--shape", "gud", "--comparators", "comp0"], "gud"),
    (["--confirm", "--shape", "good", "--comparators", "comp0", "--family", "modl"], "modl"),
    (["--confirm", "--shape", "good", "--comparators", "good"], "overlap"),
    (["--confirm", "--shape", "good", "--comparators", "comp0", "--confirm-draws", "1"],
     "--confirm-draws"),
])
def test_cli_confirm_bad_options_give_one_line(store: Path, capsys: pytest.CaptureFixture[str],
                                               argv: list[str], needle: str) -> None:
    rc = main(["zoo", "score", str(store), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
