"""The factored route (jacspec.jacobian.factored): rows A_i L through the first linear layer
give the same Gram as the direct rows J_i = d g / d x.

The reference is re-expressed here independently: per-example Jacobians by
``torch.func.jacrev`` of the whole model, their Gram ``M = 𝒥𝒥^T`` and its eigenvalues in
float64 by numpy.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from jacspec.analysis import analyze
from jacspec.jacobian.factored import find_first_linear
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.source import JacobianSource
from jacspec.models.builders import mlp, small_cnn
from jacspec.sensitivity.norms import jacobian_norms, per_point_generalization
from jacspec.spectra.exact import esd, esd_from_gram
from jacspec.spectra.gram import gram_from_source
from jacspec.spectra.operators import gram_operator

N, K = 41, 5


def _reference_rows(model: nn.Module, x: torch.Tensor, output: str) -> np.ndarray:
    """𝒥 (n, k*d) from torch.func.jacrev, one example at a time."""

    def g(xi: torch.Tensor) -> torch.Tensor:
        z = model(xi[None])[0]
        return torch.softmax(z, 0) if output == "softmax" else z

    rows = [torch.func.jacrev(g)(xi).reshape(-1) for xi in x]
    return torch.stack(rows).detach().numpy()


def _ref_eigs(J: np.ndarray) -> np.ndarray:
    """Eigenvalues of 𝒥𝒥^T / n, descending, min(n, kd) of them."""
    ev = np.linalg.eigvalsh(J @ J.T / J.shape[0])[::-1]
    return np.clip(ev[: min(J.shape)], 0, None)


def _data(shape: tuple[int, ...], n: int = N, batch: int = 7) -> list:
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return [(x[s : s + batch], None) for s in range(0, n, batch)]  # uneven: 41 = 5*7 + 6


def _x(data: list) -> torch.Tensor:
    return torch.cat([b[0] for b in data])


class FirstLinearNoFlatten(nn.Module):
    """A user's MLP on flat features, the Linear called from forward (no Sequential)."""

    def __init__(self, d: int, w: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, w, bias=bias)
        self.fc2 = nn.Linear(w, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x.view(x.shape[0], -1))))


