"""Model builders, initialisation statistics and checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from jacspec.models.builders import (
    ACTIVATIONS,
    Erf,
    build_model,
    load_checkpoint,
    make_activation,
    mlp,
    save_checkpoint,
    small_cnn,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread is as fast, and does not stall when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_mlp_structure_and_image_inputs() -> None:
    model = mlp((1, 8, 8), 10, width=32, depth=3, activation="tanh", seed=0)
    assert isinstance(model, nn.Sequential) and isinstance(model[0], nn.Flatten)
    shapes = [tuple(m.weight.shape) for m in linears(model)]
    assert shapes == [(32, 64), (32, 32), (32, 32), (10, 32)]
    assert sum(isinstance(m, nn.Tanh) for m in model) == 3
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    lin = mlp(7, 3, depth=0, seed=0)
    assert [tuple(m.weight.shape) for m in linears(lin)] == [(3, 7)]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_their_formulas(name: str) -> None:
    h = torch.linspace(-8, 8, 161, dtype=torch.float64)
    ref = {
        "relu": torch.clamp(h, min=0),
        "relu6": torch.clamp(h, 0, 6),
        "tanh": torch.tanh(h),
        "hard_tanh": torch.clamp(h, -1, 1),
        "hard_sigmoid": torch.clamp(h / 6 + 0.5, 0, 1),
        "erf": torch.erf(math.sqrt(math.pi) / 2 * h),
        "linear": h,
    }[name]
    torch.testing.assert_close(make_activation(name)(h), ref)


def test_erf_has_unit_slope_at_zero() -> None:
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    Erf()(x).sum().backward()
    assert abs(float(x.grad) - 1.0) < 1e-12
    assert float(Erf(2.0)(torch.tensor(0.3))) == pytest.approx(math.erf(0.6), rel=1e-6)


@pytest.mark.parametrize("activation,sigma_w", [("relu", None), ("tanh", None), ("tanh", 1.7)])
def test_gaussian_init_statistics(activation: str, sigma_w: float | None) -> None:
    sigma_b = 0.3
    model = mlp(300, 400, width=400, depth=1, activation=activation, sigma_w=sigma_w,
                sigma_b=sigma_b, seed=1)
    expected_w = sigma_w if sigma_w is not None else (math.sqrt(2) if activation == "relu" else 1)
    for lin in linears(model.requires_grad_(False)):
        fan_in = lin.weight.shape[1]
        std = float(lin.weight.std()) * math.sqrt(fan_in)
        assert std == pytest.approx(expected_w, rel=0.02)  # 120k-160k samples
        assert abs(float(lin.weight.mean())) < 0.02 * expected_w
        assert float(lin.bias.std()) == pytest.approx(sigma_b, rel=0.15)  # 400 samples
    zero_b = mlp(10, 3, width=8, seed=0).requires_grad_(False)
    assert all(float(lin.bias.abs().max()) == 0.0 for lin in linears(zero_b))


def test_orthogonal_init() -> None:
    sigma_w = 1.3
    model = mlp(50, 20, width=200, depth=2, init="orthogonal", sigma_w=sigma_w, seed=2)
    first, square, head = (lin.weight.detach().double() for lin in linears(model))
    eye = lambda n: torch.eye(n, dtype=torch.float64)  # noqa: E731
    # square layer: exactly sigma_w times an orthogonal matrix
    torch.testing.assert_close(square @ square.T, sigma_w**2 * eye(200), atol=1e-5, rtol=0)
    # 50 -> 200: orthonormal columns scaled so entries have variance sigma_w^2 / fan_in
    torch.testing.assert_close(first.T @ first, sigma_w**2 * (200 / 50) * eye(50), atol=1e-5,
                               rtol=0)
    assert float((first**2).mean()) == pytest.approx(sigma_w**2 / 50, rel=1e-4)
    # 200 -> 20: orthonormal rows scaled by sigma_w
    torch.testing.assert_close(head @ head.T, sigma_w**2 * eye(20), atol=1e-5, rtol=0)


def test_same_seed_same_weights() -> None:
    for build in (lambda s: mlp(12, 4, width=16, seed=s, init="orthogonal", sigma_b=0.1),
                  lambda s: small_cnn((1, 28, 28), 10, seed=s)):
        a, b, c = build(5), build(5), build(6)
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(),
                                      strict=True):
            assert ka == kb and torch.equal(va, vb)
        assert not all(torch.equal(va, vc) for va, vc in zip(a.state_dict().values(),
                                                             c.state_dict().values(),
                                                             strict=True))
    state = torch.random.get_rng_state()
    small_cnn(seed=3)
    mlp(5, 2, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    # seed=None draws from the global RNG: two builds differ
    assert not torch.equal(mlp(5, 2)[1].weight, mlp(5, 2)[1].weight)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 24, 24)])
def test_small_cnn_shapes(shape: tuple[int, int, int]) -> None:
    model = small_cnn(shape, 7, channels=(4, 8), seed=0)
    assert model(torch.rand(3, *shape)).shape == (3, 7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="activation='swish'"):
        mlp(4, 2, activation="swish")
    with pytest.raises(ValueError, match="init="):
        mlp(4, 2, init="xavier")
    with pytest.raises(ValueError, match="sigma_w"):
        mlp(4, 2, sigma_w=0)
    with pytest.raises(ValueError, match="input_shape"):
        mlp((3, 0), 2)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        small_cnn((28, 28))
    with pytest.raises(ValueError, match="unknown keys"):
        build_model({"kind": "mlp", "input_shape": [4], "num_classes": 2, "wdith": 3})
    with pytest.raises(ValueError, match="kind"):
        build_model({"kind": "vit", "input_shape": [4], "num_classes": 2})
    with pytest.raises(ValueError, match="num_classes"):
        build_model({"kind": "mlp", "input_shape": [4]})


# ----------------------------------------------------------------------------- checkpoints

SPEC = {"kind": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "width": 16, "depth": 2,
        "activation": "relu6", "sigma_b": 0.05, "seed": 0}


def test_build_model_matches_builder() -> None:
    a = build_model(SPEC)
    b = mlp((1, 8, 8), 10, width=16, depth=2, activation="relu6", sigma_b=0.05, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
    cnn = build_model({"kind": "cnn", "input_shape": [3, 24, 24], "num_classes": 100,
                       "channels": [4, 6], "seed": 1})
    assert cnn(torch.rand(2, 3, 24, 24)).shape == (2, 100)


@pytest.mark.parametrize("spec", [SPEC, {"kind": "cnn", "input_shape": [1, 28, 28],
                                         "num_classes": 10, "channels": [3, 5]}])
def test_checkpoint_roundtrip(tmp_path: Path, spec: dict) -> None:
    model = build_model(spec)
    with torch.no_grad():  # move away from the spec's initial weights
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, spec)
    assert not list(path.parent.glob("*.tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "jacspec-checkpoint" and raw["version"] == 1
    loaded, got_spec = load_checkpoint(path)
    assert got_spec == spec and not loaded.training
    x = torch.rand(4, *spec["input_shape"])
    model.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_save_checkpoint_checks_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        save_checkpoint(tmp_path / "m.pt", mlp(64, 10, width=8), SPEC)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "m.pt", build_model(SPEC), {**SPEC, "seed": object()})


class _Custom:  # not a type torch's weights-only unpickler allows
    pass


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")

    code = tmp_path / "code.pt"
    torch.save({"format": "jacspec-checkpoint", "extra": _Custom()}, code)
    with pytest.raises(ValueError, match=r"needs arbitrary code to be unpickled.*trust=True"):
        load_checkpoint(code)

    corrupt = tmp_path / "corrupt.pt"
    good = save_checkpoint(tmp_path / "good.pt", build_model(SPEC), SPEC)
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(corrupt)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(ValueError, match="corrupt or not a torch file"):
        load_checkpoint(junk)

    bare = tmp_path / "bare.pt"
    torch.save(build_model(SPEC).state_dict(), bare)
    with pytest.raises(ValueError, match="not a jacspec checkpoint.*bare state_dict"):
        load_checkpoint(bare)

    payload = torch.load(good, weights_only=True)
    wrong = tmp_path / "wrong.pt"
    torch.save({**payload, "spec": {**SPEC, "width": 17}}, wrong)
    with pytest.raises(ValueError, match="spec does not match"):
        load_checkpoint(wrong)
    torch.save({**payload, "spec": {**SPEC, "activation": "gelu"}}, wrong)
    with pytest.raises(ValueError, match="invalid spec"):
        load_checkpoint(wrong)
    torch.save({**payload, "version": 99}, wrong)
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(wrong)


def test_trust_loads_pickled_modules(tmp_path: Path) -> None:
    model = build_model(SPEC)
    path = tmp_path / "module.pt"
    torch.save(model, path)
    with pytest.raises(ValueError, match="trust=True"):
        load_checkpoint(path)
    loaded, spec = load_checkpoint(path, trust=True)
    assert spec["kind"] == "module"
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
