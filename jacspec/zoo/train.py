"""Moved to :mod:`jacspec.zoo.run.train` (one run from a configuration); this path re-exports
its public names so that code and sweep files written against ``jacspec.zoo.train`` keep
working."""

from jacspec.zoo.run.train import (
    CHECKS,
    DEFAULTS,
    MODELS,
    OPTIMIZERS,
    augment_batch,
    checkpoint_bytes,
    fit,
    is_full_batch,
    load_data,
    make_model,
    model_spec,
    resolve_config,
    run_job,
    validate_config,
)

__all__ = [
    "CHECKS", "DEFAULTS", "MODELS", "OPTIMIZERS", "augment_batch", "checkpoint_bytes", "fit",
    "is_full_batch", "load_data", "make_model", "model_spec", "resolve_config", "run_job",
    "validate_config",
]
