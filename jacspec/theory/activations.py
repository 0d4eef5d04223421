"""Activations for random-network theory: phi, phi' and the kinks of phi'.

Every activation is a pair of float64 torch functions ``phi(h)`` and ``dphi(h)``
plus ``breakpoints``: the points where ``phi'`` jumps (quadrature splits there).
Named ones carry closed-form derivatives, taken with their names and aliases from the
activation registry (:mod:`jacspec.models.activations`: ``"hardtanh"`` means
``"hard_tanh"``); a user callable gets ``phi'`` from autograd unless it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from jacspec.models.activations import ALIASES, REGISTRY

TorchFn = Callable[[torch.Tensor], torch.Tensor]


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


def _named(name: str, shift: float) -> Activation:
    """The registry's ``phi``, ``phi'`` and kinks for ``name``; ``shifted_relu`` (the theory's
    own, parametrised by ``shift``) is ``max(h, -shift)``: a ReLU whose kink sits at -shift."""
    if name == "shifted_relu":
        return Activation(
            name,
            lambda h: torch.clamp(h, min=-shift),
            lambda h: (h > -shift).to(h.dtype),
            (-shift,),
            False,
        )
    spec = REGISTRY[name]
    assert spec.derivative is not None
    return Activation(name, spec.function, spec.derivative, spec.breakpoints, spec.smooth)


#: Names the theory takes: the registry's activations with a closed-form ``phi'``, and
#: ``shifted_relu``.
ACTIVATIONS: tuple[str, ...] = (
    *(s.name for s in REGISTRY.values() if s.derivative is not None), "shifted_relu",
)


def _normalise(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(key, key)


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
