"""The dual Gram's symmetric (one-triangle) update against dense products.

References: ``X^T X`` by numpy in float64, and ``𝒥^T𝒥`` from per-example Jacobians of
``torch.autograd.functional.jacobian`` (``cases.reference_jacobians``).
"""

from __future__ import annotations

from pathlib import Path

import cases
import numpy as np
import pytest
import torch

import jacspec
from jacspec.jacobian.options import JacobianOptions
from jacspec.spectra import gram as gram_mod
from jacspec.spectra.gram import _DualAccumulator, symmetrize_upper


@pytest.mark.parametrize("blas", [True, False], ids=["dsyrk", "blocked-addmm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triangular_update_equals_the_dense_product(blas, dtype, monkeypatch) -> None:
    # kd not a multiple of the torch block; several flushes of uneven chunks
    monkeypatch.setattr(gram_mod, "DUAL_CHUNK_ROWS", 37)
    monkeypatch.setattr(gram_mod, "TRIANGLE_BLOCK", 16)
    kd = 53
    gen = torch.Generator().manual_seed(1)
    rows = torch.randn(211, kd, generator=gen, dtype=dtype)
    acc = _DualAccumulator(kd, dtype, torch.device("cpu"), blas=blas)
    for part in torch.split(rows, [5, 40, 1, 90, 75]):
        acc.add(part)
    got = acc.result()
    x = rows.double().numpy()
    want = x.T @ x
    assert got.flags.c_contiguous and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12 * np.abs(want).max())
    np.testing.assert_array_equal(got, got.T)


def test_symmetrize_upper_mirrors_the_upper_triangle() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((11, 11))
    want = np.triu(a) + np.triu(a, 1).T
    np.testing.assert_array_equal(symmetrize_upper(a.copy(), block=4), want)
    np.testing.assert_array_equal(symmetrize_upper(np.asfortranarray(a), block=3), want)


def test_dual_gram_of_a_model_equals_autograd_rows() -> None:
    """jacspec.gram's dual side (direct route, raw rows, 700 examples in batches of 64) is 𝒥^T𝒥."""
    model = cases.build("mlp", dtype=torch.float64)
    x = torch.from_numpy(cases.inputs("mlp", n=700, seed=3, dtype=np.float64))
    opts = JacobianOptions(output="logits", dtype=torch.float64, batch_size=64, route="direct")
    g = jacspec.gram(model, x, side="dual", options=opts)
    ref = cases.reference_jacobians(model, x, "logits").reshape(700, -1).numpy()
    want = ref.T @ ref
    assert g.side == "dual"
    np.testing.assert_allclose(g.matrix, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


def test_blocked_primal_equals_the_dense_product() -> None:
    gen = torch.Generator().manual_seed(2)
    rows = torch.randn(23, 40, generator=gen)
    x = rows.double().numpy()
    got = gram_mod.primal_from_rows(rows, block=5)  # 23 rows: blocks of 5, the last of 3
    np.testing.assert_allclose(got, x @ x.T, rtol=1e-14, atol=1e-13 * np.abs(x @ x.T).max())
    np.testing.assert_array_equal(got, got.T)


def test_primal_gram_of_a_resnet_equals_autograd_rows() -> None:
    """The primal side (n < kd) of an eval-mode BatchNorm ResNet, 13 examples in batches of 4."""
    model = jacspec.resnet((3, 8, 8), 10, depth=8, width=4, shortcut="B", seed=0).double()
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((13, 3, 8, 8)))
    opts = JacobianOptions(dtype=torch.float64, batch_size=4)
    g = jacspec.gram(model, x, side="auto", options=opts, deflate=False)
    ref = cases.reference_jacobians(model, x, "softmax").reshape(13, -1).numpy()
    assert g.side == "primal"
    np.testing.assert_allclose(g.matrix, ref @ ref.T, rtol=1e-10,
                               atol=1e-12 * np.abs(ref @ ref.T).max())


def test_primal_on_the_device_path_equals_the_dense_product() -> None:
    """The accelerator path (products kept on the rows' device, a float64 tensor back), run
    here on the CPU; its eigenvalues are computed on that device too."""
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(23, 40, generator=gen)
    x = rows.double().numpy()
    got = gram_mod.primal_from_rows(rows, block=5, on_device=True)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), x @ x.T, rtol=1e-14,
                               atol=1e-13 * np.abs(x @ x.T).max())
    from jacspec.spectra.eigen import symmetric_eigenvalues

    np.testing.assert_allclose(symmetric_eigenvalues(got), np.linalg.eigvalsh(x @ x.T),
                               rtol=1e-10, atol=1e-12 * np.abs(x @ x.T).max())
    acc = gram_mod._DualAccumulator(40, torch.float32, torch.device("cpu"), blas=False)
    acc.add(rows)
    acc.device = torch.device("meta")  # as on an accelerator: the result stays a tensor
    dual = acc.result()
    assert isinstance(dual, torch.Tensor)
    np.testing.assert_allclose(dual.numpy(), x.T @ x, rtol=1e-12, atol=1e-12 * np.abs(x).max())


