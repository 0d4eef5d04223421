"""Train one network of a model zoo from a configuration dict (Novak et al. 2018's grid).

A configuration is a flat dict of JSON values (defaults in :data:`DEFAULTS`):

- data: ``dataset`` (a :func:`jacspec.data.datasets.load_dataset` name), ``n_train``, ``n_test``,
  ``data_seed``, ``random_labels`` (bool);
- model: ``model`` ("mlp", "cnn" or "resnet"), ``width``, ``depth``, ``activation`` (relu,
  relu6, tanh, hard_sigmoid, hard_tanh, ...; "relu" for a ResNet), ``init_scale``
  (multiplier of the default weight std); a ResNet is :func:`jacspec.models.resnet.resnet`
  with ``depth`` = 6m + 2 layers and ``width`` stem channels (16 in He et al.);
- training: ``optimizer`` (sgd, momentum, adam, rmsprop, lbfgs), ``lr``, ``weight_decay``
  (the optimizer's coupled L2 on every parameter, torch's ``weight_decay``; 0 with lbfgs),
  ``dropout`` (in [0, 1): after every hidden activation of an MLP, before a CNN's linear
  head; off in eval mode, so every metric and the stopping loss are measured without it;
  not for a ResNet), ``batch_size``
  (an int or "full"), ``augment`` (random translations by up to ``shift`` pixels),
  ``flip`` (random horizontal flips; images only), ``max_epochs`` (the budget) or
  ``max_steps`` (a step budget, rounded up to whole epochs; overrides ``max_epochs``),
  ``target_accuracy`` (1.0), ``target_loss`` (stop also when the mean cross-entropy falls
  to it, e.g. 0.01), ``seed``;
- measurement: ``metrics`` (names in :data:`jacspec.zoo.run.metrics.REGISTRY`), ``curve_metrics``
  measured at checkpoints during training, ``checkpoints`` (how many, at doubling epochs),
  ``n_jacobian`` / ``n_esd`` (points used for Jacobian norms / ESDs),
  ``save_checkpoint`` (keep the trained weights beside the store, written with
  :func:`jacspec.models.builders.save_checkpoint`: ``jacspec analyze`` reads it).

:func:`validate_config` checks every key and value before a sweep launches anything
(:func:`jacspec.zoo.run.sweep.run_sweep` calls ``run_job.validate_config`` on each configuration).

Every run trains with :func:`jacspec.models.train.train` ("momentum" is SGD with momentum 0.9,
``batch_size="full"`` and L-BFGS are full batch, augmentation is :func:`augment_batch` applied
to each mini-batch).
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from jacspec.data.datasets import DATASET_NAMES, DataSet, load_dataset
from jacspec.models.builders import ACTIVATIONS, build_model, default_sigma_w, save_checkpoint
from jacspec.models.train import TrainResult, train

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop", "lbfgs")
MODELS = ("mlp", "cnn", "resnet")

DEFAULTS: dict[str, Any] = {
    "dataset": "mnist1d", "n_train": 1000, "n_test": 1000, "data_seed": 0,
    "random_labels": False,
    "model": "mlp", "width": 64, "depth": 2, "activation": "relu", "init_scale": 1.0,
    "optimizer": "adam", "lr": 1e-3, "batch_size": 64, "augment": False, "flip": False,
    "shift": 1, "max_epochs": 200, "max_steps": None, "target_accuracy": 1.0,
    "target_loss": 0.01, "weight_decay": 0.0, "dropout": 0.0, "seed": 0,
    "metrics": None, "curve_metrics": None, "checkpoints": 0, "save_checkpoint": False,
    "n_jacobian": 1000, "n_esd": 200,
}


def _int(minimum: int, none: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if none and v is None:
            return None
        if isinstance(v, int) and not isinstance(v, bool) and v >= minimum:
            return None
        return f"an integer >= {minimum}" + (" or null" if none else "")
    return check


def _number(low: float, high: float = math.inf, *, open_low: bool = True,
            none: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if none and v is None:
            return None
        if (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > low if open_low else v >= low) and v <= high):
            return None
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        upper = "" if math.isinf(high) else f" and <= {high:g}"
        return f"a number {bound}{upper}" + (" or null" if none else "")
    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if isinstance(v, str) and v in options else f"one of {', '.join(options)}"
    return check


def _batch_size(v: Any) -> str | None:
    if v == "full" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return None
    return "a positive integer or 'full'"


def _dataset(v: Any) -> str | None:
    accepted = (f"one of {', '.join(DATASET_NAMES)} (with ':key=value' options where the set "
                "takes them) or the path of an existing .npz file")
    if not isinstance(v, str) or not v:
        return accepted
    if v.lower().endswith(".npz"):
        return None if Path(v).is_file() else f"{accepted} (no file {v!r})"
    from jacspec.data.datasets import check_dataset_name  # the loader's own check, loading nothing

    try:
        check_dataset_name(v)
    except (ValueError, TypeError) as exc:
        return f"{accepted} ({exc})"
    return None


def _dropout(v: Any) -> str | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1:
        return None
    return "a number in [0, 1)"


def _metric_names(v: Any) -> str | None:
    from jacspec.zoo.run.metrics import REGISTRY

    accepted = f"null or a list of metric names from {', '.join(sorted(REGISTRY))}"
    if v is None:
        return None
    if not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v):
        return accepted
    unknown = [n for n in v if n not in REGISTRY]
    return f"{accepted} (unknown: {', '.join(unknown)})" if unknown else None


#: What the trainer accepts for each configuration key: ``check(value)`` returns None or the
#: description of the accepted values.
CHECKS: dict[str, Callable[[Any], str | None]] = {
    "dataset": _dataset, "n_train": _int(0, none=True), "n_test": _int(0, none=True),
    "data_seed": _int(0), "random_labels": _bool,
    "model": _choice(MODELS), "width": _int(1), "depth": _int(0),
    "activation": _choice(ACTIVATIONS), "init_scale": _number(0.0),
    "optimizer": _choice(OPTIMIZERS), "lr": _number(0.0), "batch_size": _batch_size,
    "augment": _bool, "flip": _bool, "shift": _int(0), "max_epochs": _int(1),
    "max_steps": _int(1, none=True), "target_accuracy": _number(0.0, 1.0, none=True),
    "target_loss": _number(0.0, open_low=False, none=True),
    "weight_decay": _number(0.0, open_low=False), "dropout": _dropout, "seed": _int(0),
    "metrics": _metric_names, "curve_metrics": _metric_names, "checkpoints": _int(0),
    "save_checkpoint": _bool, "n_jacobian": _int(1), "n_esd": _int(1),
}


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check every key and value of ``config`` against :data:`CHECKS` (what the trainer
    accepts); returns the resolved configuration (``DEFAULTS | config``).

    Raises a one-line ValueError naming the key and the accepted values (TypeError when
    ``config`` is not a mapping).
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"a configuration must be a table of key = value, got "
                        f"{type(config).__name__}")
    unknown = [key for key in config if key not in DEFAULTS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(DEFAULTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown configuration keys {sorted(map(str, unknown))}{hint}; "
                         f"accepted keys: {', '.join(sorted(DEFAULTS))}")
    cfg = {**DEFAULTS, **config}
    for key, check in CHECKS.items():
        accepted = check(cfg[key])
        if accepted is not None:
            raise ValueError(f"configuration key {key}={cfg[key]!r} is not accepted; "
                             f"expected {accepted}")
    if cfg["model"] == "cnn" and cfg["depth"] < 1:
        raise ValueError(f"configuration key depth={cfg['depth']!r} is not accepted with "
                         "model='cnn'; expected an integer >= 1 (conv blocks)")
    if cfg["model"] == "resnet":
        if cfg["depth"] < 8 or (cfg["depth"] - 2) % 6:
            raise ValueError(f"configuration key depth={cfg['depth']!r} is not accepted with "
                             "model='resnet'; expected 6m + 2 layers (20, 32, 44, 56, 110)")
        if cfg["activation"] != "relu":
            raise ValueError(f"configuration key activation={cfg['activation']!r} is not "
                             "accepted with model='resnet'; expected 'relu' (He et al.'s blocks)")
        if cfg["dropout"]:
            raise ValueError(f"configuration key dropout={cfg['dropout']!r} is not accepted "
                             "with model='resnet'; expected 0 (dropout is built into the mlp "
                             "and cnn models only)")
    if cfg["weight_decay"] and cfg["optimizer"] == "lbfgs":
        raise ValueError(f"configuration key weight_decay={cfg['weight_decay']!r} is not "
                         "accepted with optimizer='lbfgs'; expected 0")
    return cfg


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` overridden by ``config``, every key and value checked
    (:func:`validate_config`); unknown keys or values raise ValueError."""
    return validate_config(config)


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


