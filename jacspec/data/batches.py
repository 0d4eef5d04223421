"""Uniform batching of the inputs jacspec accepts.

Every public function that takes ``data`` goes through :func:`iter_batches`, which
yields ``(x, y)`` pairs with ``x`` of shape ``(b, *input_shape)`` and ``y`` of shape
``(b,)`` or ``None``. Accepted: a tensor or numpy array of inputs ``(n, *input_shape)``,
an ``(x, y)`` tuple or ``[x, y]`` list of those (see :func:`iter_batches` for how a list is
told from a list of batches), a dict of whole-data columns ``{"x": X, "y": Y}``, a list of
per-example records ``[{"x": x_i, "y": y_i}, ...]``, an object with ``.x``/``.y`` attributes
(a jacspec ``DataSet``), a ``torch.utils.data.Dataset`` of ``(x, y)`` items, or any iterable
of ``(x, y)`` batches, bare ``x`` batches or dict batches (a ``DataLoader``).

Labels are class indices, checked by the one validator :func:`check_labels` for every form:
integers >= 0 of shape ``(n,)``; float labels holding whole numbers are taken as those
integers, NaN, Inf, fractions, negative values and ``(n, k)`` soft/one-hot labels are refused.

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

#: Keys of the inputs and of the labels in a dict (a batch, whole-data columns or a record),
#: first match wins; ``pixel_values`` is what HuggingFace image processors return.
X_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values")
Y_KEYS = ("y", "label", "labels")


class KnownLength:
    """Batches that know their number of examples (``num_examples``, None if unknown)
    without a pass, read by :func:`data_length`."""

    num_examples: int | None = None


def check_labels(y: Any, what: str = "labels") -> Any:
    """Class indices ``y`` of shape ``(n,)`` as int64 (a tensor stays a tensor, a numpy array
    an array), or a ValueError/TypeError naming ``what``.

    Accepted: integer or bool dtypes, and float dtypes whose values are all whole numbers
    (``1.0`` is taken as class 1). Refused: NaN, Inf, fractions, values < 0, other dtypes,
    and any shape but ``(n,)`` (``(n, k)`` soft or one-hot labels: pass ``y.argmax(1)``).
    """
    is_numpy = isinstance(y, np.ndarray)
    if is_numpy:
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be integer class indices; got a numpy array of "
                            f"dtype {y.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(y).astype(np.float64 if y.dtype.kind == "f"
                                                             else np.int64, copy=False))
    elif isinstance(y, torch.Tensor):
        if y.is_complex():
            raise TypeError(f"{what} must be integer class indices; got dtype {y.dtype}")
        t = y
    else:
        raise TypeError(f"{what} must be a torch.Tensor or numpy array of class indices; got "
                        f"{type(y).__name__}")
    shape = tuple(t.shape)
    if t.ndim == 2 and shape[1] > 1:
        raise ValueError(f"{what} must be class indices of shape (n,); got shape {shape}, "
                         "soft or one-hot labels: pass the class indices y.argmax(1)")
    if t.ndim != 1:
        hint = ": pass y.reshape(-1)" if t.ndim == 2 else ""
        raise ValueError(f"{what} must be class indices of shape (n,); got shape {shape}{hint}")
    if t.dtype.is_floating_point:
        bad = ~torch.isfinite(t) | (t != torch.round(t))
        if bool(bad.any()):
            value = float(t[bad][0])
            raise ValueError(f"{what} must be integers (found NaN, Inf or fractions, e.g. "
                             f"{value!r}); pass class indices 0..k-1")
    if t.dtype != torch.bool and t.numel() and bool((t < 0).any()):
        raise ValueError(f"{what} must be >= 0 (class indices 0..k-1); found {t.min().item()!r}")
    t = t.to(torch.int64)
    return t.numpy() if is_numpy else t


def _pandas_kind(value: Any) -> str | None:
    """``"DataFrame"``/``"Series"`` for a pandas object (pandas itself is not imported)."""
    cls = type(value)
    if cls.__module__.split(".")[0] == "pandas" and cls.__name__ in ("DataFrame", "Series"):
        return cls.__name__
    return None


def to_tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` as a tensor (a tensor or numeric numpy array); ``what`` names it in errors."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{what} must be a numeric array; got a numpy array of Python objects")
        return torch.from_numpy(value)
    kind = _pandas_kind(value)
    if kind is not None:
        raise TypeError(f"{what} is a pandas {kind}; pass its values with .to_numpy()")
    raise TypeError(
        f"{what} must be a torch.Tensor or numpy array; got {type(value).__name__}"
    )


def _dict_keys(item: dict, what: str) -> tuple[str, str | None]:
    """The (inputs key, labels key or None) of a dict batch, columns or record."""
    xk = next((k for k in X_KEYS if k in item), None)
    if xk is None:
        hint = ("; token ids have no Jacobian: name the module whose output to differentiate "
                "with input_module= (--input-module NAME), e.g. the embeddings"
                ) if "input_ids" in item else ""
        raise ValueError(f"{what} is a dict with keys {sorted(map(str, item))}; expected an "
                         f"inputs key ({', '.join(X_KEYS)}) and optionally a labels key "
                         f"({', '.join(Y_KEYS)}){hint}")
    yk = next((k for k in Y_KEYS if k in item and item[k] is not None), None)
    return xk, yk


def _split(item: Any) -> Batch:
    if isinstance(item, (tuple, list)):
        if len(item) == 0:
            raise ValueError("data yielded an empty batch tuple; expected (x, y) or x")
        x = to_tensor(item[0], "data batch x")
        y = to_tensor(item[1], "data batch y") if len(item) > 1 and item[1] is not None else None
        return x, y
    if isinstance(item, dict):
        xk, yk = _dict_keys(item, "a data batch")
        return to_tensor(item[xk], f"data batch {xk!r}"), (
            None if yk is None else to_tensor(item[yk], f"data batch {yk!r}"))
    return to_tensor(item, "data batch"), None


def is_scalar(value: Any) -> bool:
    """A Python/numpy number or a 0-d array/tensor (one example's label)."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return True
    return isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0


def _is_records(data: Any) -> bool:
    """True when ``data`` is a list of per-example dicts: a non-empty list or tuple of dicts
    whose first dict has a scalar label (one example's class). A list of dicts with batched
    (1-d) labels, or without labels, is a list of batches."""
    if not isinstance(data, (list, tuple)) or not data or not isinstance(data[0], dict):
        return False
    first = data[0]
    yk = next((k for k in Y_KEYS if k in first and first[k] is not None), None)
    return yk is not None and is_scalar(first[yk])


def _stack_records(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a list of per-example dicts: inputs stacked to (n, ...), labels (n,)."""
    xs, ys = [], []
    xk0, yk0 = _dict_keys(data[0], "data[0]")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise TypeError(f"data is a list of per-example dicts, but data[{i}] is a "
                            f"{type(rec).__name__}; every item must be a dict")
        xk, yk = _dict_keys(rec, f"data[{i}]")
        if (xk, yk) != (xk0, yk0):
            raise ValueError(f"data[{i}] has keys {sorted(map(str, rec))}, unlike data[0] "
                             f"(inputs {xk0!r}, labels {yk0!r}); every record needs the same keys")
        xs.append(to_tensor(rec[xk], f"data[{i}][{xk!r}]"))
        if not is_scalar(rec[yk]):
            raise ValueError(f"data is a list of per-example dicts, but data[{i}][{yk!r}] is "
                             "not one label (a number); pass every record with one label")
        ys.append(rec[yk].item() if hasattr(rec[yk], "item") else rec[yk])
    shapes = {tuple(v.shape) for v in xs}
    if len(shapes) > 1:
        raise ValueError(f"data is a list of per-example dicts whose {xk0!r} values differ in "
                         f"shape ({', '.join(map(str, sorted(shapes)))}); they must all match")
    y = torch.from_numpy(np.asarray(ys))
    return torch.stack(xs), y


def _slices(x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> Iterator[Batch]:
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], None if y is None else y[start : start + batch_size]


def _columns(data: Any) -> tuple[Any, Any] | None:
    """``(X, Y or None)`` of a dict of whole-data columns ``{"x": X, "y": Y}``, else None."""
    if not isinstance(data, dict):
        return None
    xk, yk = _dict_keys(data, "data")
    return data[xk], None if yk is None else data[yk]


def _refuse_pandas(data: Any) -> None:
    """A TypeError saying what to pass for a pandas DataFrame/Series, alone or in a pair."""
    pair = isinstance(data, (tuple, list)) and len(data) <= 2
    kinds = [k for k in map(_pandas_kind, data if pair else (data,)) if k is not None]
    if not kinds:
        return
    found = f"a pair holding a pandas {kinds[0]}" if pair else f"a pandas {kinds[0]}"
    raise TypeError(f"data is {found}; pass numpy arrays: (df[feature_columns].to_numpy(), "
                    "df[label_column].to_numpy())")


def in_memory_pair(data: Any) -> tuple[Any, Any] | None:
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


def _check_pair(x: torch.Tensor, y: torch.Tensor | None, what: str = "data labels"
                ) -> torch.Tensor | None:
    """``y`` checked by :func:`check_labels` (as int64) after the example counts are matched."""
    if x.ndim == 0:
        raise ValueError("data must have a leading example dimension; got a 0-d tensor")
    if y is None:
        return None
    if y.ndim >= 1 and y.shape[0] != x.shape[0]:
        raise ValueError(
            f"data has {x.shape[0]} inputs but {y.shape[0]} labels; they must match"
        )
    return check_labels(y, what)


def iter_batches(data: Any, batch_size: int | None = None) -> Iterator[Batch]:
    """Yield ``(x, y)`` batches from any accepted ``data`` (see module docstring).

    In-memory data are cut into batches of ``batch_size`` (all at once if None);
    iterables of batches are passed through as they come (their own batch size wins).

    A list of two arrays/tensors reads like the tuple ``(x, y)`` when it is ``[x, y]`` with
    ``x`` (n, ...) of ndim >= 2, ``y`` of shape (n,) (labels), or ``[x, None]``; any other
    list is a list of batches: ``[(x1, y1), (x2, y2), ...]`` or ``[x1, x2, ...]``. A
    one-shot iterator is read once (see :func:`require_reiterable`).

    Dicts: the inputs are under the first of :data:`X_KEYS` present (``x``, ``input``,
    ``inputs``, ``image``, ``images``, ``pixel_values``), the labels under the first of
    :data:`Y_KEYS` (``y``, ``label``, ``labels``), if any. A dict given as ``data`` holds
    whole-data columns (``{"x": X, "y": Y}`` reads like ``(X, Y)``). A list (or tuple) of
    dicts is a list of per-example records, stacked into one ``(x, y)``, when its first dict's
    label is one number (a Python/numpy scalar or a 0-d tensor, as a HuggingFace dataset's
    rows have); otherwise (1-d labels, or no labels) it is a list of dict batches, as a
    DataLoader yields. pandas objects are refused with what to pass instead. Labels of every
    form go through :func:`check_labels`.
    """
    positive_int("batch_size", batch_size, allow_none=True)
    if data is None:
        raise ValueError("data is None; expected a tensor, an (x, y) tuple or a DataLoader")
    if isinstance(data, (str, bytes)):
        raise TypeError(
            f"data of type {type(data).__name__} is not supported; load a named data set with "
            "jacspec.load_dataset(name) and pass that"
        )
    _refuse_pandas(data)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = to_tensor(data, "data")
        _check_pair(x, None)
        yield from _slices(x, None, batch_size or max(1, x.shape[0]))
        return
    whole = _whole(data)
    if whole is not None:
        x, y, what = whole
        y = _check_pair(x, y, what)
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
        y = _check_pair(x, y, "data batch labels")
        if batch_size is None or x.shape[0] <= batch_size:
            yield x, y
        else:
            yield from _slices(x, y, batch_size)


def _whole(data: Any) -> tuple[torch.Tensor, torch.Tensor | None, str] | None:
    """``(x, y, labels' name)`` of data held whole in memory (``.x``/``.y``, an ``(x, y)``
    pair, a dict of columns, a list of per-example records), else None."""
    if hasattr(data, "x") and hasattr(data, "y") and not isinstance(data, (tuple, list, dict)):
        return to_tensor(data.x, "data.x"), to_tensor(data.y, "data.y"), "data.y (labels)"
    pair = in_memory_pair(data)
    if pair is not None:
        x = to_tensor(pair[0], "data x")
        return x, None if pair[1] is None else to_tensor(pair[1], "data y"), "data labels y"
    columns = _columns(data)
    if columns is not None:
        xk, yk = _dict_keys(data, "data")
        x = to_tensor(columns[0], f"data[{xk!r}]")
        y = None if columns[1] is None else to_tensor(columns[1], f"data[{yk!r}]")
        return x, y, f"data[{yk!r}] (labels)"
    if _is_records(data):
        x, y = _stack_records(data)
        return x, y, "the records' labels"
    return None


def data_length(data: Any) -> int | None:
    """Number of examples in ``data`` when it can be known without iterating, else None."""
    if isinstance(data, KnownLength):
        return data.num_examples
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return int(data.shape[0])
    if hasattr(data, "x") and hasattr(data.x, "shape") and not isinstance(data, (tuple, list)):
        return int(data.x.shape[0])
    pair = in_memory_pair(data)
    if pair is not None:
        return int(pair[0].shape[0])
    if isinstance(data, dict):
        x = next((data[k] for k in X_KEYS if k in data), None)
        return int(x.shape[0]) if getattr(x, "ndim", 0) >= 1 else None
    if _is_records(data):
        return len(data)
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
