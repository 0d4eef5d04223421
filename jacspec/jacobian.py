"""Per-example input Jacobians of a classifier, streamed in batches.

For a model ``f: R^{shape} -> R^k`` and an output map ``g`` (softmax by default,
logits or log-softmax on request), the Jacobian of one example is
``J(x) = d g(f(x)) / d x`` with shape ``(k, *shape)``. Stacking the flattened rows of
``n`` examples gives the data Jacobian ``𝒥`` of shape ``(n, k*d)``.

All ``k`` rows of a batch come from one batched backward pass. Because examples never
interact in an eval-mode network, the gradient of ``sum_i g_c(f(x_i))`` with respect to
the batch gives row ``c`` of every example's Jacobian at once; a first-batch probe
refuses models that mix examples (BatchNorm in training mode, batch-mean layers, ...).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jacspec.batches import data_length, iter_batches
from jacspec.errors import check_choice

logger = logging.getLogger(__name__)

OUTPUTS = ("softmax", "logits", "log_softmax")
METHODS = ("auto", "replicate", "batched_grad", "loop")
DEFAULT_METHOD = "auto"
#: Elementwise activation modules (hidden-layer outputs for ``layers="all"`` in
#: :mod:`jacspec.layers`; elementwise maps for ``method="auto"``).
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Softplus,
)
#: Leaf modules for which ``method="auto"`` picks the vmapped backward (``batched_grad``):
#: dense layers and elementwise maps, where one batched GEMM per layer beats k passes.
_DENSE_LEAVES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.LayerNorm,
    nn.BatchNorm1d,
    *ACTIVATION_MODULES,
)


def is_activation(module: nn.Module) -> bool:
    """An elementwise activation module (torch's, or jacspec's ``Erf``)."""
    return isinstance(module, ACTIVATION_MODULES) or type(module).__name__ == "Erf"


#: Bytes the Jacobian of one batch may take (the batch size is chosen from it).
BATCH_BYTES = 64 * 2**20


@dataclass(frozen=True)
class JacobianBatch:
    """Jacobians of one batch: ``jac`` is ``(b, k, *input_shape)``, ``out`` is ``(b, k)``."""

    jac: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor | None
    out: torch.Tensor
    start: int

    @property
    def rows(self) -> torch.Tensor:
        """The batch's rows of the data Jacobian, ``(b, k*d)`` (a view)."""
        return self.jac.reshape(self.jac.shape[0], -1)


def output_map(output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map applied to the logits: softmax, identity or log-softmax over dim 1."""
    check_choice("output", output, OUTPUTS)
    if output == "softmax":
        return lambda z: torch.softmax(z, dim=1)
    if output == "log_softmax":
        return lambda z: torch.log_softmax(z, dim=1)
    return lambda z: z


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    for p in model.parameters():
        return p.dtype, p.device
    for b in model.buffers():
        if b.is_floating_point():
            return b.dtype, b.device
    return None, None


def prepare_model(
    model: nn.Module, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[nn.Module, torch.dtype, torch.device]:
    """Return the model to run (a converted copy if dtype/device differ), its dtype and device."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    mdtype, mdevice = _model_dtype_device(model)
    target_dtype = dtype or mdtype or torch.float32
    if target_dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"model parameters are {target_dtype}; pass dtype=torch.float32 or torch.float64"
        )
    target_device = torch.device(device) if device is not None else (mdevice or torch.device("cpu"))
    if target_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available here; use 'cpu'")
    if (mdtype is not None and mdtype != target_dtype) or (
        mdevice is not None and mdevice != target_device
    ):
        model = copy.deepcopy(model).to(device=target_device, dtype=target_dtype)
    return model, target_dtype, target_device


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily turn off ``requires_grad`` on every parameter (no parameter gradients)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _forward(model: nn.Module, fn: Callable, x: torch.Tensor) -> torch.Tensor:
    try:
        z = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"the model rejected inputs of shape {tuple(x.shape[1:])} (batch {x.shape[0]}): {first}"
        ) from exc
    if not isinstance(z, torch.Tensor):
        raise ValueError(
            f"the model must return a tensor of logits (batch, k); it returned {type(z).__name__}"
        )
    if z.ndim != 2 or z.shape[0] != x.shape[0] or z.shape[1] < 2:
        raise ValueError(
            f"the model output has shape {tuple(z.shape)} for a batch of {x.shape[0]}; "
            "expected (batch, k) logits with k >= 2 classes"
        )
    return fn(z)


