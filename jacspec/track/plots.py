"""Figures of a :class:`jacspec.track.Tracker`: tracked metrics against the training step.

matplotlib is imported inside the functions (``import jacspec.track`` stays light).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Panels drawn by default, in this order, when tracked.
DEFAULT_PANELS = ("alpha", "lambda_max", "stable_rank", "entropy")
#: Metrics drawn on a logarithmic y axis (positive scales of the spectrum).
LOG_METRICS = ("lambda_max", "trace", "mp_lambda_plus", "rand_lambda_max")


def _panels(frame: Any, metrics: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    numeric = [c for c in frame.columns if c not in skip and frame[c].dtype.kind in "fiu"]
    if metrics is None:
        chosen = [m for m in DEFAULT_PANELS if m in numeric]
        return chosen or numeric[:4]
    if isinstance(metrics, str):
        metrics = [metrics]
    missing = [m for m in metrics if m not in numeric]
    if missing:
        raise ValueError(f"metrics {missing} were not tracked; tracked: {', '.join(numeric)}")
    return list(metrics)


def plot_tracking(frame: Any, metrics: Sequence[str] | None = None) -> Any:
    """One panel per metric (default: alpha, lambda_max, stable_rank, entropy, those present)
    of ``frame`` (:meth:`Tracker.frame`) against ``step``; returns the Figure."""
    import matplotlib.pyplot as plt

    skip = ("step", "wall_time", "seconds")
    panels = _panels(frame, metrics, skip)
    if not panels:
        raise ValueError("nothing to plot: the tracker holds no numeric metric")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, m in zip(axes[0], panels, strict=True):
        values = frame[m]
        ax.plot(frame["step"], values, marker="o", ms=3, lw=1.2)
        if m in LOG_METRICS and (values.dropna() > 0).all() and values.notna().any():
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(m)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Jacobian spectrum during training ({len(frame)} tracked steps)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_layers(layer_frame: Any, metrics: Sequence[str] | None = None) -> Any:
    """Like :func:`plot_tracking` for :meth:`Tracker.layer_frame`: one line per matrix."""
    import matplotlib.pyplot as plt

    panels = _panels(layer_frame, metrics, ("step", "matrix"))
    if not panels:
        raise ValueError("nothing to plot: no layer rows were tracked")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, m in zip(axes[0], panels, strict=True):
        for label, part in layer_frame.groupby("matrix", sort=False):
            ax.plot(part["step"], part[m], marker="o", ms=2, lw=1, label=str(label))
        if m in LOG_METRICS and (layer_frame[m].dropna() > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(m)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def tracking_figures(tracker: Any) -> dict[str, Any]:
    """``{"track.png": Figure, "track_layers.png": Figure (with layer rows)}`` of ``tracker``
    (the caller saves them, e.g. with the CLI's ``save_figures``)."""
    figures = {"track.png": plot_tracking(tracker.frame())}
    layers = tracker.layer_frame()
    if len(layers):
        figures["track_layers.png"] = plot_layers(layers)
    return figures


__all__ = ["plot_layers", "plot_tracking", "tracking_figures"]
