"""Figures for random-network theory (matplotlib Figures, Agg; nothing is shown)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jacspec.theory.freeprob import JacobianSpectrum, jacobian_spectrum
from jacspec.theory.meanfield import chi_grid, critical_line, get_activation
from jacspec.theory.simulate import SimulatedSpectrum


def phase_diagram(
    activation="tanh",
    sigma_w2: Sequence[float] | None = None,
    sigma_b2: Sequence[float] | None = None,
    *,
    q_values: Sequence[float] | None = None,
) -> Figure:
    """Order-to-chaos phase diagram: ``log chi`` over the (sigma_w^2, sigma_b^2) plane
    with the critical line chi = 1, coloured by q* along it."""
    act = get_activation(activation)
    sw = np.linspace(0.25, 4.0, 60) if sigma_w2 is None else np.asarray(sigma_w2, float)
    sb = np.linspace(0.0, 0.5, 50) if sigma_b2 is None else np.asarray(sigma_b2, float)
    qv = np.geomspace(1e-4, 64.0, 200) if q_values is None else np.asarray(q_values, float)
    _, chi = chi_grid(act, sw, sb)
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    logchi = np.log(chi.T)
    lim = float(np.nanmax(np.abs(logchi))) if np.isfinite(logchi).any() else 1.0
    mesh = ax.pcolormesh(sw, sb, logchi, shading="auto", cmap="RdBu_r",
                         norm=TwoSlopeNorm(0.0, -lim, lim))
    fig.colorbar(mesh, ax=ax, label=r"$\log \chi$  (order < 0 < chaos)")
    line = critical_line(act, qv)
    line = line[(line.sigma_w2 <= sw.max()) & (line.sigma_b2 <= sb.max())]
    if len(line):
        sc = ax.scatter(line.sigma_w2, line.sigma_b2, c=np.log10(line.q_star), s=6,
                        cmap="viridis", zorder=3)
        fig.colorbar(sc, ax=ax, label=r"$\log_{10} q^*$ on $\chi = 1$")
    ax.set_xlabel(r"$\sigma_w^2$")
    ax.set_ylabel(r"$\sigma_b^2$")
    ax.set_title(f"{act.name}: order-to-chaos transition")
    return fig


def _log_density(spec: JacobianSpectrum) -> tuple[np.ndarray, np.ndarray]:
    """Density of log10(lambda): ``ln(10) lambda rho(lambda)``."""
    return np.log10(spec.grid), np.log(10.0) * spec.grid * spec.density


def mass_range(x: np.ndarray, density: np.ndarray, lo: float = 0.001,
               hi: float = 0.999) -> tuple[float, float]:
    """Quantiles ``lo``, ``hi`` of the (unnormalised) density on the grid ``x``: the x where
    the trapezoid CDF, divided by the total, crosses ``lo`` and ``hi``."""
    x, y = np.asarray(x, float), np.clip(np.asarray(density, float), 0.0, None)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return (float(x[0]), float(x[0])) if x.size else (math.nan, math.nan)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])
    if not cdf[-1] > 0:
        return float(x[0]), float(x[-1])
    cdf /= cdf[-1]
    return float(np.interp(lo, cdf, x)), float(np.interp(hi, cdf, x))


def _bin_average(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of the density y(x) over each bin (trapezoid mass in the bin / its width)."""
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])
    return np.diff(np.interp(edges, x, cum)) / np.diff(edges)


def _clip_peaks(ax, curves: list[tuple[np.ndarray, np.ndarray]], heights: list[float],
                edges: np.ndarray) -> None:
    """Cap the y axis at 1.15 x the largest bin-averaged density (theory on ``edges``,
    simulated histograms) when a curve's integrable edge singularity would flatten the rest;
    the clipped peak is named in the axes."""
    tops = [float(np.max(_bin_average(x, y, edges))) for x, y in curves if x.size > 1]
    cap = 1.15 * max(tops + heights, default=0.0)
    peak = max((float(np.max(y)) for _, y in curves if y.size), default=0.0)
    if cap > 0 and peak > 1.5 * cap:
        ax.set_ylim(0.0, cap)
        ax.text(0.02, 0.97, f"theory peak {peak:.3g} clipped", transform=ax.transAxes,
                fontsize=7, va="top")


