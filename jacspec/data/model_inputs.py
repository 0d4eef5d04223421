"""Batches as models take them: the one place a batch becomes model arguments and labels.

:func:`iter_model_batches` yields :class:`ModelBatch` objects (``args``, ``kwargs``,
labels ``y``, ``attention_mask``) from what a sequence model is fed:

- dict batches (a ``DataLoader`` with a collate function, a list of dict batches):
  ``input_ids``, ``attention_mask``, ``token_type_ids``, ..., anything the model's forward
  takes by keyword; the labels (``y``, ``label``, ``labels``: :data:`~jacspec.data.batches.
  Y_KEYS`) are taken out and never passed to the model;
- a dict of whole-data columns ``{"input_ids": (n, L), "labels": (n,), ...}`` and a list of
  per-example dicts (rows of a HuggingFace-style dataset, same-length values stacked);
- ``(x, y)`` and ``(x, y, index)`` tuples, bare tensors: ``x`` is passed positionally (a
  dict ``x`` by keyword).

Keys the forward does not take (``idx``, raw ``text``) are dropped, unless it takes
``**kwargs``. Labels of shape ``(b,)`` go through :func:`~jacspec.data.batches.check_labels`;
per-token labels (a language model's ``(b, L)``) are not class labels and are dropped.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from jacspec.data.batches import X_KEYS, Y_KEYS, check_labels, is_scalar, to_tensor

logger = logging.getLogger(__name__)

#: Rows of in-memory data per batch when none is given.
DEFAULT_ROWS = 256


@dataclass
class ModelBatch:
    """One batch as the model takes it: ``model(*args, **kwargs)``; ``y`` (b,) or None."""

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, Any]
    y: torch.Tensor | None
    size: int
    dropped: list[str] = field(default_factory=list)

    @property
    def attention_mask(self) -> torch.Tensor | None:
        """The batch's ``attention_mask`` (b, L), or None."""
        mask = self.kwargs.get("attention_mask")
        return mask if isinstance(mask, torch.Tensor) else None

    def rows(self, index: torch.Tensor) -> ModelBatch:
        """The examples ``index`` of this batch (every tensor of ``b`` rows indexed)."""
        def take(v: Any) -> Any:
            if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == self.size:
                return v[index.to(v.device)]
            return v

        return ModelBatch(tuple(take(a) for a in self.args),
                          {k: take(v) for k, v in self.kwargs.items()},
                          None if self.y is None else take(self.y), int(index.numel()))

    def to(self, device: torch.device) -> ModelBatch:
        """Tensors moved to ``device`` (dtypes kept: token ids stay integers)."""
        def move(v: Any) -> Any:
            return v.to(device) if isinstance(v, torch.Tensor) else v

        return ModelBatch(tuple(move(a) for a in self.args),
                          {k: move(v) for k, v in self.kwargs.items()}, self.y, self.size)


def forward_keywords(model: torch.nn.Module) -> Callable[[str], bool]:
    """Whether ``model``'s forward takes a keyword (all do when it has ``**kwargs``)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return lambda key: True
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return lambda key: True
    names = {n for n, p in params.items() if p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return lambda key: key in names


def _labels(value: Any, what: str) -> torch.Tensor | None:
    if value is None:
        return None
    t = to_tensor(value, what) if not isinstance(value, (list, tuple)) else torch.as_tensor(
        value)
    if t.ndim != 1:
        logger.info("%s has shape %s: not class labels (b,), not used", what, tuple(t.shape))
        return None
    return check_labels(t, what)


def split_batch(item: Any, takes: Callable[[str], bool], size: int | None = None
                ) -> ModelBatch:
    """One batch (dict, tuple/list or tensor) as :class:`ModelBatch` (see module docstring)."""
    if isinstance(item, Mapping):
        y = None
        kwargs: dict[str, Any] = {}
        args: tuple[torch.Tensor, ...] = ()
        dropped = []
        for key, value in item.items():
            if key in Y_KEYS:
                if y is None:
                    y = _labels(value, f"data batch {key!r}")
                continue
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if isinstance(value, torch.Tensor) and takes(str(key)):
                kwargs[str(key)] = value
            elif isinstance(value, torch.Tensor) and key in X_KEYS and not args:
                args = (value,)  # the inputs of a forward(x) model
            else:
                dropped.append(str(key))
        if not kwargs and not args:
            raise ValueError(f"a data batch with keys {sorted(map(str, item))} has no tensor "
                             "the model's forward takes by keyword; expected e.g. input_ids "
                             "and attention_mask")
        first = args[0] if args else next(iter(kwargs.values()))
        b = size if size is not None else int(first.shape[0])
        return ModelBatch(args, kwargs, y, b, dropped)
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("data yielded an empty batch tuple; expected (x, y) or x")
        y = _labels(item[1], "data batch y") if len(item) > 1 else None
        if isinstance(item[0], Mapping):
            inner = split_batch(item[0], takes)
            return ModelBatch(inner.args, inner.kwargs, y if y is not None else inner.y,
                              inner.size, inner.dropped)
        x = to_tensor(item[0], "data batch x")
        return ModelBatch((x,), {}, y, int(x.shape[0]))
    x = to_tensor(item, "data batch")
    return ModelBatch((x,), {}, None, int(x.shape[0]))


def _stack_rows(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-example dicts stacked key by key (every row needs the same keys and shapes)."""
    keys = list(rows[0])
    out: dict[str, Any] = {}
    for key in keys:
        values = []
        for i, row in enumerate(rows):
            if key not in row:
                raise ValueError(f"data[{i}] has no key {key!r} unlike data[0]; every row "
                                 "needs the same keys")
            v = row[key]
            values.append(v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
                          if isinstance(v, (list, tuple, np.ndarray)) or is_scalar(v) else v)
        if not all(isinstance(v, torch.Tensor) for v in values):
            out[key] = values
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f"data is a list of per-example dicts whose {key!r} values differ in length "
                f"({', '.join(map(str, sorted(shapes)))}); pad them to one length, or pass a "
                "DataLoader with a collate function that pads (e.g. transformers."
                "DataCollatorWithPadding)"
            )
        out[key] = torch.stack(values)
    return out


