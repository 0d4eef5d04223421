"""Settings of an estimated spectrum, validated once and passed whole.

- :class:`SLQOptions`: stochastic Lanczos quadrature (:func:`jacspec.spectra.slq.slq`) and
  the top eigenvalues beside it: ``num_steps`` Lanczos steps on ``num_vectors`` start
  vectors (``distribution`` from ``seed``, ``block_size`` at a time), ``top_k`` largest
  eigenvalues from the SLQ block Krylov space (``top_steps=0``) or from a separate block
  Lanczos of ``top_steps`` passes.
- :class:`DensityOptions`: the Gaussian broadening of a discrete measure onto a grid
  (:func:`jacspec.spectra.slq.spectral_density`): ``num_points`` grid points, kernel width
  ``sigma`` (default ``rel_sigma`` x grid span), in log10 λ if ``log_scale``; nodes
  ``<= zero_tol * λ_max`` are exact zeros (:data:`ZERO_TOL`).

Entry points take ``slq_options=`` / ``density_options=`` or the same fields as keywords;
:func:`resolve_slq_options` and :func:`resolve_density_options` are the one place keywords
become options (a keyword given overrides the options' field).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from jacspec._util.random import is_int_seed
from jacspec._util.validation import check_choice, positive_int

__all__ = [
    "DENSITY_FIELDS",
    "DISTRIBUTIONS",
    "SLQ_FIELDS",
    "ZERO_TOL",
    "DensityOptions",
    "SLQOptions",
    "resolve_density_options",
    "resolve_slq_options",
    "split_spectrum_fields",
]

#: Nodes (eigenvalues, Ritz values) ``<= ZERO_TOL * λ_max`` count as exact zeros in a density
#: and its ``zero_mass``. 1e-6 sits above float32 round-off of the Jacobian rows (eps32 =
#: 1.2e-7, so a true zero of a float32 Gram shows below ~1e-7 λ_max) and is what every ESD
#: estimate, its JSON settings and the report's figures have used.
ZERO_TOL = 1e-6
#: Distributions of the random start vectors (:func:`jacspec.spectra.lanczos.random_vectors`).
DISTRIBUTIONS = ("rademacher", "normal")


def _real(name: str, value: Any, *, positive: bool) -> float:
    """``value`` as a finite float (> 0 if ``positive``, else >= 0), or a ValueError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and math.isfinite(float(value)) and (value > 0 if positive else value >= 0):
        return float(value)
    accepted = "a positive finite number" if positive else "a finite number >= 0"
    raise ValueError(f"{name} must be {accepted}; got {value!r}")


def _nonnegative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SLQOptions:
    """Stochastic Lanczos quadrature and top eigenvalues (validated once, when made).

    Cost in passes over the data behind the operator: ``num_steps`` (``num_vectors`` start
    vectors, ``block_size`` at a time; None: all at once) plus ``top_steps`` when
    ``top_steps > 0`` (a separate block Lanczos with ``top_k + 5`` vectors); with
    ``top_steps=0`` the ``top_k`` Ritz values come from the SLQ block Krylov space for free.
    """

    num_steps: int = 80
    num_vectors: int = 10
    seed: int = 0
    distribution: str = "rademacher"
    block_size: int | None = None
    top_k: int = 10
    top_steps: int = 0

    def __post_init__(self) -> None:
        if not is_int_seed(self.seed):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        checked = {
            "num_steps": positive_int("num_steps", self.num_steps),
            "num_vectors": positive_int("num_vectors", self.num_vectors),
            "seed": int(self.seed),
            "distribution": check_choice("distribution", self.distribution, DISTRIBUTIONS),
            "block_size": positive_int("block_size", self.block_size, allow_none=True),
            "top_k": positive_int("top_k", self.top_k),
            "top_steps": _nonnegative_int("top_steps", self.top_steps),
        }
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    def replace(self, **changes: Any) -> SLQOptions:
        """A copy with ``changes`` applied (validated again)."""
        _check_names("SLQOptions", changes, SLQ_FIELDS)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DensityOptions:
    """Gaussian broadening of a discrete measure onto a grid (validated once, when made).

    density(x) = sum_j w_j N(x; θ_j, sigma^2) on ``num_points`` points, in log10 λ over the
    nonzero nodes when ``log_scale``; ``sigma`` None: ``rel_sigma`` x the grid's span;
    nodes ``<= zero_tol * λ_max`` are exact zeros (their weight is ``zero_mass``).
    ``rel_sigma`` must be positive when ``sigma`` is None (it then sets the width).
    """

    num_points: int = 512
    sigma: float | None = None
    rel_sigma: float = 0.01
    log_scale: bool = False
    zero_tol: float = ZERO_TOL

    def __post_init__(self) -> None:
        if self.log_scale not in (True, False):
            raise ValueError(f"log_scale must be True or False; got {self.log_scale!r}")
        checked = {
            "num_points": positive_int("num_points", self.num_points),
            "sigma": None if self.sigma is None else _real("sigma", self.sigma, positive=True),
            "rel_sigma": _real("rel_sigma", self.rel_sigma, positive=self.sigma is None),
            "log_scale": bool(self.log_scale),
            "zero_tol": _real("zero_tol", self.zero_tol, positive=False),
        }
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    def replace(self, **changes: Any) -> DensityOptions:
        """A copy with ``changes`` applied (validated again)."""
        _check_names("DensityOptions", changes, DENSITY_FIELDS)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (the keywords of :func:`spectral_density`)."""
        return dataclasses.asdict(self)


SLQ_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SLQOptions))
DENSITY_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DensityOptions))


def _check_names(owner: str, given: dict[str, Any], names: tuple[str, ...]) -> None:
    unknown = [k for k in given if k not in names]
    if unknown:
        raise TypeError(f"{owner} has no field {unknown[0]!r}; its fields are {', '.join(names)}")


def resolve_slq_options(options: SLQOptions | None = None, **fields: Any) -> SLQOptions:
    """``options`` (default ``SLQOptions()``) with every field given as a keyword put in."""
    if options is not None and not isinstance(options, SLQOptions):
        raise TypeError(f"slq_options must be an SLQOptions or None; got {type(options).__name__}")
    base = options if options is not None else SLQOptions()
    return base.replace(**fields) if fields else base


def resolve_density_options(
    options: DensityOptions | None = None, **fields: Any
) -> DensityOptions:
    """``options`` (default ``DensityOptions()``) with every field given as a keyword put in."""
    if options is not None and not isinstance(options, DensityOptions):
        raise TypeError(
            f"density_options must be a DensityOptions or None; got {type(options).__name__}"
        )
    base = options if options is not None else DensityOptions()
    return base.replace(**fields) if fields else base


def split_spectrum_fields(
    fields: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``fields`` split into (SLQ fields, density fields, the rest)."""
    slq = {k: v for k, v in fields.items() if k in SLQ_FIELDS}
    density = {k: v for k, v in fields.items() if k in DENSITY_FIELDS}
    rest = {k: v for k, v in fields.items() if k not in SLQ_FIELDS and k not in DENSITY_FIELDS}
    return slq, density, rest
