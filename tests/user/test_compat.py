"""Compatibility matrix: every model format x every data form x float32/float64 x
softmax/logits, through the API and the CLI, against an independent autograd reference.

The reference is ``torch.autograd.functional.jacobian`` of the *eager* float64 model, one
example at a time (``cases.reference_jacobians``); eigenvalues of ``M/n = 𝒥𝒥^T/n`` come
from ``numpy.linalg.eigvalsh`` on the reference rows. Nothing here calls jacspec to build
an expected value.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cases
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import jacspec
from jacspec.cli.main import main

ARCHS = ("resnet", "transformer", "cnn")
FORMATS = ("module", "trace", "script", "export", "pickle", "factory", "compile")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
OUTPUTS = ("softmax", "logits")
N = 5


def _tol(dtype: str) -> dict[str, float]:
    return {"rtol": 1e-9, "atol": 1e-11} if dtype == "float64" else {"rtol": 2e-3, "atol": 2e-5}


def _ref_eigs(ref: torch.Tensor) -> np.ndarray:
    rows = ref.reshape(ref.shape[0], -1).double().numpy()
    return np.sort(np.linalg.eigvalsh(rows @ rows.T / rows.shape[0]))[::-1]


def _compare_eigs(got: list[float] | np.ndarray, ref: np.ndarray, dtype: str) -> None:
    got = np.sort(np.asarray(got, dtype=np.float64))[::-1]
    m = min(len(got), len(ref))
    assert m >= 1
    scale = float(ref[0])
    rel = 1e-8 if dtype == "float64" else 2e-3
    np.testing.assert_allclose(got[:m], ref[:m], rtol=0, atol=rel * scale)
    # Anything beyond the reference's length (the dual side's extra zeros) is zero.
    assert np.all(np.abs(got[m:]) <= rel * scale)


# --------------------------------------------------------------------------- model formats

FACTORY_SOURCE = '''
import cases
import torch


def make(name="resnet", scale=1.0):
    model = cases.build(name)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model
'''


def _perturbed(arch: str) -> nn.Module:
    """The eager reference model: the shared architecture with weights the factory's
    defaults do not produce (so --weights must really be loaded)."""
    model = cases.build(arch, seed=3)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _write_format(fmt: str, arch: str, model: nn.Module, folder: Path) -> str:
    """Write ``model`` in format ``fmt`` under ``folder``; return what a user passes as MODEL
    (plus ' --weights FILE' for the factory)."""
    shape = (3, 8, 8) if arch == "resnet3" else cases.INPUT_SHAPES[arch]
    example = torch.from_numpy(np.random.default_rng(0).standard_normal((3, *shape))).float()
    if fmt == "trace":
        path = folder / f"{arch}_trace.pt"
        # check_trace=False: the sanity re-run compares graphs, which differ for
        # nn.MultiheadAttention's fast path even though the traced numbers are right.
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(path))
        return str(path)
    if fmt == "script":
        path = folder / f"{arch}_script.pt"
        torch.jit.save(torch.jit.script(model), str(path))
        return str(path)
    if fmt == "export":
        path = folder / f"{arch}_export.pt2"
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
        return str(path)
    if fmt == "pickle":
        path = folder / f"{arch}_pickle.pt"
        torch.save(model, path)
        return str(path)
    if fmt == "factory":
        (folder / "compat_models.py").write_text(FACTORY_SOURCE)
        weights = folder / f"{arch}_state.pt"
        torch.save(model.state_dict(), weights)
        return f"compat_models:make(name={arch!r}) --weights {weights}"
    raise AssertionError(fmt)


def _api_model(fmt: str, arch: str, model: nn.Module, folder: Path) -> nn.Module:
    """The model as a user holds it after loading format ``fmt``."""
    if fmt == "module":
        return model
    if fmt == "compile":
        return torch.compile(model)
    spec = _write_format(fmt, arch, model, folder)
    target, _, rest = spec.partition(" --weights ")
    return jacspec.load_model(target, weights=rest or None, trust=fmt == "pickle")


@pytest.fixture(scope="module")
def references() -> dict[tuple[str, str], torch.Tensor]:
    out = {}
    for arch in ARCHS:
        ref_model = _perturbed(arch).double()
        x = torch.from_numpy(cases.inputs(arch, N)).double()
        for output in OUTPUTS:
            out[arch, output] = cases.reference_jacobians(ref_model, x, output)
    return out


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_api_model_formats(fmt, arch, dtype, output, references, tmp_path, monkeypatch):
    """jacspec.jacobians on each format equals autograd on the eager float64 model."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = _perturbed(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = _api_model(fmt, arch, model, tmp_path)
    x = torch.from_numpy(cases.inputs(arch, N))
    jac = jacspec.jacobians(loaded, x, output=output, dtype=DTYPES[dtype])
    ref = references[arch, output]
    assert jac.dtype == DTYPES[dtype]
    torch.testing.assert_close(jac.double(), ref, **_tol(dtype))
    # The user's model is untouched (weights, buffers, mode).
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# --------------------------------------------------------------------------- data forms


