"""Scores named after references against those references, re-expressed here in plain Python
loops (nothing from jacspec is called to build a reference), on complete grids with ties in
both the metric and the gap:

- PGDL's conditional mutual information, transcribed from the competition's scoring program
  (every ordered pair of models, self-pairs included; per-cell MI and gap-sign entropy
  averaged uniformly over the cells; minimum over ordered pairs of conditioning factors).
- Jiang et al.'s (2020) Kendall tau (ties count 0) and granulated Psi (every factor counts).
- Dziugaite et al.'s (2020) robust sign error (supremum over environments, environments whose
  gap difference is within noise left out).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from jacspec.zoo.rank.pgdl import conditional_mutual_information
from jacspec.zoo.rank.score import (
    granulated_kendall,
    kendall_tau_a,
    robust_sign_error,
    score_metrics,
    worst_factor_sign_error,
)

LEVELS = {"a": [0, 1, 2], "b": ["x", "y"], "c": ["u", "v", "w", "z"]}  # 24 configurations
FACTORS = list(LEVELS)


def _grid(seed: int, reps: int = 1) -> pd.DataFrame:
    """A complete grid; gap and metric on a few integer levels, so both have many ties."""
    rng = np.random.default_rng(seed)
    rows = []
    for combo in itertools.product(*LEVELS.values()):
        for r in range(reps):
            row = dict(zip(LEVELS, combo, strict=True))
            if reps > 1:
                row["seed"] = r
            rows.append(row)
    df = pd.DataFrame(rows)
    df["gap"] = rng.integers(0, 4, size=len(df)).astype(float)
    df["mu"] = (df["gap"] + rng.integers(-2, 3, size=len(df))).astype(float)
    # constant within every group where only "a" varies: all of a's groups are tied
    codes = {v: i for i, v in enumerate(LEVELS["c"])}
    df["tied_a"] = [float(codes[c] % 2 + (b == "x")) for b, c in zip(df.b, df.c, strict=True)]
    df["const"] = 1.0
    df["same"] = df["gap"]
    return df


# --- PGDL: transcription of the scoring program's mutual_information.py ---------------------

def _pgdl_score(df: pd.DataFrame, metric: str) -> float:
    models = df.to_dict("records")
    hp_values = {h: sorted(set(df[h])) for h in FACTORS}
    best = math.inf
    for h1 in FACTORS:
        for h2 in FACTORS:
            if h1 == h2:
                continue
            cells = [(v1, w1, v2, w2) for v1 in hp_values[h1] for w1 in hp_values[h1]
                     for v2 in hp_values[h2] for w2 in hp_values[h2]]
            table = {cell: [[0, 0], [0, 0]] for cell in cells}
            for m1 in models:
                for m2 in models:  # every ordered pair, (m, m) included
                    k0 = 0 if m1["gap"] > m2["gap"] else 1
                    k1 = 0 if m1[metric] > m2[metric] else 1
                    table[(m1[h1], m2[h1], m1[h2], m2[h2])][k0][k1] += 1
            mi_sum = h_sum = 0.0
            for cell in cells:
                t = table[cell]
                total = t[0][0] + t[0][1] + t[1][0] + t[1][1]
                gap_marg = [t[0][0] + t[0][1], t[1][0] + t[1][1]]
                met_marg = [t[0][0] + t[1][0], t[0][1] + t[1][1]]
                h = 0.0
                for c in gap_marg:
                    p = c / total
                    h -= p * math.log2(p + 1e-12)
                mi = 0.0
                for i in range(2):
                    for j in range(2):
                        joint = t[i][j] / total
                        if joint == 0:
                            continue
                        mi += joint * math.log2(
                            joint / ((gap_marg[i] / total) * (met_marg[j] / total)))
                mi_sum += mi
                h_sum += h
            best = min(best, (mi_sum / len(cells)) / (h_sum / len(cells)))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["mu", "tied_a", "same", "const"])
def test_cmi_equals_pgdl_scoring_program(seed: int, metric: str) -> None:
    df = _grid(seed)
    cmi, per = conditional_mutual_information(df, metric, FACTORS)
    assert cmi == pytest.approx(_pgdl_score(df, metric), rel=1e-12, abs=1e-12)
    assert set(per) == {"a,b", "a,c", "b,c"}


def test_cmi_reference_values() -> None:
    df = _grid(0)
    assert conditional_mutual_information(df, "same", FACTORS)[0] == pytest.approx(1.0)
    assert conditional_mutual_information(df, "const", FACTORS)[0] == pytest.approx(0.0)


def test_cmi_needs_one_model_per_configuration() -> None:
    """PGDL's scorer refuses grids that are incomplete or hold a configuration twice."""
    assert math.isnan(conditional_mutual_information(_grid(0, reps=2), "mu", FACTORS)[0])
    assert math.isnan(conditional_mutual_information(_grid(0).iloc[1:], "mu", FACTORS)[0])
    assert math.isnan(conditional_mutual_information(_grid(0), "mu", ["a"])[0])


