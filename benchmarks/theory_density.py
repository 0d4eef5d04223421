"""Time a 1,000-point JJ^T density at depth L = 128.

Headline: critical ReLU net with Gaussian weights (sigma_w^2 = 2), exactly 1000 grid
points (``refine=False``), root tracking of the master equation. Side by side: the same
density from the roots of the degree-(L+1) polynomial of the piecewise-linear case
(numpy companion-matrix roots at every grid point), and a smooth activation (tanh at
(1.05, 2.01e-5), orthogonal weights) through the general solver. Prints the times, the
ratio, the agreement of the two ReLU densities, and last ``seconds=<t>`` (headline, best
of 3).

    python benchmarks/theory_density.py
"""

from __future__ import annotations

import time

import numpy as np

from jacspec.theory import critical_point, d2_law, jacobian_spectrum, lambda_max
from jacspec.theory.freeprob import _master_residual, default_grid
from jacspec.theory.solver import track

DEPTH = 128
POINTS = 1000
POLY_DEPTH = 16  # at L = 128 the polynomial's coefficients overflow float64 (z^L)


def polynomial_density(grid: np.ndarray, eta: float, sigma_w2: float, p: float,
                       reference: np.ndarray) -> np.ndarray:
    """Density from np.roots of the Gaussian-weights polynomial, written in u = zG
    (``sigma_w^{2L} u (u + p - 1)^L - z (u - 1)``, the G-form of
    ``piecewise_linear_polynomial`` times z, better scaled); the root nearest the tracked
    solution is taken (the polynomial alone does not say which is physical)."""
    out = np.empty(grid.size)
    base = np.poly1d([1.0, p - 1.0]) ** POLY_DEPTH
    for i, lam in enumerate(grid):
        z = lam * complex(np.cos(np.arctan(eta)), np.sin(np.arctan(eta)))
        coef = sigma_w2**POLY_DEPTH * np.polymul(base.coeffs, [1.0, 0.0])
        coef = np.polysub(coef, [z, -z])
        roots = np.roots(coef)
        u = roots[np.argmin(np.abs(roots / z - reference[i]))]
        out[i] = -(u / z - (1 - p) / z).imag / np.pi
    return out


def main() -> None:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        spec = jacobian_spectrum("relu", "gaussian", DEPTH, 2.0, 0.0, num_points=POINTS,
                                 refine=False)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"relu gaussian L={DEPTH}: {spec.grid.size} points, best of 3 {best:.3f} s, "
          f"mass {spec.total_mass:.6f}, m2 {spec.density_m2:.4f} (closed form {spec.m2:.4f})")

    law = d2_law("relu", 1.0)
    grid = default_grid(lambda_max(law, 2.0, POLY_DEPTH, "gaussian"), POLY_DEPTH, POINTS)
    sub = grid[grid > 1e-6 * grid[-1]][::8]  # tiny z underflows z^L in the polynomial
    t0 = time.perf_counter()
    z, u, _ = track(_master_residual(law, 2.0, POLY_DEPTH, "gaussian"), sub, m1=1.0)
    t_track = time.perf_counter() - t0
    g_track = u / z
    tracked = -(g_track - 0.5 / z).imag / np.pi
    t0 = time.perf_counter()
    poly = polynomial_density(sub, 1e-6, 2.0, 0.5, g_track)
    t_poly = time.perf_counter() - t0
    ok = tracked > 1e-12 * tracked.max()
    rel = np.max(np.abs(poly[ok] - tracked[ok]) / tracked[ok])
    print(f"L={POLY_DEPTH}, {sub.size} points: tracking {t_track:.3f} s, polynomial roots "
          f"(degree {POLY_DEPTH + 1}) {t_poly:.3f} s, ratio {t_poly / t_track:.1f}; "
          f"max relative density difference {rel:.2e}")

    cp = critical_point("tanh", 2.01e-5)
    t0 = time.perf_counter()
    tanh = jacobian_spectrum("tanh", "orthogonal", DEPTH, cp.sigma_w2, 2.01e-5,
                             num_points=POINTS, refine=False)
    t_tanh = time.perf_counter() - t0
    print(f"tanh orthogonal L={DEPTH}: {tanh.grid.size} points {t_tanh:.3f} s "
          f"({t_tanh / best:.1f}x the ReLU time), mass {tanh.total_mass:.6f}")
    print(f"seconds={best:.3f}")


if __name__ == "__main__":
    main()
