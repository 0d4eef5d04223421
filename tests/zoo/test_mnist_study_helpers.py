"""The mnist study's helpers that decide what the report ranks: the AUC, its interval and
the rank ranges that never rank two metrics whose intervals overlap."""

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


def _magnitude(lo: float, hi: float) -> tuple[float, float]:
    return (0.0, max(-lo, hi)) if lo <= 0 <= hi else (min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))


def test_rank_ranges_are_the_places_over_every_consistent_ordering() -> None:
    """Reference: enumerate every ordering of the metrics in which no metric stands above one
    whose |value| interval lies wholly above its own; a metric's range is the first and last
    place it takes among them."""
    h = _load()
    rng = np.random.default_rng(1)
    for _ in range(30):
        rows = []
        for k in range(6):
            v = float(rng.normal())
            w = float(rng.uniform(0.05, 0.8))
            rows.append((f"m{k}", v, v - w, v + w))
        mags = {name: _magnitude(lo, hi) for name, _, lo, hi in rows}
        places: dict[str, set[int]] = {name: set() for name in mags}
        for order in itertools.permutations(mags):
            if all(not mags[b][0] > mags[a][1]
                   for i, a in enumerate(order) for b in order[i + 1:]):
                for place, name in enumerate(order, start=1):
                    places[name].add(place)
        ranks = h.rank_ranges(rows)
        assert ranks == {name: (min(p), max(p)) for name, p in places.items()}
        for a, b in itertools.combinations(mags, 2):  # overlapping intervals: ranges overlap
            if not (mags[a][0] > mags[b][1] or mags[b][0] > mags[a][1]):
                assert ranks[a][0] <= ranks[b][1] and ranks[b][0] <= ranks[a][1]
    assert h.rank_ranges([("a", 0.9, 0.8, 1.0), ("b", 0.5, 0.4, 0.6),
                          ("c", 0.45, 0.3, 0.85)]) == {"a": (1, 2), "b": (2, 3), "c": (1, 3)}
    assert h.rank_ranges([("a", 0.9, 0.8, 1.0), ("b", -0.5, -0.6, -0.4),
                          ("c", -0.1, -0.2, 0.1), ("d", 1.0, float("nan"), 1.0)]) == {
        "a": (1, 1), "b": (2, 2), "c": (3, 3)}
    assert h.rank_cell(2, 2) == "2" and h.rank_cell(1, 12) == "1-12" and h.rank_cell(0, 0) == "–"
