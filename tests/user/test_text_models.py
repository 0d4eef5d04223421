"""Issue 18: a researcher with a text classifier. jacspec.analyze on a DataLoader of dict
batches with input_module="bert.embeddings" matches autograd on a tiny BERT; HuggingFace
outputs, dict outputs and tuples are read; the CLI takes --input-module; the Tracker reaches
the module; bad input gets one sentence naming what to pass."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import text_cases as tc
import torch
from torch import nn
from torch.utils.data import DataLoader

import jacspec

pytest.importorskip("transformers")


def _collate(items: list[dict]) -> dict:
    big = max(len(r["input_ids"]) for r in items)
    ids = torch.zeros(len(items), big, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(items):
        ids[i, : len(r["input_ids"])] = torch.as_tensor(r["input_ids"])
        mask[i, : len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "labels": torch.tensor([r["label"] for r in items])}


ROWS = [{"input_ids": tc.padded([n], seed=i)["input_ids"][0].tolist(), "label": i % 3,
         "text": f"sentence {i}"} for i, n in enumerate([5, 3, 6, 2, 4, 6, 3, 5])]


def _reference_gram(model: nn.Module, width: int, output: str = "softmax") -> np.ndarray:
    rows = []
    for r in ROWS:
        n = len(r["input_ids"])
        ref = tc.reference_jacobian(model, "bert.embeddings",
                                    {"input_ids": torch.tensor([r["input_ids"]]),
                                     "attention_mask": torch.ones(1, n, dtype=torch.long)},
                                    output=output)
        rows.append(torch.cat([ref, ref.new_zeros((3, width - n, 8))], 1).reshape(-1))
    J = torch.stack(rows).numpy()
    return J @ J.T


def test_analyze_on_a_dict_batch_dataloader_matches_autograd() -> None:
    model = tc.tiny_bert()
    loader = DataLoader([{k: v for k, v in r.items() if k != "text"} for r in ROWS],
                        batch_size=4, collate_fn=_collate)
    a = jacspec.analyze(model, loader, input_module="bert.embeddings", randomize=False)
    row = a.table.loc["input->output"]
    assert (row["n"], row["k"], row["d"]) == (8, 3, 6 * 8)
    want = np.linalg.eigvalsh(_reference_gram(model, 6) / 8)
    np.testing.assert_allclose(row["lambda_max"], want.max(), rtol=1e-9)
    np.testing.assert_allclose(row["trace"], want.sum(), rtol=1e-9)
    assert a.settings["jacobian"]["input_module"] == "bert.embeddings"


def test_rows_of_a_dataset_as_a_list_of_dicts_padded_to_one_length() -> None:
    model = tc.tiny_bert()
    rows = [{"input_ids": torch.tensor(r["input_ids"] + [0] * (6 - len(r["input_ids"]))),
             "attention_mask": torch.tensor([1] * len(r["input_ids"])
                                            + [0] * (6 - len(r["input_ids"]))),
             "label": r["label"], "text": r["text"]} for r in ROWS]
    e = jacspec.esd(model, rows, input_module="bert.embeddings", side="primal")
    want = np.sort(np.linalg.eigvalsh(_reference_gram(model, 6) / 8))[::-1]
    np.testing.assert_allclose(np.sort(e.eigenvalues)[::-1], want, rtol=1e-9, atol=1e-15)
    ragged = [{"input_ids": torch.tensor(r["input_ids"]), "label": r["label"]} for r in ROWS]
    with pytest.raises(ValueError, match="differ in length.*collate function that pads"):
        jacspec.esd(model, ragged, input_module="bert.embeddings")


class _Outputs(nn.Module):
    """The CNN's logits as a dict under ``key``, a tuple, or a dataclass-like object."""

    def __init__(self, how: str, key: str = "logits") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.how, self.key = tc.CNN1d().double(), how, key

    def forward(self, ids: torch.Tensor) -> object:
        z = self.net(ids)
        if self.how == "dict":
            return {self.key: z, "hidden": z.detach()}
        return (z, z.detach())


@pytest.mark.parametrize("how", ["dict", "tuple"])
def test_dict_and_tuple_outputs_give_the_tensor_models_numbers(how: str) -> None:
    ids = torch.randint(0, tc.VOCAB, (5, 7), generator=torch.Generator().manual_seed(5))
    plain = _Outputs("dict").net.eval()
    ref = jacspec.jacobians(plain, (ids, None), input_module="embed")
    got = jacspec.jacobians(_Outputs(how).eval(), (ids, None), input_module="net.embed")
    assert torch.equal(got, ref)
    keyed = jacspec.jacobians(_Outputs("dict", key="scores").eval(), (ids, None),
                              input_module="net.embed", output_key="scores")
    assert torch.equal(keyed, ref)


