"""Layer-wise data Jacobians: input -> hidden layer, and hidden layer -> output.

For a hidden module with activations ``h(x)`` (``m`` numbers per example), jacspec forms
two per-example Jacobians:

- ``d h / d x``, shape ``(m, *input_shape)``: how the layer's activations move with the input;
- ``d g(f) / d h``, shape ``(k, *h_shape)``: how the output (softmax by default) moves with
  the layer's activations, the rest of the network held fixed.

Both stream as :class:`~jacspec.jacobian.engine.JacobianBatch` objects, so the Gram and ESD
machinery of the full input-output Jacobian applies unchanged.

Which modules ``layers="all"`` takes (:func:`select_layers`): the *layer modules* of the
model, in registration order, which are

- every activation module (:data:`jacspec.jacobian.engine.ACTIVATION_MODULES`, jacspec's ``Erf``),
- every module owning parameters itself (``Linear``, ``Conv*``, norms, attention, ...),

except the root and the last parametrised module to run (the output layer, whose
layer -> output Jacobian is the output map's alone). The rule does not depend on whether
activations are modules or calls of ``torch.nn.functional``: the parametrised layers' outputs
are always rows. One traced forward pass (hooks counting calls, on two examples) then keeps
the modules called exactly once per forward pass with a single tensor output whose first
axis is the batch; the others are skipped with one warning naming each and why (``called 2
times per forward pass``, ``returns a tuple``, ``not called``). A module named explicitly
must pass the same checks, else ValueError. Layer rows need an eager ``nn.Module``
(TorchScript and ``torch.export`` programs have no Python modules to hook).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jacspec._util.validation import check_choice
from jacspec.data.batches import first_batch
from jacspec.jacobian.engine import (
    JacobianBatch,
    check_inputs,
    is_activation,
    jacobian_loop,
    output_map,
    prepare_model,
    run_forward,
    untouched,
    unwrap_compiled,
)
from jacspec.jacobian.input_module import (
    AtModule,
    at_input_module,
    current_mask,
    layer_root,
    layers_off_path,
    masked,
)
from jacspec.jacobian.options import JacobianOptions, resolve_options
from jacspec.jacobian.vjp import vjp_rows

DIRECTIONS = ("input_to_layer", "layer_to_output")
#: Examples in the traced forward pass that checks the layers.
PROBE_EXAMPLES = 2


@dataclass(frozen=True)
class HiddenLayer:
    """A module whose output is analysed: its name and per-example output shape (``m`` values)."""

    name: str
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        """``m``: the number of activations per example."""
        n = 1
        for s in self.shape:
            n *= int(s)
        return n


def eager_model(model: nn.Module) -> nn.Module:
    """The eager module whose submodules can be hooked (``torch.compile`` wrappers unwrapped).

    TorchScript modules and ``torch.export`` programs (``torch.fx.GraphModule``) are refused
    with one ValueError: their forward pass does not call Python submodules.
    """
    model = unwrap_compiled(model)  # refuses anything but an nn.Module
    if isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        kind = "TorchScript" if isinstance(model, torch.jit.ScriptModule) else "torch.export/fx"
        raise ValueError(
            f"layer rows need an eager torch.nn.Module (its Python class); got a {kind} model "
            f"({type(model).__name__}). Drop layers= to analyse the input->output Jacobian, or "
            "load the model from its class (package.module:factory with --weights)"
        )
    return model


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def layer_candidates(model: nn.Module) -> list[str]:
    """Names of the layer modules (activation modules and modules owning parameters), in
    registration order, root excluded (before the traced check of :func:`select_layers`)."""
    named = layer_root(eager_model(model)).named_modules()
    return [n for n, m in named if n and (is_activation(m) or _owns_parameters(m))]


def _describe(out: Any) -> str:
    if isinstance(out, tuple):
        return f"returns a tuple of {len(out)}, not a single tensor"
    return f"returns {type(out).__name__}, not a single tensor"


def _unknown_names(named: dict[str, nn.Module], names: Sequence[str]) -> None:
    """ValueError naming the ``names`` that are not modules of the model (the root's ``""``
    included), listing the model's module names."""
    unknown = [n for n in names if n not in named or n == ""]
    if unknown:
        options = ", ".join(n for n in named if n)
        raise ValueError(
            f"layers {unknown} are not modules of the model; expected among: {options}"
        )


