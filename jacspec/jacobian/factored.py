"""The factored route: rows of ``𝒥`` through the model's first linear layer.

If the input reaches the output only through one linear map ``h_1 = W x + b`` (``W`` of
shape ``w x d``), then ``J_i = A_i W`` with ``A_i = d g / d h_1`` (``k x w``), and with any
``L`` such that ``L L^T = G = W W^T`` (here ``L = U S^{1/2}`` from ``G = U S U^T``) the rows
``R_i = A_i L`` (``k x w``) give the same kernel

    M_ij = tr(J_i J_j^T) = tr(A_i G A_j^T) = tr(R_i R_j^T),

so the Gram ``𝒥𝒥^T`` and every quantity built from it (its nonzero eigenvalues, the Gram
operator, ``||J_i||_F^2 = ||R_i||_F^2``, per-class row norms ``||J_{i,c}|| = ||R_{i,c}||``)
is unchanged, while the dual Gram has ``(k-1)w`` (softmax, deflated) instead of ``(k-1)d``
dimensions, the backward pass stops at ``h_1`` and no ``k x d`` Jacobian is ever formed.
Softmax rows still sum to zero over classes (``sum_c A_{i,c} = 0``).

What is detected (:func:`find_first_linear`), on an eager ``nn.Module`` (TorchScript and
``torch.export`` programs always take the direct route), by one traced forward pass of two
examples with forward hooks on every ``nn.Linear`` (not a subclass overriding ``forward``):

- the first call of some ``nn.Linear`` receives the model's input tensor itself (1-D
  inputs) or a contiguous ``(batch, d)`` view of it (``nn.Flatten``, ``x.flatten(1)``,
  ``x.view(b, -1)``, ``nn.Identity`` before it: whatever returns the same memory), and
- the output does not depend on the input by any other path: that call's output is cut from
  the input in the probe, and the gradient of the output with respect to the input must then
  be structurally absent (``autograd.grad(..., allow_unused=True)`` returns None).

Anything else (a convolution first, an input also used elsewhere, a normalisation before
the linear layer, a Linear on ``(b, c, d)`` inputs) takes the direct route; so does
``route="auto"`` when ``w >= d`` (no saving). ``route="factored"`` where it does not apply
is one ValueError naming the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jacspec.jacobian.engine import (
    JacobianBatch,
    jacobian_loop,
    output_map,
    prepare_model,
    resolve_method,
    run_forward,
    untouched,
)
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.vjp import replicate, vjp_rows

logger = logging.getLogger(__name__)

__all__ = ["FactoredRows", "FirstLinear", "factor_weight", "factored_rows", "find_first_linear"]


@dataclass(frozen=True)
class FirstLinear:
    """The linear layer the input enters through: module ``name``, ``w`` outputs, ``d`` inputs."""

    name: str
    w: int
    d: int


def _plain_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def _is_input(t: Any, x: torch.Tensor) -> bool:
    """``t`` is ``x`` itself or a contiguous ``(b, d)`` view of the same memory."""
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != x.shape[0]:
        return False
    if t is x:
        return True
    return (
        t._base is x
        and x.is_contiguous()
        and t.is_contiguous()
        and t.data_ptr() == x.data_ptr()
        and t.shape[1] == x[0].numel()
    )


class _Cut:
    """Forward hooks on every plain Linear: the first call fed the input (``x``) has its output
    replaced by ``leaf.clone()`` (``leaf`` detached, requiring grad). ``name``: that module."""

    def __init__(self, modules: dict[str, nn.Module], x: torch.Tensor | None) -> None:
        self.x = x
        self.name: str | None = None
        self.leaf: torch.Tensor | None = None
        self.matches = 0
        self.first_call = True
        self.seen: set[str] = set()
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: Any) -> Any:
            first = name not in self.seen
            self.seen.add(name)
            fed = self.x is None or (len(inputs) == 1 and _is_input(inputs[0], self.x))
            if not fed or not isinstance(out, torch.Tensor):
                return None
            self.matches += 1
            if self.leaf is not None:
                return None
            self.name, self.first_call = name, first
            self.leaf = out.detach().requires_grad_(True)
            return self.leaf.clone()

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def find_first_linear(model: nn.Module, x: torch.Tensor) -> tuple[FirstLinear | None, str]:
    """The linear layer the input ``x`` (a probe batch, the model's dtype/device) enters the
    model through, or None with the reason (see the module docstring for the rule)."""
    if isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        return None, f"a {type(model).__name__} has no Python modules to trace"
    linears = {n: m for n, m in model.named_modules() if _plain_linear(m)}
    if not linears:
        return None, "the model has no nn.Linear module"
    probe = x[:2].detach().clone().requires_grad_(True)
    cut = _Cut(linears, probe)
    try:
        with untouched(model, freeze=True), torch.enable_grad():
            out = run_forward(model, output_map("logits"), probe)
            leaf = cut.leaf
            if leaf is None:
                return None, "no nn.Linear receives the input (or a flat view of it) directly"
            if not out.requires_grad:
                return None, "the output does not depend on the input"
            gx, gh = torch.autograd.grad(out.sum(), [probe, leaf], allow_unused=True)
    finally:
        cut.remove()
    name = cut.name
    if cut.matches > 1 or not cut.first_call:
        return None, f"the input enters nn.Linear {name!r} more than once"
    if gx is not None:
        return None, f"the output depends on the input other than through {name!r}"
    if gh is None:
        return None, f"the output does not depend on {name!r}"
    module = linears[str(name)]
    return FirstLinear(str(name), int(module.out_features), int(module.in_features)), ""


def factor_weight(weight: torch.Tensor) -> torch.Tensor:
    """``L`` (w x w, float64) with ``L L^T = W W^T``: ``U S^{1/2}`` from the eigendecomposition
    of ``G = W W^T`` formed in float64 (round-off negatives of ``S`` clipped to 0)."""
    w64 = weight.detach().to(torch.float64)
    s, u = torch.linalg.eigh(w64 @ w64.T)
    return u * s.clamp_min(0).sqrt()


def _step(
    model: nn.Module, fn: Any, module: nn.Module, lmat: torch.Tensor, method: str,
    x: torch.Tensor, k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: ``A = d g / d h_1`` (:func:`~jacspec.jacobian.vjp.vjp_rows` of the
    identity at the cut ``h_1``, by ``method``), rows ``A L`` ``(b, k, w)``."""
    xin = replicate(x, k) if method == "replicate" else x
    cut = _Cut({"layer": module}, None)
    try:
        out = run_forward(model, fn, xin.detach())
    finally:
        cut.remove()
    leaf = cut.leaf
    assert leaf is not None
    eye = torch.eye(k, dtype=out.dtype, device=out.device)
    a = vjp_rows(out, leaf, eye, method)
    if method == "replicate":
        out = out.view(k, x.shape[0], k)[0]
    return a @ lmat, out.detach()


@dataclass(frozen=True)
class FactoredRows:
    """The factored rows of a model on its data: the ``layer`` they pass through, ``make()``
    (a fresh pass of batches, ``jac`` of shape ``(b, k, w)``), the ``dtype`` they are computed
    in and the ``route_info`` a source records (``factored_layer``, ``factored_width``)."""

    layer: FirstLinear
    make: Callable[[], Iterable[JacobianBatch]]
    dtype: torch.dtype

    @property
    def route_info(self) -> dict[str, Any]:
        return {"factored_layer": self.layer.name, "factored_width": self.layer.w}


def factored_rows(
    model: nn.Module, data: Any, options: JacobianOptions, *, x0: torch.Tensor
) -> FactoredRows | None:
    """The factored rows of ``model`` on ``data`` (``x0`` its first batch) for
    :meth:`~jacspec.jacobian.source.JacobianSource.from_model` (kind ``"factored"``,
    ``d = w``, ``jacobian_shape`` the input's), or None when ``options.route="auto"`` and the
    route does not apply or saves nothing (``w >= d``). ``route="factored"`` where it does not
    apply: ValueError."""
    route = options.route
    run_model, dt, dev = prepare_model(model, options.dtype, options.device)
    found, why = find_first_linear(run_model, x0.to(device=dev, dtype=dt))
    if found is None:
        if route == "factored":
            raise ValueError(
                f"route='factored' does not apply to this model: {why}; use route='auto' or "
                "'direct'"
            )
        logger.info("route auto: direct (%s)", why)
        return None
    if route == "auto" and found.w >= found.d:
        logger.info("route auto: direct (%s has %d >= %d outputs)", found.name, found.w, found.d)
        return None
    fn = output_map(options.output)

    def make() -> Iterable[JacobianBatch]:
        run, rdt, rdev = prepare_model(model, options.dtype, options.device)
        module = dict(run.named_modules())[found.name]
        lmat = factor_weight(module.weight).to(device=rdev, dtype=rdt)
        method = resolve_method(run, options.method)
        return jacobian_loop(
            run, data, lambda x, kk: _step(run, fn, module, lmat, method, x, kk),
            options=options, dtype=rdt, device=rdev, entries=lambda kk, d: kk * found.w,
            desc="jacobians (factored)",
        )

    return FactoredRows(found, make, dt)
