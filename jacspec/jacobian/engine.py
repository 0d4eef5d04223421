"""Per-example input Jacobians of a classifier, streamed in batches.

For a model ``f: R^{shape} -> R^k`` and an output map ``g`` (softmax by default,
logits or log-softmax on request), the Jacobian of one example is
``J(x) = d g(f(x)) / d x`` with shape ``(k, *shape)``. Stacking the flattened rows of
``n`` examples gives the data Jacobian ``𝒥`` of shape ``(n, k*d)``.

All ``k`` rows of a batch come from one batched backward pass. Because examples never
interact in an eval-mode network, the gradient of ``sum_i g_c(f(x_i))`` with respect to
the batch gives row ``c`` of every example's Jacobian at once. Models for which that is
false are refused before any work: layers left in training mode are found from the
modules themselves (BatchNorm, Dropout, ...; :func:`training_mode_layers`), and a
first-batch probe catches the rest (batch-mean layers, exported or traced programs
recorded in training mode). jacspec never changes the user's model: the probe restores
every buffer and torch's random state, conversions to another dtype/device run on a copy,
and the mode (train/eval) is left as the user set it.
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

from jacspec._util.validation import check_choice
from jacspec.data.batches import data_length, iter_batches

logger = logging.getLogger(__name__)

OUTPUTS = ("softmax", "logits", "log_softmax")
METHODS = ("auto", "replicate", "batched_grad", "loop")
DEFAULT_METHOD = "auto"
#: Elementwise activation modules (hidden-layer outputs for ``layers="all"`` in
#: :mod:`jacspec.jacobian.layers`; elementwise maps for ``method="auto"``).
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


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The eager module behind a ``torch.compile``d one (``OptimizedModule._orig_mod``).

    Compiled graphs do not support the batched and repeated backward passes jacspec needs,
    and the eager module computes the same function.
    """
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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    model = unwrap_compiled(model)
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
        # Under no_grad: a ScriptModule's deepcopy clones its parameters through autograd,
        # which would leave non-leaf parameters tied to the user's model.
        with torch.no_grad():
            model = copy.deepcopy(model).to(device=target_device, dtype=target_dtype)
    return model, target_dtype, target_device


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily turn off ``requires_grad`` on every parameter (no parameter gradients)."""
    flags = [(p, p.requires_grad) for p in model.parameters() if p.is_leaf]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


#: Type names of torch layers whose training-mode behaviour breaks per-example Jacobians, as
#: TorchScript records them (``RecursiveScriptModule.original_name``).
_SCRIPT_BATCHNORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")
_SCRIPT_DROPOUTS = (
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
)


def _layer_problem(module: nn.Module) -> str | None:
    """Why ``module`` in its current mode makes per-example Jacobians wrong (None: it does not)."""
    kind = type(module).__name__
    if isinstance(module, torch.jit.ScriptModule):
        # Scripted layers keep their attributes and honour ``training``; traced ones baked
        # the mode in when traced and have no attributes (the probe covers those).
        kind = str(getattr(module, "original_name", kind))
        if kind in _SCRIPT_BATCHNORMS and hasattr(module, "track_running_stats"):
            if module.training:
                return f"{kind} in training mode mixes examples through batch statistics"
        if kind in _SCRIPT_DROPOUTS and module.training and float(getattr(module, "p", 0)) > 0:
            return f"{kind}(p={float(module.p):g}) in training mode draws random masks"
        return None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training:
            return f"{kind} in training mode mixes examples through batch statistics"
        if module.running_mean is None:
            return (f"{kind} without running statistics (track_running_stats=False) mixes "
                    "examples through batch statistics even in eval mode")
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        if module.training and module.track_running_stats:
            return f"{kind} in training mode updates its running statistics on every call"
    if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
        return f"{kind}(p={module.p:g}) in training mode draws random masks"
    if isinstance(module, nn.MultiheadAttention) and module.training and module.dropout > 0:
        return f"{kind}(dropout={module.dropout:g}) in training mode draws random masks"
    if isinstance(module, nn.RNNBase) and module.training and module.dropout > 0 and (
        module.num_layers > 1
    ):
        return f"{kind}(dropout={module.dropout:g}) in training mode draws random masks"
    if isinstance(module, nn.RReLU) and module.training:
        return f"{kind} in training mode draws random slopes"
    return None


def training_mode_layers(model: nn.Module) -> list[str]:
    """Layers of ``model`` whose current mode makes per-example Jacobians wrong.

    Each entry reads ``"name (reason)"``: BatchNorm using batch statistics (training mode,
    or no running statistics), Dropout/RReLU and attention/RNN dropout in training mode,
    InstanceNorm updating running statistics. Read from the modules, so it works at any
    batch size; exported programs and traced TorchScript have no such modules (the probe of
    :func:`check_batch_independence` covers them).
    """
    found = []
    for name, module in model.named_modules():
        problem = _layer_problem(module)
        if problem is not None:
            found.append(f"{repr(name) if name else 'the model itself'} ({problem})")
    return found


def refuse_training_layers(model: nn.Module) -> None:
    """Raise one ValueError naming every layer :func:`training_mode_layers` finds."""
    found = training_mode_layers(model)
    if not found:
        return
    shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
    raise ValueError(
        f"per-example Jacobians would be wrong: {shown}. Call model.eval() before passing the "
        "model to jacspec (jacspec never switches the model's mode itself)"
    )


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run a block that may change ``model``'s buffers or torch's random state, then restore
    both exactly (every buffer's values and identity; the CPU and CUDA generators)."""
    saved = []
    for module in model.modules():
        for name, buf in module.named_buffers(recurse=False):
            if buf is not None:
                saved.append((module, name, buf, buf.detach().clone()))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for module, name, buf, value in saved:
                    if getattr(module, name, None) is not buf:
                        setattr(module, name, buf)
                    buf.copy_(value)


