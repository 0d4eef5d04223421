"""Refusing models whose per-example Jacobians would be wrong, and leaving no trace.

Layers left in training mode are found from the modules themselves
(:func:`training_mode_layers`: BatchNorm, Dropout, ...), and a first-batch probe
(:func:`check_batch_independence`) catches the rest (batch-mean layers, exported or traced
programs recorded in training mode). Every probe runs under
:func:`jacspec.jacobian.model_prep.untouched` (buffers, grads and the random states put
back); jacspec never switches the model's mode itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from jacspec.jacobian.model_prep import (
    check_inputs,
    is_exported_program,
    model_dtype_device,
    run_forward,
    untouched,
    unwrap_compiled,
)

#: Type names of torch layers whose training-mode behaviour breaks per-example Jacobians, as
#: TorchScript records them (``RecursiveScriptModule.original_name``).
_SCRIPT_BATCHNORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")
_SCRIPT_DROPOUTS = (
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
)


def layer_problem(module: nn.Module) -> str | None:
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
        problem = layer_problem(module)
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


def num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits ``k`` from one forward pass on ``x`` (in the model's dtype/device).

    Refuses training-mode layers first; buffers and random state are restored afterwards.
    """
    model = unwrap_compiled(model)
    refuse_training_layers(model)
    check_inputs(x)
    mdtype, mdevice = model_dtype_device(model)
    x = x.to(device=mdevice or x.device, dtype=mdtype or x.dtype)
    with untouched(model, no_grad=True):
        return int(run_forward(model, lambda z: z, x).shape[1])



def _probe_masks(b: int) -> list[torch.Tensor]:
    """Sets of batch positions to perturb, in complementary pairs: odd/even positions, then a
    seeded random half and its complement. Every pair of positions of different parity lands
    on opposite sides of the first split (so any shift by an odd offset is caught), and any
    other pair with probability 1/2 in the second."""
    idx = torch.arange(b)
    splits = [idx % 2 == 1]
    if b > 2:
        gen = torch.Generator(device="cpu").manual_seed(0)
        half = torch.randperm(b, generator=gen)[: b // 2]
        rand = torch.zeros(b, dtype=torch.bool)
        rand[half] = True
        splits.append(rand)
    return [m for split in splits for m in (split, ~split)]


def check_batch_independence(model: nn.Module, fn: Callable, x: torch.Tensor) -> None:
    """Refuse models whose output for one example depends on the other examples of a batch.

    First the layers :func:`training_mode_layers` finds (any batch size); then a probe on the
    batch ``x`` as the engine will run it: for each set ``S`` of :func:`_probe_masks` (odd and
    even positions, a random half and its complement) the examples in ``S`` are perturbed
    and the outputs outside ``S`` must stay unchanged, so mixing through any batch position
    (batch statistics, a shifted or reversed copy of the batch, a reference to one example,
    a statistic over some positions only) is caught: ``1 + 4`` forwards of one batch. A
    batch of one is probed as two copies of its example. The probe restores the model's
    buffers and torch's random state exactly.
    """
    refuse_training_layers(model)
    if x.shape[0] == 0:
        return
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    masks = _probe_masks(int(x.shape[0]))
    scale = float(x.abs().max()) + 1.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    moved, where = 0.0, (0, 0)
    with untouched(model, no_grad=True):
        a = run_forward(model, fn, x)
        for mask in masks:
            m = mask.to(x.device)
            x2 = x.clone()
            x2[m] = x2[m] + 3.0 * scale * noise[m]
            diff = (a[~m] - run_forward(model, fn, x2)[~m]).abs().amax(dim=1)
            if diff.numel() and float(diff.max()) > moved:
                kept = torch.nonzero(~m).flatten()
                moved = float(diff.max())
                where = (int(kept[int(diff.argmax())]), int(m.sum()))
    tol = (1e-4 if x.dtype == torch.float32 else 1e-9) * (1.0 + float(a.abs().max()))
    if moved > tol:
        if is_exported_program(model) or isinstance(model, torch.jit.ScriptModule):
            mode = (" (exported and traced programs keep the mode they were recorded in: "
                    "export or trace the model after model.eval())")
        elif model.training:
            mode = " (the model is in training mode: call model.eval() first)"
        else:
            mode = ""
        raise ValueError(
            f"the model mixes examples within a batch: changing {where[1]} other examples of "
            f"a batch of {x.shape[0]} moved the output of example {where[0]} by {moved:.3g}"
            f"{mode}; per-example Jacobians would be wrong. Use eval-mode BatchNorm and "
            "remove layers that combine examples."
        )
