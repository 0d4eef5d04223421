"""jacspec: measure neural networks through their input-output Jacobians.

Public API is re-exported here. Each block below belongs to one area of the
package; edit only your own block.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__: list[str] = ["__version__"]

# --- core: jacobian, gram, spectrum, esd ---
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
# --- end heavy tails ---

# --- estimates: linop, slq ---
# --- end estimates ---

# --- sensitivity: sensitivity, regions, trajectories ---
# --- end sensitivity ---

# --- theory ---
# --- end theory ---
