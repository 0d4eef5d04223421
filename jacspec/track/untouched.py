"""Run a measurement on a model and leave it exactly as it was (:func:`untouched`)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["untouched"]


@contextlib.contextmanager
def untouched(model: Any, *, eval_mode: bool = True) -> Iterator[None]:
    """Run a block with ``model`` in eval mode (``eval_mode``), then put back exactly: every
    module's ``training`` flag, every parameter's ``.grad`` (the same tensor) and
    ``requires_grad``, and the torch CPU/CUDA, numpy and Python ``random`` global states."""
    import torch

    flags = [(m, m.training) for m in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if cuda else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        if eval_mode:
            for m, _ in flags:
                m.training = False
        yield
    finally:
        for m, flag in flags:
            if m.training != flag:
                m.training = flag
        for p, grad, req in params:
            if p.grad is not grad:
                p.grad = grad
            if p.requires_grad != req:
                p.requires_grad_(req)
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
        np.random.set_state(np_state)
        random.setstate(py_state)
