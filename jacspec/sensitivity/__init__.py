"""Sensitivity metrics of Novak et al. (2018): Jacobian norms, activation regions, trajectories."""
