"""Tests for jacspec.report.esd_plots: figures build, render, and draw the right numbers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from jacspec.heavytail.mp import fit_mp
from jacspec.heavytail.powerlaw import fit_powerlaw
from jacspec.heavytail.randomized import matrix_esd, randomized_null
from jacspec.report.esd_plots import (
    plot_density_vs_esd,
    plot_esd_linear,
    plot_esd_loglog,
    plot_esd_pair,
    plot_randomized_esd,
)


@pytest.fixture(scope="module")
def matrix() -> np.ndarray:
    return np.random.default_rng(0).standard_t(3.0, size=(150, 300))


def renders(fig: Figure) -> bool:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getbuffer().nbytes > 1000


def test_loglog_draws_fit_line_and_xmin(matrix: np.ndarray) -> None:
    ev = np.concatenate([matrix_esd(matrix), np.zeros(5)])
    fit = fit_powerlaw(ev)
    fig = plot_esd_loglog(ev, fit)
    assert isinstance(fig, Figure) and renders(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    line = ax.lines[0]
    xs, ys = line.get_data()
    assert xs[0] == pytest.approx(fit.xmin) and xs[-1] == pytest.approx(fit.xmax)
    assert np.allclose(ys, fit.num_pl_spikes / ev.size * fit.pdf(xs))
    vlines = [ln.get_xdata()[0] for ln in ax.lines[1:]]
    assert fit.xmin in vlines
    # the histogram is a density over all values: integral = fraction of positive values
    stairs = ax.patches[0]
    dens, edges = stairs.get_data().values, stairs.get_data().edges
    assert np.sum(dens * np.diff(edges)) == pytest.approx(np.mean(ev > 0))


def test_linear_with_mp(matrix: np.ndarray) -> None:
    ev = matrix_esd(matrix)
    mp = fit_mp(ev, 0.5, rows=150)
    fig = plot_esd_linear(ev, mp=mp, xmin=1.0)
    assert renders(fig)
    xs, ys = fig.axes[0].lines[0].get_data()
    assert np.allclose(ys, mp.pdf(xs))


def test_randomized_overlay(matrix: np.ndarray) -> None:
    null = randomized_null(matrix, seed=1)
    for log in (True, False):
        fig = plot_randomized_esd(null, log=log)
        assert renders(fig)
        xs = [ln.get_xdata()[0] for ln in fig.axes[0].lines]
        assert null.rand_lambda_max in xs
        assert len(xs) == 1 + null.num_above_rand_max


def test_pair_and_density(matrix: np.ndarray) -> None:
    a = matrix_esd(matrix)
    b = matrix_esd(np.random.default_rng(1).standard_normal((150, 300)))
    fig = plot_esd_pair(a, b, fits=(fit_powerlaw(a), None))
    assert renders(fig)
    assert len(fig.axes[0].patches) == 2
    x = np.linspace(0.01, a.max(), 50)
    dens = np.exp(-x)
    for log in (False, True):
        fig = plot_density_vs_esd(x, dens, a, log=log)
        assert renders(fig)
        xs, ys = fig.axes[0].lines[0].get_data()
        assert np.allclose(ys, np.exp(-xs))


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        plot_esd_loglog(np.zeros(10))
    with pytest.raises(ValueError):
        plot_esd_loglog([])
    with pytest.raises(ValueError):
        plot_density_vs_esd([1.0, 2.0], [1.0], [1.0, 2.0])
