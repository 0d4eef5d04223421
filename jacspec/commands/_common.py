"""Arguments shared by the sub-commands: a model, a data set, dtype, JSON output."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="TorchScript file, torch.export program, jacspec checkpoint, or "
        "package.module:factory",
    )
    parser.add_argument("--weights", help="state_dict file for a package.module:factory MODEL")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="allow unpickling code from MODEL/--weights (only for files you trust)",
    )


def add_data_args(parser: argparse.ArgumentParser, *, default_split: str = "train") -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="NAME|FILE",
        help="digits, mnist1d, gaussian, mnist, fashion_mnist, cifar10, cifar100, or a .npz "
        "file with arrays x and y",
    )
    parser.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/CIFAR files")
    parser.add_argument("--split", choices=["train", "test"], default=default_split)
    parser.add_argument("--n", type=int, default=None, help="use a seeded subset of N examples")
    parser.add_argument("--crop", type=int, default=None, help="centre crop images to CROP x CROP")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsets and estimates")


def load_model_from_args(args: argparse.Namespace) -> nn.Module:
    from jacspec.loading import load_model

    return load_model(args.model, weights=args.weights, trust=args.trust)


def load_data_from_args(args: argparse.Namespace) -> Any:
    from jacspec.datasets import load_dataset

    return load_dataset(
        args.data, args.split, root=args.data_root, crop=args.crop, n=args.n, seed=args.seed
    )


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def to_json(payload: dict[str, Any]) -> str:
    """JSON text with numpy values converted and NaN/Inf written as null."""
    return json.dumps(_clean(payload), indent=2)


def write_json(payload: dict[str, Any], path: str | None) -> None:
    """Write ``payload`` to ``path`` (``-`` or None: nothing)."""
    if path is None:
        return
    text = to_json(payload)
    if path == "-":
        print(text)
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")
