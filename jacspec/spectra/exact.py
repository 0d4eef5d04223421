"""Exact eigenvalues of the data Jacobian's correlation matrix ``M = 𝒥𝒥^T``.

The empirical spectral density (ESD) is that of ``M/n`` by default (``scale="n"``, the
empirical second moment, comparable across data-set sizes) or of the raw ``M``
(``scale="none"``). Eigenvalues come from whichever Gram side is smaller, in float64;
there are ``min(n, kd)`` of them (``M`` has ``n - kd`` further exact zeros when kd < n).
The eigensolve, clipping and rank rule are :func:`jacspec.spectra.eigen.exact_eigenvalues`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from jacspec._util.json import jsonable
from jacspec._util.validation import check_choice
from jacspec.jacobian.options import JacobianOptions
from jacspec.spectra.eigen import RANK_RULE, SCALES, exact_eigenvalues
from jacspec.spectra.gram import Gram, check_fits, gram, gram_side, primal_from_rows
from jacspec.spectra.spectrum import Spectrum

__all__ = ["ESD", "SCALES", "eigenvalues_from_jacobian", "esd", "esd_from_gram"]


@dataclass(frozen=True)
class ESD(Spectrum):
    """Eigenvalues of ``M/n`` (``scale="n"``) or ``M`` (``scale="none"``), descending.

    ``rank`` counts eigenvalues above ``tol`` (:func:`jacspec.spectra.eigen.rank_tolerance`:
    the largest value a true zero eigenvalue can take given the Jacobian's rounding error);
    eigenvalues that round-off pushed below zero are set to 0 (``num_negative_clipped`` of
    them). ``unresolved``: quantities the Jacobian's dtype could not resolve ("" if none; see
    :func:`jacspec.spectra.eigen.unresolved_quantities`). A :class:`Spectrum` with method
    ``"exact"``; ``settings`` holds what the fields do not (the full record is
    :meth:`describe`).
    """

    eigenvalues: np.ndarray
    n: int
    k: int
    input_shape: tuple[int, ...]
    side: str
    scale: str
    output: str
    dtype: str
    rank: int
    tol: float
    num_negative_clipped: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    unresolved: str = ""

    @property
    def d(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 0

    @property
    def method(self) -> str:
        return str(self.settings.get("method", "exact"))

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[0]) if self.eigenvalues.size else 0.0

    @property
    def trace(self) -> float:
        return float(self.eigenvalues.sum())

    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        """Every eigenvalue with weight ``1/dim``."""
        ev = np.asarray(self.eigenvalues, dtype=np.float64)
        return ev, np.full(ev.size, 1.0 / max(ev.size, 1))

    def metrics(self) -> dict[str, Any]:
        """First metric table (see :func:`jacspec.spectra.metrics.spectral_metrics`)."""
        from jacspec.spectra.metrics import spectral_metrics

        return spectral_metrics(self.eigenvalues, rank=self.rank)

    def summary(self) -> dict[str, Any]:
        """:meth:`Spectrum.headline` plus the rank rule's tol, dtype, output, unresolved."""
        return jsonable({**self.headline(), "k": self.k, "d": self.d, "output": self.output,
                         "dtype": self.dtype, "tol": self.tol, "unresolved": self.unresolved,
                         "num_negative_clipped": self.num_negative_clipped})

    def describe(self) -> dict[str, Any]:
        """The settings that produced these eigenvalues (JSON-able)."""
        return {
            "n": self.n,
            "k": self.k,
            "d": self.d,
            "input_shape": list(self.input_shape),
            "side": self.side,
            "scale": self.scale,
            "matrix": "M/n" if self.scale == "n" else "M",
            "output": self.output,
            "dtype": self.dtype,
            "tol": self.tol,
            "rank_rule": RANK_RULE,
            "unresolved": self.unresolved,
            "num_negative_clipped": self.num_negative_clipped,
            **self.settings,
        }

    def to_dict(self) -> dict[str, Any]:
        """``{"settings", "eigenvalues", "metrics"}``: the CLI's JSON layout."""
        return jsonable({
            "settings": self.describe(),
            "eigenvalues": self.eigenvalues,
            "metrics": self.metrics(),
        })

    def to_frame(self) -> pd.DataFrame:
        """One row: the metrics followed by the settings."""
        row = {**self.metrics(), **{k: v for k, v in self.describe().items() if k != "input_shape"}}
        return pd.DataFrame([row])

    def plot(self, **kwargs: Any) -> Any:
        """Log-log histogram of the eigenvalues above ``tol``
        (:func:`jacspec.report.esd_plots.plot_esd_loglog`; ``kwargs`` go there)."""
        from jacspec.report.esd_plots import plot_esd_loglog

        return plot_esd_loglog(self.eigenvalues[: max(self.rank, 1)], **kwargs)


