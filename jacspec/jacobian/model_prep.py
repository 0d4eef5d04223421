"""Preparing a model for the Jacobian engine without changing it, and running it.

:func:`prepare_model` returns the module to run (a ``torch.compile``d model's eager module;
a converted deep copy when another dtype/device is asked for), :func:`run_forward` runs it on
a batch and turns its failures into one sentence (exported programs' shape guards included),
:func:`output_map` is the map ``g`` applied to the logits, and :func:`untouched` runs a
block on the user's model and leaves it as it was (flags, parameters, grads, buffers,
random states): the one helper for that, used by the engine, the checks and the Tracker.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from jacspec._util.validation import check_choice
from jacspec.jacobian.options import OUTPUTS, check_device_available

logger = logging.getLogger("jacspec.jacobian.engine")


def output_map(output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map applied to the logits: softmax, identity or log-softmax over dim 1."""
    check_choice("output", output, OUTPUTS)
    if output == "softmax":
        return lambda z: torch.softmax(z, dim=1)
    if output == "log_softmax":
        return lambda z: torch.log_softmax(z, dim=1)
    return lambda z: z



def model_dtype_device(model: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    """The dtype and device of the model's first parameter (or floating buffer), else None."""
    for p in model.parameters():
        return p.dtype, p.device
    for b in model.buffers():
        if b.is_floating_point():
            return b.dtype, b.device
    return None, None


def check_model(model: object, name: str = "model") -> nn.Module:
    """``model`` itself if it is a ``torch.nn.Module``; else the one TypeError every entry
    point gives (a function, a lambda or None is refused: wrap a function in a Module)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{name} must be a torch.nn.Module; got {type(model).__name__} (wrap a function "
            "in an nn.Module whose forward calls it)"
        )
    return model


def refuse_inference_mode() -> None:
    """One sentence when called inside ``torch.inference_mode()``, where no gradient, hence
    no Jacobian, can be computed (``torch.no_grad()`` is fine: jacspec turns gradients on)."""
    if torch.is_inference_mode_enabled():
        raise ValueError(
            "jacspec computes Jacobians with autograd, which torch.inference_mode() turns "
            "off; call it outside the inference_mode block (inside torch.no_grad() works)"
        )


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The eager module behind a ``torch.compile``d one (``OptimizedModule._orig_mod``).

    Compiled graphs do not support the batched and repeated backward passes jacspec needs,
    and the eager module computes the same function. Anything but an ``nn.Module`` is
    refused (:func:`check_model`).
    """
    check_model(model)
    while type(model).__name__ == "OptimizedModule" and isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    ):
        logger.info("model is torch.compile'd: computing with the eager module (_orig_mod)")
        model = model._orig_mod
    return model


def is_exported_program(model: nn.Module) -> bool:
    """True for the module of a ``torch.export`` program (``ExportedProgram.module()``)."""
    return any(c.__name__ == "_StatefulGraphModule" for c in type(model).__mro__)


def prepare_model(
    model: nn.Module, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[nn.Module, torch.dtype, torch.device]:
    """Return the model to run, its dtype and device.

    A ``torch.compile``d model is replaced by its eager module; if dtype/device differ from
    the model's, a converted deep copy is returned (the user's model is never changed).
    """
    refuse_inference_mode()
    model = unwrap_compiled(model)
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    mdtype, mdevice = model_dtype_device(model)
    target_dtype = dtype or mdtype or torch.float32
    if target_dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"model parameters are {target_dtype}; pass dtype=torch.float32 or torch.float64"
        )
    target_device = (check_device_available(device) if device is not None
                     else (mdevice or torch.device("cpu")))
    if (mdtype is not None and mdtype != target_dtype) or (
        mdevice is not None and mdevice != target_device
    ):
        # Under no_grad: a ScriptModule's deepcopy clones its parameters through autograd,
        # which would leave non-leaf parameters tied to the user's model.
        with torch.no_grad():
            model = copy.deepcopy(model).to(device=target_device, dtype=target_dtype)
    return model, target_dtype, target_device


@dataclasses.dataclass
class _Saved:
    """What :func:`untouched` puts back: per module its ``training`` flag; per parameter
    (module, name, tensor, ``.grad``, ``requires_grad``, in-place version); per buffer
    (module, name, tensor, a copy of its values); the global random states (None without
    ``state``: then only ``changed``, what the helper itself changes, is put back)."""

    flags: list[tuple[nn.Module, bool]]
    params: list[tuple[nn.Module, str, torch.Tensor, Any, bool, int]]
    buffers: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]
    rng: tuple[Any, ...] | None
    changed: tuple[str, ...] = ()


