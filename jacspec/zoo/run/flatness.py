"""Jiang et al. 2020's flatness and norm baselines (study 2, ``docs/results/mnist_study2.md`` §3).

Every function works on a copy of the user's model with BatchNorm folded into the preceding
convolution or linear layer (:func:`fold_batchnorm`, eval-mode running statistics), in eval
mode; the user's model (weights, buffers, mode flags, grads) is never changed.

- :func:`pacbayes_mag_flatness`: ``1 / sigma'^2``, ``sigma'`` the largest ``sigma`` with
  ``|E_u[acc(w + u)] - acc(w)| <= d``, ``u_i ~ N(0, sigma^2 w_i^2 + eps^2)`` (standard
  deviation ``sqrt(sigma^2 w_i^2 + eps^2)``), ``E_u`` a mean over ``M = 10`` draws.
- :func:`sharpness_mag_flatness`: ``1 / alpha'^2``, ``alpha'`` the largest ``alpha`` with
  ``max_{|u_i| <= alpha |w_i| + eps} acc(w) - acc(w + u) <= d``, the max approximated by
  projected sign-gradient ascent on the cross-entropy (:func:`sharpness_ascent`).
- both searches: :func:`bisect_scale` on ``[0, 2]``, depth 15, stop when
  ``|displacement - d| < 0.01``, the result the last scale tried (Jiang et al.'s Algorithm 1
  with the constants of Dziugaite et al.'s ``robust-generalization-measures``).
- :func:`path_norm`: ``sum_j f_{w∘w}(1)_j`` (every parameter squared, all-ones input).
- :func:`norms_over_margin`: ``sum_l log ||W_l||_F^2 - 2 log gamma`` and
  ``sum_l log ||W_l||_2^2 - 2 log gamma`` over :func:`weight_matrices`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from jacspec._util.random import is_int_seed, torch_generator
from jacspec._util.validation import positive_int

__all__ = [
    "ASCENT_BATCH",
    "ASCENT_STEPS",
    "DISPLACEMENT",
    "EPS",
    "MC_DRAWS",
    "SEARCH_DEPTH",
    "SUBSET_SIZE",
    "TOLERANCE",
    "bisect_scale",
    "box_radius",
    "fold_batchnorm",
    "magnitude_noise",
    "norms_over_margin",
    "pacbayes_mag_flatness",
    "pacbayes_mag_sigma",
    "path_norm",
    "sharpness_ascent",
    "sharpness_mag_alpha",
    "sharpness_mag_flatness",
    "weight_matrices",
]

#: The constants of study 2, §3 (Jiang et al. 2020 and the reference code).
EPS = 1e-3
DISPLACEMENT = 0.1
TOLERANCE = 0.01
SEARCH_DEPTH = 15
SEARCH_RANGE = (0.0, 2.0)
MC_DRAWS = 10
ASCENT_STEPS = 10
ASCENT_BATCH = 256
#: acc(w) is measured on ``DataSet.subset(SUBSET_SIZE, seed=0)`` of the training set.
SUBSET_SIZE = 1000

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FOLDS_INTO = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Leaves that may sit between a layer and its BatchNorm without changing the fold (eval mode).
_TRANSPARENT = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


# --------------------------------------------------------------------------- BatchNorm folding


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the Conv/Linear layer
    registered just before it in the same parent module and replaced by ``nn.Identity``:
    ``W' = s W`` (per output channel), ``b' = s (b - mu) + beta`` with
    ``s = gamma / sqrt(running_var + eps)`` (eval-mode running statistics; a layer without
    bias gets one). ``model`` is not changed. With ``example`` (a batch of inputs) the copy's
    outputs are checked against an eval-mode copy of ``model`` (a BatchNorm folded into a
    layer its input does not come from is a ValueError). A model without BatchNorm comes back
    as a plain eval-mode copy."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()
    count = _fold_children(folded, "")
    if count and example is not None:
        reference = copy.deepcopy(model).eval()
        dtype = _dtype(reference)
        x = example.to(device=_device(reference), dtype=dtype)
        want, got = reference(x).double(), folded(x).double()
        scale = 1.0 + float(want.abs().max()) if want.numel() else 1.0
        tol = math.sqrt(torch.finfo(dtype).eps) * scale
        if want.shape != got.shape or not float((want - got).abs().max()) <= tol:
            raise ValueError("model: folding its BatchNorm layers into the preceding "
                             "Conv/Linear layers changes its outputs, so a BatchNorm does not "
                             "directly follow the layer registered before it; jacspec folds "
                             "BatchNorm only in models built as layer -> BatchNorm")
    return folded


def _fold_children(module: nn.Module, prefix: str) -> int:
    prev: nn.Module | None = None
    count = 0
    for name, child in list(module.named_children()):
        path = f"{prefix}{name}"
        if isinstance(child, _BATCHNORMS):
            _fold_into(prev, child, path)
            setattr(module, name, nn.Identity())
            prev, count = None, count + 1
        elif isinstance(child, _FOLDS_INTO):
            prev = child
        elif isinstance(child, _TRANSPARENT):
            continue
        else:
            prev = None
            count += _fold_children(child, path + ".")
    return count


def _fold_into(layer: nn.Module | None, bn: nn.Module, path: str) -> None:
    if layer is None:
        raise ValueError(f"model: BatchNorm layer {path!r} does not follow a Conv/Linear layer "
                         "in the same module, so it cannot be folded (jacspec folds "
                         "layer -> BatchNorm pairs only)")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"model: BatchNorm layer {path!r} keeps no running statistics "
                         "(track_running_stats=False), so it normalises with batch statistics "
                         "even in eval mode and cannot be folded; build it with "
                         "track_running_stats=True")
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if out != bn.num_features:
        raise ValueError(f"model: BatchNorm layer {path!r} has {bn.num_features} features but "
                         f"the layer before it has {out} outputs, so it cannot be folded")
    weight = layer.weight
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    new_w = weight.double() * s.view(-1, *([1] * (weight.ndim - 1)))
    new_b = s * (bias - mean) + beta
    weight.copy_(new_w.to(weight.dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b.to(device=weight.device, dtype=weight.dtype),
                                  requires_grad=weight.requires_grad)
    else:
        layer.bias.copy_(new_b.to(layer.bias.dtype))


# --------------------------------------------------------------------------- helpers


def _dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError("model has no parameters, so it has no weights to perturb or measure")
    return p.dtype


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors (inputs (n, ...) and labels (n,))")
    if y.ndim != 1 or x.ndim < 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x must be (n, ...) and y (n,) with the same n >= 1; got x "
                         f"{tuple(x.shape)} and y {tuple(y.shape)}")


def _check_search(d: float, tol: float, eps: float, depth: int) -> None:
    if not (isinstance(d, (int, float)) and 0 < d < 1):
        raise ValueError(f"d (the accuracy displacement) must be a number in (0, 1); got {d!r}")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    positive_int("depth", depth)


def _check_seed(seed: int) -> None:
    if not is_int_seed(seed):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")


class _Work:
    """A folded eval-mode copy whose parameters are set to ``w + u`` (``w`` kept in ``base``)."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model = fold_batchnorm(model, example=example)
        self.params = list(self.model.parameters())
        self.base = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def set(self, u: Sequence[torch.Tensor] | None) -> None:
        for p, w, du in zip(self.params, self.base, u or [None] * len(self.base), strict=True):
            p.copy_(w if du is None else w + du)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
        correct = 0
        for start in range(0, len(y), batch_size):
            logits = self.model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
        return correct / len(y)


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[_Work, torch.Tensor, torch.Tensor]:
    _check_data(x, y)
    dtype = _dtype(model)
    x = x.to(device=_device(model), dtype=dtype)
    y = y.to(device=_device(model)).long()
    return _Work(model, x[:256]), x, y


