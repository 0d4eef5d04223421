"""The one activation registry: every elementwise activation jacspec knows, by one name.

Each :class:`ActivationSpec` holds the torch module class, the functional form
``phi(h)``, the closed-form derivative ``phi'(h)`` where random-network theory uses it,
the points where ``phi'`` jumps (``breakpoints``: the pieces of a piecewise-linear
activation, the quadrature splits of the theory), and the torch functions and aten
operators a model may call for it (what :mod:`jacspec.sensitivity.regions` intercepts).

One spelling per activation (``hard_tanh``, ``hard_sigmoid``); torch's spellings
(``hardtanh``, ``hardsigmoid``) and dashes/spaces/capitals are accepted on input
(:func:`canonical_name`). Used by the model builders (``mlp(activation=...)``), the
Jacobian engine (:data:`ACTIVATION_MODULES`), the region codes and the theory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TorchFn = Callable[[torch.Tensor], torch.Tensor]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_ERF_SCALE = math.sqrt(math.pi) / 2


class Erf(nn.Module):
    """``phi(h) = erf(scale * h)``; the default ``scale = sqrt(pi)/2`` gives slope 1 at 0
    (the erf network of Pennington et al. 2018)."""

    def __init__(self, scale: float = _ERF_SCALE) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(self.scale * x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


@dataclass(frozen=True)
class ActivationSpec:
    """One activation: ``name`` (canonical), ``module`` class, ``function`` ``phi``,
    ``derivative`` ``phi'`` (None where the theory has none), ``breakpoints`` (where
    ``phi'`` jumps), ``piecewise_linear``, ``smooth`` (analytic), ``aliases`` accepted on
    input, ``calls`` (torch functions computing it) and ``aten`` (operator names that
    ``torch.export`` programs call), ``call_name`` (the torch function's own name)."""

    name: str
    module: type[nn.Module] | None
    function: TorchFn = field(repr=False)
    derivative: TorchFn | None = field(default=None, repr=False)
    breakpoints: tuple[float, ...] = ()
    piecewise_linear: bool = False
    smooth: bool = True
    aliases: tuple[str, ...] = ()
    calls: tuple[Callable, ...] = field(default=(), repr=False)
    aten: tuple[str, ...] = ()
    call_name: str = ""

    def make_module(self) -> nn.Module:
        """A fresh module computing this activation (``linear``: ``nn.Identity``)."""
        if self.module is None:
            raise ValueError(f"activation {self.name!r} has no torch module")
        return self.module()


def _step(h: Tensor, lo: float, hi: float, value: float = 1.0) -> Tensor:
    """``value`` on (lo, hi), 0 elsewhere, in the dtype of h."""
    return ((h > lo) & (h < hi)).to(h.dtype) * value


def _gelu_d(h: Tensor) -> Tensor:
    cdf = 0.5 * torch.erfc(-h / math.sqrt(2.0))
    return cdf + h * torch.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)


def _silu_d(h: Tensor) -> Tensor:
    s = torch.sigmoid(h)
    return s * (1.0 + h * (1.0 - s))