def _save(model: nn.Module, state: bool, changed: tuple[str, ...]) -> _Saved:
    modules = list(model.modules())
    flags = [(m, m.training) for m in modules]
    params = [(m, name, p, p.grad, p.requires_grad, p._version) for m in modules
              for name, p in m.named_parameters(recurse=False)]
    if not state:
        return _Saved(flags, params, [], None, changed)
    buffers = [(m, name, b, b.detach().clone()) for m in modules
               for name, b in m.named_buffers(recurse=False) if b is not None]
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None,
           np.random.get_state(), random.getstate())
    return _Saved(flags, params, buffers, rng, changed)


def _put_back(saved: _Saved) -> list[str]:
    """Restore ``saved``; returns the names of parameters changed in place (they cannot be
    put back without a copy of every weight; checked with the full ``state`` only)."""
    full = saved.rng is not None
    if full or "training" in saved.changed:
        for m, flag in saved.flags:
            if m.training != flag:
                m.training = flag
    changed = []
    for m, name, p, grad, req, version in saved.params:
        if full and getattr(m, name, None) is not p:
            setattr(m, name, p)
        if full and p.grad is not grad:
            p.grad = grad
        if (full or "requires_grad" in saved.changed) and p.requires_grad != req and p.is_leaf:
            p.requires_grad_(req)
        if full and p._version != version:
            changed.append(name)
    if not full:
        return changed
    with torch.no_grad():
        for m, name, buf, value in saved.buffers:
            if getattr(m, name, None) is not buf:
                setattr(m, name, buf)
            buf.copy_(value)
    cpu, cuda, np_state, py_state = saved.rng
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(np_state)
    random.setstate(py_state)
    return changed


@contextlib.contextmanager
def untouched(model: nn.Module, *, eval_mode: bool = False, freeze: bool = False,
              no_grad: bool = False, state: bool = True) -> Iterator[None]:
    """Run a block on ``model`` and leave the model as it was: jacspec's one such helper.

    Put back afterwards, after an exception too: every module's ``training`` flag, every
    parameter (the same tensor under the same name, its ``.grad`` tensor and
    ``requires_grad``), every buffer (the same tensor, its values bit for bit) and the
    global random states (torch's CPU and CUDA generators, numpy's and Python's).
    Parameters are not copied: one changed in place in the block (only a model's own
    forward can do that) is a ValueError naming it. For the block, ``eval_mode`` sets every
    ``training`` flag to False (what ``model.eval()`` does for torch's layers), ``freeze``
    turns off ``requires_grad`` of every leaf parameter (no parameter gradients) and
    ``no_grad`` runs it under ``torch.no_grad()``. ``state=False`` is for a block that
    yields to its caller between batches (the engine's loop): only what ``eval_mode`` and
    ``freeze`` changed is put back, so whatever the caller does meanwhile is kept.
    """
    changed = ("training",) * eval_mode + ("requires_grad",) * freeze
    saved = _save(model, state, changed)
    failed = False
    try:
        if eval_mode:
            for m, _ in saved.flags:
                m.training = False
        if freeze:
            for _, _, p, _, _, _ in saved.params:
                if p.is_leaf:
                    p.requires_grad_(False)
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield
    except BaseException:
        failed = True
        raise
    finally:
        in_place = _put_back(saved)
        if in_place and not failed:
            raise ValueError(
                f"the model's forward changed its parameter {in_place[0]!r} in place; jacspec "
                "leaves the model as it was and cannot undo that (change a copy, or compute "
                "the new weight out of place)"
            )


def check_inputs(x: torch.Tensor) -> None:
    """Refuse inputs that cannot be differentiated (integer dtypes: pixels or token ids)."""
    if not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool:
        raise TypeError(
            f"inputs must be floating point; got {x.dtype}: convert pixels first (x.float() "
            "/ 255), and for token ids, which have no Jacobian, name the module whose output "
            "to differentiate, e.g. input_module='embeddings' (--input-module NAME)"
        )
    if not (x.is_floating_point()):
        raise TypeError(
            f"inputs must be floating point; got {x.dtype}. Convert them first "
            "(for example x.float() / 255 for 8-bit images)"
        )
    if not torch.isfinite(x).all():
        raise ValueError("inputs contain NaN or Inf; clean the data before computing Jacobians")



def exported_input(model: nn.Module) -> tuple[str, tuple[str, ...]] | None:
    """Name and shape of an exported program's first input (symbolic sizes as ``batch``/``any``)."""
    try:
        for node in model.graph.nodes:
            if node.op == "placeholder":
                val = node.meta.get("val")
                dims = tuple(
                    str(s) if isinstance(s, int) else ("batch" if i == 0 else "any")
                    for i, s in enumerate(val.shape)
                )
                return str(node.target), dims
    except (AttributeError, TypeError):
        return None
    return None


