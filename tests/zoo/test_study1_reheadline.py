"""Study 1's re-headlined page (issue 19, item 5): the helpers of
experiments/mnist_study_headline.py and the label-free check of experiments/real_vs_random.py,
on small synthetic frames against hand computation."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))

import mnist_study_headline as h
import real_vs_random as rvr


def test_metric_label_follows_study2_rule():
    assert h.metric_label("jac_train_trace") == "scale"
    assert h.metric_label("jac_test_lambda_max") == "scale"
    assert h.metric_label("jac_train_rand_lambda_max") == "scale"
    assert h.metric_label("train_jacobian_norm") == "scale"
    assert h.metric_label("jac_train_alpha") == "shape"
    assert h.metric_label("jac_test_stable_rank") == "shape"
    assert h.metric_label("ww_alpha") == "–"
    assert h.metric_label("train_margin_p10") == "–"
    assert h.reads_test_inputs("jac_test_alpha") and h.reads_test_inputs("test_jacobian_norm")
    assert not h.reads_test_inputs("jac_train_alpha")


def test_duplicate_groups_merges_exact_monotone_copies_only():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 2, 12)
    df = pd.DataFrame({"a": x, "jac_train_log_norm": np.log10(x), "jac_train_trace": x,
                       "neg": -x ** 3, "near": x + 0.3 * rng.normal(size=12),
                       "c": rng.normal(size=12)})
    # same values but a NaN on one row only: not the same finite rows, so not merged
    df["holed"] = x
    df.loc[3, "holed"] = np.nan
    g = h.duplicate_groups(df, list(df.columns))
    # KEEP_FIRST puts jac_train_trace first in its group, whatever the column order
    assert g["jac_train_trace"] == ["a", "jac_train_log_norm", "neg"]
    assert g["near"] == [] and g["c"] == [] and g["holed"] == []
    assert set(g) == {"jac_train_trace", "near", "c", "holed"}
    with pytest.raises(ValueError, match="not in the frame"):
        h.duplicate_groups(df, ["a", "missing"])


def _pairs_frame() -> pd.DataFrame:
    rows = []
    for act in ("relu", "tanh"):
        for seed in (1, 2, 3):
            for rl in (False, True):
                rows.append({"activation": act, "seed": seed, "random_labels": rl})
    df = pd.DataFrame(rows)
    return df


def test_matched_pairs_pairs_each_network_once():
    df = _pairs_frame()
    df = df.drop(index=[11]).reset_index(drop=True)  # one random-label network missing
    pos, neg = h.matched_pairs(df, ["activation", "seed", "random_labels"])
    assert len(pos) == 5 and len(set(pos)) == 5 and len(set(neg)) == 5
    for p, n in zip(pos, neg, strict=True):
        assert df.loc[p, "random_labels"] and not df.loc[n, "random_labels"]
        assert df.loc[p, "activation"] == df.loc[n, "activation"]
        assert df.loc[p, "seed"] == df.loc[n, "seed"]


def test_tie_group_and_its_exact_bound():
    df = _pairs_frame()
    rl = df["random_labels"].to_numpy()
    rng = np.random.default_rng(1)
    df["sep_up"] = np.where(rl, 10.0, 0.0) + rng.uniform(0, 1, len(df))
    df["sep_down"] = -df["sep_up"]
    df["partial"] = df["sep_up"]
    i = np.flatnonzero(rl)[0]
    df.loc[i, "partial"] = -5.0  # one random-label network below every true-label one
    pos, neg = h.matched_pairs(df, ["activation", "seed", "random_labels"])
    tab = h.separation_table(df, ["sep_up", "sep_down", "partial"], pos, neg, reps=0)
    tied, rest = h.tie_groups(tab)
    assert tied == ["sep_up", "sep_down"] and list(rest.index) == ["partial"]
    n = 6
    assert tab.loc["sep_up", "auc"] == 1.0 and tab.loc["sep_down", "auc"] == 0.0
    assert tab.loc["sep_down", "direction"] == "<" and tab.loc["sep_down", "k"] == n
    # Clopper-Pearson at k = n: 0.05^(1/n), by hand
    assert tab.loc["sep_up", "bound"] == pytest.approx(0.05 ** (1 / n), rel=1e-12)
    # 'partial': AUC by hand = (5 * 6 + 0) / 36 over the 6 x 6 pairs; 5 of 6 matched pairs
    assert tab.loc["partial", "auc"] == pytest.approx(30 / 36)
    assert tab.loc["partial", "k"] == 5 and tab.loc["partial", "n"] == n
    from scipy.stats import beta

    assert tab.loc["partial", "bound"] == pytest.approx(beta.ppf(0.05, 5, 2), rel=1e-9)


def test_either_direction_bound_by_hand():
    # 5 pairs: 2 * 0.5^5 = 0.0625 > 0.05, so no bound above chance
    assert h.either_direction_bound(5) == 0.5
    s = h.either_direction_bound(20)
    assert s ** 20 + (1 - s) ** 20 == pytest.approx(0.05, abs=1e-12)
    assert s == pytest.approx(0.05 ** (1 / 20), abs=1e-9)  # the other term is ~1e-17
    s6 = h.either_direction_bound(6)
    assert s6 ** 6 + (1 - s6) ** 6 == pytest.approx(0.05, abs=1e-12)
    assert 0.5 < s6 < 0.05 ** (1 / 6)  # the second direction lowers the bound
    with pytest.raises(ValueError, match="n must be"):
        h.either_direction_bound(0)


def test_ww_regime_and_mixed_pairs_by_hand():
    w = h.ww_regime([1.5, 2.0, 3.0, 6.0, 6.5, np.nan])
    assert w["n"] == 5 and w["inside"] == 3 and w["share"] == pytest.approx(0.6)
    assert w["median"] == 3.0 and w["max"] == 6.5
    # 3 random of 5: 3 * 2 mixed pairs of 10
    assert h.mixed_pair_share([1, 1, 1, 0, 0]) == pytest.approx(0.6)


def _zoo(n_seeds: int = 2) -> pd.DataFrame:
    """A tiny zoo: activation x depth x labels x seed; the gap is large on random labels,
    and on true labels follows the norm plus a 'shape' column that carries nothing."""
    rng = np.random.default_rng(3)
    rows = []
    for act in ("relu", "tanh", "elu"):
        for depth in (1, 2, 3):
            for rl in (False, True):
                for seed in range(n_seeds):
                    norm = depth + 0.3 * (act == "tanh") + 0.1 * rng.normal()
                    gap = (0.9 if rl else 0.0) + 0.05 * norm + 0.005 * rng.normal()
                    rows.append({"model": "mlp", "activation": act, "depth": depth,
                                 "random_labels": rl, "seed": seed, "gap": gap,
                                 "train_jacobian_norm": norm,
                                 "jac_train_trace": norm ** 2 + 0.2 * rng.normal(),
                                 "jac_train_alpha": rng.normal(),
                                 "train_loss": rng.uniform(0, 0.03),
                                 "converged": True})
    return pd.DataFrame(rows)


def test_headline_verdict_uses_true_label_networks_only():
    zoo = _zoo()
    zoo.loc[0, "converged"] = False  # a true-label network that missed 100%
    true = h.true_label_networks(zoo)
    assert len(true) == 17 and not true["random_labels"].any() and true["converged"].all()
    zoo.loc[0, "converged"] = True
    true = h.true_label_networks(zoo)
    keys = ["activation", "depth", "model", "random_labels", "seed"]
    metrics = ["train_jacobian_norm", "jac_train_trace", "jac_train_alpha", "train_loss"]
    groups = h.duplicate_groups(true, metrics)
    assert all(v == [] for v in groups.values())
    res = h.describe(true, [m for m in groups if m != "train_jacobian_norm"]
                     + ["train_jacobian_norm"], keys, b=20)
    lines, facts = h.verdict_section(true, res, groups, 20)
    f = facts["frame"]
    assert int(f["networks"].max()) == len(true) == 18
    # tau-a over the 18 true-label networks, by hand
    g, m = true["gap"].to_numpy(), true["jac_train_alpha"].to_numpy()
    iu = np.triu_indices(len(true), 1)
    tau = np.mean(np.sign(g[:, None] - g[None])[iu] * np.sign(m[:, None] - m[None])[iu])
    assert f.loc["jac_train_alpha", "tau"] == pytest.approx(tau, abs=1e-12)
    assert "other_seeds_gap" in f.index
    assert any("noise ceiling" in line for line in lines)
    assert any(line.startswith("| noise ceiling") for line in lines)
    # the table shows the shape label
    assert any(line.startswith("| `jac_train_alpha` | shape |") for line in lines)


def test_duplicate_of_the_norm_is_found():
    zoo = _zoo()
    true = zoo[~zoo["random_labels"]].reset_index(drop=True)
    true["jac_train_trace"] = true["train_jacobian_norm"] ** 2
    g = h.duplicate_groups(true, ["train_jacobian_norm", "jac_train_trace"])
    # norm > 0 everywhere, so norm^2 is strictly monotone in it: one group, trace kept
    assert (true["train_jacobian_norm"] > 0).all()
    assert g == {"jac_train_trace": ["train_jacobian_norm"]}


def test_label_free_needs_one_direction_everywhere():
    sep = pd.DataFrame([
        {"data": d, "metric": m, "direction": dirn, "separates": True}
        for d in ("digits", "mnist1d")
        for m, dirn in (("alpha", "random > true"), ("log_norm", "random > true"),
                        ("entropy", "random > true"))
    ] + [{"data": "digits", "metric": "rank", "direction": "random > true",
          "separates": True}])
    directions = {"alpha": {"a": 0.96, "b": 0.24}, "log_norm": {"a": 1.0, "b": 0.9}}
    lf = rvr.label_free(sep, directions, 2)
    assert lf["log_norm"]["usable"] and not lf["alpha"]["usable"]
    assert lf["alpha"]["study_a"] == {"a": "random > true", "b": "random < true"}
    assert lf["entropy"]["study_a"] is None and not lf["entropy"]["usable"]
    assert lf["rank"]["here"] is None  # separates one data set only
    text = rvr.label_free_lines(sep, directions, 2)[0]
    assert "Only log_norm" in text and "alpha (random > true here" in text
    assert "not checkable in study A" in text and "entropy" in text
    none = rvr.label_free_lines(sep, {"alpha": {"a": 0.9, "b": 0.1}}, 2)[0]
    assert "None does." in none


def test_read_runs_parses_the_page_table(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# t\n\n## Every run\n\n| data | labels | seed | alpha |\n|:--|:--|--:|--:|\n"
                    "| digits | true | 0 | 1.5 |\n| digits | random | 0 | 2.5 |\n\n## Figures\n")
    df = rvr.read_runs(page)
    assert list(df.columns) == ["data", "labels", "seed", "alpha"]
    assert df["alpha"].tolist() == [1.5, 2.5] and df["data"].tolist() == ["digits"] * 2
    assert not math.isnan(df["seed"].sum())
