"""Regression tests of the data users pass in (issue 22, defects 5, 11, 14).

5:  fractional labels were truncated silently by the Python API (``per_point_generalization``
    read labels 0.5, 1.5 as classes 0, 1); every data form now goes through the one label
    validator ``jacspec.data.batches.check_labels``: whole-number floats are taken as those
    integers, NaN, Inf, fractions, negative and (n, k) soft/one-hot labels are refused.
11: ``--channels-last`` (``channels_last=True``) reads (n, H, W, C) images as (n, C, H, W),
    and the rejected-shape hint suggests it when the stored examples look channels-last.
14: a dict of columns ``{"x": X, "y": Y}``, a list of per-example records and the
    ``pixel_values``/``label`` keys are accepted; a pandas DataFrame is refused with what to
    pass.

Every expected number is an autograd Jacobian in float64 (``cases.reference_jacobians``)
or the plain ``(x, y)`` tuple's result, itself checked against autograd here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cases
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import jacspec
from jacspec.cli.main import main
from jacspec.data.batches import check_labels, data_length, iter_batches
from jacspec.data.datasets import DataSet
from jacspec.models.train import train

N, D, K = 20, 5, 3


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 7), nn.Tanh(), nn.Linear(7, K)).double().eval()


@pytest.fixture(scope="module")
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(N, D, generator=gen, dtype=torch.float64), torch.arange(N) % K


def _trace_reference(model: nn.Module, x: torch.Tensor) -> float:
    """tr(M/n) = (1/n) sum_i ||J(x_i)||_F^2 by autograd, one example at a time."""
    return float(cases.reference_jacobians(model, x).pow(2).sum() / x.shape[0])


# ----------------------------------------------------------------------- 5: labels


def _fractional_forms(x: torch.Tensor, y: torch.Tensor) -> dict[str, object]:
    yf = y.double() + 0.5
    return {
        "tensor pair": (x, yf),
        "numpy pair": (x.numpy(), yf.numpy()),
        "list pair": [x, yf],
        "DataLoader": DataLoader(TensorDataset(x, yf), batch_size=8),
        "Dataset": TensorDataset(x, yf),
        "dict batches": [{"x": x[:10], "y": yf[:10]}, {"x": x[10:], "y": yf[10:]}],
        "dict of columns": {"x": x, "y": yf},
        "records": [{"x": x[i], "label": float(yf[i])} for i in range(N)],
    }


def test_fractional_labels_are_refused_by_every_form_and_entry_point(mlp, xy) -> None:
    """On the old code per_point_generalization returned labels [0, 1, 2, 0, ...] for
    [0.5, 1.5, 2.5, 0.5, ...] and analyze ran without a word."""
    x, y = xy
    for form, data in _fractional_forms(x, y).items():
        for fn in (jacspec.analyze, jacspec.per_point_generalization, jacspec.esd):
            with pytest.raises(ValueError, match=r"labels.* must be integers.*0\.5") as info:
                fn(mlp, data)
            assert "\n" not in str(info.value), (form, fn.__name__)


def test_dataset_and_train_refuse_fractional_labels(xy) -> None:
    """jacspec.models.train.train takes a DataSet: its labels are checked when it is made (and
    when dataclasses.replace makes a new one)."""
    x, y = xy
    with pytest.raises(ValueError, match=r"DataSet y \(labels\) must be integers"):
        DataSet(x.float(), y.double() + 0.25, K, "t")
    good = DataSet(x.float(), y, K, "t")
    with pytest.raises(ValueError, match=r"labels\) must be integers.*1\.5"):
        train(nn.Sequential(nn.Linear(D, K)), replace(good, y=torch.full((N,), 1.5)),
              max_epochs=1)


def test_other_bad_labels_name_what_to_pass(mlp, xy) -> None:
    x, y = xy
    onehot = torch.nn.functional.one_hot(y, K).double()
    for labels, needle in (
        (onehot, r"shape \(20, 3\).*soft or one-hot.*y\.argmax\(1\)"),
        (y[:, None], r"shape \(20, 1\).*y\.reshape\(-1\)"),
        (y - 1, r"must be >= 0.*found -1"),
        (torch.where(y == 0, torch.nan, y.double()), "NaN, Inf or fractions"),
        (torch.where(y == 0, torch.inf, y.double()), "NaN, Inf or fractions"),
    ):
        with pytest.raises(ValueError, match=needle):
            jacspec.per_point_generalization(mlp, (x, labels))
    with pytest.raises(TypeError, match="integer class indices"):
        check_labels(np.array(["a", "b"]), "labels")


def test_whole_number_float_labels_are_read_as_integers(mlp, xy) -> None:
    """The choice: 1.0, 2.0 are classes 1, 2 (as the .npz reader always read them); the
    per-point loss is -log softmax(f(x_i))_{y_i}, computed here from the model."""
    x, y = xy
    for data in ((x, y.double()), DataLoader(TensorDataset(x, y.float()), batch_size=7),
                 DataSet(x.float(), y.double(), K, "t")):
        frame = jacspec.per_point_generalization(mlp, data, dtype=torch.float64).to_frame()
        np.testing.assert_array_equal(frame["label"].to_numpy(), y.numpy())
        with torch.no_grad():
            ref = -torch.log_softmax(mlp(x), 1)[torch.arange(N), y]
        np.testing.assert_allclose(frame["loss"].to_numpy(), ref.numpy(), rtol=1e-6)
    got = check_labels(np.array([0.0, 2.0]), "y")
    assert got.dtype == np.int64 and got.tolist() == [0, 2]
    for _, yb in iter_batches((x, y.double())):
        assert yb.dtype == torch.int64


def test_npz_reader_uses_the_one_validator(tmp_path: Path) -> None:
    x = np.zeros((4, 3), np.float32)
    for y, needle in ((np.array([0.0, 1.5, 2.0, 0.0]), "labels y must be integers"),
                      (np.array([0, -1, 2, 0]), "labels y must be >= 0"),
                      (np.eye(4, dtype=np.int64), "y.argmax")):
        path = tmp_path / "bad.npz"
        np.savez(path, x=x, y=y)
        with pytest.raises(ValueError, match=needle):
            jacspec.load_dataset(str(path))
    np.savez(tmp_path / "ok.npz", x=x, y=np.array([0.0, 1.0, 2.0, 0.0]))
    data = jacspec.load_dataset(str(tmp_path / "ok.npz"))
    assert data.y.tolist() == [0, 1, 2, 0] and data.num_classes == 3


# ----------------------------------------------------------------------- 14: data forms


def test_dicts_records_and_pixel_values_match_the_tuple(mlp, xy) -> None:
    x, y = xy
    ref = jacspec.esd(mlp, (x, y))
    assert ref.eigenvalues.sum() == pytest.approx(_trace_reference(mlp, x), rel=1e-10)
    ref_alpha = jacspec.analyze(mlp, (x, y), randomize=False).table["lambda_max"].iloc[0]
    forms = {
        "dict of columns": {"x": x, "y": y},
        "pixel_values columns (numpy)": {"pixel_values": x.numpy(), "label": y.numpy()},
        "records, int labels": [{"x": x[i], "label": int(y[i])} for i in range(N)],
        "records, numpy": [{"pixel_values": x[i].numpy(), "labels": np.int64(y[i])}
                           for i in range(N)],
        "records, 0-d tensor labels": [{"image": x[i], "y": y[i]} for i in range(N)],
        "list of dict batches": [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, N, 8)],
        "DataLoader of records": DataLoader(
            [{"pixel_values": x[i], "label": int(y[i])} for i in range(N)], batch_size=6),
    }
    for form, data in forms.items():
        got = jacspec.esd(mlp, data)
        np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, rtol=1e-10, atol=1e-15,
                                   err_msg=form)
        lam = jacspec.analyze(mlp, data, randomize=False).table["lambda_max"].iloc[0]
        assert lam == pytest.approx(ref_alpha, rel=1e-10), form
        length = data_length(data)
        assert length in (N, None), form
        if form.startswith(("dict of", "pixel", "records")):
            assert length == N, form
        assert sum(len(xb) for xb, _ in iter_batches(data)) == N, form


def test_pandas_and_bad_dicts_say_what_was_found_and_what_to_pass(mlp, xy) -> None:
    x, y = xy
    df = pd.DataFrame(x.numpy(), columns=[f"f{i}" for i in range(D)]).assign(label=y.numpy())
    for data, found in ((df, "pandas DataFrame"), ((df.iloc[:, :D], df["label"]),
                                                   "pair holding a pandas DataFrame"),
                        (df["label"], "pandas Series")):
        with pytest.raises(TypeError, match=found) as info:
            jacspec.esd(mlp, data)
        assert "df[feature_columns].to_numpy(), df[label_column].to_numpy()" in str(info.value)
    with pytest.raises(ValueError, match=r"dict with keys \['features', 'target'\].*pixel_values"):
        jacspec.esd(mlp, {"features": x, "target": y})
    with pytest.raises(ValueError, match="differ in shape"):
        jacspec.esd(mlp, [{"x": x[0], "y": 0}, {"x": x[1, :3], "y": 1}])


# ----------------------------------------------------------------------- 11: channels last


class SmallCNN(nn.Module):
    """Conv2d(3, 4, 3) on (3, 8, 8) images, then a linear head to 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code)
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def hwc(tmp_path: Path) -> tuple[Path, Path, np.ndarray, nn.Module]:
    """A .npz of channels-last uint8 images (12, 8, 8, 3) and a TorchScript CNN taking (3, 8, 8)."""
    pix = np.random.default_rng(5).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    npz = tmp_path / "hwc.npz"
    np.savez(npz, x=pix, y=np.arange(12) % K)
    torch.manual_seed(2)
    net = SmallCNN().eval()
    script = tmp_path / "cnn.ts"
    torch.jit.save(torch.jit.script(net), script)
    return npz, script, pix, net


