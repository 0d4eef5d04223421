"""jacspec: measure neural networks through their input-output Jacobians.

Public API is re-exported here. Each block below belongs to one area of the
package; edit only your own block.
"""

# ruff: noqa: E402
from __future__ import annotations

__version__ = "0.1.0"

__all__: list[str] = ["__version__"]

# --- core: jacobian, gram, spectrum, esd ---
from jacspec.analysis import Analysis, analyze
from jacspec.esd import metrics_table, spectral_metrics
from jacspec.gram import Gram, gram
from jacspec.jacobian import JacobianBatch, data_jacobian, iter_jacobians, jacobians
from jacspec.layers import hidden_layers, iter_layer_jacobians
from jacspec.loading import load_model
from jacspec.spectrum import ESD, eigenvalues_from_jacobian, esd, esd_from_gram

__all__ += [
    "Analysis",
    "analyze",
    "hidden_layers",
    "iter_layer_jacobians",
    "load_model",
    "ESD",
    "Gram",
    "JacobianBatch",
    "data_jacobian",
    "eigenvalues_from_jacobian",
    "esd",
    "esd_from_gram",
    "gram",
    "iter_jacobians",
    "jacobians",
    "metrics_table",
    "spectral_metrics",
]
# --- end core ---

# --- data and models: datasets, models, train ---
from jacspec.datasets import DataSet, load_dataset  # noqa: E402
from jacspec.models import (  # noqa: E402
    Erf,
    build_model,
    load_checkpoint,
    mlp,
    save_checkpoint,
    small_cnn,
)
from jacspec.train import TrainResult  # noqa: E402  (train() stays jacspec.train.train)

__all__ += ["DataSet", "load_dataset", "Erf", "build_model", "load_checkpoint", "mlp",
            "save_checkpoint", "small_cnn", "TrainResult"]
# --- end data and models ---

# --- heavy tails: powerlaw, nulls ---
from jacspec.heavytail import heavy_tail_metrics
from jacspec.nulls import MPFit, RandomizedNull, esd_distance, fit_mp, randomized_null
from jacspec.powerlaw import PowerLawFit, fit_powerlaw

__all__ += ["heavy_tail_metrics", "MPFit", "RandomizedNull", "esd_distance", "fit_mp"]
__all__ += ["randomized_null", "PowerLawFit", "fit_powerlaw"]
# --- end heavy tails ---

# --- estimates: linop, slq ---
from jacspec.estimate import ESDEstimate, estimate_esd, plan_esd  # noqa: E402
from jacspec.linop import GramOperator, gram_operator, write_jacobian_memmap  # noqa: E402
from jacspec.slq import hutchinson_trace, hutchpp_trace, slq_density, top_eigenvalues  # noqa: E402

__all__ += [
    "ESDEstimate",
    "estimate_esd",
    "plan_esd",
    "GramOperator",
    "gram_operator",
    "write_jacobian_memmap",
    "hutchinson_trace",
    "hutchpp_trace",
    "slq_density",
    "top_eigenvalues",
]
# --- end estimates ---

# --- sensitivity: sensitivity, regions, trajectories ---
from jacspec.regions import ActivationCodes, Transitions, activation_codes, count_transitions
from jacspec.sensitivity import (
    PerPointSensitivity,
    finite_difference_sensitivity,
    jacobian_norms,
    loss_bounds,
    mean_jacobian_norm,
    per_point_generalization,
)
from jacspec.trajectories import (
    Trajectory,
    TrajectoryProfile,
    compare_trajectories,
    different_class_ellipse,
    ellipse,
    points_trajectory,
    profiles_frame,
    random_ellipse,
    same_class_ellipse,
    trajectory_profile,
    translation_trajectory,
)

__all__ += [
    "ActivationCodes", "Transitions", "activation_codes", "count_transitions",
    "PerPointSensitivity", "finite_difference_sensitivity", "jacobian_norms", "loss_bounds",
    "mean_jacobian_norm", "per_point_generalization", "Trajectory", "TrajectoryProfile",
    "compare_trajectories", "different_class_ellipse", "ellipse", "points_trajectory",
    "profiles_frame", "random_ellipse", "same_class_ellipse", "trajectory_profile",
    "translation_trajectory",
]
# --- end sensitivity ---

# --- theory ---
from jacspec.theory import (  # noqa: E402
    JacobianSpectrum,
    MeanField,
    SimulatedSpectrum,
    critical_point,
    jacobian_spectrum,
    mean_field,
    simulate_spectrum,
    universal_spectrum,
)

__all__ += [
    "JacobianSpectrum", "MeanField", "SimulatedSpectrum", "critical_point",
    "jacobian_spectrum", "mean_field", "simulate_spectrum", "universal_spectrum",
]
# --- end theory ---
