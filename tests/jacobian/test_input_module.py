"""Jacobians at an input module (issue 18): per-example ``d g(logits) / d h`` with ``h`` a
submodule's output, against ``torch.autograd.functional.jacobian`` of the function from that
output to the logits, for each example run alone (float64, rtol 1e-9); padded positions
give zero columns, so a padded batch has the Gram of its sequences one at a time; the exact
ESD equals eigvalsh of the reference Gram."""

from __future__ import annotations

import numpy as np
import pytest
import text_cases as tc
import torch
from torch import nn
from torch.utils.data import DataLoader

import jacspec
from jacspec.jacobian.options import JacobianOptions
from jacspec.jacobian.source import JacobianSource

pytest.importorskip("transformers")

LENGTHS = [6, 4, 2, 5]


def _reference_rows(model: nn.Module, name: str, batch: dict, width: int, **kw) -> torch.Tensor:
    """Each example's reference Jacobian alone, laid out on ``width`` positions (zeros)."""
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        ref = tc.reference_jacobian(model, name, tc.example(batch, i), **kw)
        pad = ref.new_zeros((ref.shape[0], width - ref.shape[1], *ref.shape[2:]))
        rows.append(torch.cat([ref, pad], dim=1))
    return torch.stack(rows)


@pytest.mark.parametrize("output", ["logits", "softmax"])
def test_bert_jacobians_at_the_embeddings_match_autograd_with_padding(output: str) -> None:
    model = tc.tiny_bert()
    batch = tc.padded(LENGTHS)
    J = jacspec.jacobians(model, [batch], input_module="bert.embeddings", output=output)
    assert J.shape == (4, 3, 6, 8)  # k x (seq_len x hidden)
    ref = _reference_rows(model, "bert.embeddings", batch, 6, output=output)
    np.testing.assert_allclose(J.numpy(), ref.numpy(), rtol=1e-9, atol=1e-13)
    for i, n in enumerate(LENGTHS):  # a padded position contributes nothing
        if n < 6:
            assert J[i, :, n:].abs().max().item() == 0.0


def test_gpt2_last_real_token_matches_autograd_and_is_sketched_automatically() -> None:
    model = tc.tiny_gpt2()
    batch = tc.padded([5, 3, 4], labels=None)
    J = jacspec.jacobians(model, [batch], input_module="transformer.wte", position=-1,
                          output="logits")
    assert J.shape == (3, 300, 5, 8)
    rows = []
    for i, n in enumerate([5, 3, 4]):
        ref = tc.reference_jacobian(model, "transformer.wte", tc.example(batch, i),
                                    position=n - 1)
        rows.append(torch.cat([ref, ref.new_zeros((300, 5 - n, 8))], dim=1))
    np.testing.assert_allclose(J.numpy(), torch.stack(rows).numpy(), rtol=1e-9, atol=1e-13)
    e = jacspec.esd(model, [batch], input_module="transformer.wte", position=-1,
                    output="logits", sketch="auto")
    assert e.settings["method"] == "sketched" and e.settings["sketch"]["k_full"] == 300


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_rnn_classifier_at_its_input_projection_and_at_the_input(cell: type) -> None:
    model = tc.seeded(lambda: tc.RNNClassifier(cell))
    x = torch.randn(5, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(5) % 4
    J = jacspec.jacobians(model, (x, y), input_module="proj", output="logits")
    assert J.shape == (5, 4, 7, 5)
    for i in range(5):
        h = model.proj(x[i : i + 1]).detach()[0]

        def f(hh: torch.Tensor) -> torch.Tensor:
            o, _ = model.rnn(hh[None])
            return model.out(o[:, -1])[0]

        ref = torch.autograd.functional.jacobian(f, h)
        np.testing.assert_allclose(J[i].numpy(), ref.numpy(), rtol=1e-9, atol=1e-13)
    Jx = jacspec.jacobians(model, (x, y), output="logits")  # float inputs: at the input
    ref_x = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[0])
    np.testing.assert_allclose(Jx[0].numpy(), ref_x.numpy(), rtol=1e-9, atol=1e-13)


def test_cnn1d_on_token_ids_at_its_embedding() -> None:
    model = tc.seeded(lambda: tc.CNN1d())
    ids = torch.randint(0, tc.VOCAB, (6, 9), generator=torch.Generator().manual_seed(2))
    y = torch.arange(6) % 3
    J = jacspec.jacobians(model, (ids, y, torch.arange(6)), input_module="embed",
                          output="softmax")  # an (x, y, index) tuple
    for i in range(6):
        h = model.embed(ids[i : i + 1]).detach()[0]

        def f(hh: torch.Tensor) -> torch.Tensor:
            z = model.head(torch.relu(model.conv(hh[None].transpose(1, 2))).mean(dim=2))
            return torch.softmax(z, 1)[0]

        ref = torch.autograd.functional.jacobian(f, h)
        np.testing.assert_allclose(J[i].numpy(), ref.numpy(), rtol=1e-9, atol=1e-13)


def test_padded_batch_has_the_gram_and_esd_of_its_sequences_one_at_a_time() -> None:
    model = tc.tiny_bert()
    batch = tc.padded(LENGTHS)
    ref = _reference_rows(model, "bert.embeddings", batch, 6).reshape(4, -1)
    G = (ref @ ref.T).numpy()
    e = jacspec.esd(model, [batch], input_module="bert.embeddings", output="logits",
                    side="primal")
    want = np.sort(np.linalg.eigvalsh(G / 4))[::-1]
    np.testing.assert_allclose(np.sort(e.eigenvalues)[::-1][:4], want, rtol=1e-9, atol=1e-15)
    # one at a time: single-example batches of their own lengths (the longest first fixes d)
    alone = [{**tc.example(batch, i), "labels": batch["labels"][i : i + 1]}
             for i in np.argsort(LENGTHS)[::-1]]
    g1 = jacspec.gram(model, alone, input_module="bert.embeddings", output="logits",
                      side="primal")
    order = np.argsort(LENGTHS)[::-1]
    np.testing.assert_allclose(g1.matrix, G[np.ix_(order, order)], rtol=1e-9, atol=1e-15)
    g2 = jacspec.gram(model, [batch], input_module="bert.embeddings", output="logits",
                      side="primal")
    np.testing.assert_allclose(g2.matrix, G, rtol=1e-9, atol=1e-15)


