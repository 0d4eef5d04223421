"""Seeds to generators, one rule for the whole package.

``numpy_generator(seed)``: a ``numpy.random.Generator`` (``np.random.default_rng(seed)``; a
Generator is passed through). ``torch_generator(seed)``: a CPU ``torch.Generator`` seeded with
``manual_seed(seed)`` (a Generator is passed through; ``None`` only with ``allow_none``, meaning
"use torch's global generator"). An integer seed is an ``int`` or numpy integer, never a bool.
numpy and torch are imported only when a generator is made.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["is_int_seed", "numpy_generator", "torch_generator"]


def is_int_seed(seed: Any) -> bool:
    """True for an integer seed (``int`` or numpy integer), False for bools and the rest."""
    return isinstance(seed, numbers.Integral) and not isinstance(seed, bool)


def numpy_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """``seed`` if it is a numpy Generator, else ``np.random.default_rng(seed)`` for an integer
    or None (fresh entropy); a TypeError naming ``seed`` otherwise."""
    import numpy as np

    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or is_int_seed(seed):
        return np.random.default_rng(None if seed is None else int(seed))
    raise TypeError(f"seed must be an int, a numpy Generator or None; got {type(seed).__name__}")


def torch_generator(seed: int | torch.Generator | None, *, allow_none: bool = False
                    ) -> torch.Generator | None:
    """``seed`` if it is a torch Generator, else ``torch.Generator().manual_seed(seed)`` for
    an integer; None stays None when ``allow_none`` (torch's global generator is used then).
    A TypeError naming ``seed`` otherwise."""
    import torch

    if isinstance(seed, torch.Generator):
        return seed
    if seed is None and allow_none:
        return None
    if not is_int_seed(seed):
        accepted = "an int, a torch.Generator or None" if allow_none else \
            "an int or a torch.Generator"
        raise TypeError(f"seed must be {accepted}; got {type(seed).__name__}")
    return torch.Generator().manual_seed(int(seed))
