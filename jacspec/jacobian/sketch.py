"""Output sketching: an unbiased estimate of ``M = 𝒥𝒥^T`` at ``r/k`` of the backward passes.

For a random ``u`` in ``R^k`` with ``E[u u^T] = I_k``,
``M_ij = tr(J_i^T J_j) = E_u[<J_i^T u, J_j^T u>]``. With ``r`` projections ``u_1..u_r``
stacked as the rows of ``U`` (``r x k``) and **shared by every example**, the sketched rows
``S_i = U J_i / sqrt(r)`` (``r x d``) give ``tr(S_i S_j^T) = tr(J_i^T (U^T U / r) J_j)``, and
``E[U^T U] = r I_k`` makes ``M̂ = (tr(S_i S_j^T))_ij`` unbiased for every entry of ``M``.
``U J_i`` is ``r`` vector-Jacobian products (cotangent rows ``u_a``): one forward pass and
``r`` cotangents instead of ``k``; the ``k x d`` Jacobian is never formed.

Projections (``kind``):

- ``"orthonormal"``: ``U = sqrt(k') Q`` with ``Q`` (``r x k'``) Haar-random
  orthonormal rows, so ``S_i = sqrt(k'/r) Q J_i``; ``E[Q^T Q] = (r/k') I`` gives
  ``E[U^T U] = r I``. No direction is drawn twice, so at ``r = k'`` the sketch *is* ``M``
  (round-off aside) and for smaller ``r`` the variance of linear statistics (the trace) is
  that of independent rows times ``1 - r/k'`` (sampling without replacement).
- ``"rademacher"`` (default): independent ``±1`` entries (``E[u u^T] = I``). A quadratic
  form's Rademacher estimate has variance ``2 Σ_{a != b} A_ab^2`` (no diagonal term), against
  about ``2 ||A||_F^2 (1 - r/k')`` for orthonormal rows: where the class Gram is diagonally
  dominant (many classes, ``docs/results/sketching.md``) Rademacher is several times more
  accurate at small ``r``; orthonormal wins near ``r = k'``.

Why shared and not per-example: with independent ``U_i`` for each example,
``E[tr(S_i S_j^T)] = tr(J_i^T E[U_i]^T E[U_j] J_j) / r = 0`` for ``i != j`` (``E[U] = 0``):
the off-diagonal of ``M`` would be estimated by zero. Per-example projections estimate only
``diag(M)`` (``||J_i||_F^2``), so jacspec offers shared projections only.

Softmax rows (``1^T J_i = 0``) are sketched in the class-sum-zero basis: ``u`` lives in the
``k' = k - 1`` dimensional complement of ``1`` (cotangent rows ``Q_c u`` sum to zero,
``Q_c`` an orthonormal ``k x (k-1)`` basis of it), so no projection is wasted on the
direction every ``J_i`` annihilates, ``r = k - 1`` orthonormal projections are exact, and
``E[U^T U] = r P`` with ``P = Q_c Q_c^T`` still gives ``tr(J_i^T P J_j) = M_ij``. The
sketched rows themselves no longer sum to zero (``rows_sum_to_zero=False``): the sketched
Gram has ``r d`` columns and rank at most ``min(n, r d)``; the exact ESD's structural zeros
have no counterpart to deflate.

Error bars (:func:`sketch_estimate`): the ``r`` projections are split into ``B`` groups;
each group's Gram scaled by ``r/|group|`` is an unbiased estimate of ``M``. ``lambda_max``,
the trace and the ESD's CDF get the delete-one-group jackknife: bias-corrected value
``θ̂ - f (B-1) (mean_b θ_(-b) - θ̂)``, standard error
``sqrt(f (B-1)/B Σ_b (θ_(-b) - mean)^2)`` with ``f = 1`` for Rademacher and
``f = 1 - r/k'`` for orthonormal projections (their bias and variance scale as
``1/r - 1/k'``, not ``1/r``: at ``r = k'`` the sketch is exact and so is the estimate)
and a Student-t interval with ``B - 1`` degrees of freedom, widened on both sides by the
size of the bias correction ``|θ_J - θ̂|``. For the trace (linear in ``M``) the correction
is zero and this is the exact t interval of the group estimates; ``lambda_max`` (convex in ``M``, so
``E[λ̂_max] >= λ_max``) and the CDF rely on the first-order correction, whose own error the
widening covers (the correction alone over-corrects the ESD's lower quantiles).
``experiments/sketch_accuracy.py`` measures the coverage (``docs/results/sketching.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from jacspec.data.batches import require_reiterable
from jacspec.jacobian.options import (
    AUTO_SKETCH_MIN_K,
    AUTO_SKETCH_R,
    SKETCH_KINDS,
    JacobianOptions,
    resolve_options,
)
from jacspec.jacobian.sketch_rows import (
    check_r,
    iter_sketched_jacobians,
    resolve_sketch,
    sketch_dim,
    sketch_projections,
)
from jacspec.jacobian.source import JacobianSource, SketchSource

__all__ = [
    "AUTO_SKETCH_MIN_K",
    "AUTO_SKETCH_R",
    "SKETCH_KINDS",
    "SketchEstimate",
    "SketchSource",
    "iter_sketched_jacobians",
    "resolve_sketch",
    "sketch_dim",
    "sketch_error_bars",
    "sketch_estimate",
    "sketch_projections",
    "sketch_source",
]


def sketch_source(
    model: nn.Module,
    data: Any,
    r: int,
    options: JacobianOptions | None = None,
    *,
    kind: str | None = None,
    seed: int | None = None,
    **fields: Any,
) -> SketchSource:
    """The sketched input->output rows of ``model`` on ``data`` with ``r`` shared projections
    (``kind``/``seed`` default to ``options.sketch_kind``/``options.sketch_seed``; a seed
    left None is 0): ``JacobianSource.from_model`` with ``sketch=r``."""
    opts = resolve_options(options, **fields)
    kind = opts.sketch_kind if kind is None else kind
    seed = opts.sketch_seed if seed is None else seed
    seed = 0 if seed is None else seed
    require_reiterable(data, "a sketched JacobianSource")
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
        check_r(r, 1, False)  # the TypeError, before any pass
    if r < 1:  # from_model reads sketch=0 as "no sketch": the ValueError naming k' here
        plain = JacobianSource.from_model(model, data, opts.replace(sketch=None))
        check_r(r, plain.k, plain.rows_sum_to_zero)
    src = JacobianSource.from_model(
        model, data, opts.replace(sketch=int(r), sketch_kind=kind, sketch_seed=seed)
    )
    assert isinstance(src, SketchSource)
    return src


# --------------------------------------------------------------------- error bars

@dataclass(frozen=True)
class SketchEstimate:
    """``lambda_max``, trace and ESD CDF of ``M/n`` (``scale="n"``) or ``M`` from ``r``
    sketched projections, with jackknife bands at ``level`` (see the module docstring).

    ``eigenvalues``: the plain sketch's (descending, padded with zeros to ``min(n, k d)``,
    the exact ESD's count); ``loo_eigenvalues``: one row per left-out group. ``lambda_max``
    and ``trace`` are the jackknife bias-corrected values, ``lambda_max_se``/``trace_se``
    their jackknife standard errors; ``grid``/``cdf``/``cdf_low``/``cdf_high``: the CDF band
    on a grid (any point: :meth:`cdf_band`).
    """

    lambda_max: float
    lambda_max_low: float
    lambda_max_high: float
    trace: float
    trace_low: float
    trace_high: float
    eigenvalues: np.ndarray
    loo_eigenvalues: np.ndarray
    grid: np.ndarray
    cdf: np.ndarray
    cdf_low: np.ndarray
    cdf_high: np.ndarray
    n: int
    k: int
    r: int
    groups: int
    scale: str
    level: float
    settings: dict[str, Any] = field(default_factory=dict)
    lambda_max_se: float = math.nan
    trace_se: float = math.nan

    @property
    def method(self) -> str:
        return "sketch"

    def _t(self) -> float:
        from scipy.stats import t

        return float(t.ppf(0.5 + self.level / 2, self.groups - 1))

    def _fpc(self) -> float:
        return float(self.settings.get("fpc", 1.0))

    def cdf_band(self, t: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(estimate, low, high)`` of the ESD's CDF ``F(t)`` at the points ``t``."""
        pts = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return _cdf_band(self.eigenvalues, self.loo_eigenvalues, pts, self._t(), self._fpc())

    def summary(self) -> dict[str, Any]:
        return {
            "method": "sketch", "r": self.r, "groups": self.groups, "level": self.level,
            "lambda_max": self.lambda_max, "lambda_max_low": self.lambda_max_low,
            "lambda_max_high": self.lambda_max_high, "lambda_max_se": self.lambda_max_se,
            "trace": self.trace, "trace_se": self.trace_se,
            "trace_low": self.trace_low, "trace_high": self.trace_high, "n": self.n,
            "k": self.k, "scale": self.scale,
        }

    def to_dict(self) -> dict[str, Any]:
        from jacspec._util.json import jsonable

        return jsonable({"settings": self.settings, "summary": self.summary(),
                         "eigenvalues": self.eigenvalues, "grid": self.grid, "cdf": self.cdf,
                         "cdf_low": self.cdf_low, "cdf_high": self.cdf_high})

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([self.summary()])


