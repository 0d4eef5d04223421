"""Uniform batching of the inputs jacspec accepts.

Every public function that takes ``data`` goes through :func:`iter_batches`, which
yields ``(x, y)`` pairs with ``x`` of shape ``(b, *input_shape)`` and ``y`` of shape
``(b,)`` or ``None``. Accepted: a tensor or numpy array of inputs ``(n, *input_shape)``,
an ``(x, y)`` tuple or ``[x, y]`` list of those (see :func:`iter_batches` for how a list is
told from a list of batches), an object with ``.x``/``.y`` attributes (a jacspec
``DataSet``), a ``torch.utils.data.Dataset`` of ``(x, y)`` items, or any iterable of
``(x, y)`` batches or bare ``x`` batches (a ``DataLoader``).

Analyses that pass over the data several times call :func:`require_reiterable` first: a
one-shot iterator (a generator, ``iter(loader)``) is refused there, before any work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from jacspec._util.validation import positive_int

Batch = tuple[torch.Tensor, "torch.Tensor | None"]


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{what} must be a numeric array; got a numpy array of Python objects")
        return torch.from_numpy(value)
    raise TypeError(
        f"{what} must be a torch.Tensor or numpy array; got {type(value).__name__}"
    )


def _split(item: Any) -> Batch:
    if isinstance(item, (tuple, list)):
        if len(item) == 0:
            raise ValueError("data yielded an empty batch tuple; expected (x, y) or x")
        x = _as_tensor(item[0], "data batch x")
        y = _as_tensor(item[1], "data batch y") if len(item) > 1 and item[1] is not None else None
        return x, y
    if isinstance(item, dict):
        for key in ("x", "input", "inputs", "image", "images"):
            if key in item:
                y = item.get("y", item.get("label", item.get("labels")))
                return _as_tensor(item[key], f"data batch {key!r}"), (
                    None if y is None else _as_tensor(y, "data batch y")
                )
        raise ValueError(
            f"data yielded a dict with keys {sorted(item)}; expected an 'x' (or 'input') key"
        )
    return _as_tensor(item, "data batch"), None


def _slices(x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> Iterator[Batch]:
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], None if y is None else y[start : start + batch_size]


def _in_memory_pair(data: Any) -> tuple[Any, Any] | None:
    """``(x, y)`` when ``data`` is one in-memory data set given as a pair, else None.

    A tuple ``(x, y)`` or ``(x, None)`` of arrays/tensors always is. A list of two
    is only when it cannot be a list of two batches: ``[x, None]``, or ``[x, y]`` with ``x``
    of shape ``(n, ...)`` (ndim >= 2), ``y`` 1-d and both of length ``n`` (two batches of
    inputs have the same number of dims, so ``y`` cannot be a second batch of ``x``'s).
    """
    arrays = (torch.Tensor, np.ndarray)
    if not isinstance(data, (tuple, list)) or len(data) != 2 or not isinstance(data[0], arrays):
        return None
    x, y = data
    if isinstance(data, tuple):
        return (x, y) if y is None or isinstance(y, arrays) else None
    if y is None:
        return x, None
    if (isinstance(y, arrays) and x.ndim >= 2 and y.ndim == 1 and x.shape[0] == y.shape[0]):
        return x, y
    return None


def require_reiterable(data: Any, what: str) -> None:
    """Refuse a one-shot iterator (``iter(data) is data``: a generator, ``iter(loader)``).

    ``what`` names the analysis in the message (e.g. ``"analyze"``). Lists, tensors, arrays,
    ``DataSet``/``Dataset`` objects and ``DataLoader``s can be iterated again and pass; the
    check never starts an iteration (so no ``DataLoader`` workers are spawned).
    """
    if isinstance(data, Iterator):
        raise TypeError(
            f"data is a one-shot iterator ({type(data).__name__}); {what} makes several passes "
            "over the data: pass a list, a DataLoader, a Dataset or arrays"
        )


class OneShot:
    """A one-shot iterator of batches made peekable and single-pass: ``peek()`` reads the
    first item without losing it; the first ``iter()`` yields everything, a second raises a
    TypeError saying the data was already used (for single-pass functions given a
    generator; multi-pass analyses refuse it up front with :func:`require_reiterable`)."""

    def __init__(self, iterator: Iterator[Any], what: str) -> None:
        self._iterator = iterator
        self._buffer: list[Any] = []
        self._used = False
        self._what = what

    def peek(self) -> Any:
        """The first item (raises ValueError when there is none)."""
        if not self._buffer:
            try:
                self._buffer.append(next(self._iterator))
            except StopIteration:
                raise ValueError("data is empty; expected at least one example") from None
        return self._buffer[0]

    def __iter__(self) -> Iterator[Any]:
        if self._used:
            raise TypeError(
                f"data is a one-shot iterator and was already used; {self._what} needs a "
                "second pass: pass a list, a DataLoader, a Dataset or arrays"
            )
        self._used = True
        buffered, self._buffer = self._buffer, []
        yield from buffered
        yield from self._iterator


def _check_pair(x: torch.Tensor, y: torch.Tensor | None) -> None:
    if x.ndim == 0:
        raise ValueError("data must have a leading example dimension; got a 0-d tensor")
    if y is not None and y.shape[0] != x.shape[0]:
        raise ValueError(
            f"data has {x.shape[0]} inputs but {y.shape[0]} labels; they must match"
        )


def iter_batches(data: Any, batch_size: int | None = None) -> Iterator[Batch]:
    """Yield ``(x, y)`` batches from any accepted ``data`` (see module docstring).

    In-memory data are cut into batches of ``batch_size`` (all at once if None);
    iterables of batches are passed through as they come (their own batch size wins).

    A list of two arrays/tensors reads like the tuple ``(x, y)`` when it is ``[x, y]`` with
    ``x`` (n, ...) of ndim >= 2, ``y`` of shape (n,) (labels), or ``[x, None]``; any other
    list is a list of batches: ``[(x1, y1), (x2, y2), ...]`` or ``[x1, x2, ...]``. A
    one-shot iterator is read once (see :func:`require_reiterable`).
    """
    positive_int("batch_size", batch_size, allow_none=True)
    if data is None:
        raise ValueError("data is None; expected a tensor, an (x, y) tuple or a DataLoader")
    if isinstance(data, (str, bytes)):
        raise TypeError(
            f"data of type {type(data).__name__} is not supported; load a named data set with "
            "jacspec.load_dataset(name) and pass that"
        )
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = _as_tensor(data, "data")
        _check_pair(x, None)
        yield from _slices(x, None, batch_size or max(1, x.shape[0]))
        return
    if hasattr(data, "x") and hasattr(data, "y") and not isinstance(data, (tuple, list)):
        x, y = _as_tensor(data.x, "data.x"), _as_tensor(data.y, "data.y")
        _check_pair(x, y)
        yield from _slices(x, y, batch_size or max(1, x.shape[0]))
        return
    pair = _in_memory_pair(data)
    if pair is not None:
        x = _as_tensor(pair[0], "data x")
        y = None if pair[1] is None else _as_tensor(pair[1], "data y")
        _check_pair(x, y)
        yield from _slices(x, y, batch_size or max(1, x.shape[0]))
        return
    if isinstance(data, Dataset) and not isinstance(data, Iterable):
        data = DataLoader(data, batch_size=batch_size or 256, shuffle=False)
    elif isinstance(data, Dataset) and hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        data = DataLoader(data, batch_size=batch_size or 256, shuffle=False)
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data of type {type(data).__name__} is not supported; expected a tensor, numpy "
            "array, (x, y) tuple, DataSet, torch Dataset or an iterable of (x, y) batches"
        )
    for item in data:
        x, y = _split(item)
        _check_pair(x, y)
        if batch_size is None or x.shape[0] <= batch_size:
            yield x, y
        else:
            yield from _slices(x, y, batch_size)


def data_length(data: Any) -> int | None:
    """Number of examples in ``data`` when it can be known without iterating, else None."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return int(data.shape[0])
    if hasattr(data, "x") and hasattr(data.x, "shape") and not isinstance(data, (tuple, list)):
        return int(data.x.shape[0])
    pair = _in_memory_pair(data)
    if pair is not None:
        return int(pair[0].shape[0])
    dataset = getattr(data, "dataset", None)
    if isinstance(data, DataLoader) and dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return len(data)
    return None


def first_batch(data: Any) -> Batch:
    """The first ``(x, y)`` batch of ``data``; ValueError when ``data`` is empty."""
    for x, y in iter_batches(data):
        if x.shape[0] > 0:
            return x, y
    raise ValueError("data is empty; expected at least one example")
