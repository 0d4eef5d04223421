"""Text and sequence models as users bring them, and the autograd reference of the
Jacobian at an input module (the function from that module's output to the logits).

- ``tiny_bert`` / ``tiny_gpt2``: HuggingFace ``BertForSequenceClassification`` and
  ``GPT2LMHeadModel`` built from small configs (no download), float64, eval mode;
- ``RNNClassifier`` (``nn.LSTM`` or ``nn.GRU``) over ``(n, seq_len, features)`` inputs, with
  an input projection ``proj``; ``CNN1d``: ``nn.Embedding`` -> ``Conv1d`` -> pooling -> head;
- ``padded``: dict batches of token ids with right padding and their attention mask;
- ``reference_jacobian``: ``d g(logits) / d h`` of one example run alone (no padding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

VOCAB = 40


def tiny_bert(num_labels: int = 3, seed: int = 0, **config: Any) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=16,
                     num_labels=num_labels, **config)
    return BertForSequenceClassification(cfg).double().eval()


def tiny_gpt2(vocab: int = 300, seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    return GPT2LMHeadModel(cfg).double().eval()


class RNNClassifier(nn.Module):
    """``proj`` (features -> hidden), an LSTM/GRU, the last step's state -> ``k`` logits."""

    def __init__(self, cell: type[nn.Module], features: int = 3, hidden: int = 5,
                 k: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(features, hidden)
        self.rnn = cell(hidden, 6, batch_first=True)
        self.out = nn.Linear(6, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, _ = self.rnn(self.proj(x))
        return self.out(o[:, -1])


class CNN1d(nn.Module):
    """Token ids -> ``embed`` -> Conv1d -> ReLU -> mean over positions -> ``k`` logits."""

    def __init__(self, k: int = 3, channels: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, channels)
        self.conv = nn.Conv1d(channels, 5, kernel_size=3, padding=1)
        self.head = nn.Linear(5, k)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids).transpose(1, 2)
        return self.head(torch.relu(self.conv(h)).mean(dim=2))


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build().double().eval()


def padded(lengths: list[int], seed: int = 0, labels: int | None = 3) -> dict[str, Any]:
    """One dict batch: token ids right-padded with 0 to the longest length, its mask, and
    labels ``i % labels``."""
    gen = torch.Generator().manual_seed(seed)
    big = max(lengths)
    ids = torch.zeros(len(lengths), big, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, VOCAB, (n,), generator=gen)
        mask[i, :n] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if labels:
        batch["labels"] = torch.arange(len(lengths)) % labels
    return batch


def module_output(model: nn.Module, name: str, **inputs: Any) -> torch.Tensor:
    """The output of ``model``'s module ``name`` on ``inputs`` (a plain forward hook)."""
    got: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda m, i, o: got.append(o.detach()))
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    return got[0]


def reference_jacobian(model: nn.Module, name: str, inputs: dict[str, Any], *,
                       output: str = "logits", position: int | None = None,
                       key: str = "logits") -> torch.Tensor:
    """``torch.autograd.functional.jacobian`` of ``h -> g(logits)`` for one example given
    alone (``inputs`` of batch 1, no padding): ``(k, *h.shape[1:])``."""
    h0 = module_output(model, name, **inputs)[0]

    def f(h: torch.Tensor) -> torch.Tensor:
        handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: h[None])
        try:
            out = model(**inputs)
        finally:
            handle.remove()
        z = out if isinstance(out, torch.Tensor) else out[key]
        z = z[0] if position is None else z[0, position]
        return torch.softmax(z, 0) if output == "softmax" else z

    return torch.autograd.functional.jacobian(f, h0)


def example(batch: dict[str, Any], i: int) -> dict[str, Any]:
    """Example ``i`` of a padded dict batch alone, its padding cut (labels dropped)."""
    n = int(batch["attention_mask"][i].sum())
    return {k: v[i : i + 1, :n] for k, v in batch.items() if k != "labels"}