# --- Jiang et al. 2020: tau and granulated Psi --------------------------------------------

def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def _jiang_tau(pairs: list[tuple[float, float]]) -> float:
    n = len(pairs)
    total = 0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += _sign(pairs[i][0] - pairs[j][0]) * _sign(pairs[i][1] - pairs[j][1])
    return total / (n * (n - 1))


def _jiang_psi(df: pd.DataFrame, metric: str) -> tuple[float, dict[str, float]]:
    rows = df.to_dict("records")
    per = {}
    for f in FACTORS:
        others = [o for o in FACTORS if o != f]
        taus = []
        for values in itertools.product(*(LEVELS[o] for o in others)):
            grp = [(r[metric], r["gap"]) for r in rows
                   if all(r[o] == v for o, v in zip(others, values, strict=True))]
            taus.append(_jiang_tau(grp))
        per[f] = sum(taus) / len(taus)
    return sum(per.values()) / len(per), per


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["mu", "tied_a", "const"])
def test_tau_and_psi_equal_jiang_et_al(seed: int, metric: str) -> None:
    df = _grid(seed)
    rows = df.to_dict("records")
    tau_ref = _jiang_tau([(r[metric], r["gap"]) for r in rows])
    assert kendall_tau_a(df[metric], df["gap"]) == pytest.approx(tau_ref, abs=1e-12)
    psi_ref, per_ref = _jiang_psi(df, metric)
    psi, per = granulated_kendall(df, metric, FACTORS)
    assert psi == pytest.approx(psi_ref, abs=1e-12)
    for f in FACTORS:
        assert per[f] == pytest.approx(per_ref[f], abs=1e-12)
    if metric == "tied_a":
        assert per["a"] == 0.0  # every group of "a" is tied: it counts, with tau = 0


# --- Dziugaite et al. 2020: robust sign error -----------------------------------------------

def _robust_sign_error(df: pd.DataFrame, metric: str, noise: float
                       ) -> tuple[float, dict[str, float]]:
    rows = df.to_dict("records")
    configs = sorted({tuple(r[f] for f in FACTORS) for r in rows}, key=str)
    per = {}
    for k, f in enumerate(FACTORS):
        worst = -math.inf
        for ca, cb in itertools.combinations(configs, 2):
            if ca[k] == cb[k] or any(ca[i] != cb[i] for i in range(len(FACTORS)) if i != k):
                continue
            # the environment (ca, cb): its runs paired by seed
            errs, dgs = [], []
            for ra in rows:
                for rb in rows:
                    if (tuple(ra[x] for x in FACTORS) == ca and tuple(rb[x] for x in FACTORS)
                            == cb and ra.get("seed") == rb.get("seed")):
                        dg, dm = rb["gap"] - ra["gap"], rb[metric] - ra[metric]
                        errs.append((1 - _sign(dm) * _sign(dg)) / 2)
                        dgs.append(dg)
            if abs(sum(dgs) / len(dgs)) > noise:
                worst = max(worst, sum(errs) / len(errs))
        per[f] = worst
    return max(per.values()), per


def _seed_noise(df: pd.DataFrame) -> float:
    """Mean |gap difference| between seed replicates of one configuration."""
    rows = df.to_dict("records")
    diffs = []
    for i, j in itertools.combinations(range(len(rows)), 2):
        if all(rows[i][f] == rows[j][f] for f in FACTORS):
            diffs.append(abs(rows[i]["gap"] - rows[j]["gap"]))
    return sum(diffs) / len(diffs)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("metric", ["mu", "tied_a"])
def test_robust_sign_error_equals_dziugaite_et_al(seed: int, metric: str) -> None:
    df = _grid(seed, reps=3)
    noise = _seed_noise(df)
    assert noise > 0
    ref, per_ref = _robust_sign_error(df, metric, noise)
    val, per = robust_sign_error(df, metric, FACTORS)  # noise from the seed replicates
    assert val == pytest.approx(ref, abs=1e-12)
    for f in FACTORS:
        assert per[f] == pytest.approx(per_ref[f], abs=1e-12)
    # without replicates an environment is one pair; with noise 0 only tied gaps drop out
    single = _grid(seed)
    ref1, _ = _robust_sign_error(single, metric, 0.0)
    assert robust_sign_error(single, metric, FACTORS)[0] == pytest.approx(ref1, abs=1e-12)
    # a supremum, not a mean: at least the worst factor's mean pair error
    assert val >= worst_factor_sign_error(df, metric, FACTORS)[0] - 1e-12


