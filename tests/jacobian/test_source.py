"""JacobianSource: the same rows of 𝒥 from a model, an array, a file or a cache give the
same Gram (float64), and report the same n, k, d and rows_sum_to_zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jacspec.jacobian import engine
from jacspec.jacobian.layers import iter_layer_jacobians
from jacspec.jacobian.source import JacobianSource, parse_target
from jacspec.spectra.gram import gram_from_source
from jacspec.spectra.operators import gram_operator, write_jacobian_memmap


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4)).double().eval()


def _x(n: int = 30) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _eig(source: JacobianSource, side: str = "auto") -> np.ndarray:
    g = gram_from_source(source, side=side, deflate=False)
    return np.sort(np.linalg.eigvalsh(g.matrix))[::-1]


def _reference(J: torch.Tensor) -> np.ndarray:
    """Independent: eigenvalues of 𝒥^T𝒥 from the stacked rows, by numpy."""
    rows = J.reshape(J.shape[0], -1).numpy()
    return np.sort(np.linalg.eigvalsh(rows.T @ rows))[::-1]


@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_model_array_file_cached_give_the_same_gram(tmp_path, output: str) -> None:
    model, x = _model(), _x()
    J = torch.autograd.functional.jacobian(
        lambda z: (torch.softmax if output == "softmax" else lambda v, dim: v)(model(z), dim=1),
        x,
    )  # (n, k, n, d): the block diagonal is each example's Jacobian
    J = torch.stack([J[i, :, i] for i in range(x.shape[0])])
    ref = _reference(J)
    src = JacobianSource.from_model(model, x, output=output, batch_size=7)
    arr = JacobianSource.from_array(J, output=output)
    path, _ = write_jacobian_memmap(src, tmp_path / "J.npy", dtype=np.float64)
    fil = JacobianSource.from_file(path, k=4, output=output)
    saved = src.to_file(tmp_path / "J2.npy")  # with its PATH.json
    cached = src.cached()
    sources = [src, arr, fil, saved, cached, cached]  # cached twice: the held pass too
    for s in sources:
        assert (s.n, s.k, s.d, s.input_shape) == (30, 4, 6, (6,)), s
        assert s.rows_sum_to_zero is (output == "softmax"), s
        np.testing.assert_allclose(_eig(s, "dual"), ref, rtol=0, atol=1e-12 * ref[0])
    assert cached.held and cached.array().shape == (30, 24)
    p = _eig(src, "primal")[: min(30, 24)]
    np.testing.assert_allclose(p, ref[:24], rtol=0, atol=1e-12 * ref[0])


def test_layer_targets_and_operator(tmp_path) -> None:
    model, x = _model(), _x(12)
    for target, direction, k, shape in (
        ("input->1", "input_to_layer", 9, (6,)),
        ("1->output", "layer_to_output", 4, (9,)),
    ):
        src = JacobianSource.from_model(model, x, target=target)
        assert (src.n, src.k, src.input_shape) == (12, k, shape)
        assert src.rows_sum_to_zero is (direction == "layer_to_output")
        J = torch.cat([b.jac for b in iter_layer_jacobians(model, x, "1", direction=direction)])
        ref = _reference(J)
        np.testing.assert_allclose(_eig(src, "dual"), ref, rtol=0, atol=1e-12 * ref[0])
        op = gram_operator(src, side="dual", scale="none")
        np.testing.assert_allclose(
            np.sort(np.linalg.eigvalsh(op.to_dense()))[::-1], ref, rtol=0, atol=1e-12 * ref[0]
        )


def test_targets_and_bad_inputs_are_named() -> None:
    assert parse_target("input->output") == ("main", None)
    assert parse_target("input->blocks.0") == ("input_to_layer", "blocks.0")
    assert parse_target("fc->output") == ("layer_to_output", "fc")
    with pytest.raises(ValueError, match="target='fc'"):
        parse_target("fc")
    with pytest.raises(TypeError, match="float32 or float64"):
        JacobianSource.from_array(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="not a multiple of k=3"):
        JacobianSource.from_array(torch.zeros(3, 4), k=3)
    # A one-shot iterator gives one pass (single-pass callers accept generators); a
    # second pass is refused in one sentence instead of coming back empty.
    once = JacobianSource.from_model(_model(), iter([_x(4)]))
    assert sum(b.jac.shape[0] for b in once) == 4
    with pytest.raises(TypeError, match="one-shot iterator and was already used"):
        list(once)


def test_cache_beyond_max_bytes_recomputes(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _model(), _x(10)
    calls: list[int] = []
    real = engine.jacobian_loop

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "jacobian_loop", counting)
    small = JacobianSource.from_model(model, x).cached(max_bytes=100)
    big = JacobianSource.from_model(model, x).cached()
    for s in (small, small, big, big):
        list(s)
    assert len(calls) == 3 and big.held and not small.held and small.array() is None
