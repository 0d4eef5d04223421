"""Jacobians at a chosen input module: ``d g(logits) / d h`` with ``h`` a submodule's output.

For a text or sequence model the input (token ids) has no Jacobian; the Jacobian is taken
with respect to the output ``h`` of a named module (``bert.embeddings``, ``transformer.wte``,
an ``nn.Embedding``), per example, everything before it run as given.
:func:`at_input_module` turns ``(model, data, options)`` into an ordinary problem of the
engine, in one place for every entry point:

- the data become :class:`ModuleData`: per batch one forward of the model as given
  (no gradients) captures ``h`` (``b, seq_len, hidden``), yielded as the batch's inputs;
- the model becomes :class:`AtModule`, the map ``h -> logits``: the model re-run on the
  same batch (its ``input_ids``, ``attention_mask``, ... as given) with a forward hook that
  replaces the module's output by ``h``. Examples stay independent (eval mode), so the
  engine's batched backward gives every example's ``J_i = d g_i / d h_i``, and every route
  reading rows from the engine (exact, sketched, SLQ, norms) works unchanged.

The engine's loop binds each slice of a batch it runs (:func:`batch_window`); any other
forward on the batch's inputs is a prefix of them (probes) or the batch repeated (the
replicate backward), and each call checks its rows against the captured ``h``.

Padding. A position whose ``attention_mask`` is 0 contributes nothing: ``h`` enters as
``h m + stop_grad(h) (1 - m)``, so its Jacobian columns are exactly zero (values
unchanged). The columns stay in ``d = L x hidden``, ``L`` the first batch's sequence length
(a later, shorter batch is laid out on ``L`` with zero columns; a longer one only when its
extra positions are all masked), so every row has the same width and the Gram, hence the
ESD and the norms, of a padded batch equals that of its sequences one at a time.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from jacspec.data.batches import KnownLength, OneShot, data_length
from jacspec.data.model_inputs import ModelBatch, forward_keywords, iter_model_batches
from jacspec.jacobian.model_prep import logits_of, untouched, unwrap_compiled
from jacspec.jacobian.options import JacobianOptions

__all__ = ["AtModule", "ModuleData", "OutputOf", "at_input_module", "batch_window",
           "current_mask", "layer_root", "layers_off_path"]


def _hookable(model: nn.Module, what: str) -> nn.Module:
    model = unwrap_compiled(model)
    if isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        raise ValueError(f"{what} needs an eager torch.nn.Module (its Python submodules are "
                         f"hooked); got {type(model).__name__}")
    return model


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of ``model``, or a ValueError naming the closest names."""
    named = dict(model.named_modules())
    if name in named and name:
        return named[name]
    names = [n for n in named if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    if not close:  # the last part of the name, e.g. "embeddings" for "bert.embedings"
        tail = name.split(".")[-1]
        close = [n for n in names if tail and tail in n][:5]
    hint = f"the closest are {', '.join(repr(c) for c in close)}" if close else (
        f"its modules include {', '.join(repr(n) for n in names[:8])}")
    raise ValueError(f"input_module={name!r} is not a module of the model; {hint}")


def _select_position(z: torch.Tensor, position: int | None, mask: torch.Tensor | None
                     ) -> torch.Tensor:
    """Per-position logits ``(b, L, k)`` at ``position`` (counted over each example's real
    tokens when a mask is given); 2-D logits pass (``position`` must then be None)."""
    if position is None:
        return z
    if z.ndim != 3:
        raise ValueError(f"position={position} applies to per-position logits (batch, "
                         f"seq_len, k); the model returns shape {tuple(z.shape)}: drop position")
    b, length = int(z.shape[0]), int(z.shape[1])
    if mask is not None and tuple(mask.shape) == (b, length):
        idx = []
        for i in range(b):
            real = torch.nonzero(mask[i]).flatten()
            if not -real.numel() <= position < real.numel():
                raise ValueError(f"position={position} is outside example {i}'s "
                                 f"{real.numel()} real tokens")
            idx.append(int(real[position]))
        index = torch.tensor(idx, device=z.device)
    else:
        if not -length <= position < length:
            raise ValueError(f"position={position} is outside the sequence of {length}")
        index = torch.full((b,), position % length, device=z.device)
    return z[torch.arange(b, device=z.device), index]


class _Binding:
    """The batch whose ``h`` the engine is running: shared by an :class:`AtModule` and its
    converted copies (``deepcopy`` returns the same object)."""

    def __init__(self) -> None:
        self.batch: ModelBatch | None = None
        self.h: torch.Tensor | None = None  # laid out on L (the inputs the engine sees)
        self.own: torch.Tensor | None = None  # the module's output at the batch's length
        self.window: tuple[int, int] | None = None
        self.mask: torch.Tensor | None = None  # the attention mask of the rows being run

    def __deepcopy__(self, memo: dict[int, Any]) -> _Binding:
        return self

    def rows_for(self, h: torch.Tensor) -> tuple[ModelBatch, torch.Tensor]:
        """The batch rows and captured output matching the ``B`` rows of ``h``."""
        if self.batch is None or self.h is None or self.own is None:
            raise ValueError("this input_module model runs only on the inputs its data yields "
                             "(iterate the ModuleData first)")
        start, stop = self.window if self.window is not None else (0, self.batch.size)
        n, big = stop - start, int(h.shape[0])
        if big <= n:  # the window itself, or a prefix of it (probes)
            idx = torch.arange(start, start + big)
        elif big % n == 0:  # the window repeated (the replicate backward, a doubled probe)
            idx = start + torch.arange(big) % n
        else:
            raise RuntimeError(f"input_module: {big} rows do not match the batch window of {n}")
        ref = self.h[idx].to(device=h.device, dtype=h.dtype)
        same = (ref == h.detach()).reshape(big, -1).all(dim=1)
        if not bool(same.any()):
            raise RuntimeError("input_module: the inputs are not those of the batch being "
                               "run; iterate the data and run its batches one at a time")
        return self.batch.rows(idx), self.own[idx]


class AtModule(nn.Module):
    """``h -> logits``: ``model`` on the bound batch with module ``name``'s output set to
    ``h`` (masked positions detached: zero Jacobian columns), logits picked by
    ``output_key`` and ``position``."""

    def __init__(self, model: nn.Module, name: str, output_key: str | None,
                 position: int | None, binding: _Binding) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.output_key = output_key
        self.position = position
        self._binding = binding

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        rows, own = self._binding.rows_for(h)
        own = own.to(device=h.device, dtype=h.dtype)
        if own.ndim >= 2 and own.shape[2:] == h.shape[2:] and own.shape[1] != h.shape[1]:
            m = min(int(own.shape[1]), int(h.shape[1]))
            h = torch.cat([h[:, :m], own[:, m:]], dim=1)  # laid out on the batch's length
        rows = rows.to(h.device)
        args = tuple(a.to(h.dtype) if a.is_floating_point() else a for a in rows.args)
        kwargs = {k: v.to(h.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point()
                  else v for k, v in rows.kwargs.items()}
        mask = rows.attention_mask
        self._binding.mask = mask
        h = masked(h, mask, detach=True)
        calls = [0]

        def replace(module: nn.Module, inputs: Any, out: Any) -> Any:
            calls[0] += 1
            return h if calls[0] == 1 else None

        module = self.model.get_submodule(self.name)
        handle = module.register_forward_hook(replace)
        try:
            out = self.model(*args, **kwargs)
        finally:
            handle.remove()
        if calls[0] != 1:
            raise ValueError(_called_error(self.name, module, calls[0]))
        z = logits_of(out, self.output_key)
        return _select_position(z, self.position, mask)


def layer_root(model: nn.Module) -> nn.Module:
    """The module whose submodule names layer rows use: the user's model inside an
    :class:`AtModule` (its names stay the user's), else ``model`` itself."""
    return model.model if isinstance(model, AtModule) else model


def current_mask(model: nn.Module) -> torch.Tensor | None:
    """The attention mask ``(b, L)`` of the rows an :class:`AtModule` is running (None for
    other models, or without a mask); read by layer hooks during its forward."""
    return model._binding.mask if isinstance(model, AtModule) else None


def masked(t: torch.Tensor, mask: torch.Tensor | None, *, detach: bool) -> torch.Tensor:
    """``t`` with padded positions (``mask`` 0 on its first two axes) cut from the gradient:
    ``t m + stop_grad(t) (1 - m)`` (values unchanged) when ``detach``, else ``t m`` (rows of
    a Jacobian of ``t`` zero there). ``t`` unchanged without a matching mask."""
    if mask is None or t.ndim < 2 or tuple(mask.shape) != tuple(t.shape[:2]):
        return t
    m = mask.to(device=t.device, dtype=t.dtype).reshape(*mask.shape, *([1] * (t.ndim - 2)))
    return t * m + t.detach() * (1 - m) if detach else t * m


def layers_off_path(model: AtModule, h: torch.Tensor, names: list[str]) -> dict[str, str]:
    """The layers among ``names`` (submodules of the user's model) whose output does not
    depend on ``h``, the input module's output, with why: their Jacobians at ``h`` would be
    zero. One forward of ``model`` on ``h`` (examples bound) with hooks, then per layer
    whether autograd finds a path from its output back to ``h`` (structural, not numeric):
    the input module itself, the modules inside it, the modules feeding it and those beside
    it (e.g. position embeddings) have none."""
    root = layer_root(model)
    reasons = {n: (f"is the input_module {model.name!r} itself (its layer rows are the "
                   "input->output row)") for n in names if n == model.name}
    names = [n for n in names if n not in reasons]
    outs: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: Any) -> Any:
            if isinstance(out, torch.Tensor) and name not in outs:
                outs[name] = out
                return out.clone()  # later in-place operations cannot touch the saved output
            return None

        return hook

    handles = [root.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    leaf = h.detach().requires_grad_(True)
    try:
        with untouched(model), torch.enable_grad():
            model(leaf)
    finally:
        for handle in handles:
            handle.remove()
    for n in names:
        out = outs.get(n)
        if out is None:
            continue
        if not out.requires_grad or torch.autograd.grad(
                out.sum(), leaf, retain_graph=True, allow_unused=True)[0] is None:
            reasons[n] = (f"runs before or beside input_module {model.name!r} (its output does "
                          "not depend on that module's output h), so its Jacobians at h would "
                          "be zero")
    return reasons


class OutputOf(nn.Module):
    """``model`` with its logits picked from its output by ``output_key``/``position``."""

    def __init__(self, model: nn.Module, output_key: str | None, position: int | None) -> None:
        super().__init__()
        self.model = model
        self.output_key = output_key
        self.position = position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _select_position(logits_of(self.model(x), self.output_key), self.position, None)


def _called_error(name: str, module: nn.Module, calls: int) -> str:
    if calls == 0:
        return (f"input_module={name!r} ({type(module).__name__}) is not called by the "
                "model's forward pass; name a module it runs")
    return (f"input_module={name!r} ({type(module).__name__}) is called {calls} times per "
            "forward pass (a shared embedding or tied weights used twice), so no one output h "
            "carries the input; name a module called exactly once")


class ModuleData(KnownLength):
    """Re-iterable ``(h, y)`` batches: per batch of ``data``, the output ``h`` of module
    ``name`` of ``model`` run as given (no gradients), laid out on the first batch's sequence
    length (or ``length`` when given: a shard of data laid out as the whole); iterating
    binds each batch for the :class:`AtModule` sharing ``binding``."""

    def __init__(self, model: nn.Module, name: str, data: Any, binding: _Binding,
                 batch_size: int | None, length: int | None = None) -> None:
        self.model = model
        self.name = name
        self.module = model.get_submodule(name)
        self.data = OneShot(data, "this input_module data") if isinstance(data, Iterator) \
            else data
        self.binding = binding
        self.batch_size = batch_size
        self.length: int | None = length
        self.takes = forward_keywords(model)
        self.num_examples = _num_examples(data)

    def capture(self, batch: ModelBatch) -> torch.Tensor:
        """The module's output on ``batch`` (the model as given, no gradients)."""
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        moved = batch.to(device)
        got: list[Any] = []

        def hook(module: nn.Module, inputs: Any, out: Any) -> None:
            got.append(out)

        handle = self.module.register_forward_hook(hook)
        try:
            with untouched(self.model, no_grad=True):
                self.model(*moved.args, **moved.kwargs)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            keys = ", ".join([*(["x"] if moved.args else []), *moved.kwargs])
            raise ValueError(f"the model rejected a batch of ({keys}): {first}") from exc
        finally:
            handle.remove()
        if len(got) != 1:
            raise ValueError(_called_error(self.name, self.module, len(got)))
        h = got[0]
        if not isinstance(h, torch.Tensor) or not h.is_floating_point() or h.ndim < 2 or (
                h.shape[0] != batch.size):
            what = (f"a {type(h).__name__}" if not isinstance(h, torch.Tensor)
                    else f"a {h.dtype} tensor of shape {tuple(h.shape)}")
            raise ValueError(f"input_module={self.name!r} ({type(self.module).__name__}) "
                             f"returns {what}; it must return one float (batch, ...) tensor")
        return h.detach()

    def _laid_out(self, h: torch.Tensor, batch: ModelBatch) -> torch.Tensor:
        """``h`` on the first batch's length ``L``: zero columns added, masked ones cut."""
        if h.ndim < 3:
            return h
        if self.length is None:
            self.length = int(h.shape[1])
        big, length = int(h.shape[1]), self.length
        if big == length:
            return h
        if big < length:
            pad = h.new_zeros((h.shape[0], length - big, *h.shape[2:]))
            return torch.cat([h, pad], dim=1)
        mask = batch.attention_mask
        if mask is None or bool(mask[:, length:].ne(0).any()):
            raise ValueError(
                f"a batch has sequences of {big} positions, longer than the first batch's "
                f"{length} (which fixes d = {length} x {tuple(h.shape[2:])}); pad every batch "
                "to one length (e.g. the tokenizer's padding='max_length', max_length=...)"
            )
        return h[:, :length]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for batch in iter_model_batches(self.data, self.takes, self.batch_size):
            own = self.capture(batch)
            h = self._laid_out(own, batch)
            b = self.binding
            b.batch, b.h, b.own, b.window = batch, h, own, None
            yield h, batch.y


def _num_examples(data: Any) -> int | None:
    n = data_length(data)
    if n is not None:
        return n
    if isinstance(data, dict):
        return next((int(v.shape[0]) for v in data.values()
                     if isinstance(v, torch.Tensor) and v.ndim >= 1), None)
    if isinstance(data, tuple) and data and isinstance(data[0], dict):
        return _num_examples(data[0])
    if isinstance(data, list) and data and isinstance(data[0], dict):
        first = next(iter(data[0].values()), None)
        if not (isinstance(first, torch.Tensor) and first.ndim >= 2):
            return len(data)  # rows of a dataset
    return None


@contextlib.contextmanager
def batch_window(model: nn.Module, start: int, stop: int) -> Iterator[None]:
    """While the engine runs rows ``start:stop`` of a batch: an :class:`AtModule` takes them
    from the bound batch (nothing for other models)."""
    binding = getattr(model, "_binding", None) if isinstance(model, AtModule) else None
    if binding is None:
        yield
        return
    saved = binding.window
    binding.window = (start, stop)
    try:
        yield
    finally:
        binding.window = saved


def at_input_module(model: nn.Module, data: Any, opts: JacobianOptions, *,
                    length: int | None = None) -> tuple[nn.Module, Any, JacobianOptions]:
    """``(model, data, opts)`` as the engine's problem (module docstring): unchanged when
    ``opts`` has no ``input_module``, ``output_key`` or ``position``; the returned options
    have none of them (so a second call changes nothing). ``length``: the sequence length
    ``h`` is laid out on (default: the first batch's)."""
    if opts.input_module is None and opts.output_key is None and opts.position is None:
        return model, data, opts
    rest = opts.replace(input_module=None, output_key=None, position=None)
    if opts.input_module is None:
        return OutputOf(unwrap_compiled(model), opts.output_key, opts.position), data, rest
    eager = _hookable(model, "input_module")
    find_module(eager, opts.input_module)
    binding = _Binding()
    wrapped = AtModule(eager, opts.input_module, opts.output_key, opts.position, binding)
    return wrapped, ModuleData(eager, opts.input_module, data, binding, opts.batch_size,
                               length), rest

