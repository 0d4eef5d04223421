"""Moved to :mod:`jacspec.zoo.run.store` (the results store); this path re-exports its public
names so that code and sweep files written against ``jacspec.zoo.store`` keep working."""

from jacspec.zoo.run.store import (
    STATUSES,
    Store,
    canonical_json,
    config_hash,
    load_results,
)

__all__ = [
    "STATUSES", "Store", "canonical_json", "config_hash", "load_results",
]
