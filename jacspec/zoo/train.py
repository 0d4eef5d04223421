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

Every run trains with :func:`jacspec.train.train` ("momentum" is SGD with momentum 0.9,
``batch_size="full"`` and L-BFGS are full batch, augmentation is :func:`augment_batch` applied
to each mini-batch).
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from jacspec.datasets import DataSet, load_dataset
from jacspec.errors import check_choice
from jacspec.models import build_model, default_sigma_w
from jacspec.train import TrainResult, train

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

    augment = None
    if cfg["augment"] or cfg["flip"]:
        augment = functools.partial(_augment, shift=int(cfg["shift"]) if cfg["augment"] else 0,
                                    flip=bool(cfg["flip"]))
    max_steps = None if cfg["max_steps"] is None else int(cfg["max_steps"])
    momentum = cfg["optimizer"] == "momentum"
    res = train(model, data, optimizer="sgd" if momentum else cfg["optimizer"],
                momentum=0.9 if momentum else 0.0, lr=float(cfg["lr"]),
                batch_size=None if full else int(cfg["batch_size"]),
                # max_steps overrides max_epochs: every epoch takes at least one step, so an
                # epoch budget of max_steps never binds before the step budget.
                max_epochs=int(cfg["max_epochs"]) if max_steps is None else max_steps,
                max_steps=max_steps, target_accuracy=cfg["target_accuracy"], target_loss=None,
                augment=augment, seed=int(cfg["seed"]), callback=stop)
    settings = {**res.settings, "optimizer": cfg["optimizer"], "augment": bool(cfg["augment"]),
                "shift": int(cfg["shift"]), "flip": bool(cfg["flip"]), "target_loss": target_loss}
    reached = res.reached
    if reached == "callback" and target_loss is not None and res.train_loss <= target_loss:
        reached = "loss"
    return replace(res, reached=reached, settings=settings)


def _augment(x: torch.Tensor, generator: torch.Generator, *, shift: int, flip: bool
             ) -> torch.Tensor:
    """``augment_batch`` in the ``(x, generator)`` form :func:`jacspec.train.train` calls."""
    return augment_batch(x, shift=shift, flip=flip, generator=generator)


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
