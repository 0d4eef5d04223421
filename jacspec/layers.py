"""Layer-wise data Jacobians: input -> hidden layer, and hidden layer -> output.

For a hidden module with activations ``h(x)`` (``m`` numbers per example), jacspec forms
two per-example Jacobians:

- ``d h / d x``, shape ``(m, *input_shape)``: how the layer's activations move with the input;
- ``d g(f) / d h``, shape ``(k, *h_shape)``: how the output (softmax by default) moves with
  the layer's activations, the rest of the network held fixed.

Both stream as :class:`~jacspec.jacobian.JacobianBatch` objects, so the Gram and ESD
machinery of the full input-output Jacobian applies unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from jacspec.batches import iter_batches
from jacspec.errors import check_choice
from jacspec.jacobian import (
    OUTPUTS,
    JacobianBatch,
    _check_inputs,
    _forward,
    check_batch_independence,
    frozen_parameters,
    is_activation,
    output_map,
    prepare_model,
)

DIRECTIONS = ("input_to_layer", "layer_to_output")
#: Bytes one batch's layer Jacobian may take.
LAYER_BATCH_BYTES = 64 * 2**20


def hidden_layers(model: nn.Module, layers: str | Sequence[str] = "all") -> list[str]:
    """Names of the modules to analyse: every activation module for ``"all"``, else as given.

    Falls back to every parametrised leaf module but the last when the model has no
    activation modules (activations called as functions).
    """
    named = dict(model.named_modules())
    if isinstance(layers, str):
        if layers != "all":
            layers = [layers]
        else:
            acts = [n for n, m in named.items() if n and is_activation(m)]
            if acts:
                return acts
            leaves = [
                n
                for n, m in named.items()
                if n and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
            ]
            if len(leaves) < 2:
                raise ValueError("layers='all' found no hidden layers in the model")
            return leaves[:-1]
    names = list(layers)
    unknown = [n for n in names if n not in named or n == ""]
    if unknown:
        options = ", ".join(n for n in named if n)
        raise ValueError(
            f"layers {unknown} are not modules of the model; expected among: {options}"
        )
    return names


class _Capture:
    """Forward hook: records the module's output ``h`` and feeds a detached leaf downstream."""

    def __init__(self) -> None:
        self.h: torch.Tensor | None = None
        self.leaf: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: Any, out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {type(module).__name__} does not return a single tensor")
        self.calls += 1
        self.h = out
        self.leaf = out.detach().requires_grad_(True)
        return self.leaf


def _layer_step(
    model: nn.Module, fn: Any, module: nn.Module, name: str, x: torch.Tensor, direction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    cap = _Capture()
    handle = module.register_forward_hook(cap)
    try:
        xg = x.detach().requires_grad_(direction == "input_to_layer")
        out = _forward(model, fn, xg)
    finally:
        handle.remove()
    if cap.calls != 1 or cap.h is None or cap.leaf is None:
        raise ValueError(
            f"layer {name!r} ran {cap.calls} times in one forward pass; name a module that is "
            "called exactly once"
        )
    if direction == "layer_to_output":
        k = out.shape[1]
        rows = [
            torch.autograd.grad(out[:, c].sum(), cap.leaf, retain_graph=c < k - 1)[0]
            for c in range(k)
        ]
        return torch.stack(rows, dim=1), out.detach()
    h = cap.h.reshape(x.shape[0], -1)
    m = h.shape[1]
    eye = torch.eye(m, dtype=h.dtype, device=h.device)
    cot = eye[:, None, :].expand(m, x.shape[0], m)
    (grad,) = torch.autograd.grad(h, xg, grad_outputs=cot, is_grads_batched=True)
    return grad.transpose(0, 1), h.detach()


def iter_layer_jacobians(
    model: nn.Module,
    data: Any,
    layer: str,
    *,
    direction: str = "layer_to_output",
    output: str = "softmax",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
) -> Iterator[JacobianBatch]:
    """Yield per-example Jacobians for one hidden ``layer`` batch by batch.

    ``direction="layer_to_output"``: ``jac`` is ``(b, k, *h_shape)`` = ``d g_c / d h``.
    ``direction="input_to_layer"``: ``jac`` is ``(b, m, *input_shape)`` = ``d h_j / d x``.
    """
    check_choice("direction", direction, DIRECTIONS)
    check_choice("output", output, OUTPUTS)
    fn = output_map(output)
    run_model, dt, dev = prepare_model(model, dtype, device)
    (name,) = hidden_layers(run_model, [layer])
    module = dict(run_model.named_modules())[name]
    start = 0
    chosen = batch_size
    with frozen_parameters(run_model), torch.enable_grad():
        for x_raw, y in iter_batches(data, None):
            if x_raw.shape[0] == 0:
                continue
            _check_inputs(x_raw)
            x_all = x_raw.to(device=dev, dtype=dt)
            if start == 0:
                check_batch_independence(run_model, fn, x_all[:8])
            if chosen is None:
                jac0, _ = _layer_step(run_model, fn, module, name, x_all[:1], direction)
                per = jac0.numel() * jac0.element_size() * 3
                chosen = int(max(1, min(2048, LAYER_BATCH_BYTES // max(per, 1))))
            for s in range(0, x_all.shape[0], chosen):
                x = x_all[s : s + chosen]
                jac, out = _layer_step(run_model, fn, module, name, x, direction)
                yb = None if y is None else y[s : s + chosen]
                yield JacobianBatch(jac=jac.detach(), x=x, y=yb, out=out, start=start)
                start += x.shape[0]
    if start == 0:
        raise ValueError("data is empty; expected at least one example")
