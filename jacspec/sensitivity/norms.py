"""Sensitivity of a classifier to its input (Novak et al., ICLR 2018).

* Jacobian norm ``||J(x)||_F`` of the softmax output ``sigma(f(x))`` (or the logits
  ``f(x)``) at each point, and its mean over a data set.
* Finite differences: ``E_{dx ~ N(0, eps I)} ||g(x + dx) - g(x)||^2 / eps`` which
  tends to ``||J(x)||_F^2`` as ``eps -> 0``.
* Per-point generalization: with ``l = -log sigma_y`` the cross-entropy, ``n``
  classes and ``M = E_x ||d f / d x||_F^2 / n`` (logit Jacobian, over the data),
  eq. 5: ``sqrt(nM/(n-1)) e^-l (1-e^-l) <~ ||J_y||_2 <~ sqrt(2M) e^-l (1-e^-l)``,
  eq. 6: the same lower bound for ``||J||_F``,
  eq. 7: ``||J||_F ~ sqrt(M)/(n-1) (1-e^-l) sqrt(n^2 e^-2l + n - 2)``.

Jacobians come from :meth:`jacspec.jacobian.source.JacobianSource.from_model` one batch at a
time; the softmax Jacobian is formed from the logit one, ``J = (diag(s) - s s^T) J_f``. On
the factored route (``options.route``, :mod:`jacspec.jacobian.factored`) the rows are
``A_i L`` with ``L L^T = W W^T`` for the first linear layer ``W``: ``||J_i||_F^2 =
tr(A_i W W^T A_i^T) = ||A_i L||_F^2`` and every per-class row norm is unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from jacspec._util.json import jsonable
from jacspec._util.random import torch_generator
from jacspec._util.validation import check_choice, positive_int
from jacspec.data.batches import iter_batches
from jacspec.jacobian.engine import prepare_model
from jacspec.jacobian.options import JacobianOptions, resolve_options
from jacspec.jacobian.source import JacobianSource

log = logging.getLogger(__name__)

__all__ = [
    "PerPointSensitivity",
    "cross_entropy",
    "finite_difference_sensitivity",
    "jacobian_norms",
    "loss_bounds",
    "mean_jacobian_norm",
    "per_point_generalization",
    "softmax_jacobian",
]

NORM_OUTPUTS = ("softmax", "logits")


def softmax_jacobian(logit_jac: Tensor, logits: Tensor) -> Tensor:
    """Softmax Jacobian from the logit one: ``J_c = s_c (J_f[c] - sum_j s_j J_f[j])``.

    ``logit_jac`` (b, k, *shape), ``logits`` (b, k) -> (b, k, *shape). Evaluated as
    ``s_c sum_{j != c} s_j (J_f[c] - J_f[j])`` so that a saturated softmax
    (``1 - s_c`` below machine epsilon) loses no precision.
    """
    b, k = logit_jac.shape[0], logit_jac.shape[1]
    s = torch.softmax(logits.to(logit_jac.dtype), dim=1)
    flat = logit_jac.reshape(b, k, -1)
    off = 1.0 - torch.eye(k, dtype=s.dtype, device=s.device)
    weights = s.unsqueeze(1) * off  # (b, c, j): s_j for j != c
    rest = weights.sum(dim=2)  # 1 - s_c, summed from the small entries
    out = rest.unsqueeze(-1) * flat - torch.bmm(weights, flat)
    return (s.unsqueeze(-1) * out).reshape(logit_jac.shape)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-point ``-log softmax(z)_y`` accurate for tiny losses: ``log1p(sum_{j!=y} e^{z_j-z_y})``.

    (b, k), (b,) -> (b,) in the logits' dtype.
    """
    zy = logits.gather(1, y[:, None])
    diff = logits - zy
    diff = diff.scatter(1, y[:, None], float("-inf"))
    top = diff.max(dim=1, keepdim=True).values
    small = torch.log1p(torch.exp(diff).sum(dim=1))
    general = torch.logsumexp(torch.cat([diff, torch.zeros_like(zy)], dim=1), dim=1)
    return torch.where(top[:, 0] <= 0, small, general)


