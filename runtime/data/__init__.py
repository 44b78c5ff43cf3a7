"""Data: datasets and readers (bundled digits, IDX, NPZ, CSV), the DataLoader, and text (tokenizers, LM windows, padding)."""

from kiln.runtime.data.datasets import (
    DataError, load_csv, load_digits, load_idx_dataset, load_npz, read_idx, train_test_split,
)
from kiln.runtime.data.loader import ArrayDataset, DataLoader, Dataset, default_collate, shard
from kiln.runtime.data.text import (
    IGNORE_INDEX, BPETokenizer, CharTokenizer, LMCollate, TokenSequences, bucket_length, char_corpus, lm_loss, lm_windows, load_pydoc_corpus,
    pad_sequences, unigram_entropy,
)

__all__ = [
    "ArrayDataset", "BPETokenizer", "CharTokenizer", "DataError", "DataLoader", "Dataset", "IGNORE_INDEX", "LMCollate", "TokenSequences",
    "bucket_length", "char_corpus", "default_collate", "lm_loss", "lm_windows", "load_csv", "load_digits", "load_idx_dataset", "load_npz", "load_pydoc_corpus",
    "pad_sequences", "read_idx", "shard", "train_test_split", "unigram_entropy",
]
