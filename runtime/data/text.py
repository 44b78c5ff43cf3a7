"""Text: a bundled corpus, tokenizers (character-level and byte-level BPE), language-model windows, padding.

```python
text = load_pydoc_corpus()                       # Python's own documentation, shipped with Python
tokenizer = BPETokenizer.train([text], vocab_size=512)
tokenizer.save("tokenizer.json"); tokenizer = BPETokenizer.load("tokenizer.json")
ids = tokenizer.encode(text)
collate = LMCollate(pad_id=tokenizer.pad_id, buckets=(16, 32, 64))
loader = DataLoader(TokenSequences(random_lengths), batch_size=8, shuffle=True, collate_fn=collate)
for tokens, labels in loader: step(tokens, labels)   # at most len(buckets) compiled shapes
```

Padding to a bounded set of lengths (buckets) bounds the number of distinct
shapes the compiled step sees; the batch dim is symbolic, so batch size
alone never recompiles. Padded label positions hold ``ignore_index``, which
the loss skips, so padding does not change the loss.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from kiln.runtime.data.datasets import DataError

IGNORE_INDEX = -100
"""The label the losses skip (PyTorch's default ``ignore_index``)."""
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def load_pydoc_corpus() -> str:
    """Python's documentation topics (``pydoc_data.topics``), joined: a few MB of English and code, no download."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def char_corpus(characters: int) -> tuple["CharTokenizer", np.ndarray]:
    """The first ``characters`` of ``load_pydoc_corpus()``, a ``CharTokenizer`` trained on them and their ids (int64)."""
    text = load_pydoc_corpus()[:characters]
    tokenizer = CharTokenizer.train([text])
    return tokenizer, np.asarray(tokenizer.encode(text), dtype=np.int64)


def unigram_entropy(ids: np.ndarray) -> float:
    """The cross-entropy (nats per token) of the best context-free model of ``ids``: their frequencies. A language
    model's loss below it is what its context bought."""
    frequencies = np.bincount(np.ravel(ids)) / np.size(ids)
    frequencies = frequencies[frequencies > 0]
    return float(-(frequencies * np.log(frequencies)).sum())


def _require_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as error:
        raise DataError("BPETokenizer needs the 'tokenizers' package: pip install 'kiln[data]'") from error
    return tokenizers


class CharTokenizer:
    """One id per character seen in training; ids 0..2 are ``<pad>``, ``<eos>``, ``<unk>``."""

    def __init__(self, characters: Sequence[str]):
        self.vocabulary = [PAD, EOS, UNK, *characters]
        self._ids = {token: index for index, token in enumerate(self.vocabulary)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        return cls(sorted(set().union(*map(set, texts))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def eos_id(self) -> int:
        return self._ids[EOS]

    def encode(self, text: str) -> list[int]:
        unknown = self._ids[UNK]
        return [self._ids.get(character, unknown) for character in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocabulary[i] for i in ids if i >= 3)

    def save(self, path: str) -> None:
        _write_text(path, json.dumps({"kind": "char", "characters": self.vocabulary[3:]}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str) -> "CharTokenizer":
        data = _read_json(path)
        if data.get("kind") != "char" or not isinstance(data.get("characters"), list):
            raise DataError(f"{path} is not a kiln character tokenizer (expected {{'kind': 'char', 'characters': [...]}})")
        return cls(data["characters"])


class BPETokenizer:
    """A byte-level BPE (GPT-2 style) trained with Hugging Face ``tokenizers``: every string round-trips exactly."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 2) -> "BPETokenizer":
        tokenizers = _require_tokenizers()
        byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
        tokenizer.pre_tokenizer = byte_level
        tokenizer.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, EOS],
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def pad_id(self) -> int:
        return self.tokenizer.token_to_id(PAD)

    @property
    def eos_id(self) -> int:
        return self.tokenizer.token_to_id(EOS)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def save(self, path: str) -> None:
        """Write ``tokenizer.json`` (Hugging Face's format, loadable by ``tokenizers.Tokenizer.from_file``)."""
        _write_text(path, self.tokenizer.to_str())

    @classmethod
    def load(cls, path: str) -> "BPETokenizer":
        tokenizers = _require_tokenizers()
        text = _read_text(path)
        try:
            return cls(tokenizers.Tokenizer.from_str(text))
        except Exception as error:  # the Rust side raises a plain Exception on a malformed file
            raise DataError(f"{path} is not a valid tokenizer.json: {error}") from error


def _write_text(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def _read_text(path: str) -> str:
    if not os.path.exists(path):
        raise DataError(f"tokenizer file {path} does not exist")
    with open(path, encoding="utf-8") as file:
        return file.read()


def _read_json(path: str) -> dict[str, Any]:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from error


# --- language-model data ------------------------------------------------------------------------


def lm_windows(ids: Sequence[int], length: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Next-token pairs from one long token stream: inputs ``ids[s:s+length]``, labels shifted by one."""
    ids = np.asarray(ids, dtype=np.int64)
    stride = stride or length
    starts = np.arange(0, len(ids) - length, stride)
    if len(starts) == 0:
        raise DataError(f"lm_windows: {len(ids)} tokens are too few for one window of {length} + 1")
    offsets = starts[:, None] + np.arange(length)[None, :]
    return ids[offsets], ids[offsets + 1]


class TokenSequences:
    """A dataset of variable-length token sequences (each sample one int64 array)."""

    def __init__(self, sequences: Iterable[Sequence[int]]):
        self.sequences = [np.asarray(sequence, dtype=np.int64) for sequence in sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.sequences[index]


def bucket_length(length: int, buckets: Sequence[int] | None) -> int:
    """The smallest bucket that holds ``length`` (``length`` itself without buckets)."""
    if not buckets:
        return length
    for bucket in sorted(buckets):
        if bucket >= length:
            return bucket
    raise DataError(f"a sequence of {length} tokens exceeds the largest bucket {max(buckets)}; add a bucket or truncate (max_length=...)")


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int, buckets: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(N, L)`` padded ids and a bool mask (True = real token); L is the longest length, rounded up to a bucket."""
    length = bucket_length(max(len(s) for s in sequences), buckets)
    padded = np.full((len(sequences), length), pad_value, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=bool)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = True
    return padded, mask


@dataclass
class LMCollate:
    """Collate token sequences into next-token batches: ``(tokens, labels)`` or ``(tokens, mask, labels)``.

    ``tokens = seq[:-1]`` padded with ``pad_id``; ``labels = seq[1:]`` padded with
    ``ignore_index``; both are padded to the batch's longest sequence, rounded up
    to the nearest of ``buckets`` when given (``max_length`` truncates first).
    """

    pad_id: int = 0
    buckets: Sequence[int] | None = None
    ignore_index: int = IGNORE_INDEX
    return_mask: bool = False
    max_length: int | None = None

    def __call__(self, samples: list[Sequence[int]]) -> tuple[np.ndarray, ...]:
        cut = None if self.max_length is None else self.max_length + 1
        sequences = [np.asarray(sample, dtype=np.int64)[:cut] for sample in samples]
        short = [len(s) for s in sequences if len(s) < 2]
        if short:
            raise DataError(f"LMCollate: a sequence of {short[0]} token(s) has no next-token pair; filter sequences shorter than 2")
        tokens, mask = pad_sequences([s[:-1] for s in sequences], self.pad_id, self.buckets)
        labels, _ = pad_sequences([s[1:] for s in sequences], self.ignore_index, self.buckets)
        return (tokens, mask, labels) if self.return_mask else (tokens, labels)


def lm_loss(logits: Any, labels: Any, ignore_index: int = IGNORE_INDEX) -> Any:
    """Mean next-token cross-entropy of ``(N, T, V)`` logits against ``(N, T)`` labels; ``ignore_index`` labels (padding) are skipped."""
    from kiln.frontend.tensor import apply

    # one row per token: the classes contiguous on the last axis (a (N, V, T) view would make every row strided)
    rows = logits.reshape(-1, logits.shape[-1])
    return apply("nn.cross_entropy", rows, labels.reshape(-1), reduction="mean", ignore_index=ignore_index)