class _ItemDataset(torch.utils.data.Dataset):
    """A map-style Dataset of ``(x, y)`` items, as users write them."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i]), int(self.y[i])


def _data_form(form: str, x: np.ndarray, y: np.ndarray):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return {
        "tensor": lambda: xt,
        "ndarray": lambda: x,
        "tuple": lambda: (xt, yt),
        "list": lambda: [xt, yt],
        "ndarray_list": lambda: [x, y],
        "dataset": lambda: _ItemDataset(x, y),
        "tensordataset": lambda: TensorDataset(xt, yt),
        "loader": lambda: DataLoader(TensorDataset(xt, yt), batch_size=2),
        "loader_shuffle": lambda: DataLoader(
            TensorDataset(xt, yt), batch_size=2, shuffle=True,
            generator=torch.Generator().manual_seed(0)),
        "loader_bs1": lambda: DataLoader(TensorDataset(xt, yt), batch_size=1),
        "jacspec_dataset": lambda: jacspec.DataSet(x=xt, y=yt, num_classes=10, name="user"),
    }[form]()


DATA_FORMS = ("tensor", "ndarray", "tuple", "list", "ndarray_list", "dataset",
              "tensordataset", "loader", "loader_shuffle", "loader_bs1", "jacspec_dataset")
ORDERED = set(DATA_FORMS) - {"loader_shuffle"}


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("form", DATA_FORMS)
@pytest.mark.parametrize("arch", ("cnn", "mlp"))
def test_api_data_forms(arch, form, dtype, output):
    """Every data form gives the reference Jacobians (in order) and the reference ESD."""
    model = cases.build(arch, seed=5)
    x = cases.inputs(arch, N, seed=2)
    y = cases.labels(N, seed=2)
    ref = cases.reference_jacobians(model.double(), torch.from_numpy(x).double(), output)
    model = cases.build(arch, seed=5)
    data = _data_form(form, x, y)
    if form in ORDERED:
        jac = jacspec.jacobians(model, data, output=output, dtype=DTYPES[dtype])
        assert jac.shape == ref.shape
        torch.testing.assert_close(jac.double(), ref, **_tol(dtype))
    e = jacspec.esd(model, _data_form(form, x, y), output=output, dtype=DTYPES[dtype])
    _compare_eigs(e.eigenvalues, _ref_eigs(ref), dtype)


def test_api_one_shot_generator_single_pass():
    """A generator of batches is fine for one pass (jacobians)."""
    model = cases.build("mlp", seed=1)
    x = torch.from_numpy(cases.inputs("mlp", N))
    ref = cases.reference_jacobians(model.double(), x.double(), "softmax")
    model = cases.build("mlp", seed=1)
    jac = jacspec.jacobians(model, (x[i : i + 2] for i in range(0, N, 2)), dtype=torch.float64)
    torch.testing.assert_close(jac, ref, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- CLI

def _write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, x=x, y=y, x_test=x, y_test=y)
    return str(path)


def _idx(path: Path, arr: np.ndarray) -> None:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.tobytes())


def _cli_data(kind: str, folder: Path) -> tuple[list[str], np.ndarray, str]:
    """Write data of ``kind`` in its on-disk format; return (CLI args, the float inputs the
    model sees, the architecture that takes them)."""
    rng = np.random.default_rng(4)
    y = cases.labels(N, seed=4)
    if kind == "npz_flat":
        x = rng.standard_normal((N, 64)).astype(np.float32)
        return ["--data", _write_npz(folder / "flat.npz", x, y)], x, "mlp"
    if kind == "npz_images":
        x = rng.standard_normal((N, 1, 8, 8)).astype(np.float32)
        return ["--data", _write_npz(folder / "images.npz", x, y)], x, "resnet"
    if kind == "npz_uint8":
        raw = rng.integers(0, 256, size=(N, 1, 8, 8), dtype=np.uint8)
        path = _write_npz(folder / "uint8.npz", raw, y)
        return ["--data", path], raw.astype(np.float32) / 255.0, "resnet"
    if kind == "idx":
        raw = rng.integers(0, 256, size=(N, 28, 28), dtype=np.uint8)
        _idx(folder / "t10k-images-idx3-ubyte", raw)
        _idx(folder / "t10k-labels-idx1-ubyte", y.astype(np.uint8))
        x = (raw[:, None].astype(np.float32) / 255.0)[:, :, 10:18, 10:18]
        return ["--data", "mnist", "--data-root", str(folder), "--split", "test",
                "--crop", "8"], x, "resnet"
    if kind == "cifar":
        raw = rng.integers(0, 256, size=(N, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([y.astype(np.uint8)[:, None], raw.reshape(N, -1)], axis=1)
        sub = folder / "cifar-10-batches-bin"
        sub.mkdir()
        (sub / "test_batch.bin").write_bytes(records.tobytes())
        x = (raw.astype(np.float32) / 255.0)[:, :, 12:20, 12:20]
        return ["--data", "cifar10", "--data-root", str(folder), "--split", "test",
                "--crop", "8"], x, "resnet3"
    raise AssertionError(kind)


def _cli_reference_model(arch: str) -> nn.Module:
    if arch == "resnet3":
        torch.manual_seed(3)
        return cases.ResNetTiny(in_channels=3).eval()
    return _perturbed(arch)


CLI_FORMATS = ("trace", "script", "export", "pickle", "factory", "checkpoint")
CLI_DATA = ("npz_flat", "npz_images", "npz_uint8", "idx", "cifar")
#: (format, data) pairs: the pickled and factory formats build the one-channel architectures,
#: so they pair with every data form but the three-channel CIFAR files.
CLI_CASES = [(fmt, kind) for fmt in CLI_FORMATS for kind in CLI_DATA
             if not (fmt in ("pickle", "factory") and kind == "cifar")]


def _model_arg(fmt: str, arch: str, model: nn.Module, folder: Path) -> list[str]:
    if fmt == "checkpoint":
        return [str(folder / "jacspec_ckpt.pt")]
    spec = _write_format(fmt, arch, model, folder)
    target, _, weights = spec.partition(" --weights ")
    return [target, "--weights", weights] if weights else (
        [target, "--trust"] if fmt == "pickle" else [target])


def _checkpoint_model(x: np.ndarray, folder: Path) -> nn.Module:
    """A jacspec-built model for the data's input shape, saved as a jacspec checkpoint."""
    shape = list(x.shape[1:])
    if len(shape) == 1:
        spec = {"kind": "mlp", "input_shape": shape, "num_classes": 10, "width": 12,
                "activation": "tanh", "seed": 1}
    else:
        spec = {"kind": "cnn", "input_shape": shape, "num_classes": 10, "channels": [3],
                "activation": "tanh", "seed": 1}
    model = jacspec.build_model(spec)
    jacspec.save_checkpoint(folder / "jacspec_ckpt.pt", model, spec)
    return model.eval()


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("fmt,kind", CLI_CASES)
def test_cli_formats_and_files(fmt, kind, dtype, output, tmp_path, monkeypatch, capsys):
    """`jacspec analyze MODEL --data FILE --dtype D --output O --json` gives the reference ESD."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    data_args, x, arch = _cli_data(kind, tmp_path)
    if fmt == "checkpoint":
        model = _checkpoint_model(x, tmp_path)
    else:
        model = _cli_reference_model(arch)
    model_args = _model_arg(fmt, arch, model, tmp_path)
    out = tmp_path / "out.json"
    rc = main(["analyze", *model_args, *data_args, "--dtype", dtype, "--output", output,
               "--no-randomize", "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    payload = json.loads(out.read_text())
    ref = cases.reference_jacobians(model.double(), torch.from_numpy(x).double(), output)
    _compare_eigs(payload["eigenvalues"], _ref_eigs(ref), dtype)
    assert payload["settings"]["output"] == output
