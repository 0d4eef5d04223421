"""Moved to :mod:`jacspec.zoo.rank.grid` (groups and pairs of a grid of configurations); this
path re-exports its public names so that code and sweep files written against
``jacspec.zoo.grid`` keep working."""

from jacspec.zoo.rank.grid import (
    REPLICATE_KEYS,
    distinct_factors,
    group_codes,
    is_complete_grid,
    is_unique_grid,
    select_runs,
    single_factor_pairs,
    varying_columns,
)

__all__ = [
    "REPLICATE_KEYS", "distinct_factors", "group_codes", "is_complete_grid", "is_unique_grid",
    "select_runs", "single_factor_pairs", "varying_columns",
]
