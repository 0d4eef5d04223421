"""One home, second step (issue 20): one list of analyze's columns that the Tracker and the
figures read, one "leave the model as it was" helper, one class-sum-zero basis, and the
CLI's --dtype/--batch-size/--device defined once."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jacspec
from jacspec.analysis.columns import ROW_INFO, ROW_METRICS
from jacspec.cli.main import main
from jacspec.jacobian.model_prep import untouched
from jacspec.models.builders import build_model, save_checkpoint
from jacspec.track.tracker import DEFAULT_METRICS, METRICS, Tracker

PACKAGE = Path(__file__).resolve().parents[2] / "jacspec"
SPEC = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 12, "depth": 1}


@pytest.fixture(scope="module")
def digits():
    return jacspec.load_dataset("digits", n=40, seed=0)


@pytest.fixture(scope="module")
def small() -> nn.Module:
    return jacspec.mlp(64, 10, width=12, depth=1, seed=0).double().eval()


# ------------------------------------------------------------- one list of columns


def test_every_tracker_metric_is_a_column_of_analyze(digits, small):
    """The Tracker's metrics are analyze's numeric columns (computed here), plus the norm."""
    table = jacspec.analyze(small, digits, dtype=torch.float64, randomize=True).table
    numeric = [c for c in table.columns if c not in ROW_INFO]
    assert set(METRICS) - {"jacobian_norm"} == set(numeric)
    assert set(table.columns) == set(ROW_INFO) | set(ROW_METRICS)
    assert "lambda_plus" in METRICS and "mp_lambda_plus" not in METRICS


def test_tracker_records_analyzes_values_and_the_trace_by_autograd(digits, small):
    """Recorded values equal analyze's row (same probe, same seed: nothing is NaN that analyze
    computed), and the trace is sum_i ||J_i||_F^2 / n with J_i from autograd."""
    wanted = ("lambda_plus", "alpha", "trace", "lambda_max", "rand_distance", "mp_sigma2")
    row = Tracker(digits, wanted, every=1, dtype=torch.float64).step(small, 0)
    main_row = jacspec.analyze(small, digits, dtype=torch.float64, randomize=True,
                               seed=0).table.loc["input->output"]
    for m in wanted:
        np.testing.assert_allclose(row[m], main_row[m], rtol=1e-10, equal_nan=False,
                                   err_msg=m)
    x = digits.x.double()
    jac = torch.stack([torch.autograd.functional.jacobian(
        lambda z: torch.softmax(small(z[None]), dim=1)[0], xi) for xi in x])
    np.testing.assert_allclose(row["trace"], float((jac ** 2).sum()) / len(x), rtol=1e-9)
    assert np.isfinite(row["lambda_plus"])  # the old mp_lambda_plus was always NaN


def test_unknown_metric_is_one_line_naming_the_accepted_ones(digits):
    with pytest.raises(ValueError, match="'lambda_plus'") as old:
        Tracker(digits, ["mp_lambda_plus"])
    with pytest.raises(ValueError, match="choose from num_evals, rank, ") as bad:
        Tracker(digits, ["no_such_metric"])
    for exc in (old, bad):
        assert "\n" not in str(exc.value)
    assert all(m in str(bad.value) for m in METRICS)


def test_figure_and_default_lists_name_analyze_columns():
    """Every column a figure or a default names by hand is one of analyze's."""
    from jacspec.cli.commands.demo import DEMO_ROWS
    from jacspec.report.report_figures import DEFAULT_PANELS, LOG_METRICS

    for names in (DEFAULT_PANELS, LOG_METRICS, DEFAULT_METRICS[:-1]):
        assert set(names) <= set(ROW_METRICS), names
    demo = [r for r in DEMO_ROWS if r not in ("train_accuracy", "test_accuracy", "epochs")]
    assert set(demo) <= set(ROW_METRICS) | set(ROW_INFO)
    assert DEFAULT_METRICS[-1] == "jacobian_norm"


# ------------------------------------------------------------- one "as it was" helper


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.fc(x)))


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "objects": dict(model.state_dict(keep_vars=True)),
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "req": {n: p.requires_grad for n, p in model.named_parameters()},
        "flags": [m.training for m in model.modules()],
    }


def _same(model: nn.Module, before: dict) -> None:
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before["state"].keys()
    for k, v in after.items():
        assert v is before["objects"][k], k  # the same tensor objects
        assert torch.equal(v, before["state"][k]), k  # bit for bit
    for n, p in model.named_parameters():
        assert p.grad is before["grads"][n] and p.requires_grad == before["req"][n], n
    assert [m.training for m in model.modules()] == before["flags"]


def _meddle(model: _Net) -> None:
    model.train()
    model.bn.running_mean.add_(1.0)
    model.bn.running_var = torch.zeros(3)
    model.fc.bias = nn.Parameter(torch.ones(3))
    for p in model.parameters():
        p.grad = None
        p.requires_grad_(False)
    torch.rand(2), np.random.rand(), random.random()