def model_spec(config: Mapping[str, Any], data: DataSet) -> dict[str, Any]:
    """The :func:`jacspec.models.builders.build_model` spec of a configuration's network (what its
    checkpoint records). MLP: ``sigma_w = init_scale * default_sigma_w(activation)``. CNN:
    ``depth`` conv blocks of ``width, 2 width, ...`` channels (``init_scale`` multiplies the
    weights after the build, see :func:`make_model`). ResNet: ``depth`` layers, ``width`` stem
    channels, ReLU."""
    cfg = resolve_config(config)
    shape = list(data.input_shape)
    if cfg["model"] == "mlp":
        return {"kind": "mlp", "input_shape": shape, "num_classes": data.num_classes,
                "width": int(cfg["width"]), "depth": int(cfg["depth"]),
                "activation": cfg["activation"],
                "sigma_w": float(cfg["init_scale"]) * default_sigma_w(cfg["activation"]),
                "seed": int(cfg["seed"]), **_dropout_spec(cfg)}
    if len(shape) != 3:
        raise ValueError(f"model={cfg['model']!r} needs image inputs (C, H, W); dataset "
                         f"{cfg['dataset']!r} has inputs of shape {tuple(shape)}")
    if cfg["model"] == "resnet":
        return {"kind": "resnet", "input_shape": shape, "num_classes": data.num_classes,
                "depth": int(cfg["depth"]), "width": int(cfg["width"]), "seed": int(cfg["seed"])}
    channels = [int(cfg["width"]) * 2 ** i for i in range(int(cfg["depth"]))]
    return {"kind": "cnn", "input_shape": shape, "num_classes": data.num_classes,
            "channels": channels, "activation": cfg["activation"], "seed": int(cfg["seed"]),
            **_dropout_spec(cfg)}