def test_primal_rows_kept_in_a_file_give_the_same_gram(monkeypatch) -> None:
    """𝒥 in a memmap (the route when it does not fit in memory but the n x n Gram does):
    the ResNet's primal Gram equals autograd's, and the file is gone afterwards."""
    made: list[str] = []
    mkstemp = gram_mod.tempfile.mkstemp

    def record(**kw):
        fd, path = mkstemp(**kw)
        made.append(path)
        return fd, path

    monkeypatch.setattr(gram_mod.tempfile, "mkstemp", record)
    monkeypatch.setattr(gram_mod, "primal_storage", lambda *a, **k: "file")
    model = jacspec.resnet((3, 8, 8), 10, depth=8, width=4, shortcut="B", seed=0).double()
    x = torch.from_numpy(np.random.default_rng(6).standard_normal((13, 3, 8, 8)))
    g = jacspec.gram(model, x, side="primal", dtype=torch.float64, batch_size=4,
                     deflate=False)
    ref = cases.reference_jacobians(model, x, "softmax").reshape(13, -1).numpy()
    np.testing.assert_allclose(g.matrix, ref @ ref.T, rtol=1e-10,
                               atol=1e-12 * np.abs(ref @ ref.T).max())
    assert len(made) == 1 and not Path(made[0]).exists()


def test_primal_storage_rule() -> None:
    n, kd = 20_000, 30_720  # a ResNet-20 on CIFAR: 𝒥 2.5 GB, the Gram 6.4 GB (x2)
    held, square = n * kd * 4, 16 * n * n
    assert gram_mod.primal_storage(n, kd, 4, held + square) == "memory"
    assert gram_mod.primal_storage(n, kd, 4, held + square - 1) != "memory"
    rows = gram_mod.primal_block_rows(n, kd, 4)
    blocks = 2 * rows * kd * 8 + rows * rows * 8
    fits_gram_only = square + blocks
    expect = "file" if held <= gram_mod.DISK_SHARE * gram_mod.free_disk_bytes() else "none"
    assert gram_mod.primal_storage(n, kd, 4, fits_gram_only) == expect
    assert gram_mod.primal_storage(n, kd, 4, fits_gram_only - 1) == "none"


def test_a_primal_gram_that_fits_neither_memory_nor_disk_is_refused_first(monkeypatch) -> None:
    import jacspec.jacobian.source as source_mod

    def no_jacobians(*a, **k):
        raise AssertionError("Jacobians computed before the size check")

    monkeypatch.setattr(source_mod, "jacobian_batches", no_jacobians)
    monkeypatch.setattr(gram_mod, "free_disk_bytes", lambda folder=None: 0)
    model = jacspec.resnet((3, 8, 8), 10, depth=8, width=4, seed=0)
    x = torch.randn(40, 3, 8, 8)
    with pytest.raises(ValueError) as err:
        jacspec.gram(model, x, side="primal", max_memory=30_000)
    msg = str(err.value)
    assert "n=40" in msg and "float32 file" in msg and "0 B free" in msg
    assert "method='slq'" in msg