def _jackknife(full: np.ndarray, loo: np.ndarray, t: float, fpc: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bias-corrected value, interval and standard error from the full and
    leave-one-group-out values: ``est ± (t se + |est - full|)`` (the correction's own size
    widens the band: it is a first-order extrapolation, measured to over-correct the ESD's
    lower quantiles), so the band holds both ``est`` and ``full``. ``fpc``: ``1 - r/k'`` for
    orthonormal projections, whose bias and variance scale as ``1/r - 1/k'`` (no direction
    drawn twice; exact at ``r = k'``), else 1."""
    b = loo.shape[0]
    mean = loo.mean(axis=0)
    est = full - fpc * (b - 1) * (mean - full)
    se = np.sqrt(fpc * (b - 1) / b * ((loo - mean) ** 2).sum(axis=0))
    half = t * se + np.abs(est - full)
    return est, est - half, est + half, se


def _cdf(ev: np.ndarray, pts: np.ndarray) -> np.ndarray:
    s = np.sort(ev)
    return np.searchsorted(s, pts, side="right") / max(s.size, 1)


def _cdf_band(ev: np.ndarray, loo: np.ndarray, pts: np.ndarray, t: float, fpc: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    full = _cdf(ev, pts)
    each = np.stack([_cdf(e, pts) for e in loo])
    est, lo, hi, _ = _jackknife(full, each, t, fpc)
    return np.clip(est, 0, 1), np.clip(lo, 0, 1), np.clip(hi, 0, 1)


def _eig_desc(mat: np.ndarray, m: int) -> np.ndarray:
    ev = np.clip(np.linalg.eigvalsh(mat)[::-1], 0.0, None)
    out = np.zeros(m)
    out[: min(m, ev.size)] = ev[:m]
    return out


def _eig_top(mat: np.ndarray, m: int) -> np.ndarray:
    """``[lambda_max, trace]`` of a symmetric PSD matrix (the largest eigenvalue alone)."""
    from scipy.linalg import eigh

    s = mat.shape[0]
    top = float(eigh(mat, eigvals_only=True, subset_by_index=[s - 1, s - 1])[0])
    return np.array([max(top, 0.0), float(np.trace(mat))])


def _sketch_info(src: JacobianSource) -> dict[str, Any]:
    info = src.info.get("sketch") if isinstance(src, JacobianSource) else None
    if not info:
        raise TypeError("expected a sketched JacobianSource (sketch_source(...) or its "
                        f"cached()); got {type(src).__name__}")
    return info


def _check_groups(r: int, groups: int | None) -> int:
    if r < 2:
        raise ValueError(f"error bars need at least 2 projections (2 groups); got r={r}")
    b = min(r, 8) if groups is None else groups
    if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= r:
        raise ValueError(f"groups must be an integer between 2 and r={r}; got {groups!r}")
    return b


def _loo_values(
    src: JacobianSource, b: int, scale: str, top: bool
) -> tuple[np.ndarray, np.ndarray, int, str]:
    """The sketch's eigenvalues and one row per left-out group (one pass over ``src``).

    Each group's Gram scaled by ``r/(r - |group|)`` once it is left out: on the dual side
    (``r d <= n``) a principal submatrix of the streamed ``r d x r d`` Gram; on the primal
    side ``total - G_b`` with the rows held (as the primal Gram holds them), one group Gram
    at a time. ``top``: ``[lambda_max, trace]`` only (one eigenvalue per solve), else all
    ``min(n, k d)`` eigenvalues, descending, zero-padded."""
    r, d = src.k, src.d
    info = _sketch_info(src)
    parts = np.array_split(np.arange(r), b)
    dual_side = src.n is not None and r * d <= src.n
    dual = np.zeros((r * d, r * d)) if dual_side else None
    held: list[np.ndarray] = []
    n = 0
    for bt in src:
        flat = bt.jac.detach().to("cpu", torch.float64).reshape(bt.jac.shape[0], r * d).numpy()
        n += flat.shape[0]
        if dual is not None:
            dual += flat.T @ flat
        else:
            held.append(flat)
    c = 1.0 / n if scale == "n" else 1.0
    m = min(n, int(info["k_full"]) * d)

    def solve(mat: np.ndarray) -> np.ndarray:
        return _eig_top(mat, m) if top else _eig_desc(mat, m)

    loo = []
    if dual is not None:  # leave-one-group-out = principal submatrix
        full = solve(c * dual)
        for p in parts:
            keep = np.ones(r, dtype=bool)
            keep[p] = False
            idx = np.flatnonzero(np.repeat(keep, d))
            loo.append(solve(c * r / (r - len(p)) * dual[np.ix_(idx, idx)]))
        side = "dual"
    else:
        rows = np.concatenate(held).reshape(n, r, d)
        del held
        flat = rows.reshape(n, r * d)
        total = flat @ flat.T
        full = solve(c * total)
        for p in parts:
            part = rows[:, p, :].reshape(n, -1)
            loo.append(solve(c * r / (r - len(p)) * (total - part @ part.T)))
        side = "primal"
    return full, np.stack(loo), n, side


def _fpc(src: JacobianSource) -> float:
    info = _sketch_info(src)
    kk = sketch_dim(int(info["k_full"]), bool(info["deflated"]))
    return 1.0 - src.k / kk if info["kind"] == "orthonormal" else 1.0


def _t_quantile(level: float, b: int) -> float:
    from scipy.stats import t as student

    return float(student.ppf(0.5 + level / 2, b - 1))


def _check_level(level: Any) -> None:
    if not (isinstance(level, float) and 0.0 < level < 1.0):
        raise ValueError(f"level must be a float strictly between 0 and 1; got {level!r}")


def sketch_error_bars(
    src: JacobianSource,
    *,
    groups: int | None = None,
    level: float = 0.95,
    scale: str = "n",
) -> dict[str, Any]:
    """The jackknife error bars of :func:`sketch_estimate` for ``lambda_max`` and the trace
    of a sketched source's ``M/n`` (or ``M``), without the ESD's CDF (one eigenvalue per
    solve): ``lambda_max_se``, ``lambda_max_low``, ``lambda_max_high``, ``trace_se``,
    ``trace_low``, ``trace_high`` (the band holds the plain sketch's value and the
    bias-corrected one, ``lambda_max_jackknife``/``trace_jackknife``), with ``groups``,
    ``level``, ``fpc`` and ``side``. ``src``: a :class:`SketchSource` or its ``cached()``
    (then its held rows are read, not recomputed)."""
    if scale not in ("n", "none"):
        raise ValueError(f"scale must be 'n' or 'none'; got {scale!r}")
    _check_level(level)
    _sketch_info(src)
    b = _check_groups(src.k, groups)
    full, loo, _, side = _loo_values(src, b, scale, top=True)
    fpc = _fpc(src)
    est, lo, hi, se = _jackknife(full, loo, _t_quantile(level, b), fpc)
    return {
        "lambda_max_se": float(se[0]), "lambda_max_low": max(float(lo[0]), 0.0),
        "lambda_max_high": float(hi[0]), "trace_se": float(se[1]),
        "trace_low": max(float(lo[1]), 0.0), "trace_high": float(hi[1]),
        "lambda_max_jackknife": float(est[0]), "trace_jackknife": float(est[1]),
        "lambda_max_plain": float(full[0]), "trace_plain": float(full[1]),
        "groups": b, "level": level, "fpc": fpc, "side": side,
    }


def sketch_estimate(
    model: nn.Module | SketchSource,
    data: Any = None,
    r: int = 16,
    *,
    groups: int | None = None,
    scale: str = "n",
    level: float = 0.95,
    options: JacobianOptions | None = None,
    grid_points: int = 65,
    **fields: Any,
) -> SketchEstimate:
    """``lambda_max``, trace and the ESD CDF of ``M/n`` (or ``M``) with error bars from ``r``
    shared sketched projections split into ``groups`` (default ``min(r, 8)``; at least 2).

    ``model`` is a model (with ``data``; ``options`` or its fields, ``sketch_kind``,
    ``sketch_seed`` ..., as keywords) or a sketched source (:class:`SketchSource` or its
    ``cached()``). The Gram is streamed on the dual side (``r d <= n``); the primal side
    holds the sketched rows (``n r d`` float64 numbers), as the primal Gram does.
    """
    if scale not in ("n", "none"):
        raise ValueError(f"scale must be 'n' or 'none'; got {scale!r}")
    _check_level(level)
    is_source = isinstance(model, JacobianSource) and model.info.get("sketch")
    src = model if is_source else sketch_source(model, data, r, options, **fields)
    r = src.k
    b = _check_groups(r, groups)
    full, loo_arr, n, side = _loo_values(src, b, scale, top=False)
    fpc = _fpc(src)
    tq = _t_quantile(level, b)
    lam, lam_lo, lam_hi, lam_se = _jackknife(full[:1], loo_arr[:, :1], tq, fpc)
    tr, tr_lo, tr_hi, tr_se = _jackknife(full.sum(keepdims=True),
                                         loo_arr.sum(axis=1, keepdims=True), tq, fpc)
    top = max(float(lam_hi[0]), float(full[0]))
    grid = np.linspace(0.0, top, grid_points)
    cdf, lo, hi = _cdf_band(full, loo_arr, grid, tq, fpc)
    settings = {**src.settings, "method": "sketch", "groups": b, "level": level,
                "scale": scale, "side": side, "fpc": fpc,
                "lambda_max_plain": float(full[0]), "trace_plain": float(full.sum())}
    return SketchEstimate(
        lambda_max=float(lam[0]), lambda_max_low=max(float(lam_lo[0]), 0.0),
        lambda_max_high=float(lam_hi[0]), trace=float(tr[0]),
        trace_low=max(float(tr_lo[0]), 0.0), trace_high=float(tr_hi[0]), eigenvalues=full,
        loo_eigenvalues=loo_arr, grid=grid, cdf=cdf, cdf_low=lo, cdf_high=hi, n=n,
        k=int(_sketch_info(src)["k_full"]), r=r, groups=b, scale=scale, level=level,
        settings=settings, lambda_max_se=float(lam_se[0]), trace_se=float(tr_se[0]),
    )