def test_channels_last_through_the_cli_matches_the_api(hwc, tmp_path, capsys) -> None:
    npz, script, pix, net = hwc
    out = tmp_path / "a.json"
    code, err = _run(["analyze", str(script), "--data", str(npz), "--channels-last",
                      "--no-randomize", "--json", str(out)], capsys)
    assert code == 0, err
    payload = json.loads(out.read_text())
    assert payload["settings"]["data"]["channels_last"] is True
    permuted = np.ascontiguousarray(pix.transpose(0, 3, 1, 2)).astype(np.float32) / 255
    api = jacspec.esd(net, (torch.from_numpy(permuted), torch.arange(12) % K))
    np.testing.assert_allclose(payload["eigenvalues"], api.eigenvalues, rtol=1e-5,
                               atol=1e-6 * api.eigenvalues[0])
    ref = _trace_reference(net.double(), torch.from_numpy(permuted.astype(np.float64)))
    assert np.sum(payload["eigenvalues"]) == pytest.approx(ref, rel=1e-4)


def test_rejected_channels_last_images_get_the_channels_last_hint(hwc, capsys) -> None:
    npz, script, _, _ = hwc
    for extra in ([], ["--channel"]):
        code, err = _run(["analyze", str(script), "--data", str(npz), "--no-randomize", *extra],
                         capsys)
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "rejected inputs of shape (8, 8, 3)" in err
        assert "--channels-last" in err and "(C, H, W) = (3, 8, 8)" in err, err
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    assert "--channels-last" in capsys.readouterr().out


def test_channels_last_keyword_and_its_refusals(hwc, tmp_path) -> None:
    npz, _, pix, _ = hwc
    data = jacspec.load_dataset(str(npz), channels_last=True)
    np.testing.assert_array_equal(data.x.numpy(), pix.transpose(0, 3, 1, 2) / np.float32(255))
    flat = jacspec.load_dataset(str(npz), channels_last=True, flatten=True)
    assert flat.x.shape == (12, 3 * 8 * 8)
    gray = tmp_path / "gray.npz"
    np.savez(gray, x=pix[..., 0], y=np.arange(12) % K)
    with pytest.raises(ValueError, match=r"needs examples of shape \(H, W, C\).*\(8, 8\)"):
        jacspec.load_dataset(str(gray), channels_last=True)
    with pytest.raises(ValueError, match="already read as"):
        jacspec.load_dataset("digits", channels_last=True)
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        jacspec.load_dataset(str(npz), channels_last="yes")
