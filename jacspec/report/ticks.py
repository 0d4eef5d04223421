"""Tick placement that keeps every axis readable: at least a few labelled ticks in view."""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

__all__ = ["ensure_ticks", "visible_ticks"]


def visible_ticks(ax: Axes, which: str = "y") -> list[float]:
    """Major tick positions of the ``which`` axis that lie inside its current limits."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    lo, hi = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
    eps = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    return [float(t) for t in axis.get_majorticklocs() if lo - eps <= t <= hi + eps]


def _fmt(v: float, _pos: object = None) -> str:
    return f"{v:.3g}"


def ensure_ticks(ax: Axes, min_ticks: int = 3) -> None:
    """Give each axis of ``ax`` at least ``min_ticks`` labelled major ticks in view.

    Linear axes get :class:`MaxNLocator`; log axes spanning a few decades get
    :class:`LogLocator` with subs (1, 2, 5) (which falls back to round linear steps on a
    narrow range), else evenly spaced round values as fixed ticks; log tick labels are plain
    numbers with 3 significant digits (0.5, 2, 10), minor labels off.
    """
    for which in ("x", "y"):
        axis = ax.yaxis if which == "y" else ax.xaxis
        lo, hi = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
        if len(visible_ticks(ax, which)) >= min_ticks:
            continue
        if axis.get_scale() != "log":
            axis.set_major_locator(MaxNLocator(nbins=max(min_ticks + 2, 5), min_n_ticks=min_ticks))
            continue
        if lo <= 0 or not math.isfinite(lo) or not math.isfinite(hi):
            continue
        axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(_fmt))
        axis.set_minor_formatter(NullFormatter())
        if len(visible_ticks(ax, which)) >= min_ticks:
            continue
        ticks = [t for t in MaxNLocator(nbins=5, min_n_ticks=min_ticks).tick_values(lo, hi)
                 if lo <= t <= hi and t > 0]
        if len(ticks) < min_ticks:
            ticks = list(_geom(lo, hi, min_ticks))
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(_fmt))
        axis.set_minor_locator(NullLocator())


def _geom(lo: float, hi: float, num: int) -> list[float]:
    r = (hi / lo) ** (1.0 / (num + 1))
    return [float(f"{lo * r ** (i + 1):.3g}") for i in range(num)]
