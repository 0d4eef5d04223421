"""jacspec.resnet: He et al.'s CIFAR ResNet through the builders, checkpoints and analyze.

References: the paper's parameter count re-derived here layer by layer, per-example
Jacobians of ``torch.autograd.functional.jacobian`` (``cases.reference_jacobians``) and
``numpy.linalg.eigvalsh`` of the reference Gram.
"""

from __future__ import annotations

import json

import cases
import numpy as np
import pytest
import torch

import jacspec
from jacspec.cli.main import main


def _count_option_a(depth: int, width: int, c_in: int, k: int) -> int:
    """Parameters of the option-A CIFAR ResNet, counted from the paper's description."""
    m = (depth - 2) // 6
    total = 9 * c_in * width + 2 * width  # stem conv + BN
    c = width
    for c_out in (width, 2 * width, 4 * width):
        for _ in range(m):
            total += 9 * c * c_out + 9 * c_out * c_out + 4 * c_out  # two convs, two BNs
            c = c_out
    return total + c * k + k


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_parameter_count_is_the_papers(depth: int) -> None:
    model = jacspec.resnet((3, 32, 32), 10, depth=depth)
    got = sum(p.numel() for p in model.parameters())
    assert got == _count_option_a(depth, 16, 3, 10)
    if depth == 20:
        assert got == 269_722  # "0.27M" in He et al.'s table 6


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(m.num_features, generator=gen))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_jacobians_and_esd_match_autograd(shortcut: str) -> None:
    model = jacspec.resnet((3, 8, 8), 10, depth=8, width=4, shortcut=shortcut, seed=1).double()
    with torch.no_grad():
        _randomise_bn(model, 2)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((7, 3, 8, 8)))
    ref = cases.reference_jacobians(model, x, "softmax")
    got = jacspec.jacobians(model, x, dtype=torch.float64, batch_size=3)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    rows = ref.reshape(7, -1).numpy()
    want = np.sort(np.linalg.eigvalsh(rows @ rows.T / 7))[::-1]
    e = jacspec.esd(model, x, dtype=torch.float64)
    np.testing.assert_allclose(np.sort(e.eigenvalues)[::-1][:7], want, atol=1e-10 * want[0])


def test_seed_reproduces_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = jacspec.resnet((3, 16, 16), 10, depth=8, seed=3)
    b = jacspec.resnet((3, 16, 16), 10, depth=8, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
    assert not a.training


def test_training_mode_batchnorm_is_refused() -> None:
    model = jacspec.resnet((3, 8, 8), 10, depth=8, width=4, seed=0).train()
    with pytest.raises(ValueError, match="BatchNorm|training mode"):
        jacspec.esd(model, torch.randn(4, 3, 8, 8))


@pytest.mark.parametrize("bad,match", [
    ({"depth": 21}, "6m \\+ 2"),
    ({"shortcut": "C"}, "shortcut"),
    ({"width": 0}, "width"),
])
def test_bad_arguments_name_themselves(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        jacspec.resnet((3, 32, 32), 10, **bad)
    with pytest.raises(ValueError, match="input_shape"):
        jacspec.resnet((32, 32), 10)


def test_checkpoint_round_trip_and_cli_analyze(tmp_path, capsys) -> None:
    spec = {"kind": "resnet", "input_shape": [3, 8, 8], "num_classes": 10, "depth": 8,
            "width": 4, "shortcut": "B", "seed": 4}
    model = jacspec.build_model(spec)
    with torch.no_grad():
        _randomise_bn(model, 6)
    path = jacspec.save_checkpoint(tmp_path / "r.pt", model, spec)
    loaded, got_spec = jacspec.load_checkpoint(path)
    assert got_spec["kind"] == "resnet" and not loaded.training
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=cases.labels(6))
    out = tmp_path / "a.json"
    rc = main(["analyze", str(path), "--data", str(tmp_path / "d.npz"), "--dtype", "float64",
               "--no-randomize", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    ref = cases.reference_jacobians(model.double().eval(), torch.from_numpy(x).double())
    rows = ref.reshape(6, -1).numpy()
    want = np.sort(np.linalg.eigvalsh(rows @ rows.T / 6))[::-1]
    got = np.sort(json.loads(out.read_text())["eigenvalues"])[::-1][:6]
    np.testing.assert_allclose(got, want, atol=1e-10 * want[0])


def test_zoo_trains_a_resnet_and_its_checkpoint_rebuilds(tmp_path) -> None:
    from jacspec.zoo.run.train import run_job, validate_config

    with pytest.raises(ValueError, match="6m \\+ 2"):
        validate_config({"model": "resnet", "depth": 10})
    with pytest.raises(ValueError, match="'relu'"):
        validate_config({"model": "resnet", "depth": 8, "activation": "tanh"})
    cfg = {"dataset": "digits", "model": "resnet", "depth": 8, "width": 4, "n_train": 64,
           "n_test": 32, "max_steps": 2, "batch_size": 32, "metrics": ["jacobian_norm"],
           "save_checkpoint": True, "seed": 1}
    out = run_job(cfg)
    assert np.isfinite(out["metrics"]["test_jacobian_norm"])
    path = tmp_path / "zoo.pt"
    path.write_bytes(out["checkpoint"])
    model, spec = jacspec.load_checkpoint(path)
    assert spec["kind"] == "resnet" and spec["depth"] == 8 and not model.training
    assert model.fc.out_features == 10 and model.conv.in_channels == 1
