"""Moved to :mod:`jacspec.models.train` (training lives with the models it trains); this path
re-exports its public names so that code written against ``jacspec.train`` keeps working."""

from jacspec.models.train import OPTIMIZERS, TrainResult, evaluate, make_optimizer, train

__all__ = ["OPTIMIZERS", "TrainResult", "evaluate", "make_optimizer", "train"]
