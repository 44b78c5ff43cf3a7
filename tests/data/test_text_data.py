"""Text: tokenizers round-trip the bundled corpus; LM windows; padding and buckets bound compiled shapes and leave the loss alone."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.data import (
    IGNORE_INDEX, BPETokenizer, CharTokenizer, DataError, DataLoader, LMCollate, TokenSequences, bucket_length, lm_loss, lm_windows,
    load_pydoc_corpus, pad_sequences,
)


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_pydoc_corpus()


def test_bundled_corpus_is_python_documentation(corpus):
    assert len(corpus) > 100_000 and "for" in corpus and "lambda" in corpus


def test_bpe_round_trips_the_corpus_and_its_file(corpus, tmp_path):
    tokenizer = BPETokenizer.train([corpus], vocab_size=400)
    ids = tokenizer.encode(corpus)
    assert tokenizer.decode(ids) == corpus
    assert len(ids) < len(corpus) / 1.5  # merges compress
    assert tokenizer.vocab_size == 400 and tokenizer.pad_id == 0
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    loaded = BPETokenizer.load(str(path))
    sample = corpus[:5000] + " ünïcödé ✓ 数据"
    assert loaded.encode(sample) == tokenizer.encode(sample)
    assert loaded.decode(loaded.encode(sample)) == sample
    import tokenizers

    assert tokenizers.Tokenizer.from_file(str(path)).encode(sample).ids == tokenizer.encode(sample)


def test_char_tokenizer_round_trips_the_corpus(corpus, tmp_path):
    tokenizer = CharTokenizer.train([corpus])
    assert tokenizer.decode(tokenizer.encode(corpus)) == corpus
    tokenizer.save(str(tmp_path / "chars.json"))
    loaded = CharTokenizer.load(str(tmp_path / "chars.json"))
    assert loaded.encode(corpus[:2000]) == tokenizer.encode(corpus[:2000])
    assert loaded.encode("\x00")[0] == 2  # unseen characters become <unk>


def test_bad_tokenizer_files_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        BPETokenizer.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        BPETokenizer.load(str(tmp_path / "bad.json"))
    with pytest.raises(DataError, match="bad.json"):
        CharTokenizer.load(str(tmp_path / "bad.json"))


def test_lm_windows_shift_targets_by_one():
    inputs, labels = lm_windows(list(range(20)), length=5, stride=3)
    assert inputs.shape == labels.shape == (5, 5)
    np.testing.assert_array_equal(labels, inputs + 1)
    np.testing.assert_array_equal(inputs[1], [3, 4, 5, 6, 7])
    with pytest.raises(DataError, match="too few"):
        lm_windows([1, 2], length=5)


def test_padding_masks_and_buckets():
    tokens, mask = pad_sequences([[1, 2, 3], [4]], pad_value=0, buckets=(2, 4, 8))
    np.testing.assert_array_equal(tokens, [[1, 2, 3, 0], [4, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0]])
    assert bucket_length(5, None) == 5 and bucket_length(5, (8, 4)) == 8
    with pytest.raises(DataError, match="largest bucket 8"):
        bucket_length(9, (4, 8))
    tokens, mask, labels = LMCollate(pad_id=0, buckets=(4, 8), return_mask=True)([np.array([5, 6, 7]), np.array([1, 2, 3, 4, 5, 6])])
    np.testing.assert_array_equal(tokens, [[5, 6, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0]])
    np.testing.assert_array_equal(labels[0], [6, 7] + [IGNORE_INDEX] * 6)
    assert mask.sum() == 7


class TinyLM(nn.Module):
    """Embedding -> ReLU -> vocabulary logits: enough to train on variable-length token batches."""

    def __init__(self, vocab: int = 32, width: int = 8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.head(F.relu(self.embedding(tokens)))


def test_a_text_epoch_compiles_at_most_one_step_per_bucket():
    kiln.manual_seed(0)
    rng = np.random.default_rng(0)
    sequences = TokenSequences([rng.integers(1, 32, rng.integers(2, 60)) for _ in range(120)])
    buckets = (8, 16, 32, 64)
    model = TinyLM()
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.Adam(model.parameters(), lr=1e-2))
    loader = DataLoader(sequences, batch_size=7, shuffle=True, collate_fn=LMCollate(pad_id=0, buckets=buckets))
    shapes = set()
    for epoch in range(2):
        loader.set_epoch(epoch)
        for tokens, labels in loader:
            shapes.add(tokens.shape)
            assert np.isfinite(step(tokens, labels))
    assert len({length for _, length in shapes}) > 1 and len({n for n, _ in shapes}) > 1  # lengths and batch sizes both vary
    assert step.compile_count <= len(buckets)
    assert step.compile_count == len({length for _, length in shapes})


def test_padded_and_unpadded_batches_give_the_same_loss_and_update():
    rng = np.random.default_rng(1)
    sequences = [rng.integers(1, 32, 13) for _ in range(4)]
    unpadded = LMCollate(pad_id=0)(sequences)
    padded = LMCollate(pad_id=0, buckets=(32,))(sequences)
    assert padded[0].shape == (4, 32) and unpadded[0].shape == (4, 12)
    results = []
    for tokens, labels in (unpadded, padded):
        kiln.manual_seed(5)
        model = TinyLM()
        step = kiln.compile_train_step(model, lm_loss, kiln.optim.SGD(model.parameters(), lr=0.5))
        results.append((step(tokens, labels), step(tokens, labels), model.state_dict()))
    (first_a, second_a, params_a), (first_b, second_b, params_b) = results
    assert first_a == pytest.approx(first_b, rel=1e-6) and second_a == pytest.approx(second_b, rel=1e-6)
    for name in params_a:
        np.testing.assert_allclose(params_a[name], params_b[name], rtol=1e-5, atol=1e-7)


def test_lm_loss_takes_one_contiguous_row_of_classes_per_token():
    # (N*T, V) rows, not a (N, V, T) view: a strided class axis makes every softmax row a gather (and a copy on CuPy)
    model = TinyLM()
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.SGD(model.parameters(), lr=0.1))
    tokens = np.ones((3, 5), dtype=np.int64)
    step(tokens, tokens)
    (loss,) = [op for op in step.graph.ops if op.name == "nn.cross_entropy"]
    logits = loss.operands[0]
    assert logits.type.rank == 2 and logits.type.shape[-1] == 32 and logits.producer.name == "tensor.reshape"


def test_unigram_entropy_is_the_entropy_of_the_token_frequencies():
    from kiln.runtime.data import unigram_entropy

    assert unigram_entropy(np.array([3, 3, 3])) == 0.0
    np.testing.assert_allclose(unigram_entropy(np.array([[0, 1], [2, 3]])), np.log(4), rtol=1e-12)
    np.testing.assert_allclose(unigram_entropy(np.array([5, 5, 5, 9])), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)), rtol=1e-12)


def test_char_corpus_ids_decode_to_the_start_of_the_pydoc_corpus():
    from kiln.runtime.data import char_corpus, load_pydoc_corpus

    tokenizer, ids = char_corpus(2_000)
    assert ids.dtype == np.int64 and len(ids) == 2_000
    assert tokenizer.decode(ids.tolist()) == load_pydoc_corpus()[:2_000]
