"""Load a model named on the command line.

``MODEL`` is one of: a TorchScript file (``torch.jit.save``), an exported program
(``torch.export.save``; export it with a dynamic batch dimension,
``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``), a jacspec checkpoint
(architecture spec + weights, read with ``weights_only=True``), or a factory
``package.module:factory`` / ``package.module:factory(arg, key=value, ...)`` (a callable
returning an ``nn.Module``, called with the literal arguments given: numbers, strings,
``True``/``False``/``None``, tuples, lists, dicts; parsed with :func:`ast.literal_eval`,
never evaluated as code) with optional weights (a state_dict file, also read with
``weights_only=True``). The factory's module is imported with the working folder first on
``sys.path``, as ``python -m`` does. Eager models are returned in eval mode; exported
programs as stored (they have no train/eval switch).

A factory is called under ``torch.manual_seed(0)`` (the CPU generator, and the CUDA ones when
CUDA is initialised), with the caller's random states put back afterwards: without weights
its random initialisation is the same on every run (and a :class:`RandomWeightsWarning` says
so). Weights may carry a prefix (a PyTorch Lightning checkpoint's ``state_dict`` holds
``model.<name>`` for a LightningModule's ``self.model``): when the keys under exactly one
prefix are the model's keys, that prefix is dropped. Weights that do not fit are refused
with the missing and unexpected keys and the shape mismatches (:func:`state_dict_mismatch`).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jacspec.models.builders import load_checkpoint, state_dict_mismatch

#: The seed a factory is called with (its random initialisation is the same on every run).
FACTORY_SEED = 0


class RandomWeightsWarning(UserWarning):
    """A factory model loaded without weights: its parameters are its seeded random init."""


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


@contextlib.contextmanager
def working_folder_importable() -> Iterator[None]:
    """Put the working folder first on ``sys.path`` (as ``python -m`` does) for the block."""
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        if sys.path and sys.path[0] == cwd:
            del sys.path[0]
        elif cwd in sys.path:
            sys.path.remove(cwd)


@contextlib.contextmanager
def seeded_torch(seed: int = FACTORY_SEED) -> Iterator[None]:
    """``torch.manual_seed(seed)`` for the block, the caller's generator states put back after
    it (CPU always; CUDA devices when CUDA is already initialised, so nothing is queued)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for device in devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def strip_key_prefix(state: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    """``state`` with the prefix dropped under which its keys are exactly ``keys`` (a Lightning
    checkpoint's ``model.``, DDP's ``module.``); ``state`` itself when it fits as it is or when
    no single prefix (or more than one) makes it fit."""
    own = set(keys)
    if set(state) == own:
        return state
    candidates = set()
    for key in state:
        for i, char in enumerate(key):
            if char == "." and key[i + 1:] in own:
                candidates.add(key[: i + 1])
    fits = [p for p in sorted(candidates)
            if {k[len(p):] for k in state if k.startswith(p)} == own]
    if len(fits) != 1:
        return state
    return {k[len(fits[0]):]: v for k, v in state.items() if k.startswith(fits[0])}


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
FACTORY_SYNTAX = "'package.module:factory' or 'package.module:factory(arg, key=value, ...)'"


def parse_factory(target: str) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """Split ``"pkg.mod:make(3, width=64)"`` into ``("pkg.mod", "make", (3,), {"width": 64})``.

    Arguments must be Python literals (:func:`ast.literal_eval`); nothing is evaluated.
    """
    module_name, sep, call = (part.strip() for part in target.partition(":"))
    if not sep or not _DOTTED.fullmatch(module_name) or not call:
        raise ValueError(f"model {target!r}: expected {FACTORY_SYNTAX}")
    if "(" not in call:
        if not _DOTTED.fullmatch(call):
            raise ValueError(f"model {target!r}: expected {FACTORY_SYNTAX}")
        return module_name, call, (), {}
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError:
        raise ValueError(f"model {target!r}: {call!r} is not a call; expected "
                         f"{FACTORY_SYNTAX}") from None
    if not isinstance(node, ast.Call) or not _DOTTED.fullmatch(ast.unparse(node.func)):
        raise ValueError(f"model {target!r}: expected {FACTORY_SYNTAX}")

    def literal(arg: ast.expr) -> Any:
        try:
            return ast.literal_eval(arg)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                f"model {target!r}: argument {ast.unparse(arg)!r} is not a literal; factory "
                "arguments may be numbers, strings, True/False/None, tuples, lists and dicts"
            ) from None

    if any(isinstance(a, ast.Starred) for a in node.args) or any(
        kw.arg is None for kw in node.keywords
    ):
        raise ValueError(f"model {target!r}: *args and **kwargs are not accepted; write the "
                         "arguments out")
    args = tuple(literal(a) for a in node.args)
    kwargs = {str(kw.arg): literal(kw.value) for kw in node.keywords}
    return module_name, ast.unparse(node.func), args, kwargs


def _from_factory(target: str, weights: str | os.PathLike | None, trust: bool) -> nn.Module:
    module_name, attr, args, kwargs = parse_factory(target)
    with working_folder_importable():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise ValueError(
                    f"model {target!r}: cannot import {module_name!r}: no module {exc.name!r} "
                    "in the working folder "
                    f"({os.getcwd()}) or on the Python path; run jacspec from the folder that "
                    "holds it, or add that folder to PYTHONPATH"
                ) from None
            raise ValueError(f"model {target!r}: cannot import {module_name!r} ({exc})"
                             ) from None
        except Exception as exc:  # noqa: BLE001 - the user's module failed to import
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"model {target!r}: cannot import {module_name!r} "
                             f"({type(exc).__name__}: {first})") from None
        factory: Any = module
        for part in attr.split("."):
            factory = getattr(factory, part, None)
        if factory is None or not callable(factory):
            raise ValueError(f"model {target!r}: {module_name!r} has no callable {attr!r}")
        try:
            with seeded_torch():
                model = factory(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's factory failed
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"model {target!r}: calling {attr} failed "
                             f"({type(exc).__name__}: {first})") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {target!r}: the factory returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    if weights is None:
        warnings.warn(
            f"model {target!r} has no weights: its parameters are the factory's random "
            f"initialisation (seeded with torch.manual_seed({FACTORY_SEED}), the same on every "
            "run); pass the trained ones with weights=FILE (CLI: --weights FILE)",
            RandomWeightsWarning, stacklevel=3,
        )
        return model
    own = model.state_dict()
    state = strip_key_prefix(_load_state_dict(weights, trust), list(own))
    problem = state_dict_mismatch(own, state, own_name="model", state_name="weights")
    if problem is not None:
        raise ValueError(f"weights {str(weights)!r} do not fit model {target!r}: {problem}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"weights {str(weights)!r} do not fit model {target!r}: {first}"
                         ) from None
    return model


def load_model(
    model: str | os.PathLike, *, weights: str | os.PathLike | None = None, trust: bool = False
) -> nn.Module:
    """Load ``model``: a TorchScript file, an exported program, a jacspec checkpoint, or
    ``module:factory`` / ``module:factory(arg, key=value)`` (see the module docstring).

    Eager and TorchScript models come back in eval mode; exported programs as stored.
    """
    text = str(model)
    path = Path(text)
    if not path.exists() and ":" in text and not text.startswith((".", "/")):
        return _from_factory(text, weights, trust).eval()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {text!r} does not exist; expected a TorchScript file, an exported program, "
            f"a jacspec checkpoint or {FACTORY_SYNTAX}"
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
    with working_folder_importable() if trust else contextlib.nullcontext():
        loaded, _spec = load_checkpoint(path, trust=trust)
    return loaded.eval()
