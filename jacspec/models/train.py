"""Train a classifier to a fixed criterion: 100% train accuracy, a cross-entropy target, or an
epoch or step budget (the stopping rule of generalization-metric studies, Jiang et al. 2020).

Loss: mean cross-entropy ``-1/n sum_i log softmax(f(x_i))_{y_i}``. The whole training set is
evaluated once per epoch (eval mode, no gradient) and training stops at the first epoch end where
every given target holds. Optimizers: Adam, SGD (+momentum), RMSProp (+momentum) and L-BFGS
(strong-Wolfe line search, one iteration per step; meant for full batch, ``batch_size=None``).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from jacspec._util.json import jsonable
from jacspec._util.progress import progress_bar
from jacspec._util.validation import check_choice, positive_int
from jacspec.data.datasets import DataSet

log = logging.getLogger(__name__)

__all__ = ["OPTIMIZERS", "TrainResult", "evaluate", "make_optimizer", "train"]

OPTIMIZERS = ("adam", "sgd", "rmsprop", "lbfgs")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of ``train``: final full-train-set accuracy and mean cross-entropy, epochs and
    optimizer steps taken, which criterion stopped training ("accuracy", "loss", "budget", or
    "callback"),
    wall-clock seconds, the settings used, per-epoch ``history`` rows
    ``(epoch, train_accuracy, train_loss)`` (epoch 0 = before training; accuracy and loss on
    the whole training set in eval mode) and ``step_history``, the optimizer steps taken by
    the end of each of those epochs (one entry per history row)."""

    train_accuracy: float
    train_loss: float
    epochs: int
    steps: int
    reached: str
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    history: tuple[tuple[int, float, float], ...] = ()
    step_history: tuple[int, ...] = ()

    def summary(self) -> dict[str, Any]:
        """Final accuracy and loss, epochs, steps, stopping criterion, seconds (JSON-able)."""
        keys = ("train_accuracy", "train_loss", "epochs", "steps", "reached", "seconds")
        return jsonable({k: getattr(self, k) for k in keys})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields (history as lists; NaN written as None)."""
        return jsonable(asdict(self))

    def to_frame(self):  # -> pandas.DataFrame
        """Per-epoch history as a DataFrame with columns epoch, train_accuracy, train_loss."""
        import pandas as pd

        return pd.DataFrame(list(self.history), columns=["epoch", "train_accuracy", "train_loss"])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 4096
             ) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``(x, y)``; the model's train/eval mode is
    left as the caller set it."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    correct, total_loss = 0, 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb)
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    return correct / len(y), total_loss / len(y)


def make_optimizer(model: nn.Module, optimizer: str = "adam", lr: float = 1e-3, *,
                   momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim.Adam``, ``SGD`` or ``RMSprop`` (these two with optional ``momentum``), or
    ``LBFGS`` (history 20, strong-Wolfe line search, ``max_iter=1``: one iteration per ``step``;
    no momentum or weight decay) over the trainable parameters of ``model``."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if momentum and optimizer in ("adam", "lbfgs"):
        raise ValueError(f"momentum applies to optimizer='sgd' or 'rmsprop' only; got "
                         f"optimizer={optimizer!r} with momentum={momentum!r}")
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "lbfgs":
        if weight_decay:
            raise ValueError(f"weight_decay is not available with optimizer='lbfgs'; got "
                             f"{weight_decay!r}")
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=20,
                                 line_search_fn="strong_wolfe")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _check_number(name: str, value: object, *, low: float, inclusive: bool = False,
                  high: float = math.inf) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if inclusive else value > low) and value <= high
    if not ok:
        bound = f"{'>=' if inclusive else '>'} {low}" + ("" if high == math.inf else
                                                         f" and <= {high}")
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return float(value)


def _closure(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor
             ) -> torch.Tensor:
    """Mini-batch loss with fresh gradients, for optimizers that re-evaluate it (L-BFGS)."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    return loss


