"""Moved to :mod:`jacspec.zoo.rank.pgdl` (PGDL's CMI); this path re-exports its public names so
that code and sweep files written against ``jacspec.zoo.pgdl`` keep working."""

from jacspec.zoo.rank.pgdl import (
    conditional_mutual_information,
    pgdl_cmi_codes,
    replicate_cmi,
)

__all__ = [
    "conditional_mutual_information", "pgdl_cmi_codes", "replicate_cmi",
]