def _method(g: Gram) -> str:
    """``"sketched"`` when the Gram's rows are a sketch (an unbiased estimate of M from
    ``r`` random output projections: :mod:`jacspec.jacobian.sketch`), else ``"exact"``."""
    return "sketched" if "sketch" in g.settings.get("source", {}) else "exact"


def esd_from_gram(g: Gram, *, scale: str = "n", jac_error2: float | None = None) -> ESD:
    """The ESD of a :class:`~jacspec.spectra.gram.Gram` (exact, float64); ``jac_error2``: a measured
    bound on ``||d𝒥||^2`` for the rank rule (:func:`rank_tolerance`)."""
    check_choice("scale", scale, SCALES)
    ev = exact_eigenvalues(g.matrix, n=g.n, scale=scale, dtype=g.dtype,
                           known_zeros=g.num_known_zeros, jac_error2=jac_error2)
    return ESD(
        eigenvalues=ev.values,
        n=g.n,
        k=g.k,
        input_shape=g.input_shape,
        side=g.side,
        scale=scale,
        output=g.output,
        dtype=g.dtype,
        rank=ev.rank,
        tol=ev.tol,
        num_negative_clipped=ev.clipped,
        settings={"method": _method(g), "deflated": g.deflated,
                  **({"route": g.settings["route"]} if "route" in g.settings else {}),
                  **({"sketch": g.settings["source"]["sketch"]} if _method(g) == "sketched"
                     else {})},
        unresolved=ev.unresolved,
    )


def eigenvalues_from_jacobian(
    J: torch.Tensor, *, scale: str = "n", side: str = "auto", max_memory: int | None = None
) -> np.ndarray:
    """Exact eigenvalues (descending) of ``𝒥𝒥^T/n`` (or ``𝒥𝒥^T``) for a given ``(n, kd)`` tensor."""
    if not isinstance(J, torch.Tensor) or J.ndim != 2:
        raise ValueError("J must be a 2-D tensor (n, kd): the stacked, flattened Jacobians")
    check_choice("scale", scale, SCALES)
    check_choice("side", side, ("auto", "dual", "primal"))
    n, kd = J.shape
    chosen = gram_side(side, n, kd)
    check_fits(chosen, n, kd, J.element_size(), max_memory)
    if chosen == "dual":
        J64 = J.to(torch.float64)  # exact products of float32 entries (see rank_tolerance)
        mat = (J64.T @ J64).numpy()
    else:
        mat = primal_from_rows(J)
    dtype = str(J.dtype).replace("torch.", "")
    return exact_eigenvalues(mat, n=n, scale=scale, dtype=dtype).values


def esd(
    model: nn.Module,
    data: Any,
    *,
    scale: str = "n",
    side: str = "auto",
    max_memory: int | None = None,
    deflate: bool = True,
    options: JacobianOptions | None = None,
    **fields: Any,
) -> ESD:
    """Exact ESD of the data Jacobian's correlation matrix M = 𝒥𝒥^T of ``model`` on ``data``.

    Eigenvalues of ``M/n`` (``scale="n"``) or ``M = 𝒥𝒥^T`` (``scale="none"``), computed from
    the smaller Gram side in float64. ``side``, ``max_memory``, ``deflate`` and ``options``
    or its fields as keywords (``output``, ``dtype``, ``device``, ``batch_size``,
    ``jacobian_method``, ``check_independence``, ``progress``, ``route``, ``sketch``, ...)
    as in :func:`jacspec.spectra.gram.gram`.
    """
    check_choice("scale", scale, SCALES)
    g = gram(model, data, side=side, max_memory=max_memory, deflate=deflate, options=options,
             **fields)
    e = esd_from_gram(g, scale=scale)
    jac = {key: g.settings[key] for key in ("jacobian_method", "jacobian")}
    return replace(e, settings={**e.settings, **jac})