class InputTwice(nn.Module):
    """The input reaches the output through the first Linear and a second path."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 4)
        self.fc2 = nn.Linear(4, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x))) + x[:, :1]


def _model(kind: str, shape: tuple[int, ...]) -> nn.Module:
    d = int(np.prod(shape))
    if kind == "relu_bias":
        return mlp(shape, K, width=12, depth=2, activation="relu", seed=0).double().eval()
    if kind == "tanh_nobias":
        return mlp(shape, K, width=12, depth=2, activation="tanh", bias=False,
                   seed=0).double().eval()
    torch.manual_seed(0)
    return FirstLinearNoFlatten(d, 12, bias=kind == "custom_bias").double().eval()


CASES = [
    ("relu_bias", (48,)),
    ("tanh_nobias", (3, 4, 4)),  # Flatten first on images
    ("custom_bias", (48,)),
    ("custom_nobias", (2, 24)),  # x.view(b, -1) then Linear
]


@pytest.mark.parametrize(("kind", "shape"), CASES)
@pytest.mark.parametrize("output", ["softmax", "logits"])
@pytest.mark.parametrize("side", ["dual", "primal"])
def test_factored_eigenvalues_match_direct_and_reference(kind, shape, output, side) -> None:
    model = _model(kind, shape)
    data = _data(shape)
    ref = _ref_eigs(_reference_rows(model, _x(data), output))
    got = {}
    for route in ("direct", "factored"):
        src = JacobianSource.from_model(model, data, output=output, route=route)
        assert src.route == route and src.settings["route"] == route
        g = gram_from_source(src, side=side)
        e = esd_from_gram(g, scale="n")
        assert e.d == int(np.prod(shape)) and g.settings["route"] == route
        got[route] = e.eigenvalues
    fac = JacobianSource.from_model(model, data, output=output, route="factored")
    assert fac.kind == "factored" and fac.d == 12 and fac.jacobian_shape == shape
    assert fac.rows_sum_to_zero == (output == "softmax") and fac.count() == N
    lam, m = ref[0], len(ref)
    if side == "primal" or N >= (K - 1) * 48:  # both report min(n, kd) eigenvalues
        assert len(got["factored"]) == len(got["direct"]) == m
    for route, ev in got.items():  # a forced dual with n < its dimension reports it all
        assert len(ev) >= m and np.all(ev[m:] <= 1e-8 * lam), route
    assert np.max(np.abs(got["factored"][:m] - got["direct"][:m])) <= 1e-8 * lam
    assert np.max(np.abs(got["factored"][:m] - ref)) <= 1e-8 * lam


def test_factored_gram_operator_and_trace() -> None:
    model = _model("relu_bias", (48,))
    data = _data((48,))
    J = _reference_rows(model, _x(data), "softmax")
    fac = JacobianSource.from_model(model, data, route="factored")
    op = gram_operator(fac, side="primal", scale="none")
    assert np.allclose(op.to_dense(), J @ J.T, rtol=0, atol=1e-12 * np.abs(J @ J.T).max())
    assert op.trace() == pytest.approx(float((J**2).sum()), rel=1e-12)


@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_jacobian_norms_match(output) -> None:
    model = _model("tanh_nobias", (3, 4, 4))
    data = _data((3, 4, 4))
    J = _reference_rows(model, _x(data), output)
    ref = np.sqrt((J**2).sum(axis=1))
    norms = {
        r: jacobian_norms(model, data, output=output, options=JacobianOptions(route=r)).numpy()
        for r in ("direct", "factored")
    }
    assert np.max(np.abs(norms["factored"] - norms["direct"])) <= 1e-10 * ref.max()
    assert np.max(np.abs(norms["factored"] - ref)) <= 1e-10 * ref.max()


def test_route_recorded_in_results() -> None:
    model = _model("relu_bias", (48,))
    data = _data((48,))
    e = esd(model, data, options=JacobianOptions(route="factored"))
    assert e.settings["route"] == "factored" and e.settings["jacobian"]["route"] == "factored"
    assert esd(model, data, options=JacobianOptions(route="direct")).settings["route"] == "direct"
    src = JacobianSource.from_model(model, data)  # auto: w = 12 < d = 48
    assert src.route == "factored" and src.settings["factored_layer"] == "1"
    labelled = [(x, torch.arange(len(x)) % K) for x, _ in data]
    pp = per_point_generalization(model, labelled, options=JacobianOptions(route="factored"))
    assert pp.settings["route"] == "factored"


def test_auto_picks_direct_when_not_cheaper_or_not_linear() -> None:
    wide = mlp((8,), K, width=16, depth=1, seed=0).double().eval()  # w = 16 >= d = 8
    assert JacobianSource.from_model(wide, _data((8,))).route == "direct"
    assert JacobianSource.from_model(wide, _data((8,)), route="factored").route == "factored"
    cnn = small_cnn((1, 8, 8), K, channels=(2,), seed=0).double().eval()
    data = _data((1, 8, 8))
    assert JacobianSource.from_model(cnn, data).route == "direct"
    with pytest.raises(ValueError, match="route='factored' does not apply"):
        JacobianSource.from_model(cnn, data, route="factored")
    torch.manual_seed(0)
    twice = InputTwice(6).double().eval()
    found, why = find_first_linear(twice, _x(_data((6,))))
    assert found is None and "other than through 'fc1'" in why
    assert JacobianSource.from_model(twice, _data((6,))).route == "direct"
    with pytest.raises(ValueError, match="JacobianOptions.route|route must be one of|route"):
        JacobianOptions(route="fast")


def test_user_model_untouched() -> None:
    model = _model("custom_bias", (48,))
    model.train(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    src = JacobianSource.from_model(model, _data((48,)), route="factored")
    gram_from_source(src)
    jacobian_norms(model, _data((48,)), options=JacobianOptions(route="factored"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng) and not model.training


def test_float32_factored_within_rank_rule_of_float64() -> None:
    model = mlp((48,), K, width=12, depth=2, seed=0).eval()
    data = [(x.float(), y) for x, y in _data((48,))]
    e32 = esd_from_gram(gram_from_source(JacobianSource.from_model(model, data,
                                                                   route="factored")))
    e64 = esd_from_gram(gram_from_source(JacobianSource.from_model(
        model, data, route="direct", dtype=torch.float64)))
    d32 = esd_from_gram(gram_from_source(JacobianSource.from_model(model, data,
                                                                   route="direct")))
    assert e32.rank == d32.rank and e32.unresolved == d32.unresolved
    # the rank rule's bound (jacspec.spectra.eigen.rank_tolerance): |dl| <= 2 C eps sqrt(l lmax)
    lam, ev = e64.eigenvalues[0], e64.eigenvalues
    bound = 2 * 64 * np.finfo(np.float32).eps * np.sqrt(ev * lam) + e32.tol
    m = len(ev)
    assert np.all(np.abs(e32.eigenvalues[:m] - ev) <= bound)
    assert np.all(np.abs(d32.eigenvalues[:m] - ev) <= bound)


def test_analyze_route_and_randomized_null() -> None:
    model = _model("relu_bias", (48,))
    data = _data((48,))
    a = analyze(model, data)  # auto, 𝒥 fits randomize_max_bytes: direct, null computed
    assert a.settings["rows"]["input->output"]["route"] == "direct"
    assert a.nulls["input->output"] is not None
    small = analyze(model, data, randomize_max_bytes=1)  # 𝒥 too big for the null: factored
    assert small.settings["rows"]["input->output"]["route"] == "factored"
    with pytest.warns(UserWarning, match="randomized null skipped"):
        fac = analyze(model, data, route="factored")
    assert fac.nulls["input->output"] is None
    direct = analyze(model, data, route="direct", randomize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nonull = analyze(model, data, route="factored", randomize=False)
    for col in ("lambda_max", "trace", "rank", "alpha"):
        want = direct.table.loc["input->output", col]
        assert nonull.table.loc["input->output", col] == pytest.approx(want, rel=1e-9)


def _load_benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "esd_scale.py"
    spec = importlib.util.spec_from_file_location("esd_scale_bench", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_functions_at_tiny_n() -> None:
    bench = _load_benchmark()
    model = bench.make_model((24,), width=16)
    direct = bench.exact_esd(model, 60, (24,), route="direct", chunk=25)
    fac = bench.exact_esd(model, 60, (24,), route="factored", chunk=25)
    assert fac["route"] == "factored" and direct["route"] == "direct"
    diff = np.max(np.abs(fac["eigenvalues"] - direct["eigenvalues"]))
    assert diff <= 1e-4 * direct["lambda_max"] and fac["rank"] == direct["rank"]
    user = bench.torch_func_recipe(model, 60, (24,), chunk=25)
    top = direct["eigenvalues"][: 5]
    assert np.allclose(user["eigenvalues"][: 5], top, rtol=1e-4)
