"""Moved to :mod:`jacspec.zoo.run.metrics` (the metric registry); this path re-exports its
public names so that code and sweep files written against ``jacspec.zoo.metrics`` keep
working."""

from jacspec.zoo.run.metrics import (
    CE_MILESTONE,
    DEFAULT_CURVE_METRICS,
    DEFAULT_METRICS,
    REGISTRY,
    MetricData,
    MetricFn,
    accuracy_metrics,
    baseline_metrics,
    ce_steps_metrics,
    confidence_metrics,
    flatness_metrics,
    jacobian_esd_metrics,
    jacobian_norm_metrics,
    logit_jacobian_norm_metrics,
    margin_metrics,
    measure,
    over_margin_metrics,
    path_norm_metrics,
    register,
    transition_metrics,
    weightwatcher_metrics,
)
from jacspec.zoo.run.store import NON_PREDICTORS

__all__ = [
    "CE_MILESTONE", "DEFAULT_CURVE_METRICS", "DEFAULT_METRICS", "MetricData", "MetricFn",
    "NON_PREDICTORS", "REGISTRY", "accuracy_metrics", "baseline_metrics", "ce_steps_metrics",
    "confidence_metrics", "flatness_metrics", "jacobian_esd_metrics", "jacobian_norm_metrics",
    "logit_jacobian_norm_metrics", "margin_metrics", "measure", "over_margin_metrics",
    "path_norm_metrics", "register", "transition_metrics", "weightwatcher_metrics",
]