def _exported_input(model: nn.Module) -> tuple[str, tuple[str, ...]] | None:
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


def _guard_error(model: nn.Module, x: torch.Tensor, first: str) -> ValueError:
    """One sentence for an exported program whose shape guards reject ``x``."""
    spec = _exported_input(model)
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


def _forward(model: nn.Module, fn: Callable, x: torch.Tensor) -> torch.Tensor:
    try:
        z = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, AssertionError) and (
            first.startswith("Guard failed") or is_exported_program(model)
        ):
            raise _guard_error(model, x, first) from exc
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


def num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits ``k`` from one forward pass on ``x`` (in the model's dtype/device).

    Refuses training-mode layers first; buffers and random state are restored afterwards.
    """
    model = unwrap_compiled(model)
    refuse_training_layers(model)
    _check_inputs(x)
    mdtype, mdevice = _model_dtype_device(model)
    x = x.to(device=mdevice or x.device, dtype=mdtype or x.dtype)
    with preserved_state(model), torch.no_grad():
        return int(_forward(model, lambda z: z, x).shape[1])


def check_batch_independence(model: nn.Module, fn: Callable, x: torch.Tensor) -> None:
    """Refuse models whose output for one example depends on the other examples of a batch.

    First the layers :func:`training_mode_layers` finds (any batch size); then a probe
    perturbs example 0 and checks that outputs 1..b-1 are unchanged (batch-mean layers and
    programs recorded in training mode fail it). A batch of one is probed as two copies of
    its example. The probe restores the model's buffers and torch's random state exactly.
    """
    refuse_training_layers(model)
    if x.shape[0] == 0:
        return
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    with preserved_state(model), torch.no_grad():
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
        if is_exported_program(model) or isinstance(model, torch.jit.ScriptModule):
            mode = (" (exported and traced programs keep the mode they were recorded in: "
                    "export or trace the model after model.eval())")
        elif model.training:
            mode = " (the model is in training mode: call model.eval() first)"
        else:
            mode = ""
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
    with another dtype or device the model is run as a converted copy (a ``torch.compile``d
    model as its eager module). Layers left in training mode (BatchNorm, Dropout, ...) are
    refused at any batch size; ``check_independence`` also probes the first batch for layers
    that mix examples. ``method`` picks the batched backward
    (``benchmarks/jacobian_throughput.py`` compares them).
    """
    check_choice("output", output, OUTPUTS)
    check_choice("method", method, METHODS)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    fn = output_map(output)
    run_model, dt, dev = prepare_model(model, dtype, device)
    refuse_training_layers(run_model)
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
                    if check_independence:
                        check_batch_independence(run_model, fn, probe)
                    with preserved_state(run_model), torch.no_grad():
                        k = int(_forward(run_model, fn, probe).shape[1])
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
