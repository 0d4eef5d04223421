"""Figures for sensitivity analysis (Novak et al., ICLR 2018); each returns a Figure.

* :func:`plot_profiles`: log Jacobian norm and transition density along
  trajectories, one curve per kind, anchor points marked.
* :func:`plot_mean_profiles`: the same, averaged over the trajectories of each kind
  (geometric mean of the norm, mean density), as the paper's profile figure.
* :func:`plot_per_point`: ``||J||_F`` (and ``||J_y||_2``) against the test loss
  with the bounds of eqs. 5-7.
* :func:`plot_region_slice`: linear-region boundaries of one activation layer on
  the plane through three points (the paper's Figure 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from jacspec.report.ticks import ensure_ticks
from jacspec.sensitivity.norms import PerPointSensitivity, loss_bounds
from jacspec.sensitivity.regions import activation_codes
from jacspec.sensitivity.trajectories import TrajectoryProfile

__all__ = ["plot_mean_profiles", "plot_per_point", "plot_profiles", "plot_region_slice",
           "slice_codes"]

_COLORS = {"random": "tab:red", "different_class": "tab:orange", "same_class": "tab:blue",
           "translation": "tab:green"}


def _smooth(v: np.ndarray, width: int) -> np.ndarray:
    """Circular moving average over ``width`` samples (1 = none)."""
    if width <= 1:
        return v
    kernel = np.ones(width) / width
    pad = np.concatenate([v[-(width // 2):], v, v[: width - width // 2 - 1]])
    return np.convolve(pad, kernel, mode="valid")[: len(v)]


def plot_profiles(profiles: Sequence[TrajectoryProfile], *, smooth: int = 1,
                  title: str | None = None) -> Figure:
    """Two panels against ``t``: ``||J||_F`` (log scale) and transitions per unit length.

    ``smooth``: circular moving average of the density over that many segments.
    """
    if not profiles:
        raise ValueError("profiles is empty; pass at least one TrajectoryProfile")
    fig = Figure(figsize=(9, 6), constrained_layout=True)
    ax_j, ax_t = fig.subplots(2, 1, sharex=True)
    for prof in profiles:
        color = _COLORS.get(prof.kind)
        ax_j.plot(prof.t, prof.jacobian_norm, color=color, lw=1.2, label=prof.kind)
        ax_t.plot(prof.t, _smooth(prof.transition_density, smooth), color=color, lw=1.2,
                  label=prof.kind)
        for i, a in enumerate(prof.anchors):
            ax_j.axvline(a, color=color, ls=":", lw=0.8)
            ax_t.axvline(a, color=color, ls=":", lw=0.8)
            if i < len(prof.anchor_jacobian_norm):
                ax_j.plot([a], [prof.anchor_jacobian_norm[i]], "o", color=color, ms=5)
    return _label_profiles(fig, ax_j, ax_t, (r"$\|J(z(t))\|_F$", "transitions per unit length",
                                             "t (anchors dotted)"), title)


def _label_profiles(fig: Figure, ax_j: Any, ax_t: Any, labels: tuple[str, str, str],
                    title: str | None) -> Figure:
    """Log norm axis, the (norm, density, t) labels, a legend, >= 3 ticks, the title."""
    ax_j.set_yscale("log")
    ax_j.set_ylabel(labels[0])
    ax_t.set_ylabel(labels[1])
    ax_t.set_xlabel(labels[2])
    ax_j.legend(fontsize=8)
    for ax in (ax_j, ax_t):
        ensure_ticks(ax)
    if title:
        ax_j.set_title(title)
    return fig


def plot_mean_profiles(profiles: Sequence[TrajectoryProfile], *, title: str | None = None,
                       smooth: int | None = None) -> Figure:
    """Per kind of trajectory (profiles of one kind share ``t``): the geometric mean of
    ``||J(z(t))||_F`` (log scale) and the mean transition density (circular moving average
    over ``smooth`` segments, default ``len(t) // 24``), anchors dotted."""
    if not profiles:
        raise ValueError("profiles is empty; pass at least one TrajectoryProfile")
    fig = Figure(figsize=(9, 6), constrained_layout=True)
    ax_j, ax_t = fig.subplots(2, 1, sharex=True)
    kinds = list(dict.fromkeys(p.kind for p in profiles))
    for kind in kinds:
        group = [p for p in profiles if p.kind == kind]
        t = group[0].t
        if any(len(p.t) != len(t) for p in group):
            raise ValueError(f"the {kind!r} profiles have different numbers of points")
        width = smooth if smooth is not None else max(1, len(t) // 24)
        norm = np.exp(np.mean([np.log(p.jacobian_norm) for p in group], axis=0))
        dens = _smooth(np.mean([p.transition_density for p in group], axis=0), 2 * width + 1)
        color = _COLORS.get(kind)
        label = f"{kind} (n={len(group)})"
        ax_j.plot(t, norm, color=color, label=label)
        ax_t.plot(t, dens, color=color, label=label)
        for a in group[0].anchors:
            ax_j.axvline(a, color=color, ls=":", lw=0.8)
            ax_t.axvline(a, color=color, ls=":", lw=0.8)
    return _label_profiles(fig, ax_j, ax_t, (
        r"geometric mean $\|J\|_F$", "transitions per unit length\n(mean, smoothed)",
        "t (anchors dotted: the training points of the ellipses)"), title)


def plot_per_point(result: PerPointSensitivity, *, title: str | None = None) -> Figure:
    """Scatter of ``||J_y||_2`` and ``||J||_F`` against loss with the eq. 5/6/7 curves."""
    f = result.frame
    loss = f["loss"].to_numpy()
    positive = loss[loss > 0]
    lo = max(float(positive.min()) if len(positive) else 1e-8, 1e-12)
    grid = np.logspace(np.log10(lo), np.log10(max(float(loss.max()), lo * 10)), 300)
    b = loss_bounds(grid, result.M, result.num_classes)
    fig = Figure(figsize=(11, 4.5), constrained_layout=True)
    ax_y, ax_f = fig.subplots(1, 2)
    ok = f["correct"].to_numpy()
    for ax, col, name in ((ax_y, "target_jacobian_norm", r"$\|J_y\|_2$"),
                          (ax_f, "jacobian_norm", r"$\|J\|_F$")):
        vals = f[col].to_numpy()
        ax.scatter(loss[ok], vals[ok], s=6, alpha=0.5, color="tab:blue", label="correct")
        ax.scatter(loss[~ok], vals[~ok], s=6, alpha=0.6, color="tab:red", label="misclassified")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cross-entropy loss")
        ax.set_ylabel(name)
    ax_y.plot(grid, b["eq5_lower"], "k-", lw=1.2, label="eq. 5 lower")
    ax_y.plot(grid, b["eq5_upper"], "k--", lw=1.2, label="eq. 5 upper")
    ax_f.plot(grid, b["eq6_lower"], "k-", lw=1.2, label="eq. 6 lower")
    ax_f.plot(grid, b["eq7"], "m--", lw=1.2, label="eq. 7 approx.")
    s = result.summary()
    ax_y.set_title(f"inside eq. 5: {s['fraction_in_eq5']:.0%}")
    ax_f.set_title(f"above eq. 6: {s['fraction_in_eq6']:.0%}, below eq. 7: "
                   f"{s['fraction_below_eq7']:.0%}")
    for ax in (ax_y, ax_f):
        ax.legend(fontsize=7)
        ensure_ticks(ax)
    if title:
        fig.suptitle(title)
    return fig


def _plane(points: Tensor) -> tuple[Tensor, Tensor, Tensor, np.ndarray]:
    """Centroid, orthonormal basis (u, v) of the plane through 3 points, their 2-D coordinates."""
    p = points.double().reshape(3, -1)
    c = p.mean(0)
    q, _ = torch.linalg.qr((p[1:] - p[0]).T)
    u, v = q[:, 0], q[:, 1]
    coords = torch.stack([(p - c) @ u, (p - c) @ v], dim=1).numpy()
    return c, u, v, coords


def slice_codes(model: nn.Module, points: Tensor, *, resolution: int = 200, margin: float = 0.5,
                layers: Sequence[int] | None = (-1,), batch_size: int = 8192
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boundary mask of activation codes on a grid over the plane through 3 ``points``.

    Returns ``(boundary (r, r) bool, extent_u, extent_v, anchor coords (3, 2))``:
    ``boundary`` marks grid cells whose code differs from the right or upper neighbour.
    """
    if not isinstance(points, Tensor) or points.shape[0] != 3:
        raise ValueError("points must be a Tensor of 3 inputs (3, *input_shape)")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution={resolution!r} must be an int >= 4")
    c, u, v, coords = _plane(points)
    span = float(np.abs(coords).max()) * (1 + margin)
    us = np.linspace(-span, span, resolution)
    vs = np.linspace(-span, span, resolution)
    gu, gv = np.meshgrid(us, vs)  # rows: v, cols: u
    flat = torch.from_numpy(np.stack([gu.ravel(), gv.ravel()], 1))
    codes = []
    for chunk in flat.split(batch_size):
        x = (c + chunk[:, :1] * u + chunk[:, 1:] * v).to(points.dtype)
        codes.append(activation_codes(model, x.reshape(-1, *points.shape[1:]),
                                      layers=layers).codes)
    grid = torch.cat(codes).reshape(resolution, resolution, -1)
    right = (grid[:, 1:] != grid[:, :-1]).any(-1)
    up = (grid[1:] != grid[:-1]).any(-1)
    boundary = torch.zeros(resolution, resolution, dtype=torch.bool)
    boundary[:, 1:] |= right
    boundary[1:] |= up
    return boundary.numpy(), us, vs, coords


def plot_region_slice(model: nn.Module, points: Tensor, *, resolution: int = 200,
                      margin: float = 0.5, layers: Sequence[int] | None = (-1,),
                      labels: Sequence[str] | None = None, ax_title: str | None = None) -> Figure:
    """Linear-region boundaries of ``layers`` (default the last activation layer) on the
    plane through three ``points``, the points marked (Novak et al. Figure 3)."""
    boundary, us, vs, coords = slice_codes(model, points, resolution=resolution, margin=margin,
                                           layers=layers)
    fig = Figure(figsize=(5.5, 5.5), constrained_layout=True)
    ax = fig.subplots()
    ax.imshow(~boundary, cmap="gray", origin="lower", interpolation="nearest",
              extent=(us[0], us[-1], vs[0], vs[-1]))
    ax.scatter(coords[:, 0], coords[:, 1], s=60, c="tab:red", edgecolors="white", zorder=3)
    for i, (cu, cv) in enumerate(coords):
        text = labels[i] if labels is not None else f"x{i + 1}"
        ax.annotate(text, (cu, cv), xytext=(5, 5), textcoords="offset points", color="tab:red")
    ax.set_xlabel("u")
    ax.set_ylabel("v")
    ax.set_title(ax_title or "linear-region boundaries, plane through 3 points")
    return fig
