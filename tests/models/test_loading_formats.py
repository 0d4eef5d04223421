"""Model formats a user brings, through the API and the CLI (issue 9, defects 2-5).

- TorchScript (trace and script) analysed in float64;
- ``torch.export`` programs: guard failures (fixed batch, wrong shape) are one clear
  ValueError / one CLI line with exit 2, and nothing calls ``.eval()`` on them;
- ``module:factory`` from the working folder, with literal arguments; ``--trust`` on a
  pickled model whose class module is missing names that module;
- ``torch.compile``d models are computed through their eager module.

Jacobians are compared with ``cases.reference_jacobians`` (``torch.autograd.functional``
on the eager float64 model, one example at a time); the CLI's eigenvalues of
``M/n = 𝒥𝒥^T/n`` with ``numpy.linalg.eigvalsh`` of the reference rows.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path

import cases
import numpy as np
import pytest
import torch

import jacspec
from jacspec.cli.main import main
from jacspec.models.loading import load_model

N = 6
RTOL = 1e-10


def _x64(arch: str, n: int = N) -> torch.Tensor:
    return torch.as_tensor(cases.inputs(arch, n), dtype=torch.float64)


def _reference(arch: str, x: torch.Tensor, output: str = "softmax") -> torch.Tensor:
    return cases.reference_jacobians(cases.build(arch, dtype=torch.float64), x, output)


def _assert_close(jac: torch.Tensor, ref: torch.Tensor) -> None:
    assert jac.dtype == torch.float64
    scale = float(ref.abs().max())
    torch.testing.assert_close(jac, ref, rtol=RTOL, atol=RTOL * scale)


def _npz(tmp_path: Path, arch: str = "cnn", n: int = N) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, x=cases.inputs(arch, n), y=cases.labels(n))
    return path


def _cli_eigs_match(out: Path, arch: str, n: int = N, top: int = 4) -> None:
    """The CLI's top eigenvalues of M/n against eigvalsh of the reference rows."""
    ref = _reference(arch, _x64(arch, n)).reshape(n, -1).numpy()
    expected = np.sort(np.linalg.eigvalsh(ref @ ref.T / n))[::-1][:top]
    got = np.asarray(json.loads(out.read_text())["eigenvalues"][:top])
    np.testing.assert_allclose(got, expected, rtol=1e-8)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# --- defect 2: TorchScript in float64 ------------------------------------------------------