def iter_model_batches(data: Any, takes: Callable[[str], bool],
                       batch_size: int | None = None) -> Iterator[ModelBatch]:
    """Yield :class:`ModelBatch` objects from ``data`` (module docstring); in-memory data in
    batches of ``batch_size`` (default :data:`DEFAULT_ROWS`)."""
    rows = batch_size or DEFAULT_ROWS
    if data is None:
        raise ValueError("data is None; expected dict batches, an (x, y) tuple or a DataLoader")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = to_tensor(data, "data")
        for s in range(0, int(x.shape[0]), rows):
            yield ModelBatch((x[s : s + rows],), {}, None, int(x[s : s + rows].shape[0]))
        return
    if hasattr(data, "x") and hasattr(data, "y") and not isinstance(data, (tuple, list, dict)):
        yield from _whole(data.x, data.y, takes, rows)  # a jacspec DataSet
        return
    if isinstance(data, tuple) and len(data) in (2, 3) and isinstance(
            data[0], (torch.Tensor, np.ndarray, Mapping)):
        yield from _whole(data[0], data[1], takes, rows)
        return
    if isinstance(data, Mapping):
        ycol = next((data[k] for k in Y_KEYS if k in data), None)
        yield from _whole({k: v for k, v in data.items() if k not in Y_KEYS}, ycol, takes, rows)
        return
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], Mapping) and (
            is_row(data[0])):
        stacked = _stack_rows(list(data))
        ycol = next((stacked.pop(k) for k in Y_KEYS if k in stacked), None)
        for k in list(stacked):
            if not isinstance(stacked[k], torch.Tensor):
                stacked.pop(k)
        yield from _whole(stacked, ycol, takes, rows)
        return
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise TypeError(f"data of type {type(data).__name__} is not supported; expected dict "
                        "batches, (x, y) batches or a DataLoader")
    for item in data:
        batch = split_batch(item, takes)
        if batch.size:
            yield batch


def is_row(item: Mapping[str, Any]) -> bool:
    """A per-example dict: its label is one number, or its values are 1-d sequences."""
    yk = next((k for k in Y_KEYS if k in item), None)
    if yk is not None:
        return is_scalar(item[yk])
    first = next(iter(item.values()), None)
    return isinstance(first, (list, tuple)) or (
        isinstance(first, (torch.Tensor, np.ndarray)) and first.ndim == 1)


def _whole(x: Any, y: Any, takes: Callable[[str], bool], rows: int) -> Iterator[ModelBatch]:
    """In-memory columns ``x`` (tensor or dict of tensors) and labels ``y``, cut in batches."""
    if isinstance(x, Mapping):
        cols = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                for k, v in x.items()}
        n = next(int(v.shape[0]) for v in cols.values() if isinstance(v, torch.Tensor))
    else:
        cols = None
        x = to_tensor(x, "data x")
        n = int(x.shape[0])
    yt = None if y is None else to_tensor(y, "data labels y")
    if yt is not None and yt.shape[0] != n:
        raise ValueError(f"data has {n} inputs but {yt.shape[0]} labels; they must match")
    for s in range(0, n, rows):
        ys = None if yt is None else yt[s : s + rows]
        if cols is None:
            yield split_batch((x[s : s + rows], ys), takes)
        else:
            part = {k: v[s : s + rows] if isinstance(v, torch.Tensor) else v
                    for k, v in cols.items()}
            batch = split_batch(part, takes)
            batch.y = None if ys is None else _labels(ys, "data labels")
            yield batch
