"""Regressions of scoring a real study-2 store: configuration keys that are null in every run
(``max_steps = null``) must not drop networks out of their groups, and the per-factor Psi of
the confirmatory test carries its bootstrap interval (study 2, §6)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jacspec.zoo.rank.confirm import confirm_store, confirmatory_test, other_seeds_gap
from jacspec.zoo.rank.grid import group_codes, varying_columns
from jacspec.zoo.run.store import Store

FACTORS = ["f0", "f1", "f2"]
METRICS = ["gap", "train_jacobian_norm", "good", "null0", "comp0"]


def _zoo(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for fam in ("mlp", "cnn"):
        for lv in itertools.product([0, 1], repeat=len(FACTORS)):
            c = rng.normal(size=2)
            for s in range(3):
                rows.append({"model": fam, **dict(zip(FACTORS, lv, strict=True)),
                             "seed": 200 + s, "_c0": c[0], "_c1": c[1]})
    d = pd.DataFrame(rows)
    n = len(d)
    scale, info = d["_c0"] + 0.3 * rng.normal(size=n), d["_c1"] + 0.3 * rng.normal(size=n)
    d["train_jacobian_norm"] = np.exp(scale)
    d["gap"] = np.round(0.05 + 0.02 * scale + 0.02 * info + 0.003 * rng.normal(size=n), 4)
    d["good"] = info + 0.2 * rng.normal(size=n)
    d["null0"] = rng.normal(size=n)
    d["comp0"] = scale + 0.5 * rng.normal(size=n)
    return d.drop(columns=["_c0", "_c1"])


def _store(path: Path, d: pd.DataFrame, extra: dict) -> Path:
    with Store(path) as st:
        configs = [{**{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()
                       if k in [*FACTORS, "model", "seed"]}, "dataset": "digits", **extra}
                   for r in d.to_dict("records")]
        hashes = st.add(configs)
        st.mark_running(hashes)
        for h, r in zip(hashes, d.to_dict("records"), strict=True):
            st.finish(h, {"metrics": {**{m: float(r[m]) for m in METRICS}, "converged": True}})
    return path


def test_group_codes_keep_none_as_a_value() -> None:
    d = pd.DataFrame({"a": [None, 1, None, 1, 2], "b": [None] * 5})
    codes = group_codes(d, ["a", "b"])
    assert codes.dtype.kind == "i"
    assert codes[0] == codes[2] and codes[1] == codes[3]
    assert len({codes[0], codes[1], codes[4]}) == 3
    assert varying_columns(d, ["a", "b"]) == ["a"]


def test_other_seeds_gap_with_a_null_key_is_the_mean_of_the_other_seeds() -> None:
    d = _zoo()
    d["max_steps"] = None
    got = other_seeds_gap(d, [*FACTORS, "model", "seed", "max_steps"])
    for i in range(len(d)):
        same = np.all([d[k].to_numpy() == d[k].iloc[i] for k in [*FACTORS, "model"]], axis=0)
        same[i] = False
        assert got.iloc[i] == pytest.approx(d["gap"].to_numpy()[same].mean(), abs=1e-15)


def test_a_store_with_null_keys_scores_as_the_same_store_without_them(tmp_path: Path) -> None:
    d = _zoo()
    kw = {"B": 40, "cmi": True}
    plain = confirm_store(str(_store(tmp_path / "a.sqlite", d, {})), ["good", "null0"],
                          ["comp0"], **kw).to_frame()
    nulls = confirm_store(str(_store(tmp_path / "b.sqlite", d,
                                     {"max_steps": None, "target_accuracy": None})),
                          ["good", "null0"], ["comp0"], **kw).to_frame()
    assert plain.loc["other_seeds_gap", "networks"] == len(d)
    pd.testing.assert_frame_equal(plain, nulls)


def test_per_factor_psi_has_an_interval_around_it() -> None:
    d = _zoo(seed=5)
    d["agree"] = d["gap"] + 1e-3 * d["f0"]
    res = confirmatory_test(d, ["good", "agree"], ["comp0"], config_keys=[*FACTORS, "model"],
                            B=60, cmi=False)
    pf = res.per_factor_frame()
    assert {"psi_lo", "psi_hi", "psi_z_lo", "psi_z_hi"} <= set(pf.columns)
    fin = pf[np.isfinite(pf["psi_lo"])]
    assert len(fin) > 0
    assert (fin["psi_lo"] <= fin["psi"] + 1e-12).all()
    assert (fin["psi"] <= fin["psi_hi"] + 1e-12).all()
    # psi_f of factor f0 by a hand loop over its seed-matched pairs
    for fam in ("mlp", "cnn"):
        row = pf[(pf["metric"] == "agree") & (pf["family"] == fam) & (pf["factor"] == "f0")]
        sub = d[d["model"] == fam]
        a = sub[sub["f0"] == 0].sort_values([*FACTORS[1:], "seed"])
        b = sub[sub["f0"] == 1].sort_values([*FACTORS[1:], "seed"])
        ga, gb = a["gap"].to_numpy(), b["gap"].to_numpy()
        agree = np.sign(a["agree"].to_numpy() - b["agree"].to_numpy()) * np.sign(ga - gb)
        assert row["psi"].item() == pytest.approx(agree.mean(), abs=1e-12)
