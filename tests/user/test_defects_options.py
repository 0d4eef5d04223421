"""Issue 22, defect 18: the docs promise that every entry point that computes Jacobians takes
``options=`` or the JacobianOptions fields as keywords (docs/architecture.md, "Three
interfaces"). Each entry point the docs name, times each field of ``JacobianOptions``, is
accepted; and route, sketch, check_independence, device and method take effect (checked
from what each result reports and from the numbers, against an autograd reference)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import jacspec
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.source import JacobianSource
from jacspec.sensitivity.trajectories import points_trajectory

torch.manual_seed(0)
K, D, N = 10, 12, 16
X = torch.randn(N, D, dtype=torch.float64)
Y = torch.arange(N) % K


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, K)).double()


class Mixing(nn.Module):
    """Mixes examples of a batch: every output depends on the batch mean."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - x.mean(dim=0, keepdim=True))


def _trajectory() -> Any:
    return points_trajectory(X[:3], closed=True)


#: name -> call(model, **fields); each computes Jacobians of ``model`` on X (or along a
#: closed trajectory through three of its points) and returns something with settings.
ENTRY: dict[str, Callable[..., Any]] = {
    "iter_jacobians": lambda m, **kw: list(jacspec.iter_jacobians(m, (X, Y), **kw)),
    "jacobians": lambda m, **kw: jacspec.jacobians(m, (X, Y), **kw),
    "data_jacobian": lambda m, **kw: jacspec.data_jacobian(m, (X, Y), **kw),
    "JacobianSource.from_model": lambda m, **kw: list(JacobianSource.from_model(m, (X, Y),
                                                                                   **kw)),
    "gram": lambda m, **kw: jacspec.gram(m, (X, Y), **kw),
    "esd": lambda m, **kw: jacspec.esd(m, (X, Y), **kw),
    "estimate_esd": lambda m, **kw: jacspec.estimate_esd(m, (X, Y), **kw),
    "estimate_esd-slq": lambda m, **kw: jacspec.estimate_esd(m, (X, Y), method="slq",
                                                             num_steps=8, num_vectors=2, **kw),
    "analyze": lambda m, **kw: jacspec.analyze(m, (X, Y), randomize=False, **kw),
    "jacobian_norms": lambda m, **kw: jacspec.jacobian_norms(m, (X, Y), **kw),
    "mean_jacobian_norm": lambda m, **kw: jacspec.mean_jacobian_norm(m, (X, Y), **kw),
    "per_point_generalization": lambda m, **kw: jacspec.per_point_generalization(m, (X, Y),
                                                                                 **kw),
    "trajectory_profile": lambda m, **kw: jacspec.trajectory_profile(
        m, _trajectory(), num_points=6, refine=2, **kw),
}
#: they return J itself: a factored route or a sketch (other rows) is refused there
EXACT_J = {"iter_jacobians", "jacobians", "data_jacobian"}
NORMS = {"jacobian_norms", "mean_jacobian_norm", "per_point_generalization",
         "trajectory_profile"}

#: one valid value of each field, other than its default
VALUES = {"output": "logits", "dtype": torch.float64, "device": "cpu", "batch_size": 5,
          "method": "loop", "check_independence": False, "progress": True,
          "route": "direct", "sketch": 4, "sketch_kind": "orthonormal", "sketch_seed": 7,
          "input_module": "0", "output_key": "scores", "position": -1}
#: the fields that read the model's output: a model whose output they apply to
OUTPUT_FIELDS = {"output_key", "position"}


