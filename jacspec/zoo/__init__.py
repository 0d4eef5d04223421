"""Model zoos: train many networks (local processes or Ray), keep results in a crash-safe
SQLite store, and judge generalization metrics with rank statistics.

Two rooms, data flowing one way: :mod:`jacspec.zoo.run` runs a zoo (train, metrics, sweep,
store) and :mod:`jacspec.zoo.rank` ranks its metrics (grid, statistics, PGDL's CMI,
intervals, the score table, study 2's confirmatory test), reading only the store.
Modules are reached by their room's path (``jacspec.zoo.run.train``,
``jacspec.zoo.rank.score``, ...); a sweep file naming the old job path
``jacspec.zoo.train:run_job`` still resolves (:data:`jacspec.zoo.run.sweep.MOVED_JOB_MODULES`).
"""

from jacspec.zoo.rank.pgdl import conditional_mutual_information
from jacspec.zoo.rank.score import ScoreTable, score_metrics, score_store
from jacspec.zoo.rank.stats import (
    granulated_kendall,
    kendall_tau,
    kendall_tau_a,
    paired_comparison,
    robust_sign_error,
    worst_factor_sign_error,
)
from jacspec.zoo.run.store import Store, config_hash, load_results
from jacspec.zoo.run.sweep import Sweep, SweepSummary, expand, load_sweep, run_sweep

__all__ = [
    "ScoreTable", "Store", "Sweep", "SweepSummary", "conditional_mutual_information",
    "config_hash", "expand", "granulated_kendall", "kendall_tau", "load_results", "load_sweep",
    "paired_comparison", "robust_sign_error", "run_sweep", "score_metrics", "score_store",
    "kendall_tau_a", "worst_factor_sign_error",
]
