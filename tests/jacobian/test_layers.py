"""Layer-wise Jacobians against autograd on the split network and on user-style models
(float64): layers="all" selection, shared modules, tuple outputs, in-place ops downstream,
non-eager models."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jacspec.analysis import analyze
from jacspec.jacobian.layers import hidden_layers, iter_layer_jacobians, select_layers
from jacspec.spectra.exact import esd_from_gram
from jacspec.spectra.gram import gram_from_batches

sys.path.insert(0, str(Path(__file__).parents[1]))
import cases


def net() -> nn.Sequential:
    torch.manual_seed(3)
    return (
        nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 4))
        .double()
        .eval()
    )


def test_hidden_layers_all_and_named() -> None:
    model = net()
    # every activation and parametrised module but the output layer "4"
    assert hidden_layers(model) == ["0", "1", "2", "3"]
    assert hidden_layers(model, x=torch.randn(3, 6, dtype=torch.float64)) == ["0", "1", "2", "3"]
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
    with pytest.raises(ValueError, match="called 2 times"):
        list(iter_layer_jacobians(model.eval(), torch.randn(3, 3, dtype=torch.float64), "1"))


# --------------------------------------------------------------------------- user models


def _reference_rows(
    model: nn.Module, name: str, x: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Independent per-example Jacobians of one module's output, by autograd.functional:
    up[i] = d h(x_i) / d x_i, down[i] = d softmax(f) / d h at h(x_i), rows flattened."""
    module = dict(model.named_modules())[name]
    store: dict[str, torch.Tensor] = {}

    def keep(mod: nn.Module, inp: object, out: torch.Tensor) -> None:
        store["h"] = out.clone()  # a copy: in-place ops downstream must not change it

    def hidden(xi: torch.Tensor) -> torch.Tensor:
        handle = module.register_forward_hook(keep)
        try:
            model(xi[None])
        finally:
            handle.remove()
        return store["h"][0]

    def head(xi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        handle = module.register_forward_hook(lambda mod, inp, out: h[None] + 0.0)
        try:
            return torch.softmax(model(xi[None]), dim=1)[0]
        finally:
            handle.remove()

    up, down = [], []
    for xi in x:
        up.append(torch.autograd.functional.jacobian(hidden, xi).reshape(-1).numpy())
        h = hidden(xi).detach()
        down.append(torch.autograd.functional.jacobian(lambda v, xi=xi: head(xi, v), h).reshape(-1))
    return np.stack(up), torch.stack(down).numpy()


@pytest.mark.parametrize(
    "arch,skipped,why",
    [
        ("resnet", ["layer1.0.relu", "layer1.1.relu"], "called 2 times"),
        ("transformer", ["attn"], "tuple"),
    ],
)
def test_all_on_user_models_matches_autograd(arch: str, skipped: list[str], why: str) -> None:
    model = cases.build(arch, dtype=torch.float64)
    n = 4
    x = torch.from_numpy(cases.inputs(arch, n)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match=why) as record:
        result = analyze(model, x, layers="all", randomize=False)
    skip_warnings = [w for w in record if "skipped" in str(w.message)]
    assert len(skip_warnings) == 1  # one warning naming every skipped module
    for name in skipped:
        assert repr(name) in str(skip_warnings[0].message)
        assert f"input->{name}" not in result.table.index
    with pytest.warns(UserWarning, match=why):
        names = select_layers(model, x)[0]
    expected = ["input->output"] + [
        f"{a}{h.name}{b}" for h in names for a, b in (("input->", ""), ("", "->output"))
    ]
    assert list(result.table.index) == expected
    if arch == "resnet":  # in-place `out += identity` right after the captured bn2
        assert "layer1.0.bn2->output" in result.table.index
    else:
        assert "mlp.1->output" in result.table.index and "norm1->output" in result.table.index
    for h in names:
        up, down = _reference_rows(model, h.name, x)
        for label, J in ((f"input->{h.name}", up), (f"{h.name}->output", down)):
            row = result.table.loc[label]
            ref = np.linalg.eigvalsh(J @ J.T / n)
            # trace(M/n) = mean_i ||J_i||_F^2 and the top eigenvalue, against autograd
            assert row["trace"] == pytest.approx((J**2).sum() / n, rel=1e-10), label
            assert row["lambda_max"] == pytest.approx(ref[-1], rel=1e-9), label
            assert row["method"] == "exact"
    for k, v in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k]), k
    assert not model.training


def test_named_module_called_twice_or_returning_a_tuple_is_a_value_error() -> None:
    resnet = cases.build("resnet", dtype=torch.float64)
    x = torch.from_numpy(cases.inputs("resnet", 3)).double()
    with pytest.raises(ValueError, match=r"'layer1.0.relu' \(ReLU\) called 2 times"):
        analyze(resnet, x, layers=["layer1.0.relu"])
    tr = cases.build("transformer", dtype=torch.float64)
    xt = torch.from_numpy(cases.inputs("transformer", 3)).double()
    with pytest.raises(ValueError, match=r"'attn' \(MultiheadAttention\) returns a tuple"):
        analyze(tr, xt, layers="attn")
    with pytest.raises(ValueError, match="tuple"):
        list(iter_layer_jacobians(tr, xt, "attn"))


class FunctionalMLP(nn.Module):
    """Activations as F.relu calls: no activation modules."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(5, 7), nn.Linear(7, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_all_with_functional_activations_takes_the_parametrised_layers() -> None:
    torch.manual_seed(0)
    model = FunctionalMLP().double().eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped, nothing warned
        chosen, skipped = select_layers(model, x)
    assert [h.name for h in chosen] == ["fc1", "fc2"] and skipped == {}
    assert [h.width for h in chosen] == [7, 6]


def test_torchscript_and_exported_models_refuse_layer_rows_in_one_line() -> None:
    model = cases.build("mlp")
    x = torch.from_numpy(cases.inputs("mlp", 8))
    scripted = torch.jit.script(model)
    traced = torch.jit.trace(model, x[:2])
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},)).module()
    for m in (scripted, traced, exported):
        with pytest.raises(ValueError, match="layer rows need an eager torch.nn.Module") as err:
            analyze(m, x, layers="all", randomize=False)
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError, match="eager"):
            list(iter_layer_jacobians(m, x, "net.1"))
    # the input->output row still works without layers
    row = analyze(scripted, x, randomize=False).table.loc["input->output"]
    ref = analyze(model, x, randomize=False).table.loc["input->output"]
    assert row["trace"] == pytest.approx(ref["trace"], rel=1e-5)
