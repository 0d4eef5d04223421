"""Moved to :mod:`jacspec.zoo.rank.confirm` (study 2's pre-registered test); this path
re-exports its public names so that code written against ``jacspec.zoo.confirm`` keeps
working."""

from jacspec.zoo.rank.confirm import (
    NOISE_CEILING,
    ConfirmResult,
    MaxT,
    Verdict,
    clopper_pearson_bound,
    cluster_bootstrap_indices,
    confirm_store,
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
    within_group_pairs,
    z_strata,
)

__all__ = [
    "ConfirmResult", "MaxT", "NOISE_CEILING", "Verdict", "clopper_pearson_bound",
    "cluster_bootstrap_indices", "confirm_store", "confirmatory_test", "converged_cmi", "icc1",
    "inclusion", "kendall_tau_b_within", "max_t", "other_seeds_gap", "partial_kendall",
    "psi_within_strata", "sign_error_summary", "verdict", "within_group_pairs", "z_strata",
]
