"""Gram operators over stored, file-backed and streamed 𝒥 against explicit matrices (float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

from jacspec.spectra.operators import (
    ArrayRows,
    FileRows,
    GramOperator,
    MatrixOperator,
    StreamRows,
    as_operator,
    gram_operator,
    open_jacobian_memmap,
    softmax_null_projector,
    write_jacobian_memmap,
)

N, KD = 23, 17
UNEVEN = [5, 1, 7, 3, 7]  # batch sizes summing to N


def _jac(seed: int = 0, n: int = N, kd: int = KD) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, kd))


def _batches(J: np.ndarray, sizes: list[int] = UNEVEN) -> list[np.ndarray]:
    out, s = [], 0
    for b in sizes:
        out.append(J[s : s + b])
        s += b
    assert s == J.shape[0]
    return out


def _source(kind: str, J: np.ndarray, tmp_path) -> object:
    if kind == "memory":
        return ArrayRows(torch.from_numpy(J), block_size=4)
    if kind == "file":
        path, shape = write_jacobian_memmap(_batches(J), tmp_path / "J.npy", dtype=np.float64)
        assert shape == J.shape
        return FileRows(path, block_size=6)
    return StreamRows(lambda: iter(_batches(J)), shape=J.shape, dtype=np.float64)


@pytest.mark.parametrize("kind", ["memory", "file", "stream"])
@pytest.mark.parametrize("side", ["dual", "primal"])
@pytest.mark.parametrize("scale", ["n", "none"])
def test_gram_matches_explicit_matrix(kind: str, side: str, scale: str, tmp_path) -> None:
    J = _jac(1)
    op = GramOperator(_source(kind, J, tmp_path), side=side, scale=scale)
    c = N if scale == "n" else 1.0
    ref = (J.T @ J if side == "dual" else J @ J.T) / c
    assert op.shape == ref.shape
    V = np.random.default_rng(2).standard_normal((ref.shape[0], 3))
    np.testing.assert_allclose(op @ V, ref @ V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.matvec(V[:, 0]), ref @ V[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.to_dense(block=4), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.trace(), np.trace(ref), rtol=1e-12)
    passes_per_product = 1 if side == "dual" else 2
    before = op.num_passes
    op.matmat(V)
    assert op.num_passes - before == passes_per_product


def test_torch_in_torch_out_and_scipy() -> None:
    J = _jac(3)
    op = gram_operator(J, side="auto")  # kd < n: dual
    assert op.side == "dual" and op.shape == (KD, KD)
    v = torch.randn(KD, dtype=torch.float64)
    out = op @ v
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), J.T @ (J @ v.numpy()) / N, rtol=1e-12)
    sp = op.to_scipy()
    assert isinstance(sp, scipy.sparse.linalg.LinearOperator)
    ev = scipy.sparse.linalg.eigsh(sp, k=2, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(ev), np.linalg.eigvalsh(J.T @ J / N)[-2:], rtol=1e-10)


def test_float32_rows_keep_float64_vectors() -> None:
    J = _jac(4).astype(np.float32)
    op = gram_operator(J, side="primal")
    assert op.dtype == torch.float32  # operators carry torch dtypes
    V = np.random.default_rng(5).standard_normal((N, 2))
    out = op @ V
    assert out.dtype == np.float64
    ref = J.astype(np.float64) @ (J.astype(np.float64).T @ V) / N
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert (op @ V.astype(np.float32)).dtype == np.float32


def test_write_memmap_from_jacobian_shaped_batches(tmp_path) -> None:
    k, shape = 3, (2, 4)
    jac = np.random.default_rng(6).standard_normal((11, k, *shape)).astype(np.float32)
    batches = [torch.from_numpy(jac[:4]), jac[4:5], torch.from_numpy(jac[5:])]
    path, sh = write_jacobian_memmap(iter(batches), tmp_path / "rows.npy")
    assert sh == (11, k * 8)
    mm = open_jacobian_memmap(path)
    np.testing.assert_array_equal(np.asarray(mm), jac.reshape(11, -1))
    np.testing.assert_array_equal(np.load(path), jac.reshape(11, -1))
    rows = FileRows(path, block_size=3)
    np.testing.assert_array_equal(np.concatenate([b.copy() for b in rows.blocks()]), mm)


def test_write_memmap_accepts_jacobian_batch_objects(tmp_path) -> None:
    class Batch:  # duck-typed like jacspec.jacobian.engine.JacobianBatch
        def __init__(self, jac: torch.Tensor) -> None:
            self.jac = jac

    jac = torch.randn(6, 2, 5, dtype=torch.float64)
    path, sh = write_jacobian_memmap([Batch(jac[:2]), Batch(jac[2:])], tmp_path / "b.npy",
                                     dtype=np.float64)
    np.testing.assert_array_equal(np.load(path), jac.reshape(6, -1).numpy())


def test_bad_inputs_raise(tmp_path) -> None:
    J = _jac(7)
    with pytest.raises(ValueError, match="columns"):
        write_jacobian_memmap([J[:3], J[3:, :5]], tmp_path / "x.npy")
    with pytest.raises(ValueError, match="empty"):
        write_jacobian_memmap([], tmp_path / "y.npy")
    with pytest.raises(ValueError, match="side"):
        gram_operator(J, side="left")
    with pytest.raises(ValueError, match="scale"):
        gram_operator(J, scale="mean")
    with pytest.raises(ValueError, match="shape"):
        gram_operator(lambda: iter([J]))
    short = StreamRows(lambda: iter([J[:5]]), shape=J.shape, dtype=np.float64)
    with pytest.raises(ValueError, match="expected n="):
        GramOperator(short).matvec(np.ones(KD))
    with pytest.raises(ValueError, match="shape"):
        gram_operator(J) @ np.ones((KD + 1, 2))
    with pytest.raises(TypeError):
        gram_operator(J.astype(np.int64))
    with pytest.raises(OSError):
        FileRows(tmp_path / "missing.npy")
    with pytest.raises(TypeError):
        as_operator("not an operator")


def test_matrix_operator_and_as_operator() -> None:
    A = _jac(8, 9, 9)
    A = A + A.T
    for op in (as_operator(A), as_operator(torch.from_numpy(A)),
               as_operator(scipy.sparse.linalg.aslinearoperator(A))):
        np.testing.assert_allclose(op @ np.eye(9), A, rtol=1e-13)
    assert isinstance(as_operator(A), MatrixOperator)


def test_softmax_null_projector_matches_softmax_jacobian_structure() -> None:
    """Rows of a softmax Jacobian (autograd, float64) are invariant under P; P is a projector
    whose null space is the class-constant vectors."""
    torch.manual_seed(0)
    k, d = 4, 6
    W = torch.randn(k, d, dtype=torch.float64)
    x = torch.randn(5, d, dtype=torch.float64)
    rows = torch.stack(
        [torch.autograd.functional.jacobian(lambda z: torch.softmax(W @ z, 0), xi).reshape(-1)
         for xi in x]
    ).numpy()  # (5, k*d), class-major
    P = softmax_null_projector(k, d)
    np.testing.assert_allclose(P(rows.T), rows.T, atol=1e-12)
    E = np.eye(k * d)
    Pm = P(E)
    np.testing.assert_allclose(Pm @ Pm, Pm, atol=1e-12)
    np.testing.assert_allclose(Pm, Pm.T, atol=1e-12)
    assert round(np.trace(Pm)) == (k - 1) * d
    const = np.tile(np.random.default_rng(0).standard_normal(d), k)[:, None]
    np.testing.assert_allclose(P(const), 0, atol=1e-12)
    json.dumps({"ok": True})
