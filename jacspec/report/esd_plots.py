"""ESD figures: log-log and linear histograms with fits, nulls and comparisons.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global
state, nothing is shown); save it with ``fig.savefig(path)``. Histograms are densities of
the positive eigenvalues (log-spaced bins on log-log axes); fitted densities are scaled to
the same normalisation (a tail fit covering m of N values is drawn as (m/N) p(x)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from jacspec.heavytail.mp import MPFit
from jacspec.heavytail.powerlaw import PowerLawFit
from jacspec.heavytail.randomized import RandomizedNull
from jacspec.spectra.options import ZERO_TOL

__all__ = [
    "plot_density_vs_esd",
    "plot_esd_estimate",
    "plot_esd_linear",
    "plot_esd_loglog",
    "plot_esd_pair",
    "plot_randomized_esd",
]


def _values(eigenvalues: Any, name: str = "eigenvalues") -> np.ndarray:
    if hasattr(eigenvalues, "detach"):
        eigenvalues = eigenvalues.detach().cpu().double().numpy()
    ev = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if ev.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(ev).all():
        raise ValueError(f"{name} contains NaN or inf")
    return ev


def _positive(ev: np.ndarray, name: str = "eigenvalues") -> np.ndarray:
    pos = ev[ev > 0]
    if pos.size == 0:
        raise ValueError(f"{name} has no positive entry to plot on a log axis")
    return pos


def _log_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    if hi <= lo:
        hi = lo * 1.01
    return np.geomspace(lo, hi, int(bins) + 1)


def _figure(size: tuple[float, float] = (6.0, 4.2)) -> tuple[Figure, Axes]:
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig: Figure, ax: Axes, title: str, *, log: bool = False) -> Figure:
    """Label a density panel (eigenvalue against density; log-log axes when ``log``)."""
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(r"eigenvalue $\lambda$")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _loghist(ax: Axes, pos: np.ndarray, edges: np.ndarray, total: int, **kw: Any) -> None:
    """Density histogram normalised over all ``total`` values (zeros included)."""
    counts, _ = np.histogram(pos, bins=edges)
    dens = counts / (total * np.diff(edges))
    ax.stairs(dens, edges, **kw)


def plot_esd_loglog(
    eigenvalues: Any,
    fit: PowerLawFit | None = None,
    *,
    bins: int = 80,
    title: str | None = None,
) -> Figure:
    """Log-log histogram of the ESD (density, log bins), the fitted power law
    (m/N) p(x) on [xmin, xmax] as a line, and xmin (and xmax) as vertical lines."""
    ev = _values(eigenvalues)
    pos = _positive(ev)
    fig, ax = _figure()
    edges = _log_edges(pos.min(), pos.max(), bins)
    _loghist(ax, pos, edges, ev.size, fill=True, alpha=0.5, label=f"ESD ({ev.size} values)")
    if fit is not None:
        xs = np.geomspace(fit.xmin, fit.xmax, 200)
        frac = fit.num_pl_spikes / ev.size
        name = "TPL" if fit.distribution == "truncated_power_law" else "PL"
        ax.plot(xs, frac * fit.pdf(xs), "r-", lw=2,
                label=rf"{name} fit $\alpha$={fit.alpha:.2f}, D={fit.D:.3f}")
        ax.axvline(fit.xmin, color="r", ls="--", lw=1, label=f"xmin={fit.xmin:.3g}")
        ax.axvline(fit.xmax, color="orange", ls=":", lw=1, label=f"xmax={fit.xmax:.3g}")
    return _finish(fig, ax, title or "ESD (log-log)", log=True)


def plot_esd_linear(
    eigenvalues: Any,
    *,
    bins: int = 100,
    mp: MPFit | None = None,
    xmin: float | None = None,
    title: str | None = None,
) -> Figure:
    """Linear histogram (density over all values) of the ESD, with the fitted MP bulk density
    and its edge lambda_plus, and xmin.

    The MP density describes min(rows, cols) eigenvalues, so it is drawn as
    min(1, min(rows, cols) / N) * p_MP(x) over the N values given. When the bulk is narrow
    next to lambda_max (3 lambda_plus < lambda_max / 2) a second panel zooms on [0, 3
    lambda_plus], the values beyond it counted in its legend, and the full-range panel uses a
    log density axis.
    """
    ev = _values(eigenvalues)
    lo = min(0.0, float(ev.min()))
    zoom = mp is not None and 0 < 3.0 * mp.lambda_plus < 0.5 * float(ev.max())
    fig = Figure(figsize=(11.0, 4.2) if zoom else (6.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2) if zoom else [fig.add_subplot()]
    his = [float(ev.max())] + ([3.0 * mp.lambda_plus] if zoom and mp is not None else [])
    for k, (ax, hi) in enumerate(zip(axes, his, strict=True)):
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
        counts, _ = np.histogram(ev, bins=edges)
        ax.stairs(counts / (ev.size * np.diff(edges)), edges, fill=True, alpha=0.5,
                  label=f"ESD ({ev.size} values)")
        if mp is not None:
            xs = np.linspace(mp.lambda_minus, mp.lambda_plus, 400)
            frac = min(1.0, min(mp.rows, mp.cols) / ev.size)
            ax.plot(xs, frac * mp.pdf(xs), "g-", lw=2,
                    label=rf"MP bulk $\sigma^2$={mp.sigma2:.3g}, Q={mp.Q:.3g}")
            ax.axvline(mp.lambda_plus, color="g", ls="--", lw=1,
                       label=rf"$\lambda_+$={mp.lambda_plus:.3g} ({mp.num_spikes} spikes)")
        beyond = int(np.sum(ev > edges[-1]))
        if beyond:
            ax.plot([], [], " ", label=f"{beyond} values beyond the axis, up to {ev.max():.3g}")
        if xmin is not None and xmin <= edges[-1]:
            ax.axvline(xmin, color="r", ls="--", lw=1, label=f"xmin={xmin:.3g}")
        ax.set_xlim(edges[0], edges[-1])
        if zoom and k == 0:
            ax.set_yscale("log")  # the bulk is one bin at this range: show the tail's counts
        ax.set_xlabel(r"eigenvalue $\lambda$")
        ax.set_ylabel("density" + (" (log scale)" if zoom and k == 0 else ""))
        ax.set_title("MP bulk (zoom)" if k else (title or "ESD (linear)"), fontsize=10)
        ax.legend(fontsize=8)
    return fig


def plot_esd_estimate(estimate: Any, *, bins: int = 60, title: str | None = None) -> Figure:
    """An estimated ESD (:class:`jacspec.spectra.esd_estimate.ESDEstimate`, e.g. by
    stochastic Lanczos quadrature, or any :class:`jacspec.spectra.spectrum.Spectrum`): left,
    the CDF F(x) = sum_{nodes <= x} weights on a log x axis; right, the
    density of the measure (nodes weighted by their Gauss weights, log bins, over all mass),
    with lambda_max, the exactly computed top eigenvalues, and the resolution below which the
    estimate lumps eigenvalues together (``params["resolution"]``) marked."""
    # any jacspec.spectra.spectrum.Spectrum: its discrete law (an ESD: eigenvalues, 1/dim)
    measure = getattr(estimate, "measure", None)
    raw_nodes, raw_weights = measure() if callable(measure) else (estimate.nodes,
                                                                   estimate.weights)
    nodes = _values(raw_nodes, "nodes")
    weights = _values(raw_weights, "weights")
    lam_max = float(estimate.lambda_max)
    params = dict(getattr(estimate, "params", {}) or {})
    res = params.get("resolution")
    zero_mass = float(getattr(estimate, "zero_mass", 0.0))
    method = str(getattr(estimate, "method", "slq"))
    name = {"slq": "SLQ estimate", "exact": "exact ESD"}.get(method, f"{method} estimate")
    if method == "slq":
        name += f" ({params.get('num_steps', '?')} steps, {params.get('num_vectors', '?')} vectors)"
    tol = float(params.get("zero_tol", ZERO_TOL)) * lam_max
    pos_nodes = nodes > tol
    if not pos_nodes.any():
        raise ValueError("the estimate has no mass above zero to plot on a log axis")
    lo = float(nodes[pos_nodes].min())
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_c, ax_d = fig.subplots(1, 2)
    xs = np.geomspace(lo / 2, lam_max * 1.5, 600)
    ax_c.plot(xs, estimate.cdf(xs), "k-", lw=1.5, label=f"{name}: CDF")
    ax_c.set_xscale("log")
    ax_c.set_ylim(-0.02, 1.02)
    ax_c.set_ylabel(r"fraction of eigenvalues $\leq \lambda$")
    edges = _log_edges(lo, lam_max, bins)
    w, _ = np.histogram(nodes[pos_nodes], bins=edges, weights=weights[pos_nodes])
    ax_d.stairs(w / np.diff(edges), edges, fill=True, alpha=0.5, color="C0", label=name)
    ax_d.set_xscale("log")
    ax_d.set_yscale("log")
    ax_d.set_ylabel("density (estimated)")
    top = np.asarray(getattr(estimate, "top_eigenvalues", []), dtype=np.float64)
    for ax in (ax_c, ax_d):
        ax.axvline(lam_max, color="r", ls="--", lw=1, label=rf"$\lambda_{{max}}$={lam_max:.3g}")
        if top.size > 1:
            ax.plot(top[1:], np.full(top.size - 1, 0.97), "|", color="r", ms=10,
                    transform=ax.get_xaxis_transform(), label=f"top {top.size} eigenvalues")
        if res is not None and res > lo / 2:
            ax.axvspan(lo / 2, float(res), color="grey", alpha=0.15,
                       label=f"below resolution {float(res):.2g} (lumped)")
        ax.set_xlabel(r"eigenvalue $\lambda$")
    if zero_mass > 0:
        ax_c.plot([], [], " ", label=f"mass at 0: {zero_mass:.3g}")
    ax_c.legend(fontsize=8, loc="upper left")
    ax_d.legend(fontsize=8, loc="lower left")
    fig.suptitle(title or f"ESD ({name})")
    return fig


def plot_randomized_esd(
    null: RandomizedNull, *, bins: int = 80, log: bool = True, title: str | None = None
) -> Figure:
    """The ESD and the ESD of the entry-shuffled matrix overlaid (log-log by default), the
    randomized lambda_max and the real eigenvalues above it (``above_rand_max_values``:
    structure the shuffle destroys) marked."""
    ev, rev = null.eigenvalues, null.rand_eigenvalues
    fig, ax = _figure()
    if log:
        # values below lambda_max * N * eps(float64) are round-off zeros: counted, not drawn
        floor = float(max(ev.max(), rev.max())) * max(ev.size, rev.size) * np.finfo(float).eps
        pos, rpos = _positive(ev), _positive(rev, "rand_eigenvalues")
        pos = pos[pos > floor] if np.any(pos > floor) else pos
        rpos = rpos[rpos > floor] if np.any(rpos > floor) else rpos
        zeros = ev.size - pos.size
        edges = _log_edges(min(pos.min(), rpos.min()), max(pos.max(), rpos.max()), bins)
        _loghist(ax, pos, edges, ev.size, fill=True, alpha=0.45,
                 label="ESD" + (f" ({zeros} round-off zeros not drawn)" if zeros else ""))
        _loghist(ax, rpos, edges, rev.size, fill=True, alpha=0.45, color="C1",
                 label="randomized ESD")
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        edges = np.linspace(0.0, max(ev.max(), rev.max()), int(bins) + 1)
        ax.hist(ev, bins=edges, density=True, alpha=0.45, label="ESD")
        ax.hist(rev, bins=edges, density=True, alpha=0.45, color="C1", label="randomized ESD")
    ax.axvline(null.rand_lambda_max, color="C1", ls="--", lw=1,
               label=f"randomized max={null.rand_lambda_max:.3g}")
    for i, v in enumerate(null.above_rand_max_values):
        ax.axvline(v, color="k", lw=0.8, alpha=0.7,
                   label=f"{null.num_above_rand_max} real values above it" if i == 0 else None)
    return _finish(fig, ax, title or f"ESD vs randomized (rand_distance {null.rand_distance:.3g})")


def plot_esd_pair(
    a: Any,
    b: Any,
    *,
    labels: tuple[str, str] = ("true labels", "random labels"),
    fits: tuple[PowerLawFit | None, PowerLawFit | None] | None = None,
    bins: int = 80,
    title: str | None = None,
) -> Figure:
    """Two ESDs (e.g. a network trained on true vs random labels) on one log-log plot, on
    shared log bins, with their power-law fits as lines when given."""
    ea, eb = _values(a, "a"), _values(b, "b")
    pa, pb = _positive(ea, "a"), _positive(eb, "b")
    fig, ax = _figure()
    edges = _log_edges(min(pa.min(), pb.min()), max(pa.max(), pb.max()), bins)
    for k, (e, p, lab) in enumerate(((ea, pa, labels[0]), (eb, pb, labels[1]))):
        color = f"C{k}"
        _loghist(ax, p, edges, e.size, fill=True, alpha=0.4, color=color, label=lab)
        fit = fits[k] if fits is not None else None
        if fit is not None:
            xs = np.geomspace(fit.xmin, fit.xmax, 200)
            ax.plot(xs, fit.num_pl_spikes / e.size * fit.pdf(xs), color=color, lw=2,
                    label=rf"{lab}: $\alpha$={fit.alpha:.2f}")
            ax.axvline(fit.xmin, color=color, ls="--", lw=1)
    return _finish(fig, ax, title or "ESDs compared", log=True)


def plot_density_vs_esd(
    x: Any,
    density: Any,
    eigenvalues: Any,
    *,
    bins: int = 80,
    log: bool = False,
    label: str = "estimated density",
    title: str | None = None,
) -> Figure:
    """An estimated spectral density (``x``, ``density`` arrays, e.g. from stochastic
    Lanczos quadrature) drawn over the histogram of exact eigenvalues (density over all
    values). ``log=True`` uses log bins and log-log axes."""
    xs = _values(x, "x")
    ds = _values(density, "density")
    if xs.shape != ds.shape:
        raise ValueError(f"x and density must have the same shape; got {xs.shape}, {ds.shape}")
    ev = _values(eigenvalues)
    fig, ax = _figure()
    if log:
        pos = _positive(ev)
        edges = _log_edges(pos.min(), pos.max(), bins)
        _loghist(ax, pos, edges, ev.size, fill=True, alpha=0.45, label="exact ESD")
        keep = (xs > 0) & (ds > 0)
        ax.plot(xs[keep], ds[keep], "k-", lw=1.5, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.hist(ev, bins=int(bins), density=True, alpha=0.45, label="exact ESD")
        ax.plot(xs, ds, "k-", lw=1.5, label=label)
    return _finish(fig, ax, title or "estimated density vs exact ESD")
