"""Models left in training mode (issue 9, defect 6).

jacspec never changes the user's model: no buffer (BatchNorm running statistics,
``num_batches_tracked``), no mode flag and no random state moves, whether it refuses the
model or not. Training-mode BatchNorm and Dropout are found from the modules and refused
at any batch size (a batch-size-1 loader included); batch-mixing that no module reveals
(a batch-mean layer, an exported program recorded in training mode) is caught by the probe,
which also runs for a batch of one.
"""

from __future__ import annotations

import cases
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import jacspec
from jacspec.cli.main import main
from jacspec.jacobian.engine import check_batch_independence, output_map, training_mode_layers
from jacspec.models.loading import load_model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], rng: torch.Tensor,
                      training: list[bool]) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"
    assert torch.equal(torch.get_rng_state(), rng), "torch's global RNG state changed"
    assert [m.training for m in model.modules()] == training, "a mode flag changed"


def _x(n: int) -> torch.Tensor:
    return torch.as_tensor(cases.inputs("cnn", n))


def _loaders(n: int = 4):
    x, y = _x(n), torch.as_tensor(cases.labels(n))
    return {
        "tensor": x,
        # its own generator: a DataLoader draws each iterator's base seed from it (else
        # from the global RNG, which is the loader's doing, not jacspec's)
        "loader_bs1": DataLoader(TensorDataset(x, y), batch_size=1,
                                 generator=torch.Generator().manual_seed(0)),
        "single": x[:1],
    }


@pytest.mark.parametrize("data", ["tensor", "loader_bs1", "single"])
def test_train_mode_batchnorm_and_dropout_refused_at_any_batch_size(data):
    model = cases.build("cnn").train()
    before, rng = _state(model), torch.get_rng_state()
    training = [m.training for m in model.modules()]
    with pytest.raises(ValueError, match=r"'features\.1' \(BatchNorm2d.*'features\.3' "
                                         r"\(Dropout\(p=0\.3\).*model\.eval\(\)"):
        jacspec.jacobians(model, _loaders()[data])
    _assert_untouched(model, before, rng, training)


@pytest.mark.parametrize("data", ["loader_bs1", "single"])
def test_train_mode_dropout_alone_refused_at_batch_one(data):
    model = cases.build("cnn")  # eval mode
    model.features[3].train()  # only the Dropout left in training mode
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"'features\.3' \(Dropout.*model\.eval\(\)"):
        jacspec.jacobians(model, _loaders()[data])
    assert torch.equal(torch.get_rng_state(), rng)


def test_train_mode_refusal_through_analyze_leaves_model_untouched():
    model = cases.build("resnet").train()
    before, rng = _state(model), torch.get_rng_state()
    training = [m.training for m in model.modules()]
    with pytest.raises(ValueError, match=r"BatchNorm2d in training mode.*model\.eval\(\)"):
        jacspec.analyze(model, torch.as_tensor(cases.inputs("resnet", 4)))
    _assert_untouched(model, before, rng, training)


def test_batchnorm_without_running_stats_is_refused_in_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8,
                          track_running_stats=False), nn.Linear(8, 3)).eval()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        jacspec.jacobians(model, torch.randn(1, 64))


def test_eval_mode_models_report_no_training_layers():
    for arch in ("cnn", "resnet", "transformer", "mlp"):
        assert training_mode_layers(cases.build(arch)) == []
    mha = nn.MultiheadAttention(8, 2, dropout=0.1)
    assert training_mode_layers(mha.eval()) == []
    assert "draws random masks" in training_mode_layers(mha.train())[0]


class Mixer(nn.Module):
    """Batch-mixing no module type reveals: functional batch norm with a running buffer it
    updates, and functional dropout drawing from the global RNG."""

    def __init__(self, d: int = 64, k: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(d, k)
        self.register_buffer("running", torch.zeros(k))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        self.calls += 1
        self.running.mul_(0.9).add_(0.1 * z.detach().mean(0))
        z = z - z.mean(0, keepdim=True) + 0.01 * F.dropout(z, 0.5, training=True)
        return z


@pytest.mark.parametrize("data", ["tensor", "loader_bs1", "single"])
def test_probe_catches_hidden_mixing_and_restores_buffers_and_rng(data):
    torch.manual_seed(0)
    model = Mixer().eval()
    before, rng = _state(model), torch.get_rng_state()
    training = [m.training for m in model.modules()]
    with pytest.raises(ValueError, match="mixes examples"):
        jacspec.jacobians(model, _loaders()[data])
    _assert_untouched(model, before, rng, training)


def test_check_batch_independence_keeps_its_signature():
    fn = output_map("softmax")
    model = cases.build("cnn", dtype=torch.float64)
    x = torch.as_tensor(cases.inputs("cnn", 3), dtype=torch.float64)
    assert check_batch_independence(model, fn, x) is None
    with pytest.raises(ValueError, match="BatchNorm2d"):
        check_batch_independence(model.train(), fn, x[:1])


def _train_mode_export(path):
    model = cases.build("cnn")
    model.features[3].p = 0.0  # batch statistics only: the program mixes examples
    model.train()
    x = torch.as_tensor(cases.inputs("cnn", 4))
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(ep, str(path))
    return path


def test_exported_train_mode_program_refused_with_batch_one_loader(tmp_path):
    model = load_model(_train_mode_export(tmp_path / "train.pt2"))
    before, rng = _state(model), torch.get_rng_state()
    with pytest.raises(ValueError, match="mixes examples.*export or trace the model after"):
        jacspec.jacobians(model, _loaders()["loader_bs1"])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_cli_exported_train_mode_program_exit_2(tmp_path, capsys):
    path = _train_mode_export(tmp_path / "train.pt2")
    data = tmp_path / "data.npz"
    np.savez(data, x=cases.inputs("cnn", 6), y=cases.labels(6))
    rc = main(["analyze", str(path), "--data", str(data), "--dtype", "float64"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "mixes examples" in err


def test_scripted_train_mode_batchnorm_refused_at_batch_one():
    scripted = torch.jit.script(cases.build("cnn")).train()
    with pytest.raises(ValueError, match=r"'features\.1' \(BatchNorm2d.*model\.eval\(\)"):
        jacspec.jacobians(scripted, _x(1))


def test_eval_model_still_matches_reference_at_batch_one():
    model = cases.build("cnn", dtype=torch.float64)
    x = torch.as_tensor(cases.inputs("cnn", 3), dtype=torch.float64)
    loader = DataLoader(TensorDataset(x), batch_size=1)
    jac = jacspec.jacobians(model, loader)
    ref = cases.reference_jacobians(model, x)
    torch.testing.assert_close(jac, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
