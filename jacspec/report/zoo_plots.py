"""Figures for model-zoo studies: each metric against the generalization gap, the paired
comparisons of Novak et al. (one factor changed, all else fixed), and metrics over training.
Functions return :class:`matplotlib.figure.Figure` objects; :func:`save_zoo_figures` writes
PNGs for a results store."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def metric_vs_gap(df: pd.DataFrame, metric: str, *, gap: str = "gap", hue: str | None = None,
                  tau: float | None = None) -> Figure:
    """Scatter of ``metric`` (x) against ``gap`` (y), coloured by the values of ``hue``."""
    from jacspec.zoo.rank.grid import as_text

    for col in (metric, gap) + ((hue,) if hue else ()):
        if col not in df:
            raise ValueError(f"column {col!r} is not in the results")
    fig = Figure(figsize=(4.2, 3.4), layout="constrained")
    ax = fig.add_subplot()
    groups = [(None, df)] if hue is None else list(df.groupby(as_text(df[hue])))
    for label, grp in groups:
        ax.scatter(grp[metric], grp[gap], s=14, alpha=0.75,
                   label=None if label is None else f"{hue}={label}")
    ax.set_xlabel(metric)
    ax.set_ylabel(f"{gap} (train - test accuracy)" if gap == "gap" else gap)
    if tau is not None and np.isfinite(tau):
        ax.set_title(f"Kendall tau = {tau:.3f}", fontsize=9)
    if hue is not None:
        ax.legend(fontsize=7)
    return fig


def paired_figure(df: pd.DataFrame, metric: str, factor: str, a: Any, b: Any,
                  factors: Sequence[str], *, gap: str = "gap") -> Figure:
    """For models equal except ``factor``: metric under ``a`` vs under ``b`` (left) and gap
    under ``a`` vs under ``b`` (right); points above the diagonal grew under ``b``."""
    from jacspec.zoo.rank.grid import as_text, single_factor_pairs

    d = df.reset_index(drop=True)
    pa, pb = single_factor_pairs(d, factor, factors)
    va, vb = as_text(d[factor]).to_numpy(), str(b)
    first_a = (va[pa] == str(a)) & (va[pb] == vb)
    first_b = (va[pa] == vb) & (va[pb] == str(a))
    ia = np.concatenate([pa[first_a], pb[first_b]])
    ib = np.concatenate([pb[first_a], pa[first_b]])
    fig = Figure(figsize=(7.0, 3.3), layout="constrained")
    for k, col in enumerate((metric, gap)):
        ax = fig.add_subplot(1, 2, k + 1)
        x, y = d[col].to_numpy(float)[ia], d[col].to_numpy(float)[ib]
        ax.scatter(x, y, s=14, alpha=0.8)
        finite = np.isfinite(np.concatenate([x, y]))
        if finite.any():
            lo = float(np.nanmin(np.concatenate([x, y])))
            hi = float(np.nanmax(np.concatenate([x, y])))
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel(f"{col}, {factor}={a}")
        ax.set_ylabel(f"{col}, {factor}={b}")
        up = float(np.mean(y > x)) if len(x) else float("nan")
        ax.set_title(f"{len(x)} pairs, {up:.0%} larger under {b}", fontsize=9)
    return fig


def curves_figure(curves: pd.DataFrame, metric: str, runs: pd.DataFrame | None = None, *,
                  hue: str | None = None, x: str = "epoch") -> Figure:
    """``metric`` measured at checkpoints over training, one line per run (log x axis),
    coloured by the configuration column ``hue`` of ``runs`` (joined on ``config_hash``)."""
    if metric not in curves:
        raise ValueError(f"metric {metric!r} was not measured at checkpoints")
    data = curves
    if hue is not None:
        if runs is None or hue not in runs:
            raise ValueError(f"hue {hue!r} needs the runs table with that column")
        data = curves.merge(runs[["config_hash", hue]], on="config_hash")
    fig = Figure(figsize=(4.6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    colors: dict[str, Any] = {}
    for _hash, grp in data.groupby("config_hash"):
        grp = grp.sort_values(x)
        key = str(grp[hue].iloc[0]) if hue is not None else None
        label = None
        if key not in colors:
            colors[key] = f"C{len(colors) % 10}"
            label = None if hue is None else f"{hue}={key}"
        ax.plot(grp[x] + 1, grp[metric], color=colors[key], alpha=0.5, lw=0.9, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"{x} + 1")
    ax.set_ylabel(metric)
    if hue is not None:
        ax.legend(fontsize=7)
    return fig


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def save_zoo_figures(store: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                     table: Any = None, metrics: Sequence[str] | None = None,
                     prefix: str = "zoo") -> list[Path]:
    """Write PNGs for the store: metric vs gap (the best metric, the test Jacobian norm and
    WeightWatcher's alpha, or ``metrics``), paired comparisons of the test Jacobian norm, and
    curves over training. Returns the written paths."""
    from jacspec.zoo.rank.score import score_store
    from jacspec.zoo.run.store import Store

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Store(store, readonly=True) as st:
        runs = st.runs(status="done")
        curves = st.curves()
    if table is None:
        table = score_store(str(store))
    if metrics is None:
        metrics = [m for m in dict.fromkeys([table.best, "test_jacobian_norm", "ww_alpha",
                                             "jac_test_alpha"]) if m and m in runs]
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        path = out / f"{prefix}_{_slug(name)}.png"
        fig.savefig(path, dpi=110)
        written.append(path)

    hue = "random_labels" if "random_labels" in runs else None
    for m in metrics:
        tau = table.scores.get(m, {}).get("kendall_tau") if m in table.scores else None
        save(metric_vs_gap(runs, m, gap=table.gap, hue=hue, tau=tau), f"gap_{m}")
    pair_metric = "test_jacobian_norm" if "test_jacobian_norm" in runs else (
        metrics[0] if metrics else None)
    done_pairs = set()
    for p in table.paired:
        key = (p["factor"], str(p["a"]), str(p["b"]))
        if pair_metric is None or p["metric"] != pair_metric or key in done_pairs:
            continue
        done_pairs.add(key)
        save(paired_figure(runs, pair_metric, p["factor"], p["a"], p["b"], table.factors,
                           gap=table.gap), f"pairs_{p['factor']}_{pair_metric}")
    if not curves.empty:
        x = "epoch" if "epoch" in curves else "step"
        for m in [c for c in ("test_jacobian_norm", "gap", "ww_alpha") if c in curves]:
            save(curves_figure(curves, m, runs, hue=hue, x=x), f"curves_{m}")
    logger.info("wrote %d figures to %s", len(written), out)
    return written
