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
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jacspec._util.progress import progress_bar
from jacspec._util.validation import check_choice
from jacspec.data.batches import data_length, iter_batches
from jacspec.jacobian.checks import (
    check_batch_independence,
    layer_problem,
    num_outputs,
    refuse_training_layers,
    training_mode_layers,
)
from jacspec.jacobian.input_module import at_input_module, batch_window
from jacspec.jacobian.model_prep import (
    check_inputs,
    check_model,
    exported_input,
    guard_error,
    is_exported_program,
    model_dtype_device,
    output_map,
    prepare_model,
    refuse_inference_mode,
    run_forward,
    untouched,
    unwrap_compiled,
)
from jacspec.jacobian.options import (
    DEFAULT_METHOD,
    METHODS,
    OUTPUTS,
    JacobianOptions,
    resolve_options,
)
from jacspec.jacobian.vjp import replicate, vjp_rows, with_fallback
from jacspec.models.activations import ACTIVATION_MODULES, is_activation

__all__ = [
    "ACTIVATION_MODULES",
    "BATCH_BYTES",
    "DEFAULT_METHOD",
    "MAX_BATCH",
    "METHODS",
    "OUTPUTS",
    "JacobianBatch",
    "JacobianOptions",
    "auto_batch_size",
    "batch_size_for",
    "check_batch_independence",
    "check_inputs",
    "check_model",
    "data_jacobian",
    "exported_input",
    "guard_error",
    "input_rows",
    "is_activation",
    "is_exported_program",
    "iter_jacobians",
    "jacobian_loop",
    "jacobians",
    "layer_problem",
    "model_dtype_device",
    "num_outputs",
    "output_map",
    "prepare_model",
    "refuse_inference_mode",
    "refuse_training_layers",
    "resolve_method",
    "run_forward",
    "training_mode_layers",
    "untouched",
    "unwrap_compiled",
    "with_fallback",
]

logger = logging.getLogger(__name__)

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

#: Bytes the Jacobian of one batch may take (the batch size is chosen from it).
BATCH_BYTES = 64 * 2**20
#: Most examples in one batch, whatever the budget allows.
MAX_BATCH = 4096
#: Bytes the forward pass of one batch may save for its backward passes (activations,
#: masks). Past a few hundred MiB the backward slows down per example on a CPU: a CIFAR
#: ResNet-20 (2.3 MiB saved per example, k = 10, 2 threads) ran 1.16-1.17x faster at this
#: cap's batch of 79 than at the Jacobian-only rule's 182 (``benchmarks/esd_resnet.py``,
#: row ``jacspec_old_batch_rule``).
ACTIVATION_BYTES = 192 * 2**20


@dataclass(frozen=True)
class JacobianBatch:
    """Jacobians of one batch: ``jac`` is ``(b, k, *input_shape)``, ``out`` is ``(b, k)``.

    ``x`` and ``out`` are None for batches read from an array or a file.
    """

    jac: torch.Tensor
    x: torch.Tensor | None
    y: torch.Tensor | None
    out: torch.Tensor | None
    start: int

    @property
    def rows(self) -> torch.Tensor:
        """The batch's rows of the data Jacobian, ``(b, k*d)`` (a view)."""
        return self.jac.reshape(self.jac.shape[0], -1)


