"""Datasets and readers (bundled digits, MNIST-format IDX files)."""

from kiln.runtime.data.datasets import load_digits, load_idx_dataset, read_idx, train_test_split

__all__ = ["load_digits", "load_idx_dataset", "read_idx", "train_test_split"]
