"""User data through the CLI: a .npz reaches the model in the shape it was stored in,
``--flatten``/``--channel`` reshape it, a rejected shape says which option to try; MNIST IDX
files from a folder. Numbers are checked against per-example autograd Jacobians in float64
(the CLI runs the float32 models in float32, so to float32 round-off)."""

from __future__ import annotations

import json
from pathlib import Path

import cases
import numpy as np
import pytest
import torch
from test_datasets import write_mnist

from jacspec.cli.main import main

N = 12


def make_mlp() -> torch.nn.Module:
    """A user's MLP on flat (n, 64) features (``module:factory`` for eager-only commands)."""
    return cases.build("mlp")


def save_script(model: torch.nn.Module, path: Path, trace: bool = False,
                example: torch.Tensor | None = None) -> Path:
    module = torch.jit.trace(model, example) if trace else torch.jit.script(model)
    torch.jit.save(module, path)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code)
    return code, capsys.readouterr().err.strip()


def reference_trace(name: str, x: np.ndarray, output: str = "softmax") -> float:
    """tr(M/n) = (1/n) sum_i ||J(x_i)||_F^2 of ``cases.build(name)`` in float64, by autograd."""
    model = cases.build(name, dtype=torch.float64)
    jac = cases.reference_jacobians(model, torch.from_numpy(np.asarray(x, np.float64)), output)
    return float(jac.pow(2).sum() / x.shape[0])


def analyze_json(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    code, err = run(["analyze", *argv, "--no-randomize", "--json", str(out)], capsys)
    assert code == 0, err
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def flat_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "flat.npz"
    np.savez(path, x=cases.inputs("mlp", N), y=cases.labels(N),
             x_test=cases.inputs("mlp", 5, seed=1), y_test=cases.labels(5, seed=1))
    return path


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """(n, 8, 8) images without a channel axis, as many users save them."""
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, x=cases.inputs("cnn", N)[:, 0], y=cases.labels(N))
    return path


