"""Moved to :mod:`jacspec.zoo.rank.score` (the score table and its rank statistics); this path
re-exports its public names so that code and sweep files written against
``jacspec.zoo.score`` keep working."""

from jacspec.zoo.rank.score import (
    NON_PREDICTORS,
    REPLICATE_KEYS,
    ScoreTable,
    conditional_mutual_information,
    default_paired,
    environment_errors,
    gap_noise,
    granulated_kendall,
    group_taus,
    is_complete_grid,
    is_unique_grid,
    kendall_tau,
    kendall_tau_a,
    metric_columns,
    paired_comparison,
    robust_sign_error,
    score_metrics,
    score_store,
    select_runs,
    single_factor_pairs,
    summarize_best,
    varying_columns,
    worst_factor_sign_error,
)

__all__ = [
    "NON_PREDICTORS", "REPLICATE_KEYS", "ScoreTable", "conditional_mutual_information",
    "default_paired", "environment_errors", "gap_noise", "granulated_kendall", "group_taus",
    "is_complete_grid", "is_unique_grid", "kendall_tau", "kendall_tau_a", "metric_columns",
    "paired_comparison", "robust_sign_error", "score_metrics", "score_store", "select_runs",
    "single_factor_pairs", "summarize_best", "varying_columns", "worst_factor_sign_error",
]
