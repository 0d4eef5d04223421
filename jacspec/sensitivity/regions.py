"""Activation codes and linear-region transitions (Novak et al., ICLR 2018).

For a network with piecewise-linear activations, the *code* ``c(x)`` records,
for every unit, which linear piece of its activation the pre-activation ``h``
lies in: ReLU / LeakyReLU ``[h > 0]``; HardTanh(lo, hi), ReLU6 (0, 6) and
HardSigmoid (-3, 3) ``[h > lo] + [h > hi]`` in {0, 1, 2}. Smooth activations
(tanh, sigmoid, GELU, ...) get the sign code ``[h > 0]``, flagged as an
approximation. Along points ``z_0 .. z_{k-1}`` the transitions are
``t = sum_i ||c(z_i) - c(z_{i+1})||_1`` (index ``(i+1) % k`` when closed); for
two-piece activations this is the Hamming distance between consecutive codes.

Activations are recognised through the torch functions the model calls
(``F.relu``, ``torch.relu``, ``Tensor.relu``, ``F.hardtanh`` ...), intercepted with
a :class:`torch.overrides.TorchFunctionMode`; the ``nn`` modules (``nn.ReLU`` ...)
call exactly these functions, so both forms are seen, each call once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from jacspec._util.json import jsonable
from jacspec._util.progress import progress_bar
from jacspec._util.validation import positive_int
from jacspec.jacobian.model_prep import check_model
from jacspec.models.activations import REGISTRY

log = logging.getLogger(__name__)

__all__ = [
    "ActivationCodes",
    "LayerInfo",
    "Transitions",
    "activation_codes",
    "count_transitions",
    "iter_point_batches",
]

def _aten(name: str) -> Any:
    """``torch.ops.aten.<name>.default`` (what torch.export programs call), or None."""
    packet = getattr(torch.ops.aten, name, None)
    return getattr(packet, "default", None) if packet is not None else None


# The code tables, from the activation registry: torch function (and the aten operator
# torch.export programs call instead) -> the torch function's name, reported as the kind.
# Two pieces (one breakpoint at 0): code [h > 0]; three pieces (two breakpoints, resolved
# per call for hardtanh): [h > lo] + [h > hi]; any other activation: its sign (approximate).
_RELU_LIKE: dict[Any, str] = {}
_HARDTANH_LIKE: dict[Any, str] = {}
_SMOOTH: dict[Any, str] = {}
for _spec in REGISTRY.values():
    if not _spec.calls:
        continue
    if _spec.piecewise_linear and len(_spec.breakpoints) == 1:
        _table = _RELU_LIKE
    elif _spec.piecewise_linear and len(_spec.breakpoints) == 2:
        _table = _HARDTANH_LIKE
    else:
        _table = _SMOOTH
    for _fn in _spec.calls:
        _table[_fn] = _spec.call_name
    for _op_name in _spec.aten:
        _op = _aten(_op_name)
        if _op is not None:
            _table[_op] = _spec.call_name


@dataclass(frozen=True)
class LayerInfo:
    """One intercepted activation call: its position, function name, unit count, pieces."""

    index: int
    kind: str
    num_units: int
    num_pieces: int
    approximate: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "num_units": self.num_units,
            "num_pieces": self.num_pieces,
            "approximate": self.approximate,
        }


@dataclass(frozen=True)
class ActivationCodes:
    """Codes ``(b, N)`` uint8: linear-piece index of each of ``N`` units for ``b`` inputs.

    ``layers`` lists the intercepted activation calls in call order; their units
    are concatenated in that order. ``approximate`` is True when some smooth
    activation was coded by its sign.
    """

    codes: Tensor
    layers: tuple[LayerInfo, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def approximate(self) -> bool:
        return any(layer.approximate for layer in self.layers)

    @property
    def num_units(self) -> int:
        return int(self.codes.shape[1])

    def summary(self) -> dict[str, Any]:
        """Points, units, activation calls, and ``num_regions``: distinct codes among the
        points (the linear regions they fall in)."""
        regions = int(torch.unique(self.codes, dim=0).shape[0]) if self.codes.shape[0] else 0
        return {"num_points": int(self.codes.shape[0]), "num_units": self.num_units,
                "num_layers": len(self.layers), "num_regions": regions,
                "approximate": self.approximate}

    def to_dict(self, *, codes: bool = False) -> dict[str, Any]:
        """:meth:`summary`, the layers and the settings; the codes only with ``codes=True``."""
        d: dict[str, Any] = {**self.summary(), "layers": [la.to_dict() for la in self.layers],
                             "settings": self.settings}
        if codes:
            d["codes"] = self.codes
        return jsonable(d)

    def to_frame(self) -> Any:
        """The codes: one row per point, one column ``"{call index}:{unit}"`` per unit."""
        import pandas as pd

        cols = [f"{la.index}:{u}" for la in self.layers for u in range(la.num_units)]
        return pd.DataFrame(self.codes.cpu().numpy(), columns=cols)


def _breakpoints(func: Callable, args: tuple, kwargs: dict) -> tuple[float, float, str]:
    """Return the two breakpoints of a hardtanh-like call and its name."""
    name = _HARDTANH_LIKE[func]
    if name == "relu6":
        return 0.0, 6.0, name
    if name == "hardsigmoid":
        return -3.0, 3.0, name
    lo = float(kwargs.get("min_val", args[1] if len(args) > 1 else -1.0))
    hi = float(kwargs.get("max_val", args[2] if len(args) > 2 else 1.0))
    return lo, hi, "relu6" if (lo, hi) == (0.0, 6.0) else name


class _CodeRecorder(TorchFunctionMode):
    """Torch function mode that records the piece index of every activation input."""

    def __init__(self, batch: int, keep: Callable[[int], bool] | None = None) -> None:
        super().__init__()
        self.batch = batch
        self.keep = keep
        self.codes: list[Tensor] = []
        self.layers: list[LayerInfo] = []
        self._count = 0

    def _record(self, h: Tensor, kind: str, pieces: int, approx: bool, code_fn: Callable) -> None:
        index = self._count
        self._count += 1
        if self.keep is not None and not self.keep(index):
            return
        if h.dim() == 0 or h.shape[0] != self.batch:
            raise ValueError(
                f"model applies {kind} to a tensor of shape {tuple(h.shape)} whose first "
                f"dimension is not the batch size {self.batch}; activation codes need "
                "per-example activations"
            )
        code = code_fn(h.detach()).reshape(self.batch, -1).to(torch.uint8)
        self.codes.append(code)
        self.layers.append(LayerInfo(index, kind, int(code.shape[1]), pieces, approx))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if args and isinstance(args[0], Tensor):
            h = args[0]
            if func in _RELU_LIKE:
                self._record(h, _RELU_LIKE[func], 2, False, lambda v: v > 0)
            elif func in _HARDTANH_LIKE:
                lo, hi, name = _breakpoints(func, args, kwargs)
                self._record(
                    h, name, 3, False, lambda v: (v > lo).to(torch.uint8) + (v > hi).to(torch.uint8)
                )
            elif func in _SMOOTH:
                self._record(h, _SMOOTH[func], 2, True, lambda v: v > 0)
        return func(*args, **kwargs)


def _layer_filter(layers: Sequence[int] | None) -> Callable[[int, int], bool] | None:
    if layers is None:
        return None
    chosen = list(layers)
    if not all(isinstance(i, int) for i in chosen):
        raise TypeError(f"layers={layers!r} must be a sequence of int activation-call indices")
    return lambda index, total: any(index == (i % total if total else i) for i in chosen)


def _count_calls(model: nn.Module, x: Tensor) -> int:
    rec = _CodeRecorder(batch=x.shape[0])
    with torch.no_grad(), rec:
        model(x)
    return rec._count


def activation_codes(
    model: nn.Module, x: Tensor, *, layers: Sequence[int] | None = None
) -> ActivationCodes:
    """Codes of a batch ``x`` (b, *input_shape) -> :class:`ActivationCodes` (b, N).

    ``layers`` picks activation calls by position in call order (negative
    indices count from the end: ``[-1]`` is the last hidden layer).
    """
    _check_model(model)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor batch (b, *input_shape), got {type(x).__name__}")
    x = _match_dtype(model, x)
    keep = None
    if layers is not None:
        total = _count_calls(model, x[:1]) if x.shape[0] else 0
        flt = _layer_filter(layers)
        assert flt is not None
        keep = lambda index: flt(index, total)  # noqa: E731
    rec = _CodeRecorder(batch=x.shape[0], keep=keep)
    with torch.no_grad(), rec:
        model(x)
    if rec._count == 0:
        raise ValueError(
            "model calls no recognised activation (relu, leaky_relu, relu6, hardtanh, "
            "hardsigmoid, or a smooth one such as tanh); cannot compute activation codes"
        )
    if not rec.codes:
        raise ValueError(f"layers={layers!r} selects none of the model's {rec._count} activations")
    codes = torch.cat(rec.codes, dim=1)
    settings = {"layers": None if layers is None else list(layers)}
    return ActivationCodes(codes=codes, layers=tuple(rec.layers), settings=settings)


def _match_dtype(model: nn.Module, x: Tensor) -> Tensor:
    """Cast floating ``x`` to the model's parameter dtype (codes do not depend on it)."""
    for p in model.parameters():
        if p.is_floating_point() and x.is_floating_point() and p.dtype != x.dtype:
            return x.to(p.dtype)
        break
    return x


