"""jacspec: measure neural networks through their input-output Jacobians.

The package root is a façade of the one-call entry points; everything else is reached by
its subpackage path (``jacspec.spectra.slq.slq_density``, ``jacspec.heavytail.mp``...).
Names are imported on first use, so ``import jacspec`` is cheap (torch, matplotlib and the
rest load only when a function needs them).

Layers, lowest first (a lower layer never imports a higher one; ``tests/util/test_layers_order.py``
checks it): ``_util`` < ``data`` < ``models`` < ``jacobian`` < ``spectra`` <
``heavytail`` < ``analysis``, ``sensitivity``, ``theory`` < ``zoo`` < ``report`` < ``cli``.
"""

# ruff: noqa: F401
from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The façade: public name -> module that defines it.
_FACADE: dict[str, str] = {
    # data and models
    "load_dataset": "jacspec.data.datasets",
    "DataSet": "jacspec.data.datasets",
    "load_model": "jacspec.models.loading",
    "mlp": "jacspec.models.builders",
    "small_cnn": "jacspec.models.builders",
    "resnet": "jacspec.models.resnet",
    "build_model": "jacspec.models.builders",
    "save_checkpoint": "jacspec.models.builders",
    "load_checkpoint": "jacspec.models.builders",
    # Jacobians and spectra
    "jacobians": "jacspec.jacobian.engine",
    "iter_jacobians": "jacspec.jacobian.engine",
    "data_jacobian": "jacspec.jacobian.engine",
    "gram": "jacspec.spectra.gram",
    "esd": "jacspec.spectra.exact",
    "ESD": "jacspec.spectra.exact",
    "spectral_metrics": "jacspec.spectra.metrics",
    "estimate_esd": "jacspec.spectra.estimate",
    "ESDEstimate": "jacspec.spectra.esd_estimate",
    "Spectrum": "jacspec.spectra.spectrum",
    # heavy tails and the one-call table
    "fit_powerlaw": "jacspec.heavytail.powerlaw",
    "fit_mp": "jacspec.heavytail.mp",
    "randomized_null": "jacspec.heavytail.randomized",
    "heavy_tail_metrics": "jacspec.heavytail.columns",
    "analyze": "jacspec.analysis",
    "Analysis": "jacspec.analysis",
    # sensitivity (Novak et al.)
    "jacobian_norms": "jacspec.sensitivity.norms",
    "mean_jacobian_norm": "jacspec.sensitivity.norms",
    "per_point_generalization": "jacspec.sensitivity.norms",
    "activation_codes": "jacspec.sensitivity.regions",
    "count_transitions": "jacspec.sensitivity.regions",
    "trajectory_profile": "jacspec.sensitivity.trajectories",
    "compare_trajectories": "jacspec.sensitivity.trajectories",
    # random-network theory
    "mean_field": "jacspec.theory",
    "critical_point": "jacspec.theory",
    "jacobian_spectrum": "jacspec.theory",
    "simulate_spectrum": "jacspec.theory",
    # watching a network train
    "Tracker": "jacspec.track",
    # one self-contained HTML page of any result
    "write_report": "jacspec.report.html",
}

#: Names the root exported before the façade was trimmed: still resolved, with a
#: DeprecationWarning naming their subpackage path.
_MOVED: dict[str, str] = {
    "hidden_layers": "jacspec.jacobian.layers",
    "iter_layer_jacobians": "jacspec.jacobian.layers",
    "JacobianBatch": "jacspec.jacobian.engine",
    "Gram": "jacspec.spectra.gram",
    "eigenvalues_from_jacobian": "jacspec.spectra.exact",
    "esd_from_gram": "jacspec.spectra.exact",
    "metrics_table": "jacspec.spectra.metrics",
    "Erf": "jacspec.models.builders",
    "TrainResult": "jacspec.models.train",
    "MPFit": "jacspec.heavytail.mp",
    "RandomizedNull": "jacspec.heavytail.randomized",
    "esd_distance": "jacspec.heavytail.randomized",
    "PowerLawFit": "jacspec.heavytail.powerlaw",
    "plan_esd": "jacspec.spectra.plan",
    "GramOperator": "jacspec.spectra.operators",
    "gram_operator": "jacspec.spectra.operators",
    "write_jacobian_memmap": "jacspec.spectra.operators",
    "hutchinson_trace": "jacspec.spectra.traces",
    "hutchpp_trace": "jacspec.spectra.traces",
    "slq_density": "jacspec.spectra.slq",
    "top_eigenvalues": "jacspec.spectra.lanczos",
    "ActivationCodes": "jacspec.sensitivity.regions",
    "Transitions": "jacspec.sensitivity.regions",
    "PerPointSensitivity": "jacspec.sensitivity.norms",
    "finite_difference_sensitivity": "jacspec.sensitivity.norms",
    "loss_bounds": "jacspec.sensitivity.norms",
    "Trajectory": "jacspec.sensitivity.trajectories",
    "TrajectoryProfile": "jacspec.sensitivity.trajectories",
    "different_class_ellipse": "jacspec.sensitivity.trajectories",
    "ellipse": "jacspec.sensitivity.trajectories",
    "points_trajectory": "jacspec.sensitivity.trajectories",
    "profiles_frame": "jacspec.sensitivity.trajectories",
    "random_ellipse": "jacspec.sensitivity.trajectories",
    "same_class_ellipse": "jacspec.sensitivity.trajectories",
    "translation_trajectory": "jacspec.sensitivity.trajectories",
    "JacobianSpectrum": "jacspec.theory",
    "MeanField": "jacspec.theory",
    "SimulatedSpectrum": "jacspec.theory",
    "universal_spectrum": "jacspec.theory",
}

__all__ = ["__version__", *_FACADE]


def __getattr__(name: str) -> Any:
    """Import a façade name on first use (PEP 562)."""
    if name in _FACADE:
        value = getattr(importlib.import_module(_FACADE[name]), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        warnings.warn(
            f"jacspec.{name} moved to {_MOVED[name]}.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'jacspec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs (re-exported lazily)
    from jacspec.analysis import Analysis, analyze
    from jacspec.data.datasets import DataSet, load_dataset
    from jacspec.heavytail.columns import heavy_tail_metrics
    from jacspec.heavytail.mp import fit_mp
    from jacspec.heavytail.powerlaw import fit_powerlaw
    from jacspec.heavytail.randomized import randomized_null
    from jacspec.jacobian.engine import data_jacobian, iter_jacobians, jacobians
    from jacspec.models.builders import (
        build_model,
        load_checkpoint,
        mlp,
        save_checkpoint,
        small_cnn,
    )
    from jacspec.models.loading import load_model
    from jacspec.models.resnet import resnet
    from jacspec.sensitivity.norms import (
        jacobian_norms,
        mean_jacobian_norm,
        per_point_generalization,
    )
    from jacspec.sensitivity.regions import activation_codes, count_transitions
    from jacspec.sensitivity.trajectories import compare_trajectories, trajectory_profile
    from jacspec.spectra.esd_estimate import ESDEstimate
    from jacspec.spectra.estimate import estimate_esd
    from jacspec.spectra.exact import ESD, esd
    from jacspec.spectra.gram import gram
    from jacspec.spectra.metrics import spectral_metrics
    from jacspec.spectra.spectrum import Spectrum
    from jacspec.theory import critical_point, jacobian_spectrum, mean_field, simulate_spectrum
