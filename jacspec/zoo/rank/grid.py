"""Grids of trained networks: which configuration keys vary, integer codes of the groups
of models that share values, whether the configurations form a complete grid, and the pairs
of models that differ in one factor only. Shared by the rank statistics of
:mod:`jacspec.zoo.rank.score` and :mod:`jacspec.zoo.rank.pgdl`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["REPLICATE_KEYS", "as_text", "distinct_factors", "group_codes", "is_complete_grid",
           "is_unique_grid", "select_runs", "single_factor_pairs", "varying_columns"]

#: Configuration keys that replicate a model (same configuration, another draw).
REPLICATE_KEYS = ("seed",)


def as_text(values: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    """Configuration values as text, ``str(v)`` of each (``None`` -> ``"None"``): the one way
    rank statistics compare keys. pandas' string cast turns ``None`` into a missing value,
    which ``groupby``/``nunique`` then drop, so a key that is null in a store (``max_steps =
    null``) would silently remove every network from its groups."""
    return values.map(str)


def varying_columns(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Columns among ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df and as_text(df[c]).nunique() > 1]



def _determines(df: pd.DataFrame, a: str, b: str) -> bool:
    """Whether the value of column ``a`` fixes the value of column ``b`` (``b = f(a)``)."""
    return bool((as_text(df[[a, b]]).groupby(a)[b].nunique() <= 1).all())


def distinct_factors(df: pd.DataFrame, factors: Sequence[str]
                     ) -> tuple[list[str], dict[str, str]]:
    """The factors that vary on their own: a factor whose value is a function of another
    kept factor's value (a learning rate set per optimizer) never varies alone, so it is the
    same hyper-parameter and is dropped. Of two factors that fix each other the non-numeric
    one is kept (``optimizer`` over ``lr``), else the first. Returns the kept factors, in
    order, and ``{dropped: the factor that fixes it}``."""
    def numeric(c: str) -> bool:
        return pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])

    kept = [f for f in factors if f in df]
    aliases: dict[str, str] = {}
    for b in list(kept):
        if b not in kept:
            continue
        for a in kept:
            if a == b or not _determines(df, a, b):
                continue
            drop, keep = b, a
            if _determines(df, b, a) and (
                    (numeric(a), factors.index(a)) > (numeric(b), factors.index(b))):
                drop, keep = a, b
            kept.remove(drop)
            aliases[drop] = keep
            break
    return kept, aliases


def group_codes(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Integer code per row for the combination of values in ``cols`` (0 if no columns)."""
    if not cols:
        return np.zeros(len(df), dtype=np.int64)
    frame = as_text(df[list(cols)])
    return frame.groupby(list(cols), sort=True).ngroup().to_numpy()


def is_complete_grid(df: pd.DataFrame, factors: Sequence[str]) -> bool:
    """Whether every combination of the factors' observed values occurs at least once."""
    if not factors:
        return len(df) > 0
    sizes = [as_text(df[f]).nunique() for f in factors]
    return int(as_text(df[list(factors)]).drop_duplicates().shape[0]) == int(np.prod(sizes))


def is_unique_grid(df: pd.DataFrame, factors: Sequence[str]) -> bool:
    """Whether no combination of the factors' values occurs twice (one model per
    configuration, as PGDL's scoring program requires)."""
    if not factors:
        return len(df) <= 1
    return not bool(as_text(df[list(factors)]).duplicated().any())


def single_factor_pairs(df: pd.DataFrame, factor: str, factors: Sequence[str], *,
                        replicates: Sequence[str] = REPLICATE_KEYS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Row positions ``(a, b)``, ``a < b``, of all pairs equal in every factor and replicate
    key except ``factor``, where they differ."""
    others = [c for c in factors if c != factor] + varying_columns(df, replicates)
    key = group_codes(df, others)
    val = group_codes(df, [factor])
    same = key[:, None] == key[None, :]
    diff = val[:, None] != val[None, :]
    a, b = np.nonzero(np.triu(same & diff, k=1))
    return a, b


def select_runs(df: pd.DataFrame, *, where: Mapping[str, Any] | None = None,
                converged: bool = False, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of ``df`` whose columns equal ``where``'s values (numbers compared as
    numbers: ``1`` matches ``1.0``) and, with ``converged``, whose ``converged`` column is
    true. A ValueError names a ``where`` key that is not a configuration key (``keys``)."""
    out = df
    for key, value in dict(where or {}).items():
        if key not in df or (keys is not None and key not in keys):
            accepted = ", ".join(sorted(keys if keys is not None else df.columns))
            raise ValueError(f"where: {key!r} is not a configuration key of the runs; "
                             f"accepted: {accepted}")
        out = out[out[key].map(lambda v, want=value: _same_value(v, want))]
    if converged:
        if "converged" not in df:
            raise ValueError("converged=True needs the runs' 'converged' column (written by "
                             "jacspec zoo run); this store has none")
        out = out[out["converged"].map(lambda v: bool(v) if v == v else False)]
    return out


def _same_value(v: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(v, (bool, np.bool_)):
        return str(v).lower() == str(want).lower()
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        try:
            return float(v) == float(want)
        except (TypeError, ValueError):
            return False
    return str(v) == str(want)
