"""Null models for an ESD, re-exported from their homes: the Marchenko-Pastur law and fit
(:mod:`jacspec.heavytail.mp`) and the randomized null with the ESD distances
(:mod:`jacspec.heavytail.randomized`). Import from those modules in new code.
"""

from __future__ import annotations

from jacspec.heavytail.mp import MPFit, fit_mp, mp_density, mp_edges, mp_quantile
from jacspec.heavytail.randomized import (
    RandomizedNull,
    esd_distance,
    jensen_shannon_distance,
    matrix_esd,
    randomized_null,
    shuffle_entries,
)

__all__ = [
    "MPFit",
    "RandomizedNull",
    "esd_distance",
    "fit_mp",
    "jensen_shannon_distance",
    "matrix_esd",
    "mp_density",
    "mp_edges",
    "mp_quantile",
    "randomized_null",
    "shuffle_entries",
]