def test_an_output_without_logits_names_its_keys() -> None:
    ids = torch.randint(0, tc.VOCAB, (4, 7))
    with pytest.raises(ValueError, match="without 'logits'; its keys are scores, hidden: pass "
                                         "output_key="):
        jacspec.esd(_Outputs("dict", key="scores").eval(), (ids, None),
                    input_module="net.embed")


def test_a_module_name_that_does_not_exist_names_the_closest() -> None:
    with pytest.raises(ValueError, match=r"input_module='bert.embedings' is not a module of the "
                                         r"model; the closest are 'bert.embeddings'"):
        jacspec.analyze(tc.tiny_bert(), [tc.padded([3, 2])], input_module="bert.embedings")


class _SharedEmbedding(nn.Module):
    """One embedding called twice per forward (a question and an answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(tc.VOCAB, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        a, b = self.embed(ids[:, :3]).mean(1), self.embed(ids[:, 3:]).mean(1)
        return self.head(torch.cat([a, b], 1))


def test_a_module_called_twice_per_forward_is_refused_with_why() -> None:
    ids = torch.randint(0, tc.VOCAB, (4, 6))
    with pytest.raises(ValueError, match=r"called 2 times per forward pass \(a shared "
                                         r"embedding or tied weights used twice\)"):
        jacspec.esd(_SharedEmbedding().double().eval(), (ids, None), input_module="embed")


def test_integer_inputs_without_an_input_module_get_the_hint() -> None:
    ids = torch.randint(0, tc.VOCAB, (4, 6))
    with pytest.raises(TypeError, match=r"token ids.*input_module="):
        jacspec.esd(tc.seeded(lambda: tc.CNN1d()), (ids, None))
    with pytest.raises(ValueError, match=r"token ids have no Jacobian: name the module.*"
                                         r"input_module="):
        jacspec.esd(tc.tiny_bert(), [tc.padded([3, 2])])


def test_per_position_logits_without_position_say_so() -> None:
    with pytest.raises(ValueError, match=r"pass position= \(--position, e.g. -1"):
        jacspec.esd(tc.tiny_gpt2(), [tc.padded([3, 2], labels=None)],
                    input_module="transformer.wte")


def test_a_longer_later_batch_is_refused_with_the_fix() -> None:
    batches = [tc.padded([3, 2]), tc.padded([5, 4], seed=1)]
    with pytest.raises(ValueError, match="longer than the first batch's 3.*padding='max_length'"):
        jacspec.esd(tc.tiny_bert(), batches, input_module="bert.embeddings")


def test_tracker_reaches_the_input_module() -> None:
    model = tc.seeded(lambda: tc.CNN1d())
    ids = torch.randint(0, tc.VOCAB, (6, 7), generator=torch.Generator().manual_seed(6))
    tracker = jacspec.Tracker((ids, torch.arange(6) % 3), metrics=["lambda_max",
                              "jacobian_norm"], input_module="embed", dtype=torch.float64)
    row = tracker.step(model, 0, force=True)
    J = jacspec.jacobians(model, (ids, None), input_module="embed").reshape(6, -1)
    lam = np.linalg.eigvalsh((J @ J.T).numpy() / 6).max()
    np.testing.assert_allclose(row["lambda_max"], lam, rtol=1e-9)
    np.testing.assert_allclose(row["jacobian_norm"], J.pow(2).sum(1).sqrt().mean().item(),
                               rtol=1e-9)


def test_cli_analyze_takes_input_module(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "textmodel.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def cnn():
            torch.manual_seed(0)
            return nn.Sequential(nn.Embedding(40, 4), nn.Flatten(), nn.Linear(20, 3)).eval()
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ids = np.random.default_rng(0).integers(0, 40, (6, 5))
    np.savez(tmp_path / "ids.npz", x=ids, y=np.arange(6) % 3)
    from jacspec.cli.main import main

    rc = main(["analyze", "textmodel:cnn", "--data", "ids.npz", "--input-module", "0",
               "--dtype", "float64", "--no-randomize", "--json", "out.json"])
    assert rc == 0
    got = json.loads((tmp_path / "out.json").read_text())
    import textmodel

    model = textmodel.cnn().double()
    J = jacspec.jacobians(model, (torch.from_numpy(ids), None), input_module="0")
    lam = np.linalg.eigvalsh((J.reshape(6, -1) @ J.reshape(6, -1).T).numpy() / 6).max()
    np.testing.assert_allclose(got["metrics"]["lambda_max"], lam, rtol=1e-9)
    capsys.readouterr()
    assert main(["analyze", "textmodel:cnn", "--data", "ids.npz", "--input-module",
                 "embed"]) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if ": error: " in e]
    assert len(errors) == 1 and "input_module='embed' is not a module of the model" in errors[0]