@dataclass(frozen=True)
class _NormBatch:
    start: int
    logits: Tensor  # (b, k)
    y: Tensor | None
    softmax_fro: Tensor  # (b,)
    logit_fro_sq: Tensor  # (b,)
    softmax_row_norms: Tensor  # (b, k): ||J_c||_2 of the softmax Jacobian


def norm_options(options: JacobianOptions | None, **fields: Any) -> JacobianOptions:
    """``options`` with its ``fields`` as keywords, resolved once, for Jacobian norms: the
    engine runs on the logits (``output="logits"``; the softmax Jacobian is formed from
    them). Any route gives the same norms (factored rows ``A_i L`` have ``||A_i L||_F =
    ||A_i W||_F`` since ``L L^T = W W^T``); a sketch is refused: norms use every output."""
    opts = resolve_options(options, **fields)
    if opts.sketch not in (None, 0):
        raise ValueError(
            f"sketch={opts.sketch!r} applies to the ESD (jacspec.esd, jacspec.analyze); "
            "Jacobian norms are computed from every output: pass sketch=None"
        )
    return opts.replace(output="logits", sketch=None)


def _norm_source(
    model: nn.Module, data: Any, options: JacobianOptions | None, **fields: Any
) -> JacobianSource:
    """The logit Jacobian's rows (``options`` or its fields whole, ``output="logits"``)."""
    return JacobianSource.from_model(model, data, norm_options(options, **fields))


def _iter_norms(
    model: nn.Module, data: Any, options: JacobianOptions | None, *,
    source: JacobianSource | None = None, **fields: Any,
) -> Iterator[_NormBatch]:
    """Per-batch norms from the logit Jacobians; only one batch of Jacobians is alive.

    ``options`` (or its fields) reach the engine whole, with ``output="logits"`` (the softmax
    Jacobian is formed from the logit Jacobian here); rows of either route."""
    src = source if source is not None else _norm_source(model, data, options, **fields)
    for jb in src:
        jl = jb.jac.reshape(jb.jac.shape[0], jb.jac.shape[1], -1)
        js = softmax_jacobian(jl, jb.out)
        rows = js.pow(2).sum(dim=2)
        yield _NormBatch(
            start=jb.start,
            logits=jb.out,
            y=jb.y,
            softmax_fro=rows.sum(dim=1).sqrt(),
            logit_fro_sq=jl.pow(2).sum(dim=(1, 2)),
            softmax_row_norms=rows.sqrt(),
        )


def jacobian_norms(
    model: nn.Module,
    data: Any,
    *,
    output: str = "softmax",
    options: JacobianOptions | None = None,
    **fields: Any,
) -> Tensor:
    """Per-point ``||J(x_i)||_F`` of the softmax (or ``output="logits"``) -> Tensor (n,).

    Computed batch by batch; the result has the computation dtype (float32 unless
    ``dtype=torch.float64``). ``options`` (:class:`~jacspec.jacobian.options.JacobianOptions`)
    or its fields as keywords (``dtype``, ``device``, ``batch_size``, ``jacobian_method``,
    ``check_independence``, ``progress``, ``route``; :func:`norm_options`); the engine runs
    on the logits whatever ``options.output``.
    """
    check_choice("output", output, NORM_OUTPUTS)
    parts = []
    for nb in _iter_norms(model, data, options, **fields):
        parts.append(nb.softmax_fro if output == "softmax" else nb.logit_fro_sq.sqrt())
    return torch.cat(parts)


def mean_jacobian_norm(
    model: nn.Module,
    data: Any,
    *,
    output: str = "softmax",
    options: JacobianOptions | None = None,
    **fields: Any,
) -> float:
    """``E_x ||J(x)||_F`` over ``data`` (Novak et al.'s reported metric); keywords as in
    :func:`jacobian_norms`."""
    norms = jacobian_norms(model, data, output=output, options=options, **fields)
    return float(norms.double().mean())


