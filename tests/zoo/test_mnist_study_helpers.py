"""The mnist study's helpers that decide what the report ranks: the AUC, its interval and
the tiers that never rank two metrics whose intervals overlap."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

HELPERS = Path(__file__).resolve().parents[2] / "experiments" / "mnist_study_common.py"


def _load():
    spec = importlib.util.spec_from_file_location("mnist_study_common", HELPERS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mnist_study_common"] = module
    spec.loader.exec_module(module)
    return module


def test_auc_is_the_pairwise_probability() -> None:
    h = _load()
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 4, 9).astype(float), rng.integers(0, 4, 7).astype(float)
    ref = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (9 * 7)
    assert h.auc(pos, neg) == pytest.approx(ref, abs=1e-15)
    assert h.auc([2.0, 3.0], [0.0, 1.0]) == 1.0 and h.auc([0.0], [1.0]) == 0.0
    lo, hi = h.auc_interval(pos, neg, reps=200)
    assert 0.0 <= lo <= h.auc(pos, neg) <= hi <= 1.0


def test_tiers_never_rank_overlapping_intervals() -> None:
    h = _load()
    rng = np.random.default_rng(1)
    for _ in range(50):
        rows = []
        for k in range(8):
            v = float(rng.normal())
            w = float(rng.uniform(0.05, 0.8))
            rows.append((f"m{k}", v, v - w, v + w))
        tiers = h.overlap_tiers(rows)
        assert min(tiers.values()) == 1
        mags = {}
        for name, _, lo, hi in rows:
            mags[name] = (0.0, max(-lo, hi)) if lo <= 0 <= hi else \
                (min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
        for a, b in itertools.combinations(tiers, 2):
            if tiers[a] != tiers[b]:
                better, worse = (a, b) if tiers[a] < tiers[b] else (b, a)
                assert mags[better][0] > mags[worse][1]  # wholly above: no overlap
    assert h.overlap_tiers([("a", 0.9, 0.8, 1.0), ("b", 0.5, 0.4, 0.6),
                            ("c", 0.45, 0.3, 0.85)]) == {"a": 1, "b": 1, "c": 1}
    assert h.overlap_tiers([("a", 0.9, 0.8, 1.0), ("b", 0.5, 0.4, 0.6),
                            ("c", -0.1, -0.2, 0.1)]) == {"a": 1, "b": 2, "c": 3}
