"""Per-example Jacobians: the engine (one batch loop) and layer targets."""
