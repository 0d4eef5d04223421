"""Moved to :mod:`jacspec.zoo.run.sweep` (grids and backends); this path re-exports its public
names so that code and sweep files written against ``jacspec.zoo.sweep`` keep working."""

from jacspec.zoo.run.sweep import (
    BACKENDS,
    DEFAULT_JOB,
    SWEEP_KEYS,
    Sweep,
    SweepSummary,
    expand,
    load_sweep,
    resolve_job,
    run_chunk,
    run_sweep,
    validate_configs,
)

__all__ = [
    "BACKENDS", "DEFAULT_JOB", "SWEEP_KEYS", "Sweep", "SweepSummary", "expand", "load_sweep",
    "resolve_job", "run_chunk", "run_sweep", "validate_configs",
]