_INF = math.inf
_SPECS: tuple[ActivationSpec, ...] = (
    ActivationSpec("linear", nn.Identity, lambda h: h, lambda h: torch.ones_like(h),
                   piecewise_linear=True, aliases=("identity",)),
    ActivationSpec("relu", nn.ReLU, torch.relu, lambda h: _step(h, 0.0, _INF), (0.0,), True,
                   False, calls=(F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu,
                                 Tensor.relu_), aten=("relu", "relu_"), call_name="relu"),
    ActivationSpec("leaky_relu", nn.LeakyReLU, F.leaky_relu, None, (0.0,), True, False,
                   aliases=("leakyrelu",), calls=(F.leaky_relu, F.leaky_relu_),
                   aten=("leaky_relu", "leaky_relu_"), call_name="leaky_relu"),
    ActivationSpec("relu6", nn.ReLU6, lambda h: torch.clamp(h, 0.0, 6.0),
                   lambda h: _step(h, 0.0, 6.0), (0.0, 6.0), True, False,
                   calls=(F.relu6,), aten=("relu6",), call_name="relu6"),
    ActivationSpec("hard_tanh", nn.Hardtanh, lambda h: torch.clamp(h, -1.0, 1.0),
                   lambda h: _step(h, -1.0, 1.0), (-1.0, 1.0), True, False,
                   aliases=("hardtanh",), calls=(F.hardtanh, F.hardtanh_),
                   aten=("hardtanh", "hardtanh_"), call_name="hardtanh"),
    # torch's hardsigmoid: relu6(h + 3) / 6.
    ActivationSpec("hard_sigmoid", nn.Hardsigmoid, lambda h: torch.clamp(h + 3.0, 0.0, 6.0) / 6,
                   lambda h: _step(h, -3.0, 3.0, 1.0 / 6.0), (-3.0, 3.0), True, False,
                   aliases=("hardsigmoid",), calls=(F.hardsigmoid,), aten=("hardsigmoid",),
                   call_name="hardsigmoid"),
    ActivationSpec("tanh", nn.Tanh, torch.tanh, lambda h: 1.0 - torch.tanh(h) ** 2,
                   calls=(torch.tanh, Tensor.tanh, F.tanh), aten=("tanh",), call_name="tanh"),
    ActivationSpec("sigmoid", nn.Sigmoid, torch.sigmoid,
                   lambda h: torch.sigmoid(h) * (1.0 - torch.sigmoid(h)),
                   calls=(torch.sigmoid, Tensor.sigmoid, F.sigmoid), aten=("sigmoid",),
                   call_name="sigmoid"),
    # erf(sqrt(pi)/2 h): phi'(0) = 1, mu_k = (1 + pi k q)^(-1/2).
    ActivationSpec("erf", Erf, lambda h: torch.erf(_ERF_SCALE * h),
                   lambda h: torch.exp(-math.pi * h * h / 4.0),
                   calls=(torch.erf, Tensor.erf, torch.special.erf), aten=("erf",),
                   call_name="erf"),
    ActivationSpec("selu", nn.SELU,
                   lambda h: _SELU_SCALE * torch.where(h > 0, h, _SELU_ALPHA * torch.expm1(h)),
                   lambda h: _SELU_SCALE * torch.where(h > 0, 1.0 + 0 * h,
                                                       _SELU_ALPHA * torch.exp(h)),
                   (0.0,), False, False, calls=(F.selu,), aten=("selu",), call_name="selu"),
    ActivationSpec("gelu", nn.GELU, lambda h: h * 0.5 * torch.erfc(-h / math.sqrt(2.0)), _gelu_d,
                   calls=(F.gelu,), aten=("gelu",), call_name="gelu"),
    ActivationSpec("silu", nn.SiLU, lambda h: h * torch.sigmoid(h), _silu_d,
                   calls=(F.silu,), aten=("silu",), call_name="silu"),
    ActivationSpec("elu", nn.ELU, F.elu, None, (0.0,), False, False, calls=(F.elu,),
                   aten=("elu",), call_name="elu"),
    ActivationSpec("celu", nn.CELU, F.celu, None, (0.0,), False, False, calls=(F.celu,),
                   aten=("celu",), call_name="celu"),
    ActivationSpec("softplus", nn.Softplus, F.softplus, calls=(F.softplus,),
                   aten=("softplus",), call_name="softplus"),
    ActivationSpec("mish", nn.Mish, F.mish, calls=(F.mish,), aten=("mish",), call_name="mish"),
    ActivationSpec("hard_swish", nn.Hardswish, F.hardswish, None, (-3.0, 3.0), False, False,
                   aliases=("hardswish",), calls=(F.hardswish,), aten=("hardswish",),
                   call_name="hardswish"),
)

#: Canonical name -> spec, in a fixed order.
REGISTRY: dict[str, ActivationSpec] = {s.name: s for s in _SPECS}
#: Every accepted spelling (canonical names and aliases) -> canonical name.
ALIASES: dict[str, str] = {
    **{a: s.name for s in _SPECS for a in s.aliases},
    **{s.name: s.name for s in _SPECS},
}
#: Elementwise activation modules (the engine's ``method="auto"`` and ``layers="all"``).
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = tuple(
    s.module for s in _SPECS if s.module is not None and s.module is not nn.Identity
)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def canonical_name(
    name: str, choices: tuple[str, ...] | None = None, *, argument: str = "activation"
) -> str:
    """The canonical name of ``name`` (an alias such as ``"hardtanh"`` or a spelling with
    dashes, spaces or capitals); ``choices`` (canonical names) limits what is accepted.
    Anything else: one ValueError naming ``argument`` and the accepted names."""
    allowed = tuple(REGISTRY) if choices is None else tuple(choices)
    key = ALIASES.get(_normalise(name)) if isinstance(name, str) else None
    if key is None or key not in allowed:
        raise ValueError(
            f"{argument}={name!r} is not supported; expected one of {', '.join(allowed)}"
        )
    return key


def get_spec(name: str) -> ActivationSpec:
    """The registry entry for ``name`` (any accepted spelling)."""
    return REGISTRY[canonical_name(name)]


def is_activation(module: nn.Module) -> bool:
    """An elementwise activation module of the registry (jacspec's ``Erf`` included, also
    when it is another copy of the class, e.g. from a reloaded module)."""
    return isinstance(module, ACTIVATION_MODULES) or type(module).__name__ == "Erf"