def finite_difference_sensitivity(
    model: nn.Module,
    data: Any,
    *,
    eps: float = 1e-6,
    num_samples: int = 256,
    output: str = "softmax",
    dtype: torch.dtype | None = None,
    seed: int | torch.Generator = 0,
    batch_size: int | None = None,
) -> Tensor:
    """``E_{dx ~ N(0, eps I)} ||g(x+dx) - g(x)||^2 / eps`` per point -> Tensor (n,).

    ``eps`` is the variance of each coordinate of ``dx``; the expectation is the
    mean over ``num_samples`` draws, which estimates ``||J(x)||_F^2`` (squared
    norm) up to ``O(eps)`` bias and a Monte Carlo error ``~ 1/sqrt(num_samples)``.
    """
    check_choice("output", output, NORM_OUTPUTS)
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool)) or not eps > 0:
        raise ValueError(f"eps={eps!r} must be a positive float (the variance of dx)")
    positive_int("num_samples", num_samples)
    gen = torch_generator(seed)
    run, dt, dev = prepare_model(model, dtype, None)
    std = math.sqrt(eps)

    def g(x: Tensor) -> Tensor:
        z = run(x)
        return torch.softmax(z, dim=1) if output == "softmax" else z

    chunk = max(1, min(num_samples, 4096))
    out = []
    with torch.no_grad():
        for x, _ in iter_batches(data, batch_size or 256):
            x = x.to(device=dev, dtype=dt)
            base = g(x)
            acc = torch.zeros(x.shape[0], dtype=dt, device=dev)
            for i in range(x.shape[0]):
                done = 0
                while done < num_samples:
                    m = min(chunk, num_samples - done)
                    noise = torch.randn((m, *x.shape[1:]), generator=gen, dtype=dt) * std
                    diff = g(x[i : i + 1] + noise.to(dev)) - base[i : i + 1]
                    acc[i] += diff.pow(2).sum()
                    done += m
            out.append(acc / (num_samples * eps))
    if not out:
        raise ValueError("data is empty; expected at least one point")
    return torch.cat(out)


def loss_bounds(loss: np.ndarray, M: float, num_classes: int) -> dict[str, np.ndarray]:
    """Eq. 5/6 bounds and the eq. 7 approximation as functions of the loss ``l``.

    Returns arrays ``eq5_lower`` (= ``eq6_lower``), ``eq5_upper`` and ``eq7``.
    """
    n = int(num_classes)
    if n < 2:
        raise ValueError(f"num_classes={num_classes!r} must be at least 2")
    if not (M >= 0 and math.isfinite(M)):
        raise ValueError(f"M={M!r} must be a finite non-negative number")
    loss = np.asarray(loss, dtype=np.float64)
    p, q = np.exp(-loss), -np.expm1(-loss)  # e^-l and 1 - e^-l without cancellation
    lower = math.sqrt(n * M / (n - 1)) * p * q
    upper = math.sqrt(2 * M) * p * q
    eq7 = math.sqrt(M) / (n - 1) * q * np.sqrt(n**2 * p**2 + n - 2)
    return {"eq5_lower": lower, "eq5_upper": upper, "eq6_lower": lower, "eq7": eq7}


