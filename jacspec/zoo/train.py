"""Train one network of a model zoo from a configuration dict (Novak et al. 2018's grid).

A configuration is a flat dict of JSON values (defaults in :data:`DEFAULTS`):

- data: ``dataset`` (a :func:`jacspec.datasets.load_dataset` name), ``n_train``, ``n_test``,
  ``data_seed``, ``random_labels`` (bool);
- model: ``model`` ("mlp" or "cnn"), ``width``, ``depth``, ``activation`` (relu, relu6, tanh,
  hard_sigmoid, hard_tanh, ...), ``init_scale`` (multiplier of the default weight std);
- training: ``optimizer`` (sgd, momentum, adam, rmsprop, lbfgs), ``lr``, ``batch_size``
  (an int or "full"), ``augment`` (random translations by up to ``shift`` pixels),
  ``flip`` (random horizontal flips; images only), ``max_epochs`` (the budget) or
  ``max_steps`` (a step budget, rounded up to whole epochs; overrides ``max_epochs``),
  ``target_accuracy`` (1.0), ``target_loss`` (stop also when the mean cross-entropy falls
  to it, e.g. 0.01), ``seed``;
- measurement: ``metrics`` (names in :data:`jacspec.zoo.metrics.REGISTRY`), ``curve_metrics``
  measured at checkpoints during training, ``checkpoints`` (how many, at doubling epochs),
  ``n_jacobian`` / ``n_esd`` (points used for Jacobian norms / ESDs),
  ``save_checkpoint`` (keep the trained weights beside the store).

Adam, SGD and Momentum without augmentation train with :func:`jacspec.train.train`; RMSProp,
full-batch L-BFGS and augmented runs use :func:`train_extended`, which follows the same rules
(full-train-set evaluation once per epoch, same stopping criteria, same ``TrainResult``).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from jacspec.datasets import DataSet, load_dataset
from jacspec.errors import check_choice
from jacspec.models import build_model, default_sigma_w
from jacspec.train import TrainResult, evaluate, make_optimizer, train

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop", "lbfgs")
MODELS = ("mlp", "cnn")

DEFAULTS: dict[str, Any] = {
    "dataset": "mnist1d", "n_train": 1000, "n_test": 1000, "data_seed": 0,
    "random_labels": False,
    "model": "mlp", "width": 64, "depth": 2, "activation": "relu", "init_scale": 1.0,
    "optimizer": "adam", "lr": 1e-3, "batch_size": 64, "augment": False, "flip": False,
    "shift": 1, "max_epochs": 200, "max_steps": None, "target_accuracy": 1.0,
    "target_loss": 0.01, "seed": 0,
    "metrics": None, "curve_metrics": None, "checkpoints": 0, "save_checkpoint": False,
    "n_jacobian": 1000, "n_esd": 200,
}


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` overridden by ``config``; unknown keys raise ValueError."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown configuration keys {sorted(unknown)}; accepted: "
                         f"{', '.join(sorted(DEFAULTS))}")
    cfg = {**DEFAULTS, **config}
    check_choice("optimizer", cfg["optimizer"], OPTIMIZERS)
    check_choice("model", cfg["model"], MODELS)
    bs = cfg["batch_size"]
    if not (bs == "full" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
        raise ValueError(f"batch_size must be a positive integer or 'full', got {bs!r}")
    return cfg


def is_full_batch(config: Mapping[str, Any]) -> bool:
    """Full-batch training: ``batch_size="full"`` or L-BFGS."""
    return config.get("batch_size") == "full" or config.get("optimizer") == "lbfgs"


def load_data(config: Mapping[str, Any]) -> tuple[DataSet, DataSet]:
    """(train, test) sets of a configuration; inputs keep their geometry ((1, 40), (1, 8, 8)).
    Loaded once per process and set of data keys."""
    cfg = resolve_config(config)
    return _load_data(str(cfg["dataset"]), int(cfg["data_seed"]), int(cfg["n_train"] or 0),
                      int(cfg["n_test"] or 0), bool(cfg["random_labels"]))


@functools.lru_cache(maxsize=8)
def _load_data(name: str, seed: int, n_train: int, n_test: int, random_labels: bool
               ) -> tuple[DataSet, DataSet]:
    cfg = {"n_train": n_train, "n_test": n_test, "random_labels": random_labels}
    tr = load_dataset(name, "train", seed=seed, flatten=False)
    te = load_dataset(name, "test", seed=seed, flatten=False)
    if cfg["n_train"] and cfg["n_train"] < len(tr):
        tr = tr.subset(int(cfg["n_train"]), seed=seed)
    if cfg["n_test"] and cfg["n_test"] < len(te):
        te = te.subset(int(cfg["n_test"]), seed=seed + 1)
    if cfg["random_labels"]:
        tr = tr.with_random_labels(seed)
    return tr, te


def make_model(config: Mapping[str, Any], data: DataSet) -> nn.Module:
    """The network of a configuration, built with :func:`jacspec.models.build_model`.

    MLP: ``sigma_w = init_scale * default_sigma_w(activation)``. CNN: ``depth`` conv blocks of
    ``width, 2 width, ...`` channels, PyTorch's default init with weights times ``init_scale``.
    """
    cfg = resolve_config(config)
    shape = list(data.input_shape)
    if cfg["model"] == "mlp":
        return build_model({
            "kind": "mlp", "input_shape": shape, "num_classes": data.num_classes,
            "width": int(cfg["width"]), "depth": int(cfg["depth"]),
            "activation": cfg["activation"],
            "sigma_w": float(cfg["init_scale"]) * default_sigma_w(cfg["activation"]),
            "seed": int(cfg["seed"])})
    if len(shape) != 3:
        raise ValueError(f"model='cnn' needs image inputs (C, H, W); dataset "
                         f"{cfg['dataset']!r} has inputs of shape {tuple(shape)}")
    channels = [int(cfg["width"]) * 2 ** i for i in range(int(cfg["depth"]))]
    model = build_model({"kind": "cnn", "input_shape": shape, "num_classes": data.num_classes,
                         "channels": channels, "activation": cfg["activation"],
                         "seed": int(cfg["seed"])})
    if cfg["init_scale"] != 1.0:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(float(cfg["init_scale"]))
    return model


def augment_batch(x: torch.Tensor, *, shift: int, flip: bool, generator: torch.Generator
                  ) -> torch.Tensor:
    """Random translations by up to ``shift`` positions along each spatial axis (zero fill)
    and, if ``flip``, random horizontal (last-axis) flips. ``x`` (b, C, L) or (b, C, H, W)."""
    if x.ndim not in (3, 4):
        raise ValueError(f"augmentation needs inputs (b, C, L) or (b, C, H, W), got "
                         f"{tuple(x.shape)}")
    b = x.shape[0]
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        x = torch.where(mask.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
    if shift <= 0:
        return x
    spatial = x.shape[2:]
    pad = [shift] * (2 * len(spatial))
    xp = F.pad(x, pad)
    idx = [torch.arange(b).view(-1, *([1] * (x.ndim - 1))),
           torch.arange(x.shape[1]).view(1, -1, *([1] * len(spatial)))]
    for axis, size in enumerate(spatial):
        off = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
        view = [b, 1] + [1] * len(spatial)
        view[2 + axis] = size
        idx.append((off.view(-1, *([1] * (len(spatial) + 1))) +
                    torch.arange(size).view(1, 1, *[size if i == axis else 1
                                                    for i in range(len(spatial))])
                    ).expand(*view))
    return xp[tuple(idx)]


def _optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    if name in ("adam", "sgd"):
        return make_optimizer(model, name, lr)
    if name == "momentum":
        return make_optimizer(model, "sgd", lr, momentum=0.9)
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=20,
                             line_search_fn="strong_wolfe")


def train_extended(
    model: nn.Module, data: DataSet, *, optimizer: str = "adam", lr: float = 1e-3,
    batch_size: int | None = 128, max_epochs: int = 200, target_accuracy: float | None = 1.0,
    target_loss: float | None = None, augment: bool = False, shift: int = 1,
    flip: bool = False, seed: int = 0,
    callback: Callable[[int, float, float], object] | None = None,
) -> TrainResult:
    """:func:`jacspec.train.train` for the optimizers and options it lacks: RMSProp, L-BFGS
    (full batch, strong-Wolfe line search, one iteration per step), Momentum (SGD, 0.9), and
    data augmentation. ``batch_size=None`` is full batch. Same stopping rule: at the end of the
    first epoch where accuracy >= ``target_accuracy`` and loss <= ``target_loss`` (given ones),
    or ``callback(epoch, acc, loss)`` returns True, or ``max_epochs`` epochs."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    x, y = data.x.to(next(model.parameters()).dtype), data.y
    n = len(y)
    bs = n if (batch_size is None or optimizer == "lbfgs") else int(batch_size)
    opt = _optimizer(model, optimizer, lr)
    gen = torch.Generator().manual_seed(int(seed))
    history: list[tuple[int, float, float]] = []
    steps, epoch, reached = 0, 0, "budget"
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        while True:
            model.eval()
            acc, loss = evaluate(model, x, y)
            history.append((epoch, acc, loss))
            if not math.isfinite(loss):
                raise ValueError(f"training diverged at epoch {epoch} (loss {loss}); lower lr "
                                 f"(got {lr})")
            hit = ((target_accuracy is not None or target_loss is not None)
                   and (target_accuracy is None or acc >= target_accuracy)
                   and (target_loss is None or loss <= target_loss))
            if hit:
                reached = "loss" if target_loss is not None else "accuracy"
                break
            if callback is not None and callback(epoch, acc, loss) is True:
                reached = "callback"
                break
            if epoch >= max_epochs:
                break
            model.train()
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, bs):
                idx = order[i:i + bs]
                xb, yb = x[idx], y[idx]
                if augment or flip:
                    xb = augment_batch(xb, shift=shift if augment else 0, flip=flip,
                                       generator=gen)

                def closure(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
                    opt.zero_grad(set_to_none=True)
                    loss_b = F.cross_entropy(model(xb), yb)
                    loss_b.backward()
                    return loss_b

                if optimizer == "lbfgs":
                    opt.step(closure)
                else:
                    closure()
                    opt.step()
                steps += 1
            epoch += 1
    model.eval()
    acc, loss = history[-1][1], history[-1][2]
    settings = {"optimizer": optimizer, "lr": lr, "batch_size": bs, "max_epochs": max_epochs,
                "target_accuracy": target_accuracy, "target_loss": target_loss,
                "augment": augment, "shift": shift, "flip": flip, "seed": int(seed), "n": n,
                "data": data.name}
    return TrainResult(train_accuracy=acc, train_loss=loss, epochs=epoch, steps=steps,
                       reached=reached, seconds=time.perf_counter() - start, settings=settings,
                       history=tuple(history))


def fit(model: nn.Module, data: DataSet, config: Mapping[str, Any],
        callback: Callable[[int, float, float], object] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` as ``config`` says; ``reached`` is "accuracy", "loss"
    (cross-entropy target; either one stops training) or "budget"."""
    cfg = resolve_config(config)
    target_loss = cfg["target_loss"]
    full = is_full_batch(cfg)
    if cfg["flip"] and len(data.input_shape) != 3:
        raise ValueError("flip=True needs image inputs (C, H, W)")

    def stop(epoch: int, acc: float, loss: float) -> bool:
        halted = callback(epoch, acc, loss) is True if callback is not None else False
        return halted or (target_loss is not None and loss <= target_loss)

    max_epochs = int(cfg["max_epochs"])
    if cfg["max_steps"] is not None:
        per_epoch = 1 if full else math.ceil(len(data) / int(cfg["batch_size"]))
        max_epochs = math.ceil(int(cfg["max_steps"]) / per_epoch)
    common = dict(lr=float(cfg["lr"]), max_epochs=max_epochs,
                  target_accuracy=cfg["target_accuracy"], target_loss=None,
                  seed=int(cfg["seed"]), callback=stop)
    if cfg["optimizer"] in ("adam", "sgd", "momentum") and not (cfg["augment"] or cfg["flip"]):
        res = train(model, data, optimizer="sgd" if cfg["optimizer"] == "momentum"
                    else cfg["optimizer"], momentum=0.9 if cfg["optimizer"] == "momentum"
                    else 0.0, batch_size=len(data) if full else int(cfg["batch_size"]),
                    **common)
    else:
        res = train_extended(model, data, optimizer=cfg["optimizer"],
                             batch_size=None if full else int(cfg["batch_size"]),
                             augment=bool(cfg["augment"]), shift=int(cfg["shift"]),
                             flip=bool(cfg["flip"]), **common)
    if res.reached == "callback" and target_loss is not None and res.train_loss <= target_loss:
        from dataclasses import replace

        res = replace(res, reached="loss")
    return res


def run_job(config: Mapping[str, Any]) -> dict[str, Any]:
    """Sweep job: build data and model, train, measure; returns the store's result dict
    (``metrics``, ``curves``, ``arrays``, optional ``checkpoint`` bytes)."""
    from jacspec.zoo.metrics import DEFAULT_CURVE_METRICS, DEFAULT_METRICS, MetricData, measure

    t0 = time.perf_counter()
    cfg = resolve_config(config)
    train_set, test_set = load_data(cfg)
    model = make_model(cfg, train_set)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    clean_train = train_set
    data = MetricData(train=clean_train, test=test_set, init_state=init_state, config=cfg)
    curve_names = cfg["curve_metrics"] or DEFAULT_CURVE_METRICS
    curves: list[dict[str, Any]] = []
    marks = set()
    if cfg["checkpoints"]:
        marks = {0} | {2 ** i for i in range(int(cfg["checkpoints"]))}

    def on_epoch(epoch: int, acc: float, loss: float) -> None:
        if epoch in marks:
            values, _ = measure(model, data, curve_names)
            curves.append({"step": epoch, "epoch": epoch, **values})

    res = fit(model, train_set, cfg, callback=on_epoch if marks else None)
    metrics, arrays = measure(model, data, cfg["metrics"] or DEFAULT_METRICS)
    if marks and (not curves or curves[-1]["epoch"] != res.epochs):
        values, _ = measure(model, data, curve_names)
        curves.append({"step": res.epochs, "epoch": res.epochs, **values})
    metrics.update(epochs=res.epochs, steps=res.steps, reached=res.reached,
                   converged=res.reached in ("accuracy", "loss"),
                   train_seconds=res.seconds, full_batch=is_full_batch(cfg))
    out: dict[str, Any] = {"metrics": metrics, "curves": curves, "arrays": arrays,
                           "duration": time.perf_counter() - t0}
    if cfg["save_checkpoint"]:
        buf = io.BytesIO()
        torch.save({"state_dict": model.state_dict(), "config": cfg}, buf)
        out["checkpoint"] = buf.getvalue()
    return out
