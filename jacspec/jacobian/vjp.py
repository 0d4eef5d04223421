"""The one batched backward of jacspec: rows ``c_j^T d output_b / d leaf_b`` for every example.

For an output ``y`` of shape ``(B, k)`` computed from a leaf ``z`` (the input, or a hidden
activation cut from the graph) and cotangent rows ``c_1..c_C`` (``C x k``, shared by every
example), :func:`vjp_rows` returns ``R`` of shape ``(B, C, *z.shape[1:])`` with

    R[b, j] = c_j^T  d y_b / d z_b.

It is per example because examples are independent in an eval-mode network
(``d y_b / d z_a = 0`` for ``a != b``), so the gradient of ``sum_b c_j^T y_b`` with respect
to the batch holds every example's row ``j`` at once. Identity cotangents give the Jacobian
(the engine, layer rows, the factored route), random projections the sketch.

``method`` (the batched backward; ``benchmarks/jacobian_throughput.py`` compares them):

- ``"loop"``: one backward pass per cotangent row (every operation supports it);
- ``"batched_grad"``: one ``autograd.grad(..., is_grads_batched=True)`` (vmap over the rows);
- ``"replicate"``: ``y`` was computed from ``C`` stacked copies of the batch
  (:func:`replicate`; ``y`` is ``(C*B, k)`` and ``z`` ``(C*B, ...)``): one backward pass of
  ``sum_j c_j^T y^{(j)}``, copy ``j`` carrying row ``j``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from jacspec._util.validation import check_choice

__all__ = ["VJP_METHODS", "replicate", "vjp_rows", "with_fallback"]

logger = logging.getLogger(__name__)

#: The batched backwards :func:`vjp_rows` runs (``"auto"`` is the engine's choice among them).
VJP_METHODS = ("replicate", "batched_grad", "loop")

#: Phrases of torch's errors for an operation without a batched (vmap) backward, such as
#: fused scaled-dot-product attention kernels on some accelerators.
_NO_BATCHED_RULE = ("vmap", "batching rule", "batched gradient", "is_grads_batched")


def replicate(x: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` stacked copies of the batch ``x``: ``(copies * B, *x.shape[1:])``, copy
    ``j`` at rows ``j B .. (j+1) B - 1`` (the input of ``method="replicate"``)."""
    return x.unsqueeze(0).expand(copies, *x.shape).reshape(copies * x.shape[0], *x.shape[1:])


def vjp_rows(
    output: torch.Tensor,
    leaf: torch.Tensor,
    cotangents: torch.Tensor,
    method: str,
    *,
    retain_graph: bool = False,
    create_graph: bool = False,
) -> torch.Tensor:
    """``R[b, j] = c_j^T d output_b / d leaf_b``: ``(B, C, *leaf.shape[1:])`` for the ``C``
    cotangent rows of ``cotangents`` (``C x k``, cast to ``output``'s dtype and device).

    ``output`` is ``(B, k)`` and ``leaf`` ``(B, ...)``; for ``method="replicate"`` both hold
    ``C`` copies of the batch (:func:`replicate`), ``(C*B, k)`` and ``(C*B, ...)``. The graph
    is freed after the last backward unless ``retain_graph``; ``create_graph`` keeps the
    rows differentiable.
    """
    check_choice("method", method, VJP_METHODS)
    if output.ndim != 2 or cotangents.ndim != 2 or cotangents.shape[1] != output.shape[1]:
        raise ValueError(
            f"cotangents must have shape (C, {output.shape[-1]}) for an output of shape "
            f"(B, k); got cotangents {tuple(cotangents.shape)}, output {tuple(output.shape)}"
        )
    v = cotangents.to(dtype=output.dtype, device=output.device)
    c = int(v.shape[0])
    keep = retain_graph or create_graph
    if method == "replicate":
        b = output.shape[0] // c
        total = (output.view(c, b, -1) * v[:, None, :]).sum()
        (g,) = torch.autograd.grad(total, leaf, retain_graph=keep, create_graph=create_graph)
        return g.view(c, b, *leaf.shape[1:]).transpose(0, 1)
    b = output.shape[0]
    if method == "batched_grad":
        cot = v[:, None, :].expand(c, b, v.shape[1])
        (g,) = torch.autograd.grad(output, leaf, grad_outputs=cot, is_grads_batched=True,
                                   retain_graph=keep, create_graph=create_graph)
        return g.transpose(0, 1)
    rows = [
        torch.autograd.grad(output, leaf, grad_outputs=v[j].expand_as(output),
                            retain_graph=keep or j < c - 1, create_graph=create_graph)[0]
        for j in range(c)
    ]
    return torch.stack(rows, dim=1)


def with_fallback(primary: Callable[..., Any], loop: Callable[..., Any], name: str
                  ) -> Callable[..., Any]:
    """``primary``, switching for good to ``loop`` (one backward per row, which every
    operation supports) the first time it fails because an operation has no batched backward
    (:data:`_NO_BATCHED_RULE`; logged once). Other errors pass unchanged."""
    chosen = [primary]

    def run(*args: Any) -> Any:
        try:
            return chosen[0](*args)
        except RuntimeError as exc:
            text = str(exc).lower()
            if chosen[0] is loop or not any(p in text for p in _NO_BATCHED_RULE):
                raise
            logger.warning("%s: an operation of the model has no batched backward (%s); "
                           "falling back to method='loop'", name,
                           str(exc).strip().splitlines()[0][:120])
            chosen[0] = loop
            return loop(*args)

    return run
