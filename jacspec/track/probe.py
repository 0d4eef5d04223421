"""The fixed probe of a :class:`~jacspec.track.Tracker`: ``n`` examples drawn once, without
replacement, with the same draw as ``load_dataset(..., n=, seed=)``, and a fingerprint of them
(so a continued store can tell it measures the same probe)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["fingerprint", "fix_probe"]

#: Seed sequence tail of the probe subset: the same draw as ``load_dataset(..., n=, seed=)``.
_SUBSET_KEY = 0x5B5E7


def fix_probe(data: Any, n: int | None, seed: int, *, any_dtype: bool = False
              ) -> tuple[Any, Any]:
    """``(x, y)`` tensors of the probe: ``n`` examples of ``data`` drawn without replacement
    with ``seed`` (all of them when ``n`` is None), in the data's order.

    Any data form jacspec accepts (:func:`jacspec.data.batches.iter_batches`); the data are
    read once (a one-shot iterator is fine). The draw is ``load_dataset(..., n=n, seed=seed)``'s,
    so a ``DataSet`` gives the same subset. ``y`` is None unless every batch has labels.
    Inputs must be floating point unless ``any_dtype`` (token ids for an ``input_module``).
    """
    import torch

    from jacspec.data.batches import data_length, iter_batches

    total = data_length(data)
    if n is not None and total is not None and n > total:
        raise ValueError(f"n={n} exceeds the {total} examples of probe_data; pass n <= {total} "
                         "or n=None for all of them")
    wanted: np.ndarray | None = None
    if n is not None and total is not None:
        wanted = _draw(total, n, seed)
    xs: list[torch.Tensor] = []
    ys: list[Any] = []
    pos = 0
    for x, y in iter_batches(data):
        b = int(x.shape[0])
        if wanted is None:
            xs.append(x.detach().cpu().clone())
            ys.append(None if y is None else y.detach().cpu().clone())
        else:
            lo, hi = np.searchsorted(wanted, [pos, pos + b])
            if hi > lo:
                local = torch.from_numpy(wanted[lo:hi] - pos)
                xs.append(x.detach().cpu()[local].clone())
                ys.append(None if y is None else y.detach().cpu()[local].clone())
            if hi == len(wanted):
                pos += b
                break
        pos += b
    if not xs or sum(int(x.shape[0]) for x in xs) == 0:
        raise ValueError("probe_data is empty; expected at least one example")
    x_all = torch.cat(xs)
    y_all = None if any(y is None for y in ys) else torch.cat(ys)
    if wanted is not None and x_all.shape[0] < n:
        raise ValueError(f"probe_data yielded {pos} examples, fewer than its length said "
                         f"({total}); cannot draw n={n}")
    if n is not None and wanted is None:
        if n > x_all.shape[0]:
            raise ValueError(f"n={n} exceeds the {x_all.shape[0]} examples of probe_data; pass "
                             f"n <= {x_all.shape[0]} or n=None for all of them")
        idx = torch.from_numpy(_draw(int(x_all.shape[0]), n, seed))
        x_all = x_all[idx]
        y_all = None if y_all is None else y_all[idx]
    if not x_all.is_floating_point() and not any_dtype:
        raise TypeError(f"probe_data inputs must be floating point; got {x_all.dtype}")
    return x_all, y_all


def _draw(total: int, n: int, seed: int) -> np.ndarray:
    if n == total:
        return np.arange(total)
    rng = np.random.default_rng([int(seed), _SUBSET_KEY])
    return np.sort(rng.choice(total, size=n, replace=False))


def fingerprint(x: Any, y: Any) -> str:
    """The first 16 hex digits of the SHA-256 of the probe's shape, dtype and values."""
    h = hashlib.sha256()
    h.update(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    if y is not None:
        h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
