"""A sketched row of :func:`jacspec.analyze`: its options, its columns and what it says.

The input->output row may be computed from ``r`` shared random output projections
(:mod:`jacspec.jacobian.sketch`): :func:`sketch_options` resolves the sketch for the model's
``k`` outputs, :func:`sketch_columns` gives the row's ``sketch_r`` and jackknife error bars,
:func:`sketched_reason` the row's ``reason`` in ``settings["rows"]``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from jacspec.analysis.columns import SKETCH_COLUMNS
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.source import JacobianSource

logger = logging.getLogger(__name__)

__all__ = ["sketch_columns", "sketch_options", "sketched_reason"]


def sketch_options(opts: JacobianOptions, k: int, seed: Any) -> JacobianOptions:
    """The input->output row's options with its sketch resolved for ``k`` outputs: ``r`` (or
    None: exact) and, when it sketches and ``options.sketch_seed`` is None, ``seed`` as the
    projections' seed (exact rows keep the options as given)."""
    from jacspec.jacobian.sketch import resolve_sketch

    r = resolve_sketch(opts.sketch, k, rows_sum_to_zero=opts.output == "softmax")
    if r is None:
        return opts.replace(sketch=None)
    if opts.sketch_seed is None and isinstance(seed, (int, np.integer)) and not isinstance(
            seed, bool) and seed >= 0:
        return opts.replace(sketch=r, sketch_seed=int(seed))
    return opts.replace(sketch=r)


def sketch_columns(
    name: str, source: JacobianSource, row: dict[str, Any], info: dict[str, Any], scale: str,
    randomize: bool,
) -> dict[str, Any]:
    """A sketched row's ``k`` (the model's outputs), ``sketch_r`` and jackknife error bars
    (:func:`jacspec.jacobian.sketch.sketch_error_bars`; their settings go to
    ``info["error_bars"]``), logged in one line with how to get the exact row."""
    from jacspec.jacobian.sketch import sketch_error_bars

    r = int(info["r"])
    cols: dict[str, Any] = {"k": int(info["k_full"]), "sketch_r": r}
    if r >= 2:
        bars = sketch_error_bars(source, scale=scale)
        cols.update({c: bars[c] for c in SKETCH_COLUMNS[1:]})
        info["error_bars"] = {k: bars[k] for k in ("groups", "level", "fpc",
                                                   "lambda_max_jackknife", "trace_jackknife")}
        spread = (f"lambda_max {row['lambda_max']:.4g} (se {bars['lambda_max_se']:.2g}), "
                  f"trace {row['trace']:.4g} (se {bars['trace_se']:.2g})")
    else:
        cols.update({c: math.nan for c in SKETCH_COLUMNS[1:]})
        spread = "no error bars (they need r >= 2)"
    null = "; randomized null skipped (sketched rows are not the entries of 𝒥)" if (
        randomize) else ""
    logger.warning(
        "analyze: %s sketched from r=%d of k=%d outputs (%s projections, seed %d): %s%s; "
        "pass sketch=0 for the exact row", name, r, info["k_full"], info["kind"],
        info["seed"], spread, null,
    )
    return cols


def sketched_reason(info: dict[str, Any]) -> str:
    """A sketched row's ``reason``: ``r``, the projections' kind, ``k`` and seed, and how to
    get the exact row."""
    return (f"sketched: r={info['r']} {info['kind']} projections of k={info['k_full']} outputs "
            f"(seed {info['seed']}); sketch=0 for the exact row")
