"""Load a model named on the command line.

``MODEL`` is one of: a TorchScript file (``torch.jit.save``), an exported program
(``torch.export.save``; export it with a dynamic batch dimension), a jacspec checkpoint
(architecture spec + weights, read with ``weights_only=True``), or ``package.module:factory``
(a callable returning an ``nn.Module``) with optional weights (a state_dict file, also read
with ``weights_only=True``). The model is returned in eval mode.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path

import torch
from torch import nn

from jacspec.models import load_checkpoint


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _is_exported_program(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/models/model.json") for n in zf.namelist())


def _load_state_dict(path: str | os.PathLike, trust: bool) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {str(p)!r} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ValueError(
                f"weights file {str(p)!r} needs arbitrary code to be unpickled; jacspec loads "
                "weights only. If you trust the file, pass trust=True (CLI: --trust)"
            ) from None
        raise ValueError(
            f"weights file {str(p)!r} is corrupt or not a torch file ({first})"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {str(p)!r} does not hold a state_dict of tensors")
    return obj


def _from_factory(target: str, weights: str | os.PathLike | None, trust: bool) -> nn.Module:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model {target!r}: expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model {target!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"model {target!r}: {module_name!r} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {target!r}: the factory returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    if weights is not None:
        state = _load_state_dict(weights, trust)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"weights do not fit model {target!r}: {first}") from None
    return model


def load_model(
    model: str | os.PathLike, *, weights: str | os.PathLike | None = None, trust: bool = False
) -> nn.Module:
    """Load ``model`` (TorchScript file, jacspec checkpoint, or ``module:factory``); eval mode."""
    text = str(model)
    path = Path(text)
    if not path.exists() and ":" in text and not text.startswith((".", "/")):
        return _from_factory(text, weights, trust).eval()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {text!r} does not exist; expected a TorchScript file, a jacspec checkpoint "
            "or 'package.module:factory'"
        )
    if weights is not None:
        raise ValueError("weights is only used with a 'package.module:factory' model")
    if _is_exported_program(path):
        try:
            return torch.export.load(str(path)).module()
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"exported program {text!r} could not be loaded ({first})") from None
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"TorchScript file {text!r} could not be loaded ({first})") from None
    loaded, _spec = load_checkpoint(path, trust=trust)
    return loaded.eval()