def train(
    model: nn.Module,
    data: DataSet,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    batch_size: int | None = 128,
    max_epochs: int = 200,
    max_steps: int | None = None,
    target_accuracy: float | None = 1.0,
    target_loss: float | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    callback: Callable[[int, float, float], object] | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> TrainResult:
    """Minimise mean cross-entropy on ``data`` with Adam, SGD(+momentum), RMSProp(+momentum) or
    L-BFGS (see :func:`make_optimizer`) in mini-batches of ``batch_size`` (None: full batch,
    one step per epoch).

    Stops at the end of the first epoch where the full-train-set accuracy is
    ``>= target_accuracy`` and the mean cross-entropy is ``<= target_loss`` (each only if not
    None), or after ``max_epochs`` epochs, or at the end of the epoch in which the step count
    reaches ``max_steps`` (a step budget rounded up to whole epochs, ``ceil(max_steps /
    ceil(n / batch_size))`` epochs; whichever budget comes first, ``reached="budget"``).
    ``augment(xb, generator)`` (optional) maps each mini-batch input ``xb`` (b, ...) to the
    one trained on (e.g. random shifts); it draws from the same ``torch.Generator`` as the
    mini-batch order. Mini-batch order is drawn from ``seed`` and any in-model
    randomness (dropout) runs under ``torch.manual_seed(seed)`` without touching the caller's
    global RNG state, so the same seed and initial weights give the same trained weights.
    ``x`` is cast to the model's parameter dtype. ``callback(epoch, accuracy, loss)`` is called
    after each evaluation (epoch 0 = before training); returning True stops training
    (``reached="callback"``). ``threads``: torch intra-op threads while training (restored
    afterwards); 1 is as fast for small models and avoids stalls when several processes
    share the cores. The model is left in eval mode.
    """
    lr, momentum, weight_decay, target_accuracy, target_loss = _check_train_arguments(
        data, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
        batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps, augment=augment,
        target_accuracy=target_accuracy, target_loss=target_loss, threads=threads)
    x, y = _on_device(model, data, device)
    n = len(y)
    bs = n if batch_size is None else batch_size
    opt = make_optimizer(model, optimizer, lr, momentum=momentum, weight_decay=weight_decay)
    settings = _settings(data, n, optimizer=optimizer, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, batch_size=batch_size,
                         max_epochs=max_epochs, max_steps=max_steps,
                         target_accuracy=target_accuracy, target_loss=target_loss, seed=seed,
                         threads=threads, augment=augment)
    epoch_budget = max_epochs if max_steps is None else min(
        max_epochs, math.ceil(max_steps / math.ceil(n / bs)))
    done = functools.partial(_target_reached, target_accuracy=target_accuracy,
                             target_loss=target_loss)
    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    bar = progress_bar(progress, total=epoch_budget, desc="train", unit="epoch")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            loop = _Loop(model, opt, x, y, bs, optimizer, augment,
                         torch.Generator().manual_seed(int(seed)))
            reached = loop.run(epoch_budget, done, callback, bar, lr)
    finally:
        model.eval()
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
    if reached == "budget" and (target_accuracy is not None or target_loss is not None):
        log.info("stopped after %d epochs without reaching the target (acc %.4f, loss %.4g)",
                 loop.epoch, loop.history[-1][1], loop.history[-1][2])
    return loop.result(reached, settings, time.perf_counter() - start)


def _on_device(model: nn.Module, data: DataSet, device: str | torch.device | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move ``model`` to ``device`` (default: where its parameters are) and return the data
    there, ``x`` in the parameters' dtype."""
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to train")
    dev = torch.device(device) if device is not None else params[0].device
    model.to(dev)
    return data.x.to(device=dev, dtype=params[0].dtype), data.y.to(dev)


def _check_train_arguments(
    data: DataSet, *, optimizer: str, lr: float, momentum: float, weight_decay: float,
    batch_size: int | None, max_epochs: int, max_steps: int | None,
    augment: Callable | None, target_accuracy: float | None, target_loss: float | None,
    threads: int | None,
) -> tuple[float, float, float, float | None, float | None]:
    """:func:`train`'s arguments checked in order (the first bad one raises); returns ``lr``,
    ``momentum``, ``weight_decay``, ``target_accuracy`` and ``target_loss`` as floats."""
    if not isinstance(data, DataSet):
        raise TypeError(f"data must be a jacspec DataSet (see load_dataset); got "
                        f"{type(data).__name__}")
    check_choice("optimizer", optimizer, OPTIMIZERS)
    lr = _check_number("lr", lr, low=0.0)
    momentum = _check_number("momentum", momentum, low=0.0, inclusive=True, high=1.0)
    weight_decay = _check_number("weight_decay", weight_decay, low=0.0, inclusive=True)
    for name, value in (("batch_size", batch_size), ("max_epochs", max_epochs),
                        ("max_steps", max_steps)):
        if value is None and name != "max_epochs":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < (name == "batch_size"):
            raise ValueError(f"{name} must be a non-negative integer (batch_size >= 1; "
                             f"batch_size and max_steps may be None); got {value!r}")
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a callable (x_batch, generator) -> x_batch or None; "
                        f"got {type(augment).__name__}")
    if target_accuracy is not None:
        target_accuracy = _check_number("target_accuracy", target_accuracy, low=0.0, high=1.0)
    if target_loss is not None:
        target_loss = _check_number("target_loss", target_loss, low=0.0, inclusive=True)
    if len(data) == 0:
        raise ValueError("data is empty")
    positive_int("threads", threads, allow_none=True)
    return lr, momentum, weight_decay, target_accuracy, target_loss


def _settings(data: DataSet, n: int, *, optimizer: str, lr: float, momentum: float,
              weight_decay: float, batch_size: int | None, max_epochs: int,
              max_steps: int | None, target_accuracy: float | None, target_loss: float | None,
              seed: int, threads: int | None, augment: Callable | None) -> dict[str, Any]:
    """The settings a :class:`TrainResult` records (``max_steps`` and ``augment``'s name only
    when given)."""
    settings = {"optimizer": optimizer, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "batch_size": batch_size, "max_epochs": max_epochs,
                "target_accuracy": target_accuracy, "target_loss": target_loss, "seed": int(seed),
                "n": n, "data": data.name, "threads": threads}
    if max_steps is not None:
        settings["max_steps"] = max_steps
    if augment is not None:
        settings["augment"] = getattr(augment, "__name__", type(augment).__name__)
    return settings


def _target_reached(acc: float, loss: float, *, target_accuracy: float | None,
                    target_loss: float | None) -> str | None:
    """Which target stopped training ("loss" when a loss target is set, else "accuracy"), or
    None while accuracy ``< target_accuracy`` or loss ``> target_loss`` (or no target set)."""
    if target_accuracy is None and target_loss is None:
        return None
    if target_accuracy is not None and acc < target_accuracy:
        return None
    if target_loss is not None and loss > target_loss:
        return None
    return "loss" if target_loss is not None else "accuracy"


class _Loop:
    """The epochs of one :func:`train` call: evaluate on the whole training set, stop or take
    one pass of mini-batches in an order drawn from ``gen``; keeps the history and counts."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, bs: int, optimizer: str,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None,
                 gen: torch.Generator) -> None:
        self.model, self.opt, self.x, self.y, self.bs = model, opt, x, y, bs
        self.optimizer, self.augment, self.gen = optimizer, augment, gen
        self.history: list[tuple[int, float, float]] = []
        self.step_history: list[int] = []
        self.steps = self.epoch = 0

    def run(self, epoch_budget: int, done: Callable[[float, float], str | None],
            callback: Callable[[int, float, float], object] | None, bar: Any,
            lr: float) -> str:
        """Evaluate, then train one epoch, until a target, the callback or the budget stops
        it; returns what stopped it ("accuracy", "loss", "callback" or "budget")."""
        while True:
            self.model.eval()
            acc, loss = evaluate(self.model, self.x, self.y)
            self.history.append((self.epoch, acc, loss))
            self.step_history.append(self.steps)
            log.debug("epoch %d: train accuracy %.4f, loss %.4g", self.epoch, acc, loss)
            if bar is not None:
                bar.set_postfix(acc=f"{acc:.4f}", loss=f"{loss:.3g}")
            if not math.isfinite(loss):
                raise ValueError(f"training diverged at epoch {self.epoch} (loss {loss}); lower "
                                 f"lr (got {lr})")
            stop = done(acc, loss)
            halt = callback is not None and callback(self.epoch, acc, loss) is True
            if stop is not None or halt:
                return stop if stop is not None else "callback"
            if self.epoch >= epoch_budget:
                return "budget"
            self.train_epoch()
            self.epoch += 1
            if bar is not None:
                bar.update(1)

    def result(self, reached: str, settings: dict[str, Any], seconds: float) -> TrainResult:
        """The :class:`TrainResult` of the epochs run: the last evaluation's accuracy and
        loss, the counts and the history."""
        acc, loss = self.history[-1][1], self.history[-1][2]
        return TrainResult(train_accuracy=acc, train_loss=loss, epochs=self.epoch,
                           steps=self.steps, reached=reached, seconds=seconds,
                           settings=settings, history=tuple(self.history),
                           step_history=tuple(self.step_history))

    def train_epoch(self) -> None:
        """One pass over the training set in mini-batches of ``bs`` (train mode)."""
        model, opt, x, y, n = self.model, self.opt, self.x, self.y, len(self.y)
        model.train()
        order = torch.randperm(n, generator=self.gen).to(x.device)
        for i in range(0, n, self.bs):
            idx = order[i:i + self.bs]
            xb, yb = x[idx], y[idx]
            if self.augment is not None:
                xb = self.augment(xb, self.gen)
            if self.optimizer == "lbfgs":
                opt.step(functools.partial(_closure, model, opt, xb, yb))
            else:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            self.steps += 1