# --------------------------------------------------------------------------- the search


def bisect_scale(displacement: Callable[[float], float], *, d: float = DISPLACEMENT,
                 tol: float = TOLERANCE, depth: int = SEARCH_DEPTH,
                 lower: float = SEARCH_RANGE[0], upper: float = SEARCH_RANGE[1]) -> float:
    """Jiang et al.'s Algorithm 1: ``s = (lower + upper) / 2`` for at most ``depth`` steps;
    stop when ``|displacement(s) - d| < tol``, else ``upper = s`` if
    ``displacement(s) > d`` (too much perturbation) and ``lower = s`` otherwise. Returns the
    last ``s`` tried."""
    s = (lower + upper) / 2
    for _ in range(positive_int("depth", depth)):
        s = (lower + upper) / 2
        disp = float(displacement(s))
        if abs(disp - d) < tol:
            break
        if disp > d:
            upper = s
        else:
            lower = s
    return s


# --------------------------------------------------------------------------- PAC-Bayes


def magnitude_noise(params: Sequence[torch.Tensor], sigma: float, eps: float = EPS,
                    generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """One draw of ``u_i = sqrt(sigma^2 w_i^2 + eps^2) z_i``, ``z_i ~ N(0, 1)`` independent
    (so ``u_i ~ N(0, sigma^2 w_i^2 + eps^2)``), one tensor per parameter ``w``."""
    out = []
    for w in params:
        z = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        out.append(z * torch.sqrt(sigma ** 2 * w.detach() ** 2 + eps ** 2))
    return out


def pacbayes_mag_sigma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                       d: float = DISPLACEMENT, eps: float = EPS, tol: float = TOLERANCE,
                       depth: int = SEARCH_DEPTH, draws: int = MC_DRAWS) -> float:
    """``sigma'`` of the magnitude-aware PAC-Bayes flatness: :func:`bisect_scale` of
    ``|mean_{m <= draws} acc(w + u_m) - acc(w)|`` with ``u_m`` from :func:`magnitude_noise`
    (one ``torch.Generator`` seeded with ``seed`` for every draw), accuracy of the folded
    eval-mode copy on ``(x, y)``."""
    _check_search(d, tol, eps, depth)
    _check_seed(seed)
    draws = positive_int("draws", draws)
    work, x, y = _prepare(model, x, y)
    gen = torch_generator(int(seed))
    acc0 = work.accuracy(x, y)

    def displacement(sigma: float) -> float:
        accs = []
        for _ in range(draws):
            work.set(magnitude_noise(work.base, sigma, eps, gen))
            accs.append(work.accuracy(x, y))
        work.set(None)
        return abs(sum(accs) / draws - acc0)

    return bisect_scale(displacement, d=d, tol=tol, depth=depth)


