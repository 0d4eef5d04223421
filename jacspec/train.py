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

    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to train")
    dev = torch.device(device) if device is not None else params[0].device
    model.to(dev)
    x = data.x.to(device=dev, dtype=params[0].dtype)
    y = data.y.to(dev)
    n = len(y)
    bs = n if batch_size is None else batch_size
    opt = make_optimizer(model, optimizer, lr, momentum=momentum, weight_decay=weight_decay)
    settings = {"optimizer": optimizer, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "batch_size": batch_size, "max_epochs": max_epochs,
                "target_accuracy": target_accuracy, "target_loss": target_loss, "seed": int(seed),
                "n": n, "data": data.name, "threads": threads}
    if max_steps is not None:
        settings["max_steps"] = max_steps
    if augment is not None:
        settings["augment"] = getattr(augment, "__name__", type(augment).__name__)
    epoch_budget = max_epochs
    if max_steps is not None:
        epoch_budget = min(max_epochs, math.ceil(max_steps / math.ceil(n / bs)))

    def done(acc: float, loss: float) -> str | None:
        if target_accuracy is None and target_loss is None:
            return None
        if target_accuracy is not None and acc < target_accuracy:
            return None
        if target_loss is not None and loss > target_loss:
            return None
        return "loss" if target_loss is not None else "accuracy"

    gen = torch.Generator().manual_seed(int(seed))
    history: list[tuple[int, float, float]] = []
    step_history: list[int] = []
    steps, epoch, reached = 0, 0, "budget"
    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    bar = progress_bar(progress, total=epoch_budget, desc="train", unit="epoch")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            while True:
                model.eval()
                acc, loss = evaluate(model, x, y)
                history.append((epoch, acc, loss))
                step_history.append(steps)
                log.debug("epoch %d: train accuracy %.4f, loss %.4g", epoch, acc, loss)
                if bar is not None:
                    bar.set_postfix(acc=f"{acc:.4f}", loss=f"{loss:.3g}")
                if not math.isfinite(loss):
                    raise ValueError(f"training diverged at epoch {epoch} (loss {loss}); lower "
                                     f"lr (got {lr})")
                stop = done(acc, loss)
                halt = callback is not None and callback(epoch, acc, loss) is True
                if stop is not None or halt:
                    reached = stop if stop is not None else "callback"
                    break
                if epoch >= epoch_budget:
                    break
                model.train()
                order = torch.randperm(n, generator=gen).to(dev)
                for i in range(0, n, bs):
                    idx = order[i:i + bs]
                    xb, yb = x[idx], y[idx]
                    if augment is not None:
                        xb = augment(xb, gen)
                    if optimizer == "lbfgs":
                        opt.step(functools.partial(_closure, model, opt, xb, yb))
                    else:
                        opt.zero_grad(set_to_none=True)
                        F.cross_entropy(model(xb), yb).backward()
                        opt.step()
                    steps += 1
                epoch += 1
                if bar is not None:
                    bar.update(1)
    finally:
        model.eval()
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
    acc, loss = history[-1][1], history[-1][2]
    if reached == "budget" and (target_accuracy is not None or target_loss is not None):
        log.info("stopped after %d epochs without reaching the target (acc %.4f, loss %.4g)",
                 epoch, acc, loss)
    return TrainResult(train_accuracy=acc, train_loss=loss, epochs=epoch, steps=steps,
                       reached=reached, seconds=time.perf_counter() - start, settings=settings,
                       history=tuple(history), step_history=tuple(step_history))