@pytest.mark.parametrize("trace", [False, True])
def test_analyze_flat_npz_with_a_user_mlp(flat_npz: Path, tmp_path: Path, trace: bool,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """On the old code the (n, 64) features arrived as (n, 1, 64) and the MLP's output
    (n, 1, 10) was refused."""
    script = save_script(make_mlp(), tmp_path / "mlp.ts", trace, torch.zeros(2, 64))
    payload = analyze_json([str(script), "--data", str(flat_npz)], tmp_path / "a.json", capsys)
    ev = np.asarray(payload["eigenvalues"])
    x = np.load(flat_npz)["x"]
    assert payload["settings"]["data"]["name"] == str(flat_npz)
    assert ev.sum() == pytest.approx(reference_trace("mlp", x), rel=1e-4)
    assert payload["settings"]["n"] == N


def test_sensitivity_flat_npz_with_a_user_mlp(flat_npz: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "w.pt"
    torch.save(make_mlp().state_dict(), weights)
    out = tmp_path / "s.json"
    code, err = run(["sensitivity", f"{__name__}:make_mlp", "--weights", str(weights),
                     "--data", str(flat_npz), "--kinds", "random", "--points", "8",
                     "--refine", "2", "--json", str(out)], capsys)
    assert code == 0, err
    payload = json.loads(out.read_text())
    x_test = np.load(flat_npz)["x_test"]
    model = cases.build("mlp", dtype=torch.float64)
    jac = cases.reference_jacobians(model, torch.from_numpy(x_test.astype(np.float64)))
    norms = jac.reshape(len(x_test), -1).norm(dim=1)
    assert payload["jacobian_norm_mean"] == pytest.approx(float(norms.mean()), rel=1e-4)
    assert payload["data"]["n"] == 5


def test_channel_option_gives_a_cnn_its_channel_axis(images_npz: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    script = save_script(cases.build("cnn"), tmp_path / "cnn.ts")
    x = np.load(images_npz)["x"]
    payload = analyze_json([str(script), "--data", str(images_npz), "--channel"],
                           tmp_path / "c.json", capsys)
    assert np.sum(payload["eigenvalues"]) == pytest.approx(
        reference_trace("cnn", x[:, None]), rel=1e-4)
    assert payload["settings"]["data"]["flatten"] is False


def test_flatten_option_gives_an_mlp_flat_vectors(images_npz: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    script = save_script(make_mlp(), tmp_path / "mlp.ts")
    x = np.load(images_npz)["x"]
    payload = analyze_json([str(script), "--data", str(images_npz), "--flatten"],
                           tmp_path / "f.json", capsys)
    assert np.sum(payload["eigenvalues"]) == pytest.approx(
        reference_trace("mlp", x.reshape(N, 64)), rel=1e-4)


def test_uint8_images_are_scaled_to_unit_interval(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pix = np.random.default_rng(3).integers(0, 256, (N, 8, 8), dtype=np.uint8)
    path = tmp_path / "u8.npz"
    np.savez(path, x=pix, y=cases.labels(N))
    script = save_script(cases.build("cnn"), tmp_path / "cnn.ts")
    payload = analyze_json([str(script), "--data", str(path), "--channel"],
                           tmp_path / "u.json", capsys)
    ref = reference_trace("cnn", pix[:, None].astype(np.float64) / 255)
    assert np.sum(payload["eigenvalues"]) == pytest.approx(ref, rel=1e-4)


def test_rejected_shape_names_the_shape_options(images_npz: Path, flat_npz: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cnn = save_script(cases.build("cnn"), tmp_path / "cnn.ts")
    mlp = save_script(make_mlp(), tmp_path / "mlp.ts")
    for argv, needles in (
        ([str(cnn), "--data", str(images_npz)], ("(8, 8)", "--channel", "--flatten")),
        ([str(mlp), "--data", str(images_npz)], ("(8, 8)", "--flatten", "--channel")),
        ([str(mlp), "--data", str(images_npz), "--channel"], ("(1, 8, 8)", "--channel added")),
        ([str(cnn), "--data", str(flat_npz), "--flatten"], ("(64,)", "--flatten made")),
        ([str(cnn), "--data", str(flat_npz)], ("(64,)", "flat vectors as stored", "--channel")),
    ):
        code, err = run(["analyze", *argv, "--no-randomize"], capsys)
        assert code == 2, err
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert "rejected inputs of shape" in err
        for needle in needles:
            assert needle in err, (needle, err)


def test_shape_options_are_exclusive_and_documented(images_npz: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    script = save_script(make_mlp(), tmp_path / "mlp.ts")
    code, err = run(["analyze", str(script), "--data", str(images_npz), "--flatten",
                     "--channel"], capsys)
    assert code == 2 and "not allowed with argument" in err
    for command in ("analyze", "sensitivity"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--flatten" in text and "--channel" in text
        assert "(n, H, W) -> (n, 1, H, W)" in text


def test_npz_without_x_is_one_line_naming_the_keys(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((3, 64), np.float32), labels=np.zeros(3, np.int64))
    script = save_script(make_mlp(), tmp_path / "mlp.ts")
    code, err = run(["analyze", str(script), "--data", str(path)], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "'features', 'labels'" in err and "'x' and 'y'" in err


def test_mnist_idx_folder_through_the_cli(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """IDX files written in the real format; --crop 8 gives the CNN its (1, 8, 8) input."""
    written = write_mnist(tmp_path / "MNIST" / "raw", np.random.default_rng(4), 6, 3, gz=True)
    script = save_script(cases.build("cnn"), tmp_path / "cnn.ts")
    payload = analyze_json([str(script), "--data", "mnist", "--data-root", str(tmp_path),
                            "--crop", "8"], tmp_path / "m.json", capsys)
    images = written["train"][0][:, None, 10:18, 10:18].astype(np.float64) / 255
    assert np.sum(payload["eigenvalues"]) == pytest.approx(reference_trace("cnn", images),
                                                           rel=1e-4)