def _check_model(model: object) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "model is a TorchScript module; activation codes need an eager nn.Module "
            "(load the checkpoint or the python factory instead)"
        )
    check_model(model)


@dataclass(frozen=True)
class Transitions:
    """Transitions between consecutive codes along a sequence of points.

    ``distances[i] = ||c(z_i) - c(z_{i+1})||_1`` (the last entry pairs ``z_{k-1}``
    with ``z_0`` when ``closed``); ``total`` is their sum. ``distances`` is None
    when it was not kept.
    """

    total: int
    num_points: int
    num_units: int
    closed: bool
    approximate: bool
    distances: np.ndarray | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Total, points, units, closed, approximate and transitions per point."""
        return {
            "total": self.total,
            "num_points": self.num_points,
            "num_units": self.num_units,
            "closed": self.closed,
            "approximate": self.approximate,
            "transitions_per_point": self.total / self.num_points if self.num_points else None,
        }

    def to_dict(self, *, distances: bool = False) -> dict[str, Any]:
        """:meth:`summary` and the settings; the distances only with ``distances=True``."""
        d: dict[str, Any] = {**self.summary(), "settings": self.settings}
        if distances:
            d["distances"] = self.distances
        return jsonable(d)

    def to_frame(self) -> Any:
        """One row per step ``z_i -> z_{i+1}`` (column ``distance``) when the distances were
        kept, else one row of :meth:`summary`."""
        import pandas as pd

        if self.distances is None:
            return pd.DataFrame([self.summary()])
        return pd.DataFrame({"step": np.arange(self.distances.size), "distance": self.distances})


def iter_point_batches(
    points: object, *, num_points: int | None = None, batch_size: int = 4096
) -> Iterator[Tensor]:
    """Yield batches ``(b, *shape)`` of points in order.

    ``points`` may be a Tensor (k, *shape), a numpy array, a callable of
    ``t`` (Tensor (b,) in [0, 1)) -> points (needs ``num_points``; evaluated at
    ``t_i = i / num_points``, e.g. a :class:`jacspec.sensitivity.trajectories.Trajectory`),
    or an iterable / generator of batches.
    """
    positive_int("batch_size", batch_size)
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    if isinstance(points, Tensor):
        if points.dim() < 1:
            raise ValueError("points must have a leading point dimension (k, *shape)")
        yield from points.split(batch_size)
        return
    if callable(points):
        positive_int("num_points (points is a callable)", num_points)
        for start in range(0, num_points, batch_size):
            stop = min(start + batch_size, num_points)
            t = torch.arange(start, stop, dtype=torch.float64) / num_points
            yield points(t)
        return
    if isinstance(points, Iterable):
        for batch in points:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            if isinstance(batch, np.ndarray):
                batch = torch.from_numpy(batch)
            if not isinstance(batch, Tensor):
                raise TypeError(f"points yielded a {type(batch).__name__}, expected Tensor batches")
            yield batch
        return
    raise TypeError(
        "points must be a Tensor (k, *shape), a numpy array, a callable t -> points "
        f"(with num_points), or an iterable of batches; got {type(points).__name__}"
    )


def count_transitions(
    model: nn.Module,
    points: object,
    *,
    closed: bool = True,
    num_points: int | None = None,
    batch_size: int = 4096,
    layers: Sequence[int] | None = None,
    keep_distances: bool = True,
    progress: bool = False,
) -> Transitions:
    """Transitions ``sum_i ||c(z_i) - c(z_{i+1})||_1`` along ``points`` (see module doc).

    Batches are coded one at a time and the last code of a batch is carried to
    the next, so working memory does not grow with the number of points (only
    ``distances``, int32 per point, when ``keep_distances``).
    """
    _check_model(model)
    first: Tensor | None = None
    last: Tensor | None = None
    total = 0
    count = 0
    approx = False
    units = -1
    chunks: list[np.ndarray] = []
    bar = progress_bar(progress, total=num_points, desc="transitions", unit="pt")
    for batch in iter_point_batches(points, num_points=num_points, batch_size=batch_size):
        if batch.shape[0] == 0:
            continue
        ac = activation_codes(model, batch, layers=layers)
        codes = ac.codes
        approx = approx or ac.approximate
        if units < 0:
            units = codes.shape[1]
        elif codes.shape[1] != units:
            raise ValueError("the number of activation units changed between batches of points")
        chain = codes if last is None else torch.cat([last, codes], dim=0)
        d = (chain[1:].to(torch.int16) - chain[:-1].to(torch.int16)).abs().sum(dim=1)
        total += int(d.sum())
        if keep_distances:
            chunks.append(d.to(torch.int32).numpy())
        if first is None:
            first = codes[:1].clone()
        last = codes[-1:].clone()
        count += codes.shape[0]
        if bar is not None:
            bar.update(codes.shape[0])
    if bar is not None:
        bar.close()
    if count == 0:
        raise ValueError("points is empty; need at least one point to count transitions")
    if closed:
        assert first is not None and last is not None
        wrap = int((last.to(torch.int16) - first.to(torch.int16)).abs().sum())
        total += wrap
        if keep_distances:
            chunks.append(np.array([wrap], dtype=np.int32))
    distances = np.concatenate(chunks) if keep_distances and chunks else None
    if keep_distances and distances is None:
        distances = np.zeros(0, dtype=np.int32)
    if approx:
        log.info("activation codes of smooth activations are sign codes (approximate)")
    return Transitions(
        total=total,
        num_points=count,
        num_units=units,
        closed=closed,
        approximate=approx,
        distances=distances,
        settings={"closed": closed, "num_points": num_points, "batch_size": batch_size,
                  "layers": None if layers is None else list(layers),
                  "keep_distances": keep_distances},
    )


def transitions_per_length(transitions: Transitions, length: float) -> float:
    """Transition density: ``total / length`` of the trajectory in input space."""
    if not math.isfinite(length) or length <= 0:
        raise ValueError(f"length={length!r} must be a positive finite trajectory length")
    return transitions.total / length
