"""The one activation registry: one canonical name per activation, torch's spellings as
aliases, and the same entry behind builders, the engine, region codes and the theory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jacspec.jacobian import engine
from jacspec.models import activations as reg
from jacspec.models.builders import ACTIVATIONS, make_activation, mlp
from jacspec.sensitivity import regions
from jacspec.theory.activations import ACTIVATIONS as THEORY
from jacspec.theory.activations import get_activation


@pytest.mark.parametrize(
    "given,name",
    [("hardtanh", "hard_tanh"), ("Hard-Tanh", "hard_tanh"), ("hardsigmoid", "hard_sigmoid"),
     ("hard sigmoid", "hard_sigmoid"), ("hardswish", "hard_swish"), ("ReLU", "relu")],
)
def test_aliases_resolve_to_one_canonical_name(given: str, name: str) -> None:
    assert reg.canonical_name(given) == name
    assert reg.get_spec(given).name == name
    if name in THEORY:
        assert get_activation(given).name == name
    if name in ACTIVATIONS:
        assert type(make_activation(given)) is reg.REGISTRY[name].module
        model = mlp(4, 2, width=3, depth=1, activation=given, seed=0)
        assert type(model[2]) is reg.REGISTRY[name].module


def test_unknown_names_are_one_sentence() -> None:
    with pytest.raises(ValueError, match="activation='swish' is not supported; expected one"):
        reg.canonical_name("swish")
    with pytest.raises(ValueError, match="activation='gelu' is not supported"):
        mlp(4, 2, activation="gelu")  # in the registry, not among the builders' choices


def test_every_alias_and_name_is_unique() -> None:
    spellings = [s for spec in reg.REGISTRY.values() for s in (spec.name, *spec.aliases)]
    assert len(spellings) == len(set(spellings))
    assert set(ACTIVATIONS) <= set(reg.REGISTRY) and set(THEORY) - {"shifted_relu"} <= set(
        reg.REGISTRY
    )


def test_functions_modules_and_derivatives_agree() -> None:
    """phi against the torch module and an independent formula; phi' against autograd."""
    h = torch.linspace(-7.9, 7.9, 317, dtype=torch.float64)
    formulas = {
        "relu": torch.clamp(h, min=0), "relu6": torch.clamp(h, 0, 6),
        "hard_tanh": torch.clamp(h, -1, 1), "hard_sigmoid": torch.clamp(h / 6 + 0.5, 0, 1),
        "erf": torch.erf(math.sqrt(math.pi) / 2 * h), "tanh": torch.tanh(h),
        "sigmoid": 1 / (1 + torch.exp(-h)), "linear": h,
    }
    for name, spec in reg.REGISTRY.items():
        torch.testing.assert_close(spec.function(h), spec.make_module()(h))
        if name in formulas:
            torch.testing.assert_close(spec.function(h), formulas[name])
        if spec.derivative is not None:
            x = h.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(spec.function(x).sum(), x)
            off = torch.ones_like(h, dtype=torch.bool)
            for b in spec.breakpoints:
                off &= (h - b).abs() > 1e-9
            torch.testing.assert_close(spec.derivative(h)[off], g[off])


def test_engine_and_regions_take_the_registry() -> None:
    assert engine.ACTIVATION_MODULES == reg.ACTIVATION_MODULES
    assert nn.Hardtanh in engine.ACTIVATION_MODULES and reg.Erf in engine.ACTIVATION_MODULES
    assert regions._RELU_LIKE[F.relu] == "relu" and regions._HARDTANH_LIKE[F.hardtanh]
    assert regions._HARDTANH_LIKE[F.hardsigmoid] == reg.REGISTRY["hard_sigmoid"].call_name
    relu_aten = torch.ops.aten.relu.default
    assert regions._RELU_LIKE[relu_aten] == "relu"  # the aten entries are kept
    # every torch function the registry lists is coded by regions
    for spec in reg.REGISTRY.values():
        for fn in spec.calls:
            assert any(fn in t for t in (regions._RELU_LIKE, regions._HARDTANH_LIKE,
                                         regions._SMOOTH)), (spec.name, fn)
