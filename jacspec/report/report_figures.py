"""Figures the HTML report draws where no other module has one: metrics over training steps
(also :meth:`jacspec.track.Tracker.plot` and ``jacspec track --plot``), sensitivity profiles
rebuilt from ``jacspec sensitivity --json`` and the histogram of a simulated spectrum.
Functions return :class:`matplotlib.figure.Figure` objects."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: Columns of a tracking frame that label rows rather than measure the network.
TRACK_INDEX = ("step", "epoch", "time", "wall_time", "elapsed", "seconds", "timestamp")
#: Columns naming the matrix or layer of a per-layer tracking row (one line per value).
TRACK_GROUPS = ("matrix", "layer", "name", "row")
#: Panels a tracker draws by default, in this order, when tracked.
DEFAULT_PANELS = ("alpha", "lambda_max", "stable_rank", "entropy")
#: Metrics drawn on a logarithmic y axis (positive scales of the spectrum) when all positive.
LOG_METRICS = ("lambda_max", "trace", "lambda_plus", "mp_sigma2", "rand_lambda_max")


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric, non-boolean columns of a tracking frame that hold a finite value, without
    the step/time bookkeeping of :data:`TRACK_INDEX`."""
    out = []
    for col in frame.columns:
        if str(col) in TRACK_INDEX or str(col) in TRACK_GROUPS:
            continue
        s = frame[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            continue
        if np.isfinite(s.to_numpy(dtype=np.float64, na_value=np.nan)).any():
            out.append(str(col))
    return out


def group_column(frame: pd.DataFrame) -> str | None:
    """The column naming each row's matrix or layer, when the frame has several of them."""
    for col in TRACK_GROUPS:
        if col in frame and frame[col].nunique(dropna=True) > 1:
            return col
    return None


def plot_tracking(frame: pd.DataFrame, metrics: Sequence[str] | None = None, *,
                  x: str = "step", ncols: int = 3, title: str | None = None) -> Figure:
    """One panel per metric against ``x`` (one line per matrix/layer when the frame has a
    :data:`TRACK_GROUPS` column), points marked at every measured step."""
    if x not in frame:
        raise ValueError(f"the tracking frame has no {x!r} column; columns: "
                         f"{', '.join(map(str, frame.columns))}")
    metrics = list(metrics) if metrics is not None else metric_columns(frame)
    if not metrics:
        raise ValueError("the tracking frame has no numeric metric column to plot")
    ncols = max(1, min(ncols, len(metrics)))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(3.8 * ncols, 2.7 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    group = group_column(frame)
    groups = [(None, frame)] if group is None else list(frame.groupby(group, sort=False))
    for ax, metric in zip(axes, metrics, strict=False):
        for label, grp in groups:
            grp = grp.sort_values(x)
            ax.plot(grp[x].to_numpy(float), grp[metric].to_numpy(dtype=float, na_value=np.nan),
                    marker="o", ms=3, lw=1.2, label=None if label is None else str(label))
        values = frame[metric].to_numpy(dtype=float, na_value=np.nan)
        if metric in LOG_METRICS and np.isfinite(values).any() and (
                values[np.isfinite(values)] > 0).all():
            ax.set_yscale("log")
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(x, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if group is not None:
        axes[0].legend(fontsize=7, title=group, title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def tracking_panels(frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> list[str]:
    """The metrics a tracker's figure shows: those of :data:`DEFAULT_PANELS` that hold a value
    (else the first four metric columns) when ``metrics`` is None, else ``metrics`` (a
    ValueError names any that was not tracked)."""
    if metrics is None:
        present = metric_columns(frame)
        return [m for m in DEFAULT_PANELS if m in present] or present[:4]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    numeric = [str(c) for c in frame.columns if str(c) not in TRACK_INDEX + TRACK_GROUPS
               and pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    missing = [m for m in metrics if m not in numeric]
    if missing:
        raise ValueError(f"metrics {missing} were not tracked; tracked: {', '.join(numeric)}")
    return metrics


def plot_tracker(tracker: Any, metrics: Sequence[str] | None = None, *,
                 layers: bool = False) -> Figure:
    """One panel per metric (:func:`tracking_panels`) of a :class:`~jacspec.track.Tracker`
    against the step, in one row; ``layers=True`` draws its layer rows (one line per
    matrix) instead."""
    frame = tracker.layer_frame() if layers else tracker.frame()
    panels = tracking_panels(frame, metrics)
    if not panels:
        raise ValueError("nothing to plot: " + ("no layer rows were tracked" if layers
                                                else "the tracker holds no numeric metric"))
    what = "layer rows" if layers else "Jacobian spectrum"
    steps = frame["step"].nunique()
    return plot_tracking(frame, panels, ncols=len(panels),
                         title=f"{what} during training ({steps} tracked steps)")


def tracking_figures(tracker: Any) -> dict[str, Figure]:
    """``{"track.png": Figure, "track_layers.png": Figure (with layer rows)}`` of a tracker
    (the caller saves them, e.g. with the CLI's ``save_figures``)."""
    figures = {"track.png": plot_tracker(tracker)}
    if len(tracker.layer_frame()):
        figures["track_layers.png"] = plot_tracker(tracker, layers=True)
    return figures


def plot_trajectory_records(trajectories: Sequence[Mapping[str, Any]], *,
                            title: str | None = None) -> Figure:
    """``jacspec sensitivity --json`` trajectories: ``||J||_F`` at ``t_j = j/m`` (log scale,
    anchors marked) and the transitions counted in each segment ``[t_j, t_{j+1})``."""
    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    ax_j, ax_t = fig.subplots(2, 1, sharex=True)
    for i, tr in enumerate(trajectories):
        color = f"C{i % 10}"
        norm = np.asarray(tr.get("jacobian_norm") or [], dtype=float)
        if norm.size == 0:
            continue
        t = np.arange(norm.size) / norm.size
        kind = str(tr.get("kind", f"trajectory {i}"))
        ax_j.plot(t, norm, color=color, lw=1.2, label=kind)
        trans = np.asarray(tr.get("transitions_per_segment") or [], dtype=float)
        if trans.size == norm.size:
            ax_t.plot(t, trans, color=color, lw=1.0, label=kind)
        anchors = list(tr.get("anchors") or [])
        values = list(tr.get("anchor_jacobian_norm") or [])
        for a, v in zip(anchors, values, strict=False):
            ax_j.axvline(a, color=color, ls=":", lw=0.8)
            ax_j.plot([a], [v], "o", color=color, ms=5)
    if ax_j.lines and np.all([np.all(np.asarray(ln.get_ydata(), float) > 0)
                              for ln in ax_j.lines]):
        ax_j.set_yscale("log")
    ax_j.set_ylabel(r"$\|J(z(t))\|_F$")
    ax_t.set_ylabel("transitions per segment")
    ax_t.set_xlabel("t (anchors dotted)")
    if ax_j.lines:
        ax_j.legend(fontsize=8)
    if title:
        ax_j.set_title(title)
    return fig


def plot_simulated_spectrum(eigenvalues: Any, *, floor: float = 0.0, bins: int = 60,
                            title: str | None = None) -> Figure:
    """Histogram of log10 of the simulated eigenvalues above ``floor`` (the fraction at or
    below it is named in the legend)."""
    ev = np.asarray(eigenvalues, dtype=float).ravel()
    keep = ev[ev > max(floor, 0.0)]
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    if keep.size:
        w = np.full(keep.size, 1.0 / ev.size)
        hist, edges = np.histogram(np.log10(keep), bins=bins, weights=w)
        ax.stairs(hist / np.diff(edges), edges, fill=True, alpha=0.6,
                  label=f"{keep.size} of {ev.size} eigenvalues above {floor:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel(r"$\log_{10} \lambda$ ($JJ^T$)")
    ax.set_ylabel(r"density of $\log_{10}\lambda$")
    ax.set_title(title or "simulated spectrum")
    return fig
