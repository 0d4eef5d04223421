"""Stochastic trace estimators: Girard-Hutchinson and Hutch++.

tr A ≈ mean v^T A v over probes with E[v v^T] = I (:func:`hutchinson_trace`); Hutch++
(Meyer et al. 2021, :func:`hutchpp_trace`) first takes the trace of a sketched top subspace
exactly and estimates only the rest. A is any symmetric operator
:func:`jacspec.spectra.operators.as_operator` accepts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jacspec._util.json import jsonable
from jacspec._util.random import numpy_generator
from jacspec._util.validation import positive_int
from jacspec.spectra.lanczos import (
    SeedLike,
    apply_operator,
    orthonormal_basis,
    random_vectors,
    seed_repr,
)
from jacspec.spectra.operators import as_operator

__all__ = ["TraceEstimate", "hutchinson_trace", "hutchpp_trace"]


# --------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate ``value`` ± ``stderr`` (standard error of the mean)."""

    value: float
    stderr: float
    method: str
    num_matvecs: int
    seed: int | str | None
    distribution: str

    @property
    def settings(self) -> dict[str, Any]:
        """What produced the estimate: method, products, seed, probe distribution."""
        return {"method": self.method, "num_matvecs": self.num_matvecs, "seed": self.seed,
                "distribution": self.distribution}

    def summary(self) -> dict[str, Any]:
        """The estimate, its standard error and the settings."""
        return jsonable({"trace": self.value, "stderr": self.stderr, **self.settings})

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    def to_frame(self) -> Any:
        """One row: :meth:`summary`."""
        import pandas as pd

        return pd.DataFrame([self.summary()])


def hutchinson_trace(
    A: Any,
    num_matvecs: int = 100,
    *,
    seed: SeedLike = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
) -> TraceEstimate:
    """Girard-Hutchinson: tr A ≈ (1/N) sum_i v_i^T A v_i with E[v v^T] = I (N = num_matvecs)."""
    op = as_operator(A)
    num = positive_int("num_matvecs", num_matvecs)
    block = positive_int("block_size", block_size or num)
    V = random_vectors(op.shape[0], num, seed=seed, distribution=distribution)
    samples = np.empty(num)
    for s in range(0, num, block):
        Vb = V[:, s : s + block]
        samples[s : s + Vb.shape[1]] = np.einsum("ds,ds->s", Vb, apply_operator(op, Vb))
    stderr = float(np.std(samples, ddof=1) / math.sqrt(num)) if num > 1 else float("nan")
    return TraceEstimate(
        float(samples.mean()), stderr, "hutchinson", num, seed_repr(seed), distribution
    )


def hutchpp_trace(
    A: Any,
    num_matvecs: int = 99,
    *,
    seed: SeedLike = 0,
    distribution: str = "rademacher",
) -> TraceEstimate:
    """Hutch++: with m = num_matvecs // 3, Q = orth(A S) (S: m probes),
    tr A ≈ tr(Q^T A Q) + (1/m) sum_i g_i^T (I-QQ^T) A (I-QQ^T) g_i. Three passes, 3m products.
    """
    op = as_operator(A)
    num = positive_int("num_matvecs", num_matvecs)
    m = num // 3
    if m < 1:
        raise ValueError(f"num_matvecs must be at least 3 for Hutch++, got {num}.")
    rng = numpy_generator(seed)
    dim = op.shape[0]
    S = random_vectors(dim, m, seed=rng, distribution=distribution)
    G = random_vectors(dim, num - 2 * m, seed=rng, distribution=distribution)
    Q = orthonormal_basis(apply_operator(op, S), rtol=1e-12)
    top = float(np.trace(Q.T @ apply_operator(op, Q))) if Q.shape[1] else 0.0
    Gp = G - Q @ (Q.T @ G)
    samples = np.einsum("ds,ds->s", Gp, apply_operator(op, Gp))
    rest = float(samples.mean())
    stderr = (
        float(np.std(samples, ddof=1) / math.sqrt(samples.size)) if samples.size > 1 else 0.0
    )
    return TraceEstimate(top + rest, stderr, "hutch++", num, seed_repr(seed), distribution)