def _requested(model: nn.Module, layers: str | Sequence[str]) -> tuple[bool, list[str]]:
    """``(explicit, names)``: the candidates of ``layers="all"`` or the names given."""
    if isinstance(layers, str):
        explicit = layers != "all"
        return explicit, [layers] if explicit else layer_candidates(model)
    if not all(isinstance(n, str) for n in layers):
        raise TypeError("layers must be None, 'all', a module name or a list of module names")
    return True, list(layers)


def _trace(model: nn.Module, named: dict[str, nn.Module], names: list[str], probe: torch.Tensor
           ) -> tuple[dict[str, int], dict[str, Any], dict[str, int]]:
    """One forward pass of ``probe`` with a hook on each of ``names``: per module, how many
    times it ran, its first output and when it last ran (a tick)."""
    calls: dict[str, int] = dict.fromkeys(names, 0)
    outs: dict[str, Any] = {}
    order: dict[str, int] = {}
    tick = [0]

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: Any) -> None:
            calls[name] += 1
            outs.setdefault(name, out)
            tick[0] += 1
            order[name] = tick[0]

        return hook

    handles = [named[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        with untouched(model, no_grad=True):
            run_forward(model, output_map("logits"), probe)
    finally:
        for h in handles:
            h.remove()
    return calls, outs, order


def _why_skipped(calls: int, out: Any, batch: int) -> str | None:
    """Why a module called ``calls`` times with first output ``out`` gives no layer rows (None:
    it does)."""
    if calls == 0:
        return "not called by the model's forward pass"
    if calls > 1:
        return f"called {calls} times per forward pass"
    if not isinstance(out, torch.Tensor):
        return _describe(out)
    if out.ndim < 1 or out.shape[0] != batch or not out.is_floating_point():
        return f"its output {tuple(out.shape)} is not a float (batch, ...) tensor"
    return None


def select_layers(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str] = "all"
) -> tuple[list[HiddenLayer], dict[str, str]]:
    """The hidden layers to analyse and the skipped candidates with the reason for each.

    ``layers="all"``: the layer modules (see the module docstring) that one traced forward
    pass on ``x[:2]`` finds called exactly once with a single ``(batch, ...)`` tensor output;
    the others are skipped with one ``UserWarning`` naming them. Names given explicitly must
    pass the same checks (else ValueError). ``x`` must already have the model's dtype/device.
    At an input module (an :class:`~jacspec.jacobian.input_module.AtModule`, ``x`` its
    output ``h``) the names are the user's model's and a layer must also depend on ``h``
    (:func:`~jacspec.jacobian.input_module.layers_off_path`).
    """
    model = eager_model(model)
    named = dict(layer_root(model).named_modules())
    explicit, names = _requested(model, layers)
    _unknown_names(named, names)
    probe = x[:PROBE_EXAMPLES]
    calls, outs, order = _trace(model, named, names, probe)
    if not explicit:  # drop the output layer: the last parametrised module to run
        ran = [n for n in names if calls[n] and _owns_parameters(named[n])]
        if ran:
            names.remove(max(ran, key=lambda n: order[n]))
    chosen: list[HiddenLayer] = []
    skipped: dict[str, str] = {}
    for name in names:
        why = _why_skipped(calls[name], outs.get(name), probe.shape[0])
        if why is not None:
            skipped[name] = why
        else:
            chosen.append(HiddenLayer(name, tuple(int(s) for s in outs[name].shape[1:])))
    if isinstance(model, AtModule):
        chosen = _on_path(model, probe, chosen, skipped, explicit)
    _refuse_or_warn(named, chosen, skipped, explicit)
    return chosen, skipped


def _refuse_or_warn(named: dict[str, nn.Module], chosen: list[HiddenLayer],
                    skipped: dict[str, str], explicit: bool) -> None:
    """ValueError for a skipped layer named explicitly or when none is left; else one
    ``UserWarning`` naming every skipped candidate of ``layers="all"``."""
    if explicit and skipped:
        name, why = next(iter(skipped.items()))
        raise ValueError(
            f"layer {name!r} ({type(named[name]).__name__}) {why}; layer rows need a module "
            "called exactly once per forward pass that returns one (batch, ...) tensor"
        )
    if not chosen:
        detail = "; ".join(f"{n}: {why}" for n, why in skipped.items()) or "no layer modules"
        raise ValueError(
            "layers='all' found no hidden layer called once with a single tensor output "
            f"({detail}); name modules explicitly"
        )
    if skipped:
        warnings.warn(
            "layers='all' skipped "
            + ", ".join(f"{n!r} ({type(named[n]).__name__}: {why})" for n, why in skipped.items()),
            UserWarning,
            stacklevel=3,
        )


def _on_path(model: AtModule, probe: torch.Tensor, chosen: list[HiddenLayer],
             skipped: dict[str, str], explicit: bool) -> list[HiddenLayer]:
    """The ``chosen`` layers whose output depends on the input module's output ``probe``;
    the others go to ``skipped`` (ValueError when named explicitly)."""
    off = layers_off_path(model, probe, [h.name for h in chosen])
    if explicit and off:
        name, why = next(iter(off.items()))
        kind = type(layer_root(model).get_submodule(name)).__name__
        raise ValueError(f"layer {name!r} ({kind}) {why}; with input_module, layer rows are "
                         f"for layers after {model.name!r} in the forward pass")
    skipped.update(off)
    return [h for h in chosen if h.name not in off]


def hidden_layers(
    model: nn.Module, layers: str | Sequence[str] = "all", *, x: torch.Tensor | None = None
) -> list[str]:
    """Names of the modules to analyse (see :func:`select_layers`, which needs inputs ``x``).

    Without ``x`` no forward pass runs: ``"all"`` gives every layer module but the last
    parametrised one in registration order, and given names are only checked to exist.
    """
    if x is not None:
        return [h.name for h in select_layers(model, x, layers)[0]]
    model = eager_model(model)
    named = dict(model.named_modules())
    if isinstance(layers, str) and layers == "all":
        names = layer_candidates(model)
        params = [n for n in names if _owns_parameters(named[n])]
        if params:
            names.remove(params[-1])
        if not names:
            raise ValueError("layers='all' found no hidden layers in the model")
        return names
    names = [layers] if isinstance(layers, str) else list(layers)
    _unknown_names(named, names)
    return names


class _Capture:
    """Forward hook: records the module's output ``h`` and feeds ``leaf.clone()`` downstream.

    ``leaf = h.detach().requires_grad_()`` is what ``d g / d h`` is taken against; the rest
    of the network sees a non-leaf copy, so in-place operations downstream (``out +=
    identity``, ``ReLU(inplace=True)``) are allowed and cannot touch ``h``.

    At an input module the rows' padded positions (attention mask 0) are held fixed:
    ``leaf m + stop_grad(leaf) (1 - m)`` goes downstream (zero columns, values unchanged).
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self.h: torch.Tensor | None = None
        self.leaf: torch.Tensor | None = None
        self.calls = 0
        self.model = model

    def __call__(self, module: nn.Module, inputs: Any, out: Any) -> Any:
        self.calls += 1
        if not isinstance(out, torch.Tensor) or self.calls > 1:
            return None
        self.h = out
        self.leaf = out.detach().requires_grad_(True)
        if isinstance(self.model, AtModule):
            return masked(self.leaf, current_mask(self.model), detach=True)
        return self.leaf.clone()


def _layer_step(
    model: nn.Module, fn: Any, module: nn.Module, name: str, x: torch.Tensor, direction: str,
    shape: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    at_module = isinstance(model, AtModule)
    cap = _Capture(model if at_module else None)
    handle = module.register_forward_hook(cap)
    try:
        xg = x.detach().requires_grad_(direction == "input_to_layer")
        out = run_forward(model, fn, xg)
    finally:
        handle.remove()
    if cap.calls != 1 or cap.h is None or cap.leaf is None:
        raise ValueError(
            f"layer {name!r} ran {cap.calls} times in one forward pass; name a module that is "
            "called exactly once"
        )
    if at_module and shape is not None and tuple(cap.h.shape[1:]) != shape:
        raise ValueError(
            f"layer {name!r} returns {tuple(cap.h.shape[1:])} per example in a batch but "
            f"{shape} in the first; with input_module, layer rows need every batch padded to "
            "one length (e.g. the tokenizer's padding='max_length', max_length=...)"
        )
    if direction == "layer_to_output":  # one backward per output (the hook's leaf)
        eye = torch.eye(out.shape[1], dtype=out.dtype, device=out.device)
        return vjp_rows(out, cap.leaf, eye, "loop"), out.detach()
    h = cap.h.reshape(x.shape[0], -1)
    if at_module:  # padded positions' rows zero, as their columns are at the input module
        h = masked(cap.h, current_mask(model), detach=False).reshape(x.shape[0], -1)
    eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
    return vjp_rows(h, xg, eye, "batched_grad"), h.detach()


def iter_layer_jacobians(
    model: nn.Module,
    data: Any,
    layer: str,
    *,
    direction: str = "layer_to_output",
    options: JacobianOptions | None = None,
    output: str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    check_independence: bool | None = None,
) -> Iterator[JacobianBatch]:
    """Yield per-example Jacobians for one hidden ``layer`` batch by batch.

    ``direction="layer_to_output"``: ``jac`` is ``(b, k, *h_shape)`` = ``d g_c / d h``.
    ``direction="input_to_layer"``: ``jac`` is ``(b, m, *input_shape)`` = ``d h_j / d x``.
    The layer must be called once per forward pass with one tensor output (ValueError
    otherwise, before any Jacobian is computed). ``options`` or its fields as keywords, as
    in :func:`jacspec.jacobian.engine.iter_jacobians` (``method`` does not apply: a layer's
    rows come from its own backward); the batches run through the engine's one loop
    (:func:`jacspec.jacobian.engine.jacobian_loop`), so batch sizes follow the same rule.
    With ``options.input_module`` the data flow as there and ``x`` is that module's output
    ``h``: ``d g / d h_L`` and ``d h_L / d h`` for a layer after it (padded positions' rows
    and columns zero; every batch of one length).
    """
    check_choice("direction", direction, DIRECTIONS)
    opts = resolve_options(
        options, output=output, dtype=dtype, device=device, batch_size=batch_size,
        progress=progress, check_independence=check_independence,
    )
    model, data, opts = at_input_module(model, data, opts)
    fn = output_map(opts.output)
    run_model, dt, dev = prepare_model(eager_model(model), opts.dtype, opts.device)
    x0, _ = first_batch(data)
    check_inputs(x0)
    (hidden,), _ = select_layers(run_model, x0.to(device=dev, dtype=dt), [layer])
    module = layer_root(run_model).get_submodule(layer)
    m = hidden.width
    if direction == "layer_to_output":
        label = f"{layer}->output"

        def entries(k: int, d: int) -> int:
            return k * m
    else:
        label = f"input->{layer}"

        def entries(k: int, d: int) -> int:
            return m * d

    return jacobian_loop(
        run_model,
        data,
        lambda x, k: _layer_step(run_model, fn, module, layer, x, direction, hidden.shape),
        options=opts,
        dtype=dt,
        device=dev,
        entries=entries,
        desc=label,
    )
