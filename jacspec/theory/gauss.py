"""Gaussian expectations ``E_z f(sqrt(q) z)``, z ~ N(0, 1), by quadrature.

Smooth activations at moderate ``q`` use Gauss-Hermite (probabilists' weight);
activations whose ``phi'`` jumps (ReLU, hard tanh, ...) or very wide Gaussians use
composite Gauss-Legendre panels split at the kinks, so that every panel
integrates a smooth function and the rule converges spectrally.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from jacspec.theory.activations import Activation

Z_MAX = 10.0  # N(0,1) mass beyond +-10 is 1.5e-23
_GH_NODES = 200
_GL_NODES = 16


@lru_cache(maxsize=8)
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / math.sqrt(2.0 * math.pi)


@lru_cache(maxsize=8)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def composite_nodes(cuts: np.ndarray, panel: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights (Gaussian density included) on [-Z_MAX, Z_MAX], with panel
    edges at every cut and no panel wider than ``panel``."""
    edges = [-Z_MAX, Z_MAX, *[c for c in cuts if -Z_MAX < c < Z_MAX]]
    edges = np.unique(np.asarray(edges, dtype=np.float64))
    pieces = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        k = max(1, math.ceil((b - a) / panel))
        pieces.append(np.linspace(a, b, k + 1)[:-1])
    left = np.concatenate(pieces)
    right = np.append(left[1:], Z_MAX)
    x, w = _legendre(_GL_NODES)
    mid = 0.5 * (left + right)[:, None]
    half = 0.5 * (right - left)[:, None]
    z = (mid + half * x).ravel()
    wz = (half * w).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, wz


def gauss_nodes(act: Activation, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``h`` and weights ``w`` (summing to 1) with ``sum w f(h) ~ E f(sqrt(q) z)``."""
    if q < 0 or not math.isfinite(q):
        raise ValueError(f"q={q!r} must be a finite non-negative variance")
    if q == 0.0:
        return np.zeros(1), np.ones(1)
    s = math.sqrt(q)
    if act.smooth and not act.breakpoints and q <= 1.0:
        z, w = _hermite(_GH_NODES)
        return s * z, w
    cuts = np.asarray(act.breakpoints, dtype=np.float64) / s
    z, w = composite_nodes(cuts, panel=max(min(1.0, 1.0 / s), 0.01))
    return s * z, w


def expect(act: Activation, q: float, fn) -> float:
    """``E_z fn(sqrt(q) z)`` for ``fn`` mapping an array of h to an array."""
    h, w = gauss_nodes(act, q)
    return float(np.dot(w, fn(h)))


def expect2(act: Activation, q: float, c: float, fn1, fn2) -> float:
    """``E fn1(u1) fn2(u2)`` with (u1, u2) Gaussian, variances q, correlation c."""
    if q == 0.0:
        return float(fn1(np.zeros(1))[0] * fn2(np.zeros(1))[0])
    s = math.sqrt(q)
    cuts = np.asarray(act.breakpoints, dtype=np.float64) / s
    z, w = composite_nodes(cuts, panel=max(min(0.5, 0.5 / s), 0.01))
    c = float(np.clip(c, -1.0, 1.0))
    u1 = s * z
    u2 = s * (c * z[:, None] + math.sqrt(max(0.0, 1.0 - c * c)) * z[None, :])
    inner = fn2(u2) @ w
    return float(np.dot(w * fn1(u1), inner))
