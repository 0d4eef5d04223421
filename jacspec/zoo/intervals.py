"""Moved to :mod:`jacspec.zoo.rank.intervals` (bootstrap intervals of the scores); this path
re-exports its public names so that code and sweep files written against
``jacspec.zoo.intervals`` keep working."""

from jacspec.zoo.rank.intervals import (
    SCORES,
    score_intervals,
)

__all__ = [
    "SCORES", "score_intervals",
]
