"""Layer-wise Jacobians against autograd on the split network (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jacspec.gram import gram_from_batches
from jacspec.layers import hidden_layers, iter_layer_jacobians
from jacspec.spectrum import esd_from_gram


def net() -> nn.Sequential:
    torch.manual_seed(3)
    return (
        nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 4))
        .double()
        .eval()
    )


def test_hidden_layers_all_and_named() -> None:
    model = net()
    assert hidden_layers(model) == ["1", "3"]
    assert hidden_layers(model, ["2"]) == ["2"]
    with pytest.raises(ValueError, match="not modules of the model"):
        hidden_layers(model, ["nope"])


@pytest.mark.parametrize("layer,cut", [("1", 2), ("3", 4)])
def test_layer_jacobians_match_autograd(layer: str, cut: int) -> None:
    model = net()
    x = torch.randn(5, 6, dtype=torch.float64)
    prefix, suffix = model[:cut], model[cut:]
    up = torch.cat(
        [
            b.jac
            for b in iter_layer_jacobians(model, x, layer, direction="input_to_layer", batch_size=2)
        ]
    )
    down = torch.cat([b.jac for b in iter_layer_jacobians(model, x, layer, batch_size=3)])
    for i in range(5):
        ref_up = torch.autograd.functional.jacobian(lambda v: prefix(v[None])[0], x[i])
        h = prefix(x[i][None])[0].detach()
        ref_down = torch.autograd.functional.jacobian(
            lambda v: torch.softmax(suffix(v[None]), dim=1)[0], h
        )
        torch.testing.assert_close(up[i], ref_up)
        torch.testing.assert_close(down[i], ref_down)


def test_layer_esd_matches_dense() -> None:
    model = net()
    x = torch.randn(40, 6, dtype=torch.float64)
    batches = iter_layer_jacobians(model, x, "3")
    e = esd_from_gram(gram_from_batches(batches, n=40))
    rows = torch.cat([b.rows for b in iter_layer_jacobians(model, x, "3")]).numpy()
    ref = np.sort(np.linalg.eigvalsh(rows @ rows.T / 40))[::-1]
    np.testing.assert_allclose(e.eigenvalues, ref[: len(e.eigenvalues)], atol=1e-10 * ref[0])


def test_shared_module_is_refused() -> None:
    act = nn.Tanh()
    model = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="ran 2 times"):
        list(iter_layer_jacobians(model.eval(), torch.randn(3, 3, dtype=torch.float64), "1"))
