"""The Gram result's contract numbers: ``summary()["trace"]`` is ``||𝒥||_F^2`` on both sides
(recomputed here from the data Jacobian, float64), ``to_frame()`` is one row of it, and
``to_dict()`` is plain JSON without the matrix."""

from __future__ import annotations

import json

import pytest
import torch

from jacspec.jacobian.engine import data_jacobian
from jacspec.models.builders import mlp
from jacspec.spectra.gram import gram


@pytest.mark.parametrize("side", ["dual", "primal"])
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_gram_summary_trace_is_the_squared_frobenius_norm(side: str, output: str) -> None:
    model = mlp(5, 3, width=7, depth=2, seed=1).double().eval()
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = gram(model, x, side=side, output=output)
    jac = data_jacobian(model, x, output=output)  # (n, k*d), float64
    frob2 = float((jac.double() ** 2).sum())
    s = g.summary()
    assert s["side"] == side and s["n"] == 9 and s["k"] == 3 and s["d"] == 5
    assert s["size"] == g.matrix.shape[0]
    assert s["trace"] == pytest.approx(frob2, rel=1e-12)
    frame = g.to_frame()
    assert len(frame) == 1 and frame.loc[0, "trace"] == s["trace"]
    d = g.to_dict()
    assert "matrix" not in d and json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["side"] == side and d["input_shape"] == [5]