def test_untouched_puts_everything_back_after_an_exception():
    torch.manual_seed(0)
    model = _Net().eval()
    model.drop.train()  # a mixed mode is kept as it was
    model(torch.randn(5, 4)).sum().backward()
    model.fc.weight.grad.mul_(2.0)
    before = _snapshot(model)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with pytest.raises(RuntimeError, match="boom"), untouched(model):
        _meddle(model)
        raise RuntimeError("boom")
    _same(model, before)
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1]) and random.getstate() == rng[2]


def test_untouched_modes_for_the_block():
    model = _Net().train()
    before = _snapshot(model)
    with untouched(model, eval_mode=True, freeze=True, no_grad=True):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        assert not torch.is_grad_enabled()
    _same(model, before)
    assert torch.is_grad_enabled()


def test_untouched_refuses_a_parameter_changed_in_place():
    """Parameters are not copied: a forward that changes one in place is named, not hidden."""
    model = _Net()
    with pytest.raises(ValueError, match="'weight' in place"):
        with untouched(model, freeze=True):
            model.fc.weight.add_(1.0)


def test_untouched_without_state_keeps_what_the_caller_does_between_batches():
    """state=False (the engine's loop, which yields to its caller): only requires_grad and
    the flags the helper itself changed are put back."""
    model = _Net()
    with untouched(model, freeze=True, state=False):
        model.bn.running_mean.add_(1.0)
        model.fc.weight.grad = torch.ones(3, 4)
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(model.bn.running_mean, torch.ones(3))
    assert torch.equal(model.fc.weight.grad, torch.ones(3, 4))


def test_engine_and_tracker_leave_a_batchnorm_model_as_it_was(digits):
    model = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 10))
    model(digits.x[:16]).sum().backward()
    model.eval()
    before = _snapshot(model)
    list(jacspec.iter_jacobians(model, digits.x[:8], batch_size=3))
    _same(model, before)
    model.train()
    before = _snapshot(model)
    Tracker(digits, ("trace", "jacobian_norm"), every=1, n=8).step(model, 0)
    _same(model, before)


def _defined(pattern: str) -> list[str]:
    return [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
            if re.search(pattern, p.read_text(), re.M)]


def test_one_as_it_was_helper_and_one_class_sum_basis():
    assert _defined(r"^\s*def (preserved_state|frozen_parameters|untouched)\(") == [
        "jacobian/model_prep.py"]
    assert not (PACKAGE / "track" / "untouched.py").exists()
    # the basis's body, under any name, once
    assert _defined(r"torch\.eye\(k, dtype=torch\.float64\) - 1\.0 / k") == [
        "jacobian/sketch_rows.py"]
    from jacspec.jacobian.source import class_sum_complement
    from jacspec.spectra.gram import class_sum_complement as from_gram

    assert from_gram is class_sum_complement
    q = class_sum_complement(5)
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(q.T @ torch.ones(5, dtype=torch.float64), 0.0, atol=1e-12)


# ------------------------------------------------------------- the CLI's --device


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dev")
    save_checkpoint(folder / "step_1.pt", build_model(SPEC), SPEC)
    return folder / "step_1.pt"


def _analyze(ckpt: Path, out: Path, *extra: str) -> dict:
    code = main(["analyze", str(ckpt), "--data", "digits", "--n", "40", "--dtype", "float64",
                 "--no-randomize", "--no-progress", "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_device_cpu_gives_the_same_numbers(ckpt, tmp_path, capsys):
    plain = _analyze(ckpt, tmp_path / "a.json")
    on_cpu = _analyze(ckpt, tmp_path / "b.json", "--device", "cpu")
    assert plain["eigenvalues"] == on_cpu["eigenvalues"]
    assert plain["metrics"] == on_cpu["metrics"]
    assert on_cpu["settings"]["jacobian"]["device"] == "cpu"
    assert plain["settings"]["jacobian"]["device"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["analyze", "sensitivity", "track"])
def test_device_cuda_without_cuda_is_one_line_exit_2(command, ckpt, capsys):
    target = str(ckpt.parent) if command == "track" else str(ckpt)
    code = main([command, target, "--data", "digits", "--n", "8", "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert "--device='cuda'" in err and "CUDA is not available" in err


def test_device_that_is_no_device_is_one_line(ckpt, capsys):
    code = main(["analyze", str(ckpt), "--data", "digits", "--n", "8", "--device", "gpu0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--device='gpu0' is not a device" in err


@pytest.mark.parametrize("command", ["analyze", "sensitivity", "track"])
def test_jacobian_options_defined_once_for_every_command(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "--device DEVICE" in text and "--batch-size" in text
    assert ("--dtype" in text) == (command != "sensitivity")
    commands = PACKAGE / "cli" / "commands"
    for path in commands.glob("*.py"):
        src = path.read_text()
        assert not re.search(r'add_argument\(\s*"--(dtype|batch-size|device)"', src), path.name
