"""Imported once by the sweep's fork server so that every worker starts with the slow imports
done (torch's optimizer machinery, the data and metric modules, weightwatcher if present)."""

from __future__ import annotations

import contextlib

import torch
import torch.optim

with contextlib.suppress(ImportError):
    import torch._dynamo  # noqa: F401  (imported lazily by the first optimizer otherwise)

import jacspec.zoo.run.metrics as _metrics
import jacspec.zoo.run.train  # noqa: F401

with contextlib.suppress(ImportError):
    import sklearn.datasets  # noqa: F401

with contextlib.suppress(ImportError):
    _metrics._import_weightwatcher()