def check_batch_independence(model: nn.Module, fn: Callable, x: torch.Tensor) -> None:
    """Refuse models whose output for one example depends on the other examples of a batch.

    Perturbs example 0 and checks that outputs 1..b-1 are unchanged (BatchNorm in training
    mode, batch-mean subtraction, Dropout in training mode and the like all fail this).
    """
    if x.shape[0] < 2:
        return
    with torch.no_grad():
        a = _forward(model, fn, x)
        x2 = x.clone()
        scale = float(x.abs().max()) + 1.0
        gen = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn(x2[0].shape, generator=gen, dtype=x.dtype).to(x.device)
        x2[0] = x2[0] + 3.0 * scale * noise
        b = _forward(model, fn, x2)
    tol = (1e-4 if x.dtype == torch.float32 else 1e-9) * (1.0 + float(a.abs().max()))
    moved = (a[1:] - b[1:]).abs().max()
    if float(moved) > tol:
        mode = " (the model is in training mode: call model.eval() first)" if model.training else ""
        raise ValueError(
            "the model mixes examples within a batch: changing example 0 moved the output of "
            f"other examples by {float(moved):.3g}{mode}; per-example Jacobians would be wrong. "
            "Use eval-mode BatchNorm and remove layers that combine examples."
        )


JacFn = Callable[[nn.Module, Callable, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def _jac_replicate(
    model: nn.Module, fn: Callable, x: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replicate the batch k times; backprop ``sum_{c,i} g_c(x_i^{(c)})`` once: ``(b, k, ...)``."""
    b = x.shape[0]
    xr = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:]).detach()
    xr.requires_grad_(True)
    out = _forward(model, fn, xr).view(k, b, k)
    sel = torch.diagonal(out, dim1=0, dim2=2)  # (b, k): sel[i, c] = out[c, i, c]
    (grad,) = torch.autograd.grad(sel.sum(), xr)
    return grad.view(k, b, *x.shape[1:]).transpose(0, 1), out[0].detach()


def _jac_batched_grad(
    model: nn.Module, fn: Callable, x: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward, k cotangents through ``autograd.grad(is_grads_batched=True)``."""
    xg = x.detach().requires_grad_(True)
    out = _forward(model, fn, xg)
    eye = torch.eye(k, dtype=out.dtype, device=out.device)
    cot = eye[:, None, :].expand(k, x.shape[0], k)
    (grad,) = torch.autograd.grad(out, xg, grad_outputs=cot, is_grads_batched=True)
    return grad.transpose(0, 1), out.detach()


def _jac_loop(
    model: nn.Module, fn: Callable, x: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward, k backward passes (the reference recipe)."""
    xg = x.detach().requires_grad_(True)
    out = _forward(model, fn, xg)
    rows = []
    for c in range(k):
        (g,) = torch.autograd.grad(out[:, c].sum(), xg, retain_graph=c < k - 1)
        rows.append(g)
    return torch.stack(rows, dim=1), out.detach()


def resolve_method(model: nn.Module, method: str) -> str:
    """``"auto"``: ``batched_grad`` for models built only of dense layers and elementwise maps
    (``_DENSE_LEAVES`` or jacspec's ``Erf``), else ``loop`` (faster for convolutions);
    ``benchmarks/jacobian_throughput.py`` measures all of them."""
    check_choice("method", method, METHODS)
    if method != "auto":
        return method
    leaves = [m for m in model.modules() if not list(m.children())]
    dense = all(isinstance(m, _DENSE_LEAVES) or is_activation(m) for m in leaves)
    return "batched_grad" if dense and leaves else "loop"


_METHODS: dict[str, JacFn] = {
    "replicate": _jac_replicate,
    "batched_grad": _jac_batched_grad,
    "loop": _jac_loop,
}


def _check_inputs(x: torch.Tensor) -> None:
    if not (x.is_floating_point()):
        raise TypeError(
            f"inputs must be floating point; got {x.dtype}. Convert them first "
            "(for example x.float() / 255 for 8-bit images)"
        )
    if not torch.isfinite(x).all():
        raise ValueError("inputs contain NaN or Inf; clean the data before computing Jacobians")


def auto_batch_size(k: int, d: int, itemsize: int, budget: int = BATCH_BYTES) -> int:
    """Examples per batch so the Jacobian ``b*k*d*itemsize`` (x3 for work space) fits ``budget``."""
    return int(max(1, min(4096, budget // max(1, 3 * k * d * itemsize))))


def iter_jacobians(
    model: nn.Module,
    data: Any,
    *,
    output: str = "softmax",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    method: str = DEFAULT_METHOD,
    progress: bool = False,
    check_independence: bool = True,
) -> Iterator[JacobianBatch]:
    """Yield the per-example Jacobians of ``output(model(x))`` batch by batch.

    Each :class:`JacobianBatch` holds ``jac`` of shape ``(b, k, *input_shape)`` with
    ``jac[i, c] = d output_c(x_i) / d x_i``. ``dtype`` defaults to the model's (float32);
    with another dtype or device the model is run as a converted copy. ``method`` picks the
    batched backward (``benchmarks/jacobian_throughput.py`` compares them).
    """
    check_choice("output", output, OUTPUTS)
    check_choice("method", method, METHODS)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    fn = output_map(output)
    run_model, dt, dev = prepare_model(model, dtype, device)
    method = resolve_method(run_model, method)
    jac_fn = _METHODS[method]
    total = data_length(data)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="jacobians", unit="ex")
    start = 0
    k: int | None = None
    chosen: int | None = batch_size
    try:
        with frozen_parameters(run_model), torch.enable_grad():
            for x_raw, y in iter_batches(data, None):
                if x_raw.shape[0] == 0:
                    continue
                _check_inputs(x_raw)
                x_all = x_raw.to(device=dev, dtype=dt)
                if k is None:
                    probe = x_all[: min(8, x_all.shape[0])]
                    with torch.no_grad():
                        k = int(_forward(run_model, fn, probe).shape[1])
                    if check_independence:
                        check_batch_independence(run_model, fn, probe)
                    if chosen is None:
                        d = int(x_all[0].numel())
                        chosen = auto_batch_size(k, d, x_all.element_size())
                    logger.info("jacobians: k=%d, batch size %d, method %s", k, chosen, method)
                assert chosen is not None
                for s in range(0, x_all.shape[0], chosen):
                    x = x_all[s : s + chosen]
                    jac, out = jac_fn(run_model, fn, x, k)
                    yb = None if y is None else y[s : s + chosen]
                    yield JacobianBatch(jac=jac.detach(), x=x, y=yb, out=out, start=start)
                    start += x.shape[0]
                    if bar is not None:
                        bar.update(x.shape[0])
    finally:
        if bar is not None:
            bar.close()
    if start == 0:
        raise ValueError("data is empty; expected at least one example")


def jacobians(model: nn.Module, data: Any, **kwargs: Any) -> torch.Tensor:
    """All per-example Jacobians stacked: ``(n, k, *input_shape)``; see :func:`iter_jacobians`."""
    return torch.cat([b.jac for b in iter_jacobians(model, data, **kwargs)], dim=0)


def data_jacobian(model: nn.Module, data: Any, **kwargs: Any) -> torch.Tensor:
    """The data Jacobian ``𝒥``, ``(n, k*d)``: row i is ``J(x_i)`` flattened, class-major."""
    return torch.cat([b.rows for b in iter_jacobians(model, data, **kwargs)], dim=0)