def test_score_table_columns_follow_the_references() -> None:
    df = _grid(4)
    table = score_metrics(df, ["mu", "tied_a"], FACTORS)
    for m in ("mu", "tied_a"):
        s = table.scores[m]
        rows = df.to_dict("records")
        assert s["kendall_tau"] == pytest.approx(
            _jiang_tau([(r[m], r["gap"]) for r in rows]), abs=1e-12)
        assert s["psi"] == pytest.approx(_jiang_psi(df, m)[0], abs=1e-12)
        assert s["cmi"] == pytest.approx(_pgdl_score(df, m), rel=1e-12, abs=1e-12)
        assert s["robust_sign_error"] == pytest.approx(
            _robust_sign_error(df, m, 0.0)[0], abs=1e-12)
    frame = table.to_frame()
    assert {"kendall_tau", "kendall_tau_b", "psi", "cmi", "robust_sign_error",
            "worst_factor_sign_error"} <= set(frame.columns)


# --- Seed replicates: PGDL's score per seed, and the bootstrap intervals ----------------------

def test_cmi_with_seed_replicates_is_the_mean_of_each_seeds_pgdl_score() -> None:
    from jacspec.zoo.rank.pgdl import replicate_cmi

    df = _grid(5, reps=3)
    per_seed = [_pgdl_score(df[df["seed"] == s].reset_index(drop=True), "mu") for s in range(3)]
    cmi, per = replicate_cmi(df, "mu", FACTORS)
    assert cmi == pytest.approx(sum(per_seed) / 3, rel=1e-12, abs=1e-12)
    assert [per[str(s)] for s in range(3)] == pytest.approx(per_seed, rel=1e-12, abs=1e-12)
    table = score_metrics(df, ["mu"], FACTORS)
    assert table.scores["mu"]["cmi"] == pytest.approx(cmi, rel=1e-12)
    # a configuration missing from one seed: the seeds are not the same PGDL task
    assert math.isnan(replicate_cmi(df.iloc[1:], "mu", FACTORS)[0])


def test_bootstrap_intervals_follow_their_definitions() -> None:
    """The intervals re-expressed draw by draw (the same generator, consumed in the order the
    module documents: tau's draws, then Psi's, then CMI's)."""
    from jacspec.zoo.rank.intervals import score_intervals

    df = _grid(6, reps=2)
    reps, level = 40, 0.9
    got = score_intervals(df, "mu", FACTORS, reps=reps, seed=11, level=level)
    rng = np.random.default_rng(11)
    rows = df.to_dict("records")
    configs = sorted({tuple(str(r[f]) for f in FACTORS) for r in rows})
    members = [[i for i, r in enumerate(rows) if tuple(str(r[f]) for f in FACTORS) == c]
               for c in configs]

    def interval(draws: list[float]) -> tuple[float, float]:
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    taus = []  # cluster bootstrap: configurations with all their seeds
    for _ in range(reps):
        pick = rng.integers(0, len(members), len(members))
        taus.append(_jiang_tau([(rows[i]["mu"], rows[i]["gap"]) for c in pick
                                for i in members[c]]))
    assert got["kendall_tau"] == pytest.approx(interval(taus), abs=1e-12)

    groups = {}  # Psi: each factor's groups (other factors and the seed fixed)
    for f in FACTORS:
        others = [o for o in FACTORS if o != f]
        groups[f] = [_jiang_tau([(r["mu"], r["gap"]) for r in rows
                                 if all(r[o] == v for o, v in zip(others, values[:-1],
                                                                  strict=True))
                                 and r["seed"] == values[-1]])
                     for values in itertools.product(*(LEVELS[o] for o in others), [0, 1])]
    psis = []
    for _ in range(reps):
        per = []
        for f in FACTORS:
            t = groups[f]
            idx = rng.integers(0, len(t), len(t))
            per.append(sum(t[i] for i in idx) / len(t))
        psis.append(sum(per) / len(per))
    assert got["psi"] == pytest.approx(interval(psis), abs=1e-12)

    cmis = []  # one seed replicate per configuration: a PGDL task each draw
    for _ in range(reps):
        chosen = [m[rng.integers(0, len(m))] for m in members]
        cmis.append(_pgdl_score(df.iloc[chosen].reset_index(drop=True), "mu"))
    assert got["cmi"] == pytest.approx(interval(cmis), abs=1e-12)

    # the robust sign error: a supremum over resampled environments is at most the supremum
    point = robust_sign_error(df, "mu", FACTORS)[0]
    lo, hi = got["robust_sign_error"]
    assert 0.0 <= lo <= hi <= point + 1e-12


def test_intervals_reach_the_score_table() -> None:
    table = score_metrics(_grid(7, reps=2), ["mu", "same"], FACTORS, bootstrap=30, seed=1)
    s = table.scores["same"]
    assert s["kendall_tau_lo"] <= s["kendall_tau"] <= s["kendall_tau_hi"]
    assert s["cmi_lo"] == pytest.approx(1.0) and s["cmi_hi"] == pytest.approx(1.0)
    assert table.settings["bootstrap"] == 30
    assert {"psi_lo", "psi_hi", "robust_sign_error_lo"} <= set(table.to_frame().columns)