def test_routes_with_an_input_module_give_the_exact_numbers_or_refuse() -> None:
    model = tc.tiny_bert()
    batch = tc.padded(LENGTHS)
    ref = _reference_rows(model, "bert.embeddings", batch, 6, output="softmax").reshape(4, -1)
    norms = jacspec.jacobian_norms(model, [batch], input_module="bert.embeddings")
    np.testing.assert_allclose(norms.numpy(), ref.pow(2).sum(1).sqrt().numpy(), rtol=1e-9)
    lam = np.linalg.eigvalsh((ref @ ref.T).numpy() / 4).max()
    est = jacspec.estimate_esd(model, [batch], method="slq", input_module="bert.embeddings",
                               num_steps=30, num_vectors=4, top_k=1)
    np.testing.assert_allclose(est.top_eigenvalues[0], lam, rtol=1e-8)
    e = jacspec.esd(model, [batch], input_module="bert.embeddings", route="auto")
    assert e.settings["route"] == "direct"  # h feeds three Linears (query, key, value)
    with pytest.raises(ValueError, match="route='factored' does not apply"):
        jacspec.esd(model, [batch], input_module="bert.embeddings", route="factored")
    # layer rows after the module are exact (tests/user/test_text_reach.py); before it, refused
    with pytest.raises(ValueError, match=r"runs before or beside input_module"):
        JacobianSource.from_model(model, [batch], input_module="bert.embeddings",
                                  target="bert.embeddings.word_embeddings->output")


def test_factored_route_at_a_module_that_feeds_one_linear() -> None:
    model = tc.seeded(lambda: nn.Sequential(nn.Embedding(tc.VOCAB, 6), nn.Flatten(),
                                            nn.Linear(24, 3), nn.Tanh(), nn.Linear(3, 4)))
    ids = torch.randint(0, tc.VOCAB, (7, 4), generator=torch.Generator().manual_seed(3))
    direct = jacspec.esd(model, (ids, None), input_module="0", route="direct")
    fac = jacspec.esd(model, (ids, None), input_module="1", route="factored")
    assert fac.settings["route"] == "factored"
    # at "1" (Flatten's output, which feeds the Linear) the Jacobian equals the one at "0"
    # flattened, so the spectra agree
    np.testing.assert_allclose(fac.eigenvalues[:5], direct.eigenvalues[:5], rtol=1e-9)


def test_image_path_options_and_image_numbers_unchanged() -> None:
    model = tc.seeded(lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)))
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    plain = jacspec.jacobians(model, x)
    assert JacobianOptions().input_module is None
    same = jacspec.jacobians(model, x, options=JacobianOptions())
    assert torch.equal(plain, same)


def test_dataloader_of_dict_batches_with_collate() -> None:
    model = tc.tiny_bert()
    rows = [{"input_ids": tc.padded([n], seed=i)["input_ids"][0], "label": i % 3}
            for i, n in enumerate([5, 3, 6, 2, 4, 6])]

    def collate(items: list[dict]) -> dict:
        big = max(len(r["input_ids"]) for r in items)
        ids = torch.zeros(len(items), big, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(items):
            ids[i, : len(r["input_ids"])] = r["input_ids"]
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([r["label"] for r in items])}

    loader = DataLoader(rows, batch_size=3, collate_fn=collate)
    J = jacspec.jacobians(model, loader, input_module="bert.embeddings", output="logits")
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ref = tc.reference_jacobian(model, "bert.embeddings",
                                    {"input_ids": r["input_ids"][None],
                                     "attention_mask": torch.ones(1, n, dtype=torch.long)})
        np.testing.assert_allclose(J[i, :, :n].numpy(), ref.numpy(), rtol=1e-9, atol=1e-13)
        if n < 6:
            assert J[i, :, n:].abs().max().item() == 0.0


class _NumpyTimesTwo(torch.autograd.Function):
    """An operation whose backward runs through numpy: it has no batched (vmap) backward,
    as fused attention kernels on some accelerators lack one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(g.detach().numpy() * 2)


def test_batched_grad_falls_back_to_loop_where_an_op_has_no_batched_backward(caplog) -> None:
    model = tc.seeded(lambda: nn.Sequential(nn.Embedding(tc.VOCAB, 3), nn.Flatten(),
                                            nn.Linear(12, 4)))
    twice = nn.Sequential(model[0], _Apply(), model[1], model[2]).eval()
    ids = torch.randint(0, tc.VOCAB, (5, 4), generator=torch.Generator().manual_seed(7))
    with caplog.at_level("WARNING"):
        J = jacspec.jacobians(twice, (ids, None), input_module="0", method="batched_grad",
                              output="logits")
    assert "falling back to method='loop'" in caplog.text
    W = model[2].weight.detach().reshape(4, 4, 3)  # d logits / d h = 2 W, the same for all
    np.testing.assert_allclose(J.numpy(), (2 * W).expand(5, 4, 4, 3).numpy(), rtol=1e-12)


class _Apply(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NumpyTimesTwo.apply(x)