def _save_script(kind: str, arch: str, path: Path) -> Path:
    model = cases.build(arch)
    x = torch.as_tensor(cases.inputs(arch, 4))
    scripted = torch.jit.trace(model, x) if kind == "trace" else torch.jit.script(model)
    torch.jit.save(scripted, str(path))
    return path


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
@pytest.mark.parametrize("kind", ["trace", "script"])
def test_torchscript_float64_equals_reference(kind, arch, tmp_path):
    model = load_model(_save_script(kind, arch, tmp_path / "m.pt"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x64(arch)
    _assert_close(jacspec.jacobians(model, x, dtype=torch.float64), _reference(arch, x))
    # the user's ScriptModule is untouched: float32 leaf parameters, same values
    assert all(p.dtype == torch.float32 and p.is_leaf for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kind", ["trace", "script"])
def test_cli_torchscript_float64(kind, tmp_path, capsys):
    path = _save_script(kind, "cnn", tmp_path / "m.pt")
    out = tmp_path / "out.json"
    rc = main(["analyze", str(path), "--data", str(_npz(tmp_path)), "--dtype", "float64",
               "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    _cli_eigs_match(out, "cnn")


# --- defect 3: torch.export ----------------------------------------------------------------


def _export(arch: str, path: Path, *, dynamic: bool, train: bool = False) -> Path:
    model = cases.build(arch)
    if train:
        model.train()
    x = torch.as_tensor(cases.inputs(arch, 4))
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(path))
    return path


def test_export_dynamic_batch_float64_equals_reference(tmp_path):
    model = load_model(_export("cnn", tmp_path / "m.pt2", dynamic=True))
    x = _x64("cnn", 5)
    _assert_close(jacspec.jacobians(model, x, dtype=torch.float64), _reference("cnn", x))


def test_export_fixed_batch_is_one_clear_error(tmp_path):
    model = load_model(_export("cnn", tmp_path / "m.pt2", dynamic=False))
    with pytest.raises(ValueError, match=r"fixed batch of 4.*dynamic_shapes=.*Dim\(\"batch\"\)"):
        jacspec.jacobians(model, _x64("cnn", 5))


def test_export_wrong_input_shape_names_the_expected_shape(tmp_path):
    model = load_model(_export("cnn", tmp_path / "m.pt2", dynamic=True))
    x = torch.randn(3, 1, 9, 9)
    with pytest.raises(ValueError, match=r"accepts inputs of shape \(batch, 1, 8, 8\)"):
        jacspec.jacobians(model, x)


def test_cli_export_fixed_batch_exit_2(tmp_path, capsys):
    path = _export("cnn", tmp_path / "m.pt2", dynamic=False)
    rc = main(["analyze", str(path), "--data", str(_npz(tmp_path)), "--dtype", "float64"])
    assert rc == 2
    assert "dynamic_shapes" in _one_line_error(capsys)


def test_cli_export_float64_analyze_and_sensitivity(tmp_path, capsys):
    path = _export("cnn", tmp_path / "m.pt2", dynamic=True)
    data = str(_npz(tmp_path))
    out = tmp_path / "out.json"
    rc = main(["analyze", str(path), "--data", data, "--dtype", "float64", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    _cli_eigs_match(out, "cnn")
    # jacspec sensitivity must not call .eval() (exported modules raise NotImplementedError on
    # it); its per-point part runs on the program, and what it cannot do is one line, exit 2
    rc = main(["sensitivity", str(path), "--data", data, "--split", "train", "--points", "4",
               "--refine", "2", "--kinds", "random", "--image-shape", "8,8",
               "--json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 0 or (rc == 2 and len(err.strip().splitlines()) == 1 and "eval" not in err), err


# --- defect 4: module:factory and pickled models ---------------------------------------------

FACTORY_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=4, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width * 64, classes)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def make(width=4, classes=10):
    torch.manual_seed(0)
    return Net(width, classes)
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A working folder holding the user's module (unique name), not on sys.path."""
    name = f"usernet_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / f"{name}.py").write_text(FACTORY_SOURCE)
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(folder))])
    yield name, folder
    sys.modules.pop(name, None)


@pytest.mark.filterwarnings("ignore::jacspec.models.loading.RandomWeightsWarning")
def test_factory_from_working_folder_with_arguments(user_folder):
    name, folder = user_folder
    path_before = list(sys.path)
    model = load_model(f"{name}:make")
    assert model.conv.out_channels == 4 and not model.training
    model = load_model(f"{name}:make(6, classes=3)")
    assert (model.conv.out_channels, model.fc.out_features) == (6, 3)
    model = load_model(f"{name}:Net(width=5)")
    assert model.conv.out_channels == 5
    assert sys.path == path_before  # the working folder was on sys.path only for the import


def test_factory_arguments_are_literals_never_code(user_folder):
    name, folder = user_folder
    marker = folder / "pwned"
    bad = f"{name}:make(width=__import__('pathlib').Path({str(marker)!r}).touch())"
    with pytest.raises(ValueError, match="is not a literal"):
        load_model(bad)
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"\*args and \*\*kwargs"):
        load_model(f"{name}:make(**{{'width': 3}})")
    with pytest.raises(ValueError, match="unexpected keyword argument 'wide'"):
        load_model(f"{name}:make(wide=3)")
    from jacspec.models.loading import parse_factory

    assert parse_factory("a.b:f(1, 'x', k=(2, 3.5), d={'u': None})") == (
        "a.b", "f", (1, "x"), {"k": (2, 3.5), "d": {"u": None}})


def test_factory_missing_module_says_where_it_looked(user_folder):
    name, folder = user_folder
    with pytest.raises(ValueError, match=r"no module 'nosuchmod_x' in the working folder"):
        load_model("nosuchmod_x:make")


def test_cli_factory_with_arguments_and_weights(user_folder, tmp_path, capsys):
    name, folder = user_folder
    sys.path.insert(0, str(folder))
    try:
        module = __import__(name)
        net = module.make(width=6)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # weights that differ from the factory's
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    out = tmp_path / "out.json"
    rc = main(["analyze", f"{name}:make(width=6)", "--weights", str(weights),
               "--data", str(_npz(tmp_path)), "--dtype", "float64", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    ref = cases.reference_jacobians(net.double().eval(), _x64("cnn")).reshape(N, -1).numpy()
    expected = np.sort(np.linalg.eigvalsh(ref @ ref.T / N))[::-1][:4]
    got = np.asarray(json.loads(out.read_text())["eigenvalues"][:4])
    np.testing.assert_allclose(got, expected, rtol=1e-8)


def _pickled_model(user_folder, path: Path) -> tuple[str, Path]:
    name, folder = user_folder
    sys.path.insert(0, str(folder))
    try:
        torch.save(__import__(name).make(), path)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)
    return name, path


def test_trust_pickled_model_names_missing_module(user_folder, tmp_path, monkeypatch, capsys):
    name, path = _pickled_model(user_folder, tmp_path / "whole.pt")
    model = load_model(path, trust=True)  # in the folder holding its module: importable
    assert type(model).__name__ == "Net" and not model.training
    sys.modules.pop(name, None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ValueError, match=rf"module '{name}'.*make it importable"):
        load_model(path, trust=True)
    rc = main(["analyze", str(path), "--trust", "--data", str(_npz(tmp_path))])
    assert rc == 2
    err = _one_line_error(capsys)
    assert name in err and "corrupt" not in err


def test_trust_pickled_model_from_main_names_the_class(tmp_path):
    path = tmp_path / "main.pt"
    model = cases.CNNBNDropout()
    cls = type("LocalNet", (cases.CNNBNDropout,), {"__module__": "__main__"})
    model.__class__ = cls
    sys.modules["__main__"].LocalNet = cls
    try:
        torch.save(model, path)
    finally:
        delattr(sys.modules["__main__"], "LocalNet")
    pattern = r"class 'LocalNet' is not defined in module '[\w.]*__main__'"
    with pytest.raises(ValueError, match=pattern):
        load_model(path, trust=True)


# --- defect 5: torch.compile -----------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["auto", "batched_grad", "loop"])
def test_compiled_model_is_unwrapped(arch, method, caplog):
    eager = cases.build(arch, dtype=torch.float64)
    compiled = torch.compile(eager)  # construction is lazy: nothing is compiled here
    x = _x64(arch)
    with caplog.at_level(logging.INFO, logger="jacspec.jacobian.engine"):
        jac = jacspec.jacobians(compiled, x, method=method)
    _assert_close(jac, _reference(arch, x))
    assert any("torch.compile" in r.getMessage() for r in caplog.records)


def test_compiled_model_analyze_and_per_point():
    eager = cases.build("cnn", dtype=torch.float64)
    compiled = torch.compile(eager)
    x = _x64("cnn")
    result = jacspec.analyze(compiled, x)
    ref = _reference("cnn", x).reshape(N, -1).numpy()
    expected = np.sort(np.linalg.eigvalsh(ref @ ref.T / N))[::-1][:4]
    np.testing.assert_allclose(np.sort(result.esds["input->output"].eigenvalues)[::-1][:4],
                               expected, rtol=1e-8)
    from jacspec.sensitivity.norms import per_point_generalization

    per_point = per_point_generalization(compiled, (x, torch.as_tensor(cases.labels(N))))
    norms = np.linalg.norm(ref, axis=1)
    np.testing.assert_allclose(per_point.frame["jacobian_norm"].to_numpy(), norms, rtol=1e-8)
