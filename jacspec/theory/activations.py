"""Activations for random-network theory: phi, phi' and the kinks of phi'.

Every activation is a pair of float64 torch functions ``phi(h)`` and ``dphi(h)``
plus ``breakpoints``: the points where ``phi'`` jumps (quadrature splits there).
Named ones carry closed-form derivatives; a user callable gets ``phi'`` from
autograd unless it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

TorchFn = Callable[[torch.Tensor], torch.Tensor]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True)
class Activation:
    """``phi`` and ``phi'`` (float64 torch, elementwise) and the kinks of ``phi'``.

    ``breakpoints``: points h where ``phi'`` is discontinuous (e.g. 0 for ReLU).
    ``smooth``: ``phi`` is analytic, so plain Gauss-Hermite quadrature converges fast.
    """

    name: str
    phi: TorchFn = field(repr=False)
    dphi: TorchFn = field(repr=False)
    breakpoints: tuple[float, ...] = ()
    smooth: bool = True

    def phi_np(self, h: np.ndarray) -> np.ndarray:
        """``phi(h)`` on a float64 numpy array."""
        return self.phi(torch.as_tensor(np.asarray(h, dtype=np.float64))).numpy()

    def dphi_np(self, h: np.ndarray) -> np.ndarray:
        """``phi'(h)`` on a float64 numpy array."""
        return self.dphi(torch.as_tensor(np.asarray(h, dtype=np.float64))).numpy()


def _autograd_derivative(fn: TorchFn) -> TorchFn:
    """``phi'`` of an elementwise ``phi`` by autograd (sum trick)."""

    def dphi(h: torch.Tensor) -> torch.Tensor:
        x = h.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(fn(x).sum(), x)
        return g.detach()

    return dphi


def _step(h: torch.Tensor, lo: float, hi: float, value: float = 1.0) -> torch.Tensor:
    """``value`` on (lo, hi), 0 elsewhere, in the dtype of h."""
    return ((h > lo) & (h < hi)).to(h.dtype) * value


def _sqrt_pi_2() -> float:
    return math.sqrt(math.pi) / 2.0


def _named(name: str, shift: float) -> Activation:
    inf = math.inf
    if name == "linear":
        return Activation(name, lambda h: h, lambda h: torch.ones_like(h))
    if name == "relu":
        return Activation(name, torch.relu, lambda h: _step(h, 0.0, inf), (0.0,), False)
    if name == "shifted_relu":
        # phi(h) = max(h, -shift): a ReLU whose kink sits at -shift.
        return Activation(
            name,
            lambda h: torch.clamp(h, min=-shift),
            lambda h: _step(h, -shift, inf),
            (-shift,),
            False,
        )
    if name == "tanh":
        return Activation(name, torch.tanh, lambda h: 1.0 - torch.tanh(h) ** 2)
    if name == "hard_tanh":
        return Activation(
            name, lambda h: torch.clamp(h, -1.0, 1.0), lambda h: _step(h, -1.0, 1.0),
            (-1.0, 1.0), False,
        )
    if name == "erf":
        # erf(sqrt(pi)/2 h): phi'(0) = 1, mu_k = (1 + pi k q)^(-1/2).
        c = _sqrt_pi_2()
        return Activation(
            name, lambda h: torch.erf(c * h), lambda h: torch.exp(-math.pi * h * h / 4.0)
        )
    if name == "sigmoid":
        return Activation(
            name, torch.sigmoid, lambda h: torch.sigmoid(h) * (1.0 - torch.sigmoid(h))
        )
    if name == "hard_sigmoid":
        # torch's hardsigmoid: relu6(h + 3) / 6.
        return Activation(
            name, lambda h: torch.clamp(h + 3.0, 0.0, 6.0) / 6.0,
            lambda h: _step(h, -3.0, 3.0, 1.0 / 6.0), (-3.0, 3.0), False,
        )
    if name == "relu6":
        return Activation(
            name, lambda h: torch.clamp(h, 0.0, 6.0), lambda h: _step(h, 0.0, 6.0),
            (0.0, 6.0), False,
        )
    if name == "selu":
        return Activation(
            name,
            lambda h: _SELU_SCALE * torch.where(h > 0, h, _SELU_ALPHA * torch.expm1(h)),
            lambda h: _SELU_SCALE * torch.where(h > 0, 1.0 + 0 * h, _SELU_ALPHA * torch.exp(h)),
            (0.0,),
            False,
        )
    if name == "gelu":
        def gelu_d(h: torch.Tensor) -> torch.Tensor:
            cdf = 0.5 * torch.erfc(-h / math.sqrt(2.0))
            return cdf + h * torch.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)

        return Activation(name, lambda h: h * 0.5 * torch.erfc(-h / math.sqrt(2.0)), gelu_d)
    if name == "silu":
        def silu_d(h: torch.Tensor) -> torch.Tensor:
            s = torch.sigmoid(h)
            return s * (1.0 + h * (1.0 - s))

        return Activation(name, lambda h: h * torch.sigmoid(h), silu_d)
    raise AssertionError(name)  # pragma: no cover


ACTIVATIONS: tuple[str, ...] = (
    "linear", "relu", "tanh", "hard_tanh", "erf", "sigmoid", "hard_sigmoid",
    "relu6", "selu", "gelu", "silu", "shifted_relu",
)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def get_activation(
    activation: str | Activation | TorchFn,
    *,
    derivative: TorchFn | None = None,
    breakpoints: tuple[float, ...] = (),
    shift: float = 1.0,
) -> Activation:
    """Resolve a name (see ``ACTIVATIONS``; "shifted relu" = ``max(h, -shift)``), an
    ``Activation``, or a callable on float64 torch tensors (``phi'`` by autograd unless
    ``derivative`` is given; ``breakpoints`` lists the kinks of ``phi'`` if any)."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = _normalise(activation)
        if key not in ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is not supported; expected one of "
                f"{', '.join(ACTIVATIONS)} or a callable"
            )
        if not math.isfinite(shift):
            raise ValueError(f"shift={shift!r} must be a finite number")
        return _named(key, float(shift))
    if callable(activation):
        name = getattr(activation, "__name__", "callable")
        dphi = derivative if derivative is not None else _autograd_derivative(activation)
        bps = tuple(sorted(float(b) for b in breakpoints))
        return Activation(name, activation, dphi, bps, smooth=not bps)
    raise TypeError(
        f"activation must be a name, an Activation or a callable, got {type(activation).__name__}"
    )
