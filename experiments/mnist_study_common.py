"""Shared pieces of the mnist study's stages (experiments/mnist_study.py): running a store
of networks within a time budget, bootstrap intervals, table formatting."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Training settings every stage shares: mnist5k (all 4,000 training digits, the 1,000 test
#: digits), trained to 100% train accuracy within a 100,000-step budget.
TRAIN = {"dataset": "mnist5k", "n_train": 4000, "n_test": 1000, "data_seed": 0,
         "target_accuracy": 1.0, "target_loss": 0.0, "max_steps": 100000, "n_jacobian": 500,
         "n_esd": 200, "checkpoints": 0, "save_checkpoint": False}

#: What --smoke changes in TRAIN (a target of 1% makes every network count as converged, so
#: the smoke run goes through every table).
SMOKE_TRAIN = {"n_train": 200, "n_test": 200, "max_steps": 30, "n_jacobian": 50, "n_esd": 40,
               "target_accuracy": 0.01}


#: Metrics withdrawn from every table of the page: the Marchenko-Pastur fit of the real ESD
#: took the eigenvalues below the rank tolerance as a bulk (a fit of round-off; num_spikes
#: exceeded rank in 254 of the 784 ESDs of the two stores), and the stores hold no
#: eigenvalues to refit them (``jacspec.heavytail.mp.fit_mp`` now takes them as zeros).
WITHDRAWN = tuple(f"jac_{split}_{col}" for split in ("train", "test")
                  for col in ("num_spikes", "lambda_plus", "mp_softrank", "mp_sigma2"))

#: The note the page opens with, saying what was withdrawn and why.
CORRECTION = (
    "**Correction (issue 22): the Marchenko-Pastur columns are withdrawn.** `num_spikes`, "
    "`lambda_plus`, `mp_softrank` and `mp_sigma2` (train and test points) were fits that "
    "took the eigenvalues below the rank tolerance (round-off of true zeros) as a bulk: "
    "`num_spikes` exceeded `rank` for {over} of {esds} ESDs ({nets} networks in the two "
    "stores), and {deficient} of the {esds} ESDs were rank-deficient, so their fits ran "
    "partly on round-off. jacspec now takes those eigenvalues as zeros for every fit; the "
    "stores keep no eigenvalues to refit them and retraining the {nets} networks is out of "
    "budget, so these metrics are dropped from every table and ranking below (the page is "
    "otherwise re-rendered from the same stores: every other metric's score and interval "
    "is unchanged; rank ranges count {n_withdrawn} fewer metrics, and lists that named the "
    "withdrawn ones no longer do). `num_traps` (the randomized null's MP fit of a 200 x "
    "7,056 entry-shuffled matrix, which is full rank unless rows vanish; the stores cannot "
    "show it) and the other columns (power law on the eigenvalues above the tolerance, "
    "spectral metrics) did not depend on the round-off."
)


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a Markdown table ('–' for None/NaN)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"


def ci(lo: Any, hi: Any, digits: int = 3) -> str:
    return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


def magnitude_interval(lo: float, hi: float) -> tuple[float, float]:
    """The interval of ``|x|`` for ``x`` in ``[lo, hi]``."""
    if lo <= 0 <= hi:
        return 0.0, max(-lo, hi)
    return min(abs(lo), abs(hi)), max(abs(lo), abs(hi))


def rank_ranges(rows: Sequence[tuple[str, float, float, float]]) -> dict[str, tuple[int, int]]:
    """The ranks by magnitude each metric's interval allows: ``rows`` are
    ``(name, value, lo, hi)``; with ``A > B`` when A's interval of ``|x|`` lies wholly above
    B's, a metric's range is ``(1 + #{A > it}, n - #{it > B})``, the first and last place it
    takes over the orderings consistent with ``>``. Metrics whose intervals overlap always get
    overlapping ranges, so none is ranked above a metric it is not told apart from. Returns
    ``{name: (first, last)}`` (metrics with a non-finite value or bound are left out)."""
    ok = [r for r in rows if all(math.isfinite(x) for x in r[1:])]
    bounds = {name: magnitude_interval(lo, hi) for name, _, lo, hi in ok}
    n = len(bounds)
    out: dict[str, tuple[int, int]] = {}
    for name, (lo, hi) in bounds.items():
        above = sum(b[0] > hi for b in bounds.values())
        below = sum(b[1] < lo for b in bounds.values())
        out[name] = (1 + above, n - below)
    return out


def rank_cell(first: int, last: int) -> str:
    """A rank range for a table: ``'3'`` or ``'1-12'`` (``'–'`` for ``0``: no rank)."""
    if not first:
        return "–"
    return str(first) if first == last else f"{first}-{last}"


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """``P(X_pos > X_neg) + P(X_pos = X_neg) / 2`` over all pairs (the Mann-Whitney AUC)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    d = pos[:, None] - neg[None, :]
    return float(np.mean(d > 0) + 0.5 * np.mean(d == 0))


def auc_interval(pos: np.ndarray, neg: np.ndarray, *, reps: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auc`: each group resampled with replacement."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if pos.size == 0 or neg.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [auc(pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size,
                                                                            neg.size)])
             for _ in range(reps)]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def run_zoo(configs: Sequence[dict[str, Any]], store: str | Path, *, workers: int = 2,
            max_minutes: float | None = None, max_runs: int | None = None,
            log: Any = sys.stderr) -> dict[str, Any]:
    """Run the zoo's unfinished networks in order on ``workers`` processes (one torch thread
    each) until all are done, ``max_runs`` were started or the time left is under the 90th
    percentile of the finished runs' durations (so the call ends within about
    ``max_minutes``; a worker that frees up starts the next network at once). Resumes:
    finished runs in ``store`` are skipped; runs an interrupted call left ``running`` are
    redone."""
    from jacspec.zoo.run.store import Store, config_hash
    from jacspec.zoo.run.sweep import run_sweep, validate_configs
    from jacspec.zoo.run.train import load_data, run_job

    validate_configs(run_job, configs)
    t0 = time.perf_counter()
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    with Store(store) as db:
        db.add(configs)
        status = db.statuses()
    todo = [c for c in configs if status.get(config_hash(c)) in ("pending", "running")]
    for key in {(c["dataset"], c["random_labels"]) for c in todo}:  # forked workers share it
        load_data(next(c for c in todo if (c["dataset"], c["random_labels"]) == key))
    capped = max_runs is not None and max_runs < len(todo)
    if capped:
        todo = todo[:max_runs]
    budget = math.inf if max_minutes is None else 60.0 * max_minutes
    state = {"stopped": False, "launched": 0}

    def keep_going() -> bool:
        with Store(store, readonly=True) as db:
            runs = db.runs(status="done")
        durations = [float(d) for d in runs.get("duration", []) if d == d]
        typical = float(np.percentile(durations, 90)) if durations else 0.0
        elapsed = time.perf_counter() - t0
        if elapsed + typical > budget:
            state["stopped"] = True
            return False
        if state["launched"] and state["launched"] % 10 == 0:
            print(f"zoo: {state['launched']}/{len(todo)} launched this call, {len(runs)} "
                  f"done in the store, {elapsed:.0f} s", file=log, flush=True)
        state["launched"] += 1
        return True

    summary = run_sweep(todo, store, workers=min(workers, max(len(todo), 1)), threads=1,
                        group=1, progress=False, keep_going=keep_going)
    stopped = (f"time budget ({max_minutes:g} min)" if state["stopped"]
               else f"max_runs={max_runs}" if capped else "finished")
    with Store(store, readonly=True) as db:
        counts = db.counts()
    return {"ran": summary.ran, "done": summary.done, "failed": summary.failed,
            "stopped": stopped, "seconds": time.perf_counter() - t0, "counts": counts}
