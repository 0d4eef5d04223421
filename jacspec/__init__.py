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
# --- end data and models ---

# --- heavy tails: powerlaw, nulls ---
# --- end heavy tails ---

# --- estimates: linop, slq ---
# --- end estimates ---

# --- sensitivity: sensitivity, regions, trajectories ---
# --- end sensitivity ---

# --- theory ---
# --- end theory ---
