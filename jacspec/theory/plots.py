"""Figures for random-network theory (matplotlib Figures, Agg; nothing is shown)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

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


def theory_vs_simulation(
    theories: Sequence[JacobianSpectrum], sims: Sequence[SimulatedSpectrum] | None = None,
    *, bins: int = 60,
) -> Figure:
    """Density of log10(lambda) of JJ^T: theory curves against simulated histograms
    (one colour per depth; point masses listed in the legend)."""
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i}" for i in range(10)]
    lo = -12.0
    for i, th in enumerate(theories):
        c = colors[i % 10]
        x, y = _log_density(th)
        keep = x >= lo
        atoms = ", ".join(f"{a['mass']:.2f}@{a['at']:.3g}" for a in th.atoms)
        label = f"L={th.depth} theory" + (f" (atoms {atoms})" if atoms else "")
        ax.plot(x[keep], y[keep], color=c, lw=1.5, label=label)
        if sims is not None and i < len(sims):
            ev = sims[i].eigenvalues
            ev = ev[ev > max(sims[i].floor, 10.0**lo)]
            if ev.size:
                w = np.full(ev.size, 1.0 / sims[i].eigenvalues.size)
                hist, edges = np.histogram(np.log10(ev), bins=bins, weights=w)
                ax.stairs(hist / np.diff(edges), edges, color=c, alpha=0.6,
                          label=f"L={th.depth} N={sims[i].width}")
    if theories:
        t0 = theories[0]
        ax.set_title(f"{t0.activation}, {t0.weights} weights, "
                     f"$\\sigma_w^2$={t0.sigma_w2:.4g}, $\\sigma_b^2$={t0.sigma_b2:.3g}")
    ax.set_xlabel(r"$\log_{10} \lambda$ ($JJ^T$)")
    ax.set_ylabel(r"density of $\log_{10}\lambda$ (continuous part)")
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
