"""``torch.utils.data.dataset``: the datasets and ``random_split`` (``from torch.utils.data.dataset import
Dataset``)."""

from kiln.runtime.data.torch_datasets import (
    ChainDataset, ConcatDataset, Dataset, IterableDataset, StackDataset, Subset, TensorDataset, random_split,
)

__all__ = ["ChainDataset", "ConcatDataset", "Dataset", "IterableDataset", "StackDataset", "Subset", "TensorDataset",
           "random_split"]