class _Keyed(nn.Module):
    """The MLP's logits under the key "scores" of a dict, or per position (b, 2, K)."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.net, self.field = _mlp(), field

    def forward(self, x: torch.Tensor) -> Any:
        z = self.net(x)
        return {"scores": z} if self.field == "output_key" else torch.stack([0 * z, z], 1)


def _model_for(field: str) -> nn.Module:
    return _Keyed(field) if field in OUTPUT_FIELDS else _mlp()
FIELDS = [f.name for f in dataclasses.fields(JacobianOptions)]


def test_the_values_cover_every_field() -> None:
    assert sorted(VALUES) == sorted(FIELDS)


def _keywords(entry: str, field: str) -> dict[str, Any]:
    if field == "method" and entry in ("analyze", "estimate_esd", "estimate_esd-slq"):
        return {"jacobian_method": VALUES[field]}  # their method is the ESD's (exact/slq)
    if field == "output" and entry in NORMS:
        return {}  # their output is the norm's own keyword (softmax or logits), not a field
    return {field: VALUES[field]}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("entry", sorted(ENTRY))
def test_every_entry_point_takes_every_field(entry: str, field: str) -> None:
    kw = _keywords(entry, field)
    if field == "sketch" and entry in NORMS:
        with pytest.raises(ValueError, match=r"sketch=4 applies to the ESD \(jacspec.esd, "
                                             r"jacspec.analyze\)"):
            ENTRY[entry](_mlp(), **kw)
        return
    if field == "sketch" and entry in EXACT_J:
        with pytest.raises(ValueError, match="changes the rows of the data Jacobian"):
            ENTRY[entry](_mlp(), **kw)
        with pytest.raises(ValueError, match="changes the rows of the data Jacobian"):
            ENTRY[entry](_mlp(), route="factored")
        return
    if field == "input_module" and entry == "trajectory_profile":
        with pytest.raises(ValueError, match="input_module='0' is not supported"):
            ENTRY[entry](_mlp(), **kw)
        return
    ENTRY[entry](_model_for(field), **kw)  # accepted: no TypeError
    ENTRY[entry](_model_for(field), options=JacobianOptions(**{field: VALUES[field]}))


@pytest.mark.parametrize("entry", sorted(ENTRY))
def test_a_misspelt_field_is_refused(entry: str) -> None:
    with pytest.raises((TypeError, ValueError), match="rout"):
        ENTRY[entry](_mlp(), rout="direct")


@pytest.mark.parametrize("entry", sorted(ENTRY))
def test_check_independence_takes_effect_everywhere(entry: str) -> None:
    with pytest.raises(ValueError, match="mix"):
        ENTRY[entry](Mixing())
    ENTRY[entry](Mixing(), check_independence=False)  # the user's explicit choice


def _settings(result: Any) -> dict[str, Any]:
    if hasattr(result, "params"):
        return result.params
    return result.settings


@pytest.mark.parametrize("entry", ["gram", "esd", "estimate_esd", "estimate_esd-slq",
                                   "analyze", "per_point_generalization",
                                   "trajectory_profile"])
def test_method_device_and_batch_size_reach_the_engine(entry: str) -> None:
    kw = {"jacobian_method": "loop", "device": "cpu", "batch_size": 5}
    jac = _settings(ENTRY[entry](_mlp(), **kw))["jacobian"]
    assert jac["method"] == "loop" and jac["device"] == "cpu" and jac["batch_size"] == 5


def _autograd_jacobians(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.autograd.functional.jacobian(
        lambda v: torch.softmax(model(v[None]), dim=1)[0], xi) for xi in x])


def test_route_takes_effect_and_gives_the_same_numbers() -> None:
    J = _autograd_jacobians(_mlp(), X).reshape(N, -1)
    ref = np.sort(np.linalg.eigvalsh((J @ J.T).numpy() / N))[::-1]
    for route in ("direct", "factored"):
        e = jacspec.esd(_mlp(), (X, Y), route=route)
        assert e.settings["route"] == route
        np.testing.assert_allclose(e.eigenvalues[:8], ref[:8], rtol=1e-9, atol=1e-15)
        g = jacspec.gram(_mlp(), (X, Y), route=route)
        assert g.settings["route"] == route
        est = jacspec.estimate_esd(_mlp(), (X, Y), method="slq", route=route, num_steps=40,
                                   num_vectors=4, top_k=3)
        assert est.params["route"] == route
        np.testing.assert_allclose(est.top_eigenvalues[0], ref[0], rtol=1e-8)
        a = jacspec.analyze(_mlp(), (X, Y), randomize=False, route=route)
        assert a.settings["jacobian"]["route"] == route
        np.testing.assert_allclose(a.table["lambda_max"].iloc[0], ref[0], rtol=1e-9)
    ref_norms = J.pow(2).sum(1).sqrt().numpy()
    for route in ("direct", "factored"):
        norms = jacspec.jacobian_norms(_mlp(), (X, Y), route=route)
        np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=1e-10)
        pp = jacspec.per_point_generalization(_mlp(), (X, Y), route=route)
        assert pp.settings["route"] == route
        np.testing.assert_allclose(pp.frame["jacobian_norm"], ref_norms, rtol=1e-10)
        prof = jacspec.trajectory_profile(_mlp(), _trajectory(), num_points=6, refine=2,
                                          route=route)
        assert prof.settings["jacobian"]["route"] == route
    a, b = (jacspec.trajectory_profile(_mlp(), _trajectory(), num_points=6, refine=2,
                                       route=r) for r in ("direct", "factored"))
    np.testing.assert_allclose(a.jacobian_norm, b.jacobian_norm, rtol=1e-10)
    np.testing.assert_allclose(a.curvature, b.curvature, rtol=1e-8, atol=1e-14)


def test_sketch_takes_effect_and_is_labelled() -> None:
    exact = jacspec.esd(_mlp(), (X, Y))
    assert exact.settings["method"] == "exact"
    e = jacspec.esd(_mlp(), (X, Y), sketch=4, sketch_seed=3)
    assert e.settings["method"] == "sketched" and e.settings["sketch"]["r"] == 4
    assert e.settings["sketch"]["seed"] == 3
    assert not np.allclose(e.eigenvalues[:4], exact.eigenvalues[:4])  # an estimate
    other = jacspec.esd(_mlp(), (X, Y), sketch=4, sketch_seed=4)
    assert not np.allclose(other.eigenvalues[:4], e.eigenvalues[:4])  # the seed reaches it
    est = jacspec.estimate_esd(_mlp(), (X, Y), method="slq", sketch=4, num_steps=8,
                               num_vectors=2)
    assert est.params["sketch"]["r"] == 4
    g = jacspec.gram(_mlp(), (X, Y), sketch=4)
    assert g.k == 4 or g.settings["source"]["k"] == 4


def test_jacobian_method_and_method_are_one_field() -> None:
    g = jacspec.gram(_mlp(), (X, Y), method="loop")
    assert g.settings["jacobian"]["method"] == "loop"
    with pytest.raises(TypeError, match="once"):
        jacspec.gram(_mlp(), (X, Y), method="loop", jacobian_method="replicate")
    # estimate_esd's and analyze's method is the ESD's: a backward there is refused by name
    for call in (jacspec.estimate_esd, jacspec.analyze):
        with pytest.raises(ValueError, match="method"):
            call(_mlp(), (X, Y), method="loop")