@dataclass(frozen=True)
class PerPointSensitivity:
    """Per-point Jacobian norms, losses and the loss bounds of eqs. 5-7.

    ``frame`` columns: index, label, prediction, correct, loss, jacobian_norm
    (``||J||_F`` softmax), target_jacobian_norm (``||J_y||_2``), logit_jacobian_norm,
    eq5_lower, eq5_upper, eq6_lower, eq7, in_eq5, in_eq6, below_eq7.
    """

    frame: pd.DataFrame = field(repr=False)
    M: float
    num_classes: int
    settings: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """Fractions of points inside each bound, plus means (JSON-able)."""
        f = self.frame
        ratio = f["jacobian_norm"] / f["eq7"].where(f["eq7"] > 0)
        within2 = ((ratio >= 0.5) & (ratio <= 2.0)).mean()
        return jsonable({
            "num_points": int(len(f)),
            "num_classes": self.num_classes,
            "M": self.M,
            "accuracy": float(f["correct"].mean()),
            "mean_loss": float(f["loss"].mean()),
            "jacobian_norm_mean": float(f["jacobian_norm"].mean()),
            "fraction_in_eq5": float(f["in_eq5"].mean()),
            "fraction_above_eq5_lower": float(
                (f["target_jacobian_norm"] >= f["eq5_lower"]).mean()
            ),
            "fraction_below_eq5_upper": float(
                (f["target_jacobian_norm"] <= f["eq5_upper"]).mean()
            ),
            "fraction_in_eq6": float(f["in_eq6"].mean()),
            "fraction_below_eq7": float(f["below_eq7"].mean()),
            "fraction_within_2x_eq7": float(within2),
            "settings": jsonable(self.settings),
        })

    def to_frame(self) -> pd.DataFrame:
        """One row per point (the columns of ``frame``; a copy)."""
        return self.frame.copy()

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus ``"points"``: one record per row of :meth:`to_frame`."""
        return {**self.summary(), "points": jsonable(self.frame)}

    def plot(self, **kwargs: Any) -> Any:
        """Per-point norms against the bounds (:func:`jacspec.report.sensitivity_plots.
        plot_per_point`)."""
        from jacspec.report.sensitivity_plots import plot_per_point

        return plot_per_point(self, **kwargs)


def per_point_generalization(
    model: nn.Module,
    data: Any,
    *,
    M: float | None = None,
    options: JacobianOptions | None = None,
    **fields: Any,
) -> PerPointSensitivity:
    """Jacobian norm, cross-entropy and correctness per labelled point, with eqs. 5-7.

    ``M`` defaults to ``mean_x ||d f/d x||_F^2 / n`` over ``data`` itself (logits ``f``).
    A point is inside eq. 5 when ``lower <= ||J_y||_2 <= upper``, inside eq. 6 when
    ``||J||_F >= lower``; ``below_eq7`` marks ``||J||_F <= eq7``. ``options`` or its
    fields as keywords as in :func:`jacobian_norms`.
    """
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("label", "prediction", "loss", "fro", "target", "logit_sq")
    }
    num_classes = None
    run_dtype = None
    opts = norm_options(options, **fields)
    source = JacobianSource.from_model(model, data, opts)
    for nb in _iter_norms(model, data, options, source=source):
        if nb.y is None:
            raise ValueError("data has no labels; per-point generalization needs (x, y) data")
        y = nb.y.long().to(nb.logits.device)
        num_classes = nb.logits.shape[1]
        run_dtype = nb.logits.dtype
        if (y < 0).any() or (y >= num_classes).any():
            raise ValueError(
                f"labels must lie in [0, {num_classes}) for a {num_classes}-class model"
            )
        cols["label"].append(y.cpu().numpy())
        cols["prediction"].append(nb.logits.argmax(dim=1).cpu().numpy())
        cols["loss"].append(cross_entropy(nb.logits.double(), y).cpu().numpy())
        cols["fro"].append(nb.softmax_fro.double().cpu().numpy())
        target = nb.softmax_row_norms.gather(1, y[:, None])[:, 0]
        cols["target"].append(target.double().cpu().numpy())
        cols["logit_sq"].append(nb.logit_fro_sq.double().cpu().numpy())
    assert num_classes is not None
    arr = {k: np.concatenate(v) for k, v in cols.items()}
    m_est = float(arr["logit_sq"].mean() / num_classes) if M is None else float(M)
    bounds = loss_bounds(arr["loss"], m_est, num_classes)
    frame = pd.DataFrame(
        {
            "index": np.arange(len(arr["loss"])),
            "label": arr["label"],
            "prediction": arr["prediction"],
            "correct": arr["label"] == arr["prediction"],
            "loss": arr["loss"],
            "jacobian_norm": arr["fro"],
            "target_jacobian_norm": arr["target"],
            "logit_jacobian_norm": np.sqrt(arr["logit_sq"]),
            **bounds,
        }
    )
    frame["in_eq5"] = (frame["target_jacobian_norm"] >= frame["eq5_lower"]) & (
        frame["target_jacobian_norm"] <= frame["eq5_upper"]
    )
    frame["in_eq6"] = frame["jacobian_norm"] >= frame["eq6_lower"]
    frame["below_eq7"] = frame["jacobian_norm"] <= frame["eq7"]
    settings = {
        "dtype": str(run_dtype).replace("torch.", ""),
        "M_source": "data" if M is None else "given",
        "output": "softmax",
        "jacobian": opts.to_dict(),
        "route": source.route,
    }
    return PerPointSensitivity(
        frame=frame, M=m_est, num_classes=int(num_classes), settings=settings
    )
