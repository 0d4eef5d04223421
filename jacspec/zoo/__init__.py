"""Model zoos: train many networks (local processes or Ray), keep results in a crash-safe
SQLite store, and judge generalization metrics with rank statistics.

Submodules: :mod:`jacspec.zoo.train` (one run from a configuration), :mod:`jacspec.zoo.metrics`
(the metric registry), :mod:`jacspec.zoo.sweep` (grids and backends), :mod:`jacspec.zoo.store`
(results), :mod:`jacspec.zoo.score` (Kendall tau, Psi, sign error), :mod:`jacspec.zoo.pgdl`
(PGDL's CMI), :mod:`jacspec.zoo.grid` (groups and pairs of a grid of configurations),
:mod:`jacspec.zoo.confirm` (study 2's pre-registered test: partial Kendall tau, cluster
bootstrap, max-T, Psi within strata, verdict).
"""

from jacspec.zoo.pgdl import conditional_mutual_information
from jacspec.zoo.score import (
    ScoreTable,
    granulated_kendall,
    kendall_tau,
    kendall_tau_a,
    paired_comparison,
    robust_sign_error,
    score_metrics,
    score_store,
    worst_factor_sign_error,
)
from jacspec.zoo.store import Store, config_hash, load_results
from jacspec.zoo.sweep import Sweep, SweepSummary, expand, load_sweep, run_sweep

__all__ = [
    "ScoreTable", "Store", "Sweep", "SweepSummary", "conditional_mutual_information",
    "config_hash", "expand", "granulated_kendall", "kendall_tau", "load_results", "load_sweep",
    "paired_comparison", "robust_sign_error", "run_sweep", "score_metrics", "score_store",
    "kendall_tau_a", "worst_factor_sign_error",
]