def theory_vs_simulation(
    theories: Sequence[JacobianSpectrum], sims: Sequence[SimulatedSpectrum] | None = None,
    *, bins: int = 60, quantiles: tuple[float, float] = (0.001, 0.999),
) -> Figure:
    """Density of log10(lambda) of JJ^T: theory curves against simulated histograms
    (one colour per depth; point masses listed in the legend). The x axis spans where the
    continuous mass is: from the lowest to the highest of the ``quantiles`` of every theory
    density and every simulated log10 lambda, plus 5% of that span on each side."""
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i}" for i in range(10)]
    lo = -12.0
    spans: list[tuple[float, float]] = []
    curves: list[tuple[np.ndarray, np.ndarray]] = []
    heights: list[float] = []
    for i, th in enumerate(theories):
        c = colors[i % 10]
        x, y = _log_density(th)
        keep = np.isfinite(x)
        atoms = ", ".join(f"{a['mass']:.2f}@{a['at']:.3g}" for a in th.atoms)
        label = f"L={th.depth} theory" + (f" (atoms {atoms})" if atoms else "")
        ax.plot(x[keep], y[keep], color=c, lw=1.5, label=label)
        spans.append(mass_range(x[keep], y[keep], *quantiles))
        curves.append((x[keep], y[keep]))
        if sims is not None and i < len(sims):
            ev = sims[i].eigenvalues
            ev = ev[ev > max(sims[i].floor, 10.0**lo)]
            if ev.size:
                qs = np.quantile(np.log10(ev), quantiles)
                spans.append((float(qs[0]), float(qs[1])))
                w = np.full(ev.size, 1.0 / sims[i].eigenvalues.size)
                hist, edges = np.histogram(np.log10(ev), bins=bins, weights=w)
                ax.stairs(hist / np.diff(edges), edges, color=c, alpha=0.6,
                          label=f"L={th.depth} N={sims[i].width}")
                heights.append(float(np.max(hist / np.diff(edges))))
    if theories:
        t0 = theories[0]
        ax.set_title(f"{t0.activation}, {t0.weights} weights, "
                     f"$\\sigma_w^2$={t0.sigma_w2:.4g}, $\\sigma_b^2$={t0.sigma_b2:.3g}")
    finite = [(a, b) for a, b in spans if math.isfinite(a) and math.isfinite(b)]
    if finite:
        a, b = min(a for a, _ in finite), max(b for _, b in finite)
        pad = max(0.05 * (b - a), 0.05)
        ax.set_xlim(a - pad, b + pad)
        _clip_peaks(ax, curves, heights, np.linspace(a - pad, b + pad, bins + 1))
    ax.set_xlabel(r"$\log_{10} \lambda$ ($JJ^T$)")
    ax.set_ylabel(r"density of $\log_{10}\lambda$ (continuous part)")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.legend(fontsize=7)
    return fig


def moments_vs_depth(
    activation, weights: str, sigma_w2: float, sigma_b2: float,
    depths: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    *, sims: Sequence[SimulatedSpectrum] | None = None, num_points: int = 400,
) -> Figure:
    """Variance and lambda_max of JJ^T against depth (theory lines, simulated points)."""
    depths = [int(d) for d in depths]
    specs = [jacobian_spectrum(activation, weights, d, sigma_w2, sigma_b2,
                               num_points=num_points) for d in depths]
    fig = Figure(figsize=(9.0, 3.8))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.loglog(depths, [s.variance for s in specs], "o-", label="theory")
    ax2.loglog(depths, [s.lambda_max for s in specs], "o-", label="theory")
    if sims:
        ax1.loglog([s.depth for s in sims], [s.variance for s in sims], "x", ms=8,
                   label="simulation")
        ax2.loglog([s.depth for s in sims], [s.lambda_max for s in sims], "x", ms=8,
                   label="simulation")
    ax1.set_xlabel("depth L")
    ax1.set_ylabel(r"variance of the spectrum of $JJ^T$")
    ax2.set_xlabel("depth L")
    ax2.set_ylabel(r"$\lambda_{max}$")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
    fig.suptitle(f"{specs[0].activation}, {weights}, "
                 f"$\\sigma_w^2$={sigma_w2:.4g}, $\\sigma_b^2$={sigma_b2:.3g}")
    fig.tight_layout()
    return fig