JacFn = Callable[[nn.Module, Callable, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def input_rows(
    model: nn.Module, fn: Callable, x: torch.Tensor, cotangents: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, out)`` for one batch: ``rows[i, j] = c_j^T d g(f(x_i)) / d x_i``
    (``(b, C, *shape)``, :func:`~jacspec.jacobian.vjp.vjp_rows` of the ``C`` cotangent rows)
    and ``out = g(f(x))`` ``(b, k)``, from one forward pass (of ``C`` copies of the batch for
    ``method="replicate"``)."""
    copies = int(cotangents.shape[0])
    xin = replicate(x, copies) if method == "replicate" else x
    xg = xin.detach().requires_grad_(True)
    out = run_forward(model, fn, xg)
    rows = vjp_rows(out, xg, cotangents, method)
    first = out.view(copies, x.shape[0], -1)[0] if method == "replicate" else out
    return rows, first.detach()


def _identity_rows(method: str) -> JacFn:
    """The engine's step for ``method``: :func:`input_rows` of the ``k x k`` identity."""

    def step(model: nn.Module, fn: Callable, x: torch.Tensor, k: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        return input_rows(model, fn, x, eye, method)

    step.__name__ = step.__qualname__ = f"_jac_{method}"
    return step


_jac_replicate = _identity_rows("replicate")
_jac_batched_grad = _identity_rows("batched_grad")
_jac_loop = _identity_rows("loop")


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


#: The float32 precision flags of torch set to ``"ieee"`` while Jacobians are computed on
#: an accelerator: cuDNN convolutions default to TF32 (10-bit mantissa, an error of ~1e-3
#: relative in every Jacobian entry, far above the rank rule's float32 assumption).
FP32_PRECISION_FLAGS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn")


@contextlib.contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Full float32 precision (no TF32) for the computations on ``device`` inside the
    block, the flags of :data:`FP32_PRECISION_FLAGS` restored after; on the CPU (no TF32)
    nothing changes."""
    if torch.device(device).type == "cpu":
        yield
        return
    saved = []
    for name in FP32_PRECISION_FLAGS:
        owner = torch.backends
        for part in name.split("."):
            owner = getattr(owner, part, None)
        if owner is not None and hasattr(owner, "fp32_precision"):
            saved.append((owner, owner.fp32_precision))
            owner.fp32_precision = "ieee"
    try:
        yield
    finally:
        for owner, value in saved:
            owner.fp32_precision = value


def batch_size_for(entries: int, itemsize: int, budget: int | None = None,
                   saved: int = 0) -> int:
    """Examples per batch so ``b`` Jacobians of ``entries`` numbers each (x3 for work space)
    fit ``budget`` bytes (default :data:`BATCH_BYTES`) and the ``saved`` bytes one example's
    forward pass keeps for the backward fit :data:`ACTIVATION_BYTES`, at most
    :data:`MAX_BATCH` (the one rule of :func:`jacobian_loop`)."""
    budget = BATCH_BYTES if budget is None else budget
    b = min(MAX_BATCH, budget // max(1, 3 * entries * itemsize))
    if saved > 0:
        b = min(b, ACTIVATION_BYTES // saved)
    return int(max(1, b))


def saved_bytes_per_example(model: nn.Module, fn: Callable, x: torch.Tensor) -> int:
    """Bytes the forward pass of ``fn(model(x))`` saves for backward, per example of ``x``
    (counted with ``torch.autograd.graph.saved_tensors_hooks`` on one probe forward)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    xg = x.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run_forward(model, fn, xg)
    return int(total[0] // max(1, x.shape[0]))


def auto_batch_size(k: int, d: int, itemsize: int, budget: int | None = None) -> int:
    """Examples per batch so the Jacobian ``b*k*d*itemsize`` (x3 for work space) fits ``budget``."""
    return batch_size_for(k * d, itemsize, budget)


#: One step of the loop: a batch ``x`` and the number of outputs ``k`` -> (``jac``, ``out``).
Step = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def jacobian_loop(
    run_model: nn.Module,
    data: Any,
    step: Step,
    *,
    options: JacobianOptions,
    dtype: torch.dtype,
    device: torch.device,
    entries: Callable[[int, int], int],
    desc: str = "jacobians",
) -> Iterator[JacobianBatch]:
    """The one batch loop of jacspec: every Jacobian target runs through it.

    ``run_model`` is the prepared model (:func:`prepare_model`), ``step(x, k)`` computes one
    batch's Jacobians, ``entries(k, d)`` the numbers in one example's Jacobian (``k`` outputs
    of ``g``, ``d`` input entries), from which the batch size follows
    (:func:`batch_size_for`) unless ``options.batch_size`` is set. Training-mode layers are
    refused first; the first batch, at the size it is run, is probed for examples
    mixing through any position (``options.check_independence``); inputs are checked
    (float, finite) and moved to ``dtype``/``device``; ``options.progress`` shows a bar
    named ``desc``.
    """
    fn = output_map(options.output)
    refuse_inference_mode()
    refuse_training_layers(run_model)
    bar = progress_bar(options.progress, total=data_length(data), desc=desc, unit="ex")
    start = 0
    k: int | None = None
    chosen: int | None = options.batch_size
    try:
        with untouched(run_model, freeze=True, state=False), torch.enable_grad(), \
                full_precision(device):
            for x_raw, y in iter_batches(data, None):
                if x_raw.shape[0] == 0:
                    continue
                check_inputs(x_raw)
                x_all = x_raw.to(device=device, dtype=dtype)
                if x_all.is_inference():  # made under inference_mode: autograd needs a copy
                    x_all = x_all.clone()
                if k is None:
                    probe = x_all[: min(8, x_all.shape[0])]
                    with untouched(run_model, no_grad=True):
                        k = int(run_forward(run_model, fn, probe).shape[1])
                    if chosen is None:
                        per = entries(k, int(x_all[0].numel()))
                        with untouched(run_model):
                            saved = saved_bytes_per_example(run_model, fn, probe)
                        chosen = batch_size_for(per, x_all.element_size(), saved=saved)
                    if options.check_independence:  # the first batch as it will be run
                        check_batch_independence(run_model, fn, x_all[:chosen])
                    logger.info("%s: k=%d, batch size %d", desc, k, chosen)
                assert chosen is not None
                for s in range(0, x_all.shape[0], chosen):
                    x = x_all[s : s + chosen]
                    with batch_window(run_model, s, s + x.shape[0]):
                        jac, out = step(x, k)
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


def iter_jacobians(
    model: nn.Module,
    data: Any,
    *,
    options: JacobianOptions | None = None,
    **fields: Any,
) -> Iterator[JacobianBatch]:
    """Yield the per-example Jacobians of ``output(model(x))`` batch by batch.

    Each :class:`JacobianBatch` holds ``jac`` of shape ``(b, k, *input_shape)`` with
    ``jac[i, c] = d output_c(x_i) / d x_i``. ``options`` (:class:`JacobianOptions`) or its
    fields as keywords (a keyword given wins over ``options``): ``output`` (default
    softmax), ``dtype`` (default the model's; another dtype or device runs a converted
    copy, a ``torch.compile``d model its eager module), ``batch_size``, ``method`` (the
    batched backward; ``benchmarks/jacobian_throughput.py`` compares them), ``progress`` and
    ``check_independence`` (probe the first batch for layers that mix examples; layers left
    in training mode, BatchNorm, Dropout, ..., are refused at any batch size). These are the
    Jacobians themselves: ``route="factored"`` and ``sketch`` (other rows with the same or an
    estimated Gram) are refused, naming :meth:`JacobianSource.from_model` which gives them.
    """
    opts = exact_jacobian_options(resolve_options(options, **fields), "iter_jacobians")
    return jacobian_batches(model, data, opts)


def jacobian_batches(model: nn.Module, data: Any, opts: JacobianOptions
                     ) -> Iterator[JacobianBatch]:
    """:func:`iter_jacobians` of resolved ``opts`` (its ``route`` and ``sketch`` are for the
    caller: :meth:`jacspec.jacobian.source.JacobianSource.from_model` passes here the
    options of rows that are ``J`` itself). With ``opts.input_module`` the rows are
    ``d g / d h`` at that module's output (:mod:`jacspec.jacobian.input_module`)."""
    model, data, opts = at_input_module(model, data, opts)
    run_model, dt, dev = prepare_model(model, opts.dtype, opts.device)
    refuse_training_layers(run_model)
    chosen = resolve_method(run_model, opts.method)
    jac_fn = _METHODS[chosen]
    if chosen == "batched_grad":
        jac_fn = with_fallback(jac_fn, _jac_loop, "jacobians")
    fn = output_map(opts.output)
    logger.info("jacobians: method %s", chosen)
    return jacobian_loop(
        run_model, data, lambda x, k: jac_fn(run_model, fn, x, k), options=opts, dtype=dt,
        device=dev, entries=lambda k, d: k * d,
    )


def exact_jacobian_options(opts: JacobianOptions, what: str) -> JacobianOptions:
    """``opts`` for functions that return the Jacobians themselves: ``route`` ``"factored"``
    and a ``sketch`` change the rows, not how ``J`` is computed, so they are refused (ValueError
    naming where they apply)."""
    if opts.route == "factored" or opts.sketch not in (None, 0):
        given = "route='factored'" if opts.route == "factored" else f"sketch={opts.sketch!r}"
        raise ValueError(
            f"{given} changes the rows of the data Jacobian, not J itself, which {what} "
            "returns: use jacspec.JacobianSource.from_model(model, data, ...), jacspec.esd or "
            "jacspec.analyze for those rows"
        )
    return opts.replace(sketch=None)


def _stacked(
    model: nn.Module, data: Any, opts: JacobianOptions, max_memory: int | None, what: str
) -> torch.Tensor:
    """Every batch's ``jac`` written into one preallocated ``(n, k, *input_shape)`` tensor.

    The size ``n k d`` x itemsize is checked against the memory budget
    (:func:`jacspec._util.memory.memory_limit`) before any Jacobian, from ``n`` (the data's
    length), ``k`` (one forward of two examples) and ``d``; over it, one ValueError names the
    size and the streaming alternatives. Data of unknown length is checked as it arrives
    and each batch is freed once copied, so no step holds the result twice.
    """
    from jacspec._util.memory import format_bytes, memory_limit
    from jacspec.data.batches import OneShot, first_batch

    limit = memory_limit(max_memory)
    model = check_model(model)
    model, data, opts = at_input_module(model, data, opts)
    refuse_inference_mode()
    if isinstance(data, Iterator):  # a generator: its first batch kept for the pass
        data = OneShot(data, f"{what}()")
        x0, _ = first_batch([data.peek()])
    else:
        x0, _ = first_batch(data)
    check_inputs(x0)
    run_dtype = opts.dtype or model_dtype_device(unwrap_compiled(model))[0] or torch.float32
    itemsize = torch.empty((), dtype=run_dtype).element_size()
    k = num_outputs(model, x0[:2])
    shape = tuple(int(s) for s in x0.shape[1:])
    per = k * int(x0[0].numel()) * itemsize
    n = data_length(data)

    def refuse(count: int) -> ValueError:
        return ValueError(
            f"{what}() would hold the Jacobians of n={count} examples (k={k} x {shape}), "
            f"about {format_bytes(count * per)}, but only {format_bytes(limit)} may be used "
            "(max_memory); stream them batch by batch with jacspec.iter_jacobians(...), or "
            "use jacspec.gram/esd/estimate_esd, which never hold them all"
        )

    if n is not None and n * per > limit:
        raise refuse(n)
    out: torch.Tensor | None = None
    held: list[torch.Tensor] = []
    count = 0
    for b in jacobian_batches(model, data, opts):
        m = int(b.jac.shape[0])
        if n is not None and count + m <= n:
            if out is None:
                out = torch.empty((n, *b.jac.shape[1:]), dtype=b.jac.dtype, device=b.jac.device)
            out[count : count + m] = b.jac
        else:  # length unknown (or exceeded): checked as the batches arrive
            if (count + m) * per > limit:
                raise refuse(count + m)
            held.append(b.jac)
        count += m
    if not held:
        assert out is not None
        return out if count == out.shape[0] else out[:count]
    first = 0 if out is None else out.shape[0]
    full = torch.empty((count, *held[0].shape[1:]), dtype=held[0].dtype, device=held[0].device)
    if out is not None:
        full[:first] = out
        del out
    pos = first
    while held:  # each batch freed once copied: never the result twice
        jac = held.pop(0)
        full[pos : pos + jac.shape[0]] = jac
        pos += jac.shape[0]
        del jac
    return full


def jacobians(
    model: nn.Module,
    data: Any,
    *,
    options: JacobianOptions | None = None,
    max_memory: int | None = None,
    **fields: Any,
) -> torch.Tensor:
    """All per-example Jacobians stacked: ``(n, k, *input_shape)``; ``options`` or its fields
    as keywords (``output=``, ``dtype=``, ...), as in :func:`iter_jacobians`.

    Refuses (ValueError, before any Jacobian) a result over ``max_memory`` bytes (default
    80% of the available memory), naming ``iter_jacobians`` and ``gram``/``esd``; the result
    is filled batch by batch into one preallocated tensor.
    """
    opts = exact_jacobian_options(resolve_options(options, **fields), "jacobians")
    return _stacked(model, data, opts, max_memory, "jacobians")


def data_jacobian(
    model: nn.Module,
    data: Any,
    *,
    options: JacobianOptions | None = None,
    max_memory: int | None = None,
    **fields: Any,
) -> torch.Tensor:
    """The data Jacobian ``𝒥``, ``(n, k*d)``: row i is ``J(x_i)`` flattened, class-major
    (memory checked and filled as in :func:`jacobians`)."""
    opts = exact_jacobian_options(resolve_options(options, **fields), "data_jacobian")
    J = _stacked(model, data, opts, max_memory, "data_jacobian")
    return J.reshape(J.shape[0], -1)