def _dropout_spec(cfg: Mapping[str, Any]) -> dict[str, float]:
    """``{"dropout": p}`` for ``p > 0``; nothing at 0, so a network without dropout has the
    spec (and checkpoint) it had before the key existed."""
    return {"dropout": float(cfg["dropout"])} if cfg["dropout"] else {}


def make_model(config: Mapping[str, Any], data: DataSet) -> nn.Module:
    """The network of a configuration: ``build_model(model_spec(config, data))``; for a CNN
    or ResNet its default init with conv/linear weights times ``init_scale``."""
    cfg = resolve_config(config)
    spec = model_spec(cfg, data)
    model = build_model(spec)
    if spec["kind"] in ("cnn", "resnet") and cfg["init_scale"] != 1.0:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(float(cfg["init_scale"]))
    return model


def checkpoint_bytes(model: nn.Module, spec: Mapping[str, Any]) -> bytes:
    """The bytes of :func:`jacspec.models.builders.save_checkpoint` (spec + weights, read back with
    ``weights_only=True``) for a run's trained ``model``."""
    with tempfile.TemporaryDirectory(prefix="jacspec-zoo-") as folder:
        path = save_checkpoint(Path(folder) / "checkpoint.pt", model, spec)
        return path.read_bytes()


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
                weight_decay=float(cfg["weight_decay"]),
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
    """``augment_batch`` in the ``(x, generator)`` form :func:`jacspec.models.train.train` calls."""
    return augment_batch(x, shift=shift, flip=flip, generator=generator)


def run_job(config: Mapping[str, Any]) -> dict[str, Any]:
    """Sweep job: build data and model, train, measure; returns the store's result dict
    (``metrics``, ``curves``, ``arrays``, optional ``checkpoint``: the bytes of a jacspec
    checkpoint, see :func:`checkpoint_bytes`)."""
    from jacspec.zoo.run.metrics import DEFAULT_CURVE_METRICS, DEFAULT_METRICS, MetricData, measure

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
    data = replace(data, train_result=res)
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
        out["checkpoint"] = checkpoint_bytes(model, model_spec(cfg, train_set))
    return out


run_job.validate_config = validate_config  # type: ignore[attr-defined]  # see run_sweep
