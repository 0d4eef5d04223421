"""Random-network theory: mean field (q*, chi, c*, depth scales), free-probability
Jacobian spectra (Pennington, Schoenholz, Ganguli 2018) and simulated networks.

Figures live in :mod:`jacspec.report.theory_plots`; the three names this package exported
before (``phase_diagram``, ``moments_vs_depth``, ``theory_vs_simulation``) still resolve
here, with a DeprecationWarning naming their new path.
"""

import importlib
import warnings
from typing import Any

from jacspec.theory.activations import ACTIVATIONS, Activation, get_activation
from jacspec.theory.d2law import D2Law, d2_law, mu_k
from jacspec.theory.freeprob import (
    WEIGHTS,
    JacobianSpectrum,
    jacobian_atoms,
    jacobian_moments,
    jacobian_spectrum,
    lambda_max,
    m_transform_d2,
    piecewise_linear_polynomial,
    s_transform_d2_bernoulli,
    s_transform_weights,
)
from jacspec.theory.meanfield import (
    CriticalPoint,
    MeanField,
    c_star,
    chi_at,
    chi_grid,
    correlation_map,
    critical_line,
    critical_point,
    critical_weight_variance,
    length_map,
    mean_field,
    q_star,
)
from jacspec.theory.simulate import (
    Comparison,
    SimulatedSpectrum,
    compare,
    ks_distance,
    random_network,
    simulate_spectrum,
)
from jacspec.theory.universal import UniversalSpectrum, universal_spectrum

__all__ = [
    "ACTIVATIONS", "Activation", "get_activation", "D2Law", "d2_law", "mu_k", "WEIGHTS",
    "JacobianSpectrum", "jacobian_atoms", "jacobian_moments", "jacobian_spectrum",
    "lambda_max", "m_transform_d2", "piecewise_linear_polynomial", "s_transform_d2_bernoulli",
    "s_transform_weights", "CriticalPoint", "MeanField", "c_star", "chi_at", "chi_grid",
    "correlation_map", "critical_line", "critical_point", "critical_weight_variance",
    "length_map", "mean_field", "q_star", "Comparison", "SimulatedSpectrum", "compare",
    "ks_distance", "random_network", "simulate_spectrum", "UniversalSpectrum", "universal_spectrum",
]

#: Figures that moved to :mod:`jacspec.report.theory_plots` (figures live in one place).
_MOVED_FIGURES = ("moments_vs_depth", "phase_diagram", "theory_vs_simulation")


def __getattr__(name: str) -> Any:
    """Resolve a figure that moved to :mod:`jacspec.report.theory_plots` (PEP 562)."""
    if name in _MOVED_FIGURES:
        warnings.warn(
            f"jacspec.theory.{name} moved to jacspec.report.theory_plots.{name}; "
            "import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("jacspec.report.theory_plots"), name)
    raise AttributeError(f"module 'jacspec.theory' has no attribute {name!r}")