def guard_error(model: nn.Module, x: torch.Tensor, first: str) -> ValueError:
    """One sentence for an exported program whose shape guards reject ``x``."""
    spec = exported_input(model)
    name, dims = spec if spec is not None else ("x", ())
    static_batch = bool(dims) and dims[0] != "batch"
    if "size()[0]" in first or (static_batch and dims[1:] == tuple(str(s) for s in x.shape[1:])):
        fixed = f" of {dims[0]}" if static_batch else ""
        return ValueError(
            f"the exported program was exported with a fixed batch{fixed} ({first}), but "
            f"jacspec runs batches of other sizes (here {x.shape[0]}); re-export it with a "
            f"dynamic batch dimension: torch.export.export(model, (x,), "
            f'dynamic_shapes={{"{name}": {{0: torch.export.Dim("batch")}}}})'
        )
    accepts = f"; it accepts inputs of shape ({', '.join(dims)})" if dims else ""
    return ValueError(
        f"the exported program rejected inputs of shape {tuple(x.shape[1:])} (batch "
        f"{x.shape[0]}): {first}{accepts}. Pass data of the shape the program was exported with"
    )


#: Tuple outputs already reported (the first element is taken; said once per model class).
_TUPLE_SAID: set[str] = set()


def logits_of(z: Any, output_key: str | None = None, what: str = "the model") -> torch.Tensor:
    """The logits tensor in a model's output ``z``: the one place outputs become logits.

    A tensor is itself; a dict or HuggingFace ``ModelOutput`` gives ``z[output_key]``
    (default ``"logits"``); a dataclass or object its attribute ``output_key``/``logits``; a
    tuple or list its first element (logged once). Anything else: ValueError naming what it
    has.
    """
    if isinstance(z, torch.Tensor):
        if output_key is not None:
            raise ValueError(f"output_key={output_key!r} names an entry of a dict output, but "
                             f"{what} returns a tensor; drop output_key")
        return z
    key = output_key or "logits"
    if isinstance(z, Mapping):
        if key in z and isinstance(z[key], torch.Tensor):
            return z[key]
        keys = [str(k) for k in z.keys()]
        raise ValueError(f"{what} returned a {type(z).__name__} without {key!r}; its keys are "
                         f"{', '.join(keys) or 'none'}: pass output_key= (--output-key) naming "
                         "the logits")
    if isinstance(z, (tuple, list)):
        if not z or not isinstance(z[0], torch.Tensor) or output_key is not None:
            raise ValueError(f"{what} returned a {type(z).__name__} of {len(z)}; expected its "
                             "first element to be the logits tensor (output_key applies to "
                             "dict outputs)")
        name = type(z).__name__
        if name not in _TUPLE_SAID:
            _TUPLE_SAID.add(name)
            logger.info("the model returns a %s: its first element is taken as the logits",
                        name)
        return z[0]
    if dataclasses.is_dataclass(z) or hasattr(z, key):
        value = getattr(z, key, None)
        if isinstance(value, torch.Tensor):
            return value
        fields = ([f.name for f in dataclasses.fields(z)] if dataclasses.is_dataclass(z)
                  else sorted(k for k in vars(z) if not k.startswith("_")))
        raise ValueError(f"{what} returned a {type(z).__name__} without a tensor {key!r}; it "
                         f"has {', '.join(fields) or 'nothing'}: pass output_key= "
                         "(--output-key) naming the logits")
    raise ValueError(
        f"the model must return a tensor of logits (batch, k); it returned {type(z).__name__}"
    )


def run_forward(model: nn.Module, fn: Callable, x: torch.Tensor) -> torch.Tensor:
    """``fn`` of the model's output (logits) on ``x``; a model's refusal becomes a ValueError."""
    try:
        z = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, AssertionError) and (
            first.startswith("Guard failed") or is_exported_program(model)
        ):
            raise guard_error(model, x, first) from exc
        raise ValueError(
            f"the model rejected inputs of shape {tuple(x.shape[1:])} (batch {x.shape[0]}): {first}"
        ) from exc
    if not isinstance(z, torch.Tensor):
        z = logits_of(z)
    if z.ndim == 3 and z.shape[0] == x.shape[0]:
        raise ValueError(
            f"the model output has shape {tuple(z.shape)} for a batch of {x.shape[0]}; expected "
            "(batch, k) logits: for logits per position pass position= (--position, e.g. -1 "
            "for a causal LM's last token)"
        )
    if z.ndim != 2 or z.shape[0] != x.shape[0] or z.shape[1] < 2:
        raise ValueError(
            f"the model output has shape {tuple(z.shape)} for a batch of {x.shape[0]}; "
            "expected (batch, k) logits with k >= 2 classes"
        )
    return fn(z)
