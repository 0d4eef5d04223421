"""Bad input ends in one clear line: exit code 2 on the CLI, ValueError/TypeError in the API."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jacspec
from jacspec.cli.main import main
from jacspec.models.builders import build_model, save_checkpoint

SPEC = {"kind": "mlp", "input_shape": [64], "num_classes": 10, "width": 16, "depth": 1}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "digits_mlp.pt"
    save_checkpoint(path, build_model(SPEC), SPEC)
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(args))
    err = capsys.readouterr().err.strip()
    return int(info.value.code), err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert "error" in last
    for needle in needles:
        assert needle.lower() in last.lower(), last


class Scalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)  # (batch, 1): not k >= 2 classes


class ThreeD(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], 2, -1)


class Code(nn.Module):  # a module class only unpicklable with code execution
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ------------------------------------------------------------------------------- API


def mlp64() -> nn.Module:
    return build_model(SPEC).eval()


API_CASES = {
    "input shape the model rejects": (
        lambda: jacspec.jacobians(mlp64(), torch.randn(4, 40)),
        ValueError,
        "rejected inputs of shape",
    ),
    "output with one class": (
        lambda: jacspec.jacobians(Scalar(), torch.randn(4, 6)),
        ValueError,
        "k >= 2",
    ),
    "3-D output": (
        lambda: jacspec.jacobians(ThreeD(), torch.randn(4, 6)),
        ValueError,
        "expected (batch, k)",
    ),
    "NaN in data": (
        lambda: jacspec.jacobians(mlp64(), torch.full((3, 64), float("nan"))),
        ValueError,
        "NaN or Inf",
    ),
    "Inf in data": (
        lambda: jacspec.esd(mlp64(), torch.full((3, 64), float("inf"))),
        ValueError,
        "NaN or Inf",
    ),
    "integer inputs": (
        lambda: jacspec.jacobians(mlp64(), torch.ones(3, 64, dtype=torch.int64)),
        TypeError,
        "floating point",
    ),
    "empty data": (lambda: jacspec.esd(mlp64(), torch.empty(0, 64)), ValueError, "empty"),
    "unknown output": (
        lambda: jacspec.jacobians(mlp64(), torch.randn(3, 64), output="probs"),
        ValueError,
        "output='probs'",
    ),
    "unknown scale": (
        lambda: jacspec.esd(mlp64(), torch.randn(3, 64), scale="sqrt"),
        ValueError,
        "scale='sqrt'",
    ),
    "unknown side": (
        lambda: jacspec.gram(mlp64(), torch.randn(3, 64), side="left"),
        ValueError,
        "side='left'",
    ),
    "float16 dtype": (
        lambda: jacspec.jacobians(mlp64(), torch.randn(3, 64), dtype=torch.float16),
        ValueError,
        "dtype",
    ),
    "not a module": (
        lambda: jacspec.jacobians(lambda x: x, torch.randn(3, 64)),
        TypeError,
        "nn.Module",
    ),
    "labels of wrong length": (
        lambda: jacspec.esd(mlp64(), (torch.randn(5, 64), torch.zeros(4))),
        ValueError,
        "must match",
    ),
    "bad batch size": (
        lambda: jacspec.jacobians(mlp64(), torch.randn(3, 64), batch_size=0),
        ValueError,
        "batch_size",
    ),
    "Gram that would not fit": (
        lambda: jacspec.gram(mlp64(), torch.randn(700, 64), side="dual", max_memory=10_000),
        ValueError,
        "needs about",
    ),
    "strings as data": (lambda: jacspec.esd(mlp64(), "digits"), TypeError, "not supported"),
    "unknown data set": (lambda: jacspec.load_dataset("imagenet"), ValueError, "imagenet"),
    "analyze: unknown method": (
        lambda: jacspec.analyze(mlp64(), torch.randn(3, 64), method="x"),
        ValueError,
        "method='x'",
    ),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_bad_input(case: str) -> None:
    call, exc, needle = API_CASES[case]
    with pytest.raises(exc) as info:
        call()
    assert needle.lower() in str(info.value).lower()
    assert len(str(info.value).splitlines()) == 1


# ------------------------------------------------------------------------------- CLI


def test_cli_wrong_input_shape(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["analyze", str(ckpt), "--data", "mnist1d", "--n", "20"], capsys)
    assert_one_line_error(code, err, "rejected inputs of shape (40,)")


def test_cli_nan_in_npz(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).normal(size=(10, 64)).astype(np.float32)
    x[3, 5] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(10) % 10)
    code, err = run_cli(["analyze", str(ckpt), "--data", str(tmp_path / "bad.npz")], capsys)
    assert_one_line_error(code, err, "nan")


def test_cli_unknown_dataset(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["analyze", str(ckpt), "--data", "imagenet"], capsys)
    assert_one_line_error(code, err, "imagenet")


def test_cli_unknown_output(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["analyze", str(ckpt), "--data", "digits", "--output", "probs"], capsys)
    assert_one_line_error(code, err, "--output")


def test_cli_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["analyze", str(tmp_path / "nope.pt"), "--data", "digits"], capsys)
    assert_one_line_error(code, err, "does not exist")


def test_cli_corrupt_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00\x01 this is not a torch file")
    code, err = run_cli(["analyze", str(bad), "--data", "digits"], capsys)
    assert_one_line_error(code, err, "corrupt")


def test_cli_checkpoint_needing_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pickled_module.pt"
    torch.save(Code(), path)
    code, err = run_cli(["analyze", str(path), "--data", "digits"], capsys)
    assert_one_line_error(code, err, "unpickled", "--trust")


def test_cli_plain_pickle_is_not_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "jacspec-checkpoint", "obj": Code()}))
    code, err = run_cli(["analyze", str(path), "--data", "digits"], capsys)
    assert code == 2 and "Traceback" not in err


def test_cli_gram_too_big(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(
        ["analyze", str(ckpt), "--data", "digits", "--side", "dual", "--max-memory-gib", "1e-5"],
        capsys,
    )
    assert_one_line_error(code, err, "needs about")


def test_cli_bad_factory(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["analyze", "no_such_pkg.models:make", "--data", "digits"], capsys)
    assert_one_line_error(code, err, "cannot import")


def test_cli_unknown_layer(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(
        ["analyze", str(ckpt), "--data", "digits", "--n", "30", "--layers", "fc9"], capsys
    )
    assert_one_line_error(code, err, "not modules of the model")


def test_cli_missing_data_folder(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(
        ["analyze", str(ckpt), "--data", "mnist", "--data-root", str(tmp_path / "empty")], capsys
    )
    assert_one_line_error(code, err)