def pacbayes_mag_flatness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                          **options: float) -> float:
    """``1 / sigma'^2`` with ``sigma'`` from :func:`pacbayes_mag_sigma` (same options)."""
    return 1.0 / pacbayes_mag_sigma(model, x, y, seed=seed, **options) ** 2


# --------------------------------------------------------------------------- sharpness


def box_radius(params: Sequence[torch.Tensor], alpha: float, eps: float = EPS
               ) -> list[torch.Tensor]:
    """The half-widths ``alpha |w_i| + eps`` of the magnitude-aware box."""
    return [alpha * w.detach().abs() + eps for w in params]


def _batch_order(n: int, steps: int, batch_size: int, generator: torch.Generator
                 ) -> list[torch.Tensor]:
    """``steps`` consecutive chunks of ``min(batch_size, n)`` indices from a stream of random
    permutations of ``range(n)`` (a new permutation whenever one is used up)."""
    size = min(batch_size, n)
    need = steps * size
    perms = [torch.randperm(n, generator=generator) for _ in range(-(-need // n))]
    stream = torch.cat(perms) if perms else torch.zeros(0, dtype=torch.long)
    return [stream[i * size:(i + 1) * size] for i in range(steps)]


def _ascent(work: _Work, x: torch.Tensor, y: torch.Tensor, radius: Sequence[torch.Tensor],
            batches: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Uniform start in the box, then per batch ``u <- clip(u + r/4 sign(grad_u CE), -r, r)``."""
    u = [(2 * torch.rand(r.shape, generator=generator, dtype=r.dtype).to(r.device) - 1) * r
         for r in radius]
    for idx in batches:
        work.set(u)
        idx = idx.to(x.device)
        with torch.enable_grad():
            loss = F.cross_entropy(work.model(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, work.params, allow_unused=True)
        u = [torch.minimum(torch.maximum(du + r / 4 * (torch.zeros_like(du) if g is None
                                                         else torch.sign(g)), -r), r)
             for du, r, g in zip(u, radius, grads, strict=True)]
    work.set(None)
    return u


def _ascent_setup(work: _Work, n: int, steps: int, batch_size: int, seed: int
                  ) -> tuple[torch.Generator, list[torch.Tensor]]:
    for p in work.params:
        p.requires_grad_(True)
    gen = torch_generator(int(seed))
    return gen, _batch_order(n, steps, batch_size, gen)


def sharpness_ascent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float, *,
                     seed: int, eps: float = EPS, steps: int = ASCENT_STEPS,
                     batch_size: int = ASCENT_BATCH) -> list[torch.Tensor]:
    """The approximate worst-case ``u`` in the box ``|u_i| <= alpha |w_i| + eps`` (one tensor
    per parameter of :func:`fold_batchnorm`'s copy): ``u`` uniform in the box, then ``steps``
    projected sign-gradient ascent steps ``u <- clip_box(u + (alpha |w_i| + eps)/4 sign(grad_u
    CE))``, each on a mini-batch of ``batch_size`` of ``(x, y)`` (the order drawn from
    ``seed``, then the uniform start, from one generator)."""
    _check_seed(seed)
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0; got {alpha!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    work, x, y = _prepare(model, x, y)
    gen, batches = _ascent_setup(work, len(y), positive_int("steps", steps),
                                 positive_int("batch_size", batch_size), seed)
    return _ascent(work, x, y, box_radius(work.base, alpha, eps), batches, gen)


def sharpness_mag_alpha(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                        d: float = DISPLACEMENT, eps: float = EPS, tol: float = TOLERANCE,
                        depth: int = SEARCH_DEPTH, steps: int = ASCENT_STEPS,
                        batch_size: int = ASCENT_BATCH) -> float:
    """``alpha'`` of the magnitude-aware sharpness: :func:`bisect_scale` of
    ``acc(w) - acc(w + u*(alpha))`` with ``u*`` from the ascent of :func:`sharpness_ascent`
    (the same mini-batch order for every ``alpha``, a new uniform start each time from the
    same generator), accuracy of the folded eval-mode copy on the whole ``(x, y)``."""
    _check_search(d, tol, eps, depth)
    _check_seed(seed)
    work, x, y = _prepare(model, x, y)
    gen, batches = _ascent_setup(work, len(y), positive_int("steps", steps),
                                 positive_int("batch_size", batch_size), seed)
    acc0 = work.accuracy(x, y)

    def displacement(alpha: float) -> float:
        u = _ascent(work, x, y, box_radius(work.base, alpha, eps), batches, gen)
        work.set(u)
        acc = work.accuracy(x, y)
        work.set(None)
        return acc0 - acc

    return bisect_scale(displacement, d=d, tol=tol, depth=depth)


def sharpness_mag_flatness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                           **options: float) -> float:
    """``1 / alpha'^2`` with ``alpha'`` from :func:`sharpness_mag_alpha` (same options)."""
    return 1.0 / sharpness_mag_alpha(model, x, y, seed=seed, **options) ** 2


# --------------------------------------------------------------------------- norms


@torch.no_grad()
def path_norm(model: nn.Module, input_shape: Sequence[int]) -> float:
    """``sum_j f_{w∘w}(1)_j``: the folded copy with every parameter squared, in float64 and
    eval mode, on one all-ones input of shape ``input_shape`` (Neyshabur et al. 2015). For
    a ReLU MLP this is the sum over input->output paths (bias paths from a constant unit) of
    the products of the squared weights."""
    shape = tuple(input_shape)
    if not shape or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be a sequence of positive ints (one example's "
                         f"shape); got {input_shape!r}")
    ones = torch.ones(1, *shape, dtype=_dtype(model), device=_device(model))
    squared = fold_batchnorm(model, example=ones).double()
    for p in squared.parameters():
        p.copy_(p * p)
    return float(squared(ones.double()).sum())


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The float64 weight matrices ``W_l`` of ``model`` as it is (fold first for BatchNorm):
    every parameter of rank >= 2, a conv kernel reshaped to ``(out, in * kh * kw)``; biases
    (rank 1) excluded."""
    return [p.detach().double().reshape(p.shape[0], -1) for p in model.parameters()
            if p.ndim >= 2]


def norms_over_margin(model: nn.Module, gamma: float, example: torch.Tensor | None = None
                      ) -> dict[str, float]:
    """``log_prod_fro_over_margin = sum_l log ||W_l||_F^2 - 2 log gamma`` and
    ``log_prod_spec_over_margin = sum_l log ||W_l||_2^2 - 2 log gamma`` over the
    :func:`weight_matrices` of :func:`fold_batchnorm`'s copy (``example`` checks the fold);
    NaN when ``gamma <= 0`` or NaN."""
    mats = weight_matrices(fold_batchnorm(model, example=example))
    if not mats:
        raise ValueError("model has no weight matrices (parameters of rank >= 2)")
    fro = sum(_log(float(w.norm()) ** 2) for w in mats)
    spec = sum(_log(float(torch.linalg.matrix_norm(w, ord=2)) ** 2) for w in mats)
    g = float(gamma)
    if not g > 0:
        return {"log_prod_fro_over_margin": math.nan, "log_prod_spec_over_margin": math.nan}
    return {"log_prod_fro_over_margin": fro - 2 * math.log(g),
            "log_prod_spec_over_margin": spec - 2 * math.log(g)}


def _log(v: float) -> float:
    return math.log(v) if v > 0 else -math.inf
