"""The torch operators of jacspec.spectra.operators against dense float64 references.

References are built here from ``torch.autograd.functional.jacobian`` of a small MLP (the
rows of 𝒥), numpy products of them, and the class-mean projector written as a Kronecker
product; never from jacspec's own Gram.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from torch import nn

from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.estimate import estimate_from_batches, estimate_from_source
from jacspec.spectra.lanczos import lanczos
from jacspec.spectra.operators import (
    GramOperator,
    MatrixOperator,
    SourceRows,
    gram_operator,
    softmax_null_projector,
)
from jacspec.spectra.plan import plan_esd
from jacspec.spectra.slq import slq

N, K, D = 9, 3, 4


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, K)).double()


def _x() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _autograd_rows(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """𝒥 (n, k*d), class-major rows d softmax(f(x_i)) / dx_i, by autograd."""
    rows = [torch.autograd.functional.jacobian(lambda z: torch.softmax(model(z), 0), xi)
            for xi in x]
    return torch.stack(rows).reshape(len(rows), -1).numpy()


def _projector_matrix(k: int, d: int) -> np.ndarray:
    """I - (1/k) 1 1^T ⊗ I_d: removes the class mean of a class-major vector."""
    return np.kron(np.eye(k) - np.ones((k, k)) / k, np.eye(d))


def _source() -> JacobianSource:
    return JacobianSource.from_model(_mlp(), _x(), output="softmax", dtype=torch.float64,
                                     batch_size=4)


@pytest.mark.parametrize("side", ["dual", "primal"])
@pytest.mark.parametrize("scale", ["n", "none"])
def test_gram_operator_equals_dense_autograd_gram(side: str, scale: str) -> None:
    J = _autograd_rows(_mlp(), _x())
    c = N if scale == "n" else 1.0
    ref = (J.T @ J if side == "dual" else J @ J.T) / c
    op = GramOperator(_source(), side=side, scale=scale)
    assert op.shape == ref.shape and op.dtype == torch.float64
    V = np.random.default_rng(2).standard_normal((ref.shape[0], 3))
    out = op @ V
    assert isinstance(out, np.ndarray) and out.dtype == np.float64  # numpy in, numpy out
    np.testing.assert_allclose(out, ref @ V, rtol=1e-10, atol=1e-12)
    Vt = torch.from_numpy(V)
    out_t = op @ Vt
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), ref @ V, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op @ V[:, 0], ref @ V[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.trace(), np.sum(J * J) / c, rtol=1e-12)
    sp = op.to_scipy()
    assert isinstance(sp, scipy.sparse.linalg.LinearOperator)
    np.testing.assert_allclose(sp.matvec(V[:, 1]), ref @ V[:, 1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sp.rmatvec(V[:, 1]), ref.T @ V[:, 1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sp.matmat(V), ref @ V, rtol=1e-10, atol=1e-12)
    if side == "dual":  # softmax rows: G P = P G P = G, with P the class-mean projector
        P = softmax_null_projector(K, D)
        Pm = _projector_matrix(K, D)
        np.testing.assert_allclose(P(V), Pm @ V, atol=1e-14)
        np.testing.assert_allclose(P(Vt).numpy(), Pm @ V, atol=1e-14)  # torch in, torch out
        np.testing.assert_allclose(P(op @ P(V)), Pm @ ref @ Pm @ V, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(op @ P(V), ref @ V, rtol=1e-10, atol=1e-12)


def test_float32_rows_accumulate_float64_vectors_in_float64() -> None:
    J = _autograd_rows(_mlp(), _x())
    op = gram_operator(torch.from_numpy(J).float(), side="dual", scale="none")
    assert op.dtype == torch.float32
    V = np.random.default_rng(3).standard_normal((K * D, 2))
    out = op @ V
    assert out.dtype == np.float64
    J32 = J.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(out, J32.T @ (J32 @ V), rtol=1e-5, atol=1e-6)
    assert (op @ torch.from_numpy(V).float()).dtype == torch.float32


def test_matrix_operator_adjoint_through_to_scipy() -> None:
    A = np.random.default_rng(4).standard_normal((5, 5))  # not symmetric
    sp = MatrixOperator(A).to_scipy()
    v = np.arange(5.0)
    np.testing.assert_allclose(sp.matvec(v), A @ v, rtol=1e-13)
    np.testing.assert_allclose(sp.rmatvec(v), A.T @ v, rtol=1e-13)
    np.testing.assert_allclose(sp.rmatmat(np.eye(5)), A.T, rtol=1e-13)


def test_slq_trace_of_the_torch_operator_within_its_error_bar() -> None:
    J = _autograd_rows(_mlp(), _x())
    exact = float(np.sum(J * J)) / N  # tr(J^T J / n) = sum of squared rows / n
    op = GramOperator(_source(), side="dual")
    q = slq(op, num_steps=6, num_vectors=40, seed=0)
    assert np.isfinite(q.trace_stderr) and q.trace_stderr > 0
    assert abs(q.trace - exact) <= 4 * q.trace_stderr
    np.testing.assert_allclose(op.trace(), exact, rtol=1e-12)
    # the Lanczos nodes are Ritz values of the dense Gram: inside its spectrum
    ev = np.linalg.eigvalsh(J.T @ J / N)
    assert np.nanmax(q.nodes) <= ev[-1] * (1 + 1e-9)
    assert np.nanmin(q.nodes) >= -1e-9 * ev[-1]


class _HostGuard(torch.Tensor):
    """Row blocks that refuse to become numpy arrays (views of them stay guarded; results
    of arithmetic on them are plain tensors)."""

    _VIEWS = {torch.Tensor.__getitem__, torch.Tensor.reshape, torch.Tensor.view,
              torch.Tensor.detach, torch.Tensor.to, torch.Tensor.contiguous}

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        if func in (torch.Tensor.numpy, torch.Tensor.tolist, torch.Tensor.__array__):
            raise AssertionError("a row block was copied to numpy")
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **(kwargs or {}))
        if func in cls._VIEWS and isinstance(out, torch.Tensor):
            return out.as_subclass(cls)
        return out


def test_gram_products_never_turn_row_blocks_into_numpy() -> None:
    J = _autograd_rows(_mlp(), _x())
    guarded = torch.from_numpy(J.copy()).as_subclass(_HostGuard)
    src = JacobianSource.from_array(guarded, k=K, batch_size=4)
    with pytest.raises(AssertionError, match="numpy"):  # the guard bites on a block
        next(iter(src)).rows.numpy()
    with pytest.raises(AssertionError, match="numpy"):  # as the numpy row view does
        next(SourceRows(src).blocks())
    V = np.random.default_rng(5).standard_normal((N, 2))
    for side, ref in (("dual", J.T @ J / N), ("primal", J @ J.T / N)):
        op = GramOperator(src, side=side)
        W = V if side == "primal" else np.random.default_rng(6).standard_normal((K * D, 2))
        np.testing.assert_allclose(op @ W, ref @ W, rtol=1e-10, atol=1e-12)
        run = lanczos(op, W, 3)
        assert run.steps.tolist() == [3, 3]
    np.testing.assert_allclose(GramOperator(src).trace(), np.sum(J * J) / N, rtol=1e-12)


def test_estimate_from_source_keeps_the_source_settings_and_the_exact_trace(tmp_path) -> None:
    J = _autograd_rows(_mlp(), _x())
    kw = dict(side="dual", num_steps=5, num_vectors=4, top_k=2, seed=3)
    est = estimate_from_source(_source(), storage="memory", **kw)
    np.testing.assert_allclose(est.trace, np.sum(J * J) / N, rtol=1e-12)
    assert est.method == "slq" and est.storage == "memory" and est.output == "softmax"
    assert est.params["route"] == "direct" and est.params["null_dim"] == D
    assert est.params["source"]["kind"] == "model"
    assert est.params["source"]["rows_sum_to_zero"] is True
    ev = np.linalg.eigvalsh(J.T @ J / N)
    assert est.lambda_max <= ev[-1] * (1 + 1e-9) and est.lambda_max >= 0.9 * ev[-1]
    on_file = estimate_from_source(_source(), storage="file", workdir=tmp_path, **kw)
    np.testing.assert_allclose(on_file.nodes, est.nodes, rtol=1e-10, atol=1e-14)
    assert not list(tmp_path.iterdir())  # the temporary file is gone
    assert est.params["operator_passes"] >= 5
    rows = torch.from_numpy(J).reshape(N, K, D)
    p = plan_esd(N, K * D, itemsize=8, method="slq", side="dual", storage="stream")
    old = estimate_from_batches(lambda: iter([rows[:4], rows[4:]]), n=N, k=K, d=D, plan=p,
                                dtype=torch.float64, num_steps=5, num_vectors=4, top_k=2,
                                seed=3)
    np.testing.assert_allclose(old.nodes, est.nodes, rtol=1e-10, atol=1e-14)
    assert old.params["null_dim"] == D


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows_compute_on_the_gpu() -> None:
    J = _autograd_rows(_mlp(), _x())
    op = gram_operator(torch.from_numpy(J).cuda(), side="dual")
    V = np.random.default_rng(7).standard_normal((K * D, 2))
    np.testing.assert_allclose(op @ V, J.T @ J @ V / N, rtol=1e-10, atol=1e-12)
    assert op.device.type == "cuda"
    out = op.apply(torch.from_numpy(V))
    assert out.device.type == "cuda"
    q_gpu = slq(op, num_steps=5, num_vectors=3, seed=0)
    q_cpu = slq(J.T @ J / N, num_steps=5, num_vectors=3, seed=0)
    np.testing.assert_allclose(q_gpu.nodes, q_cpu.nodes, rtol=1e-8, atol=1e-12)
