"""``kiln.utils.data``: ``torch.utils.data``'s ``Dataset``, ``TensorDataset``, ``Subset``, ``random_split`` and
``DataLoader``, whose batches are kiln tensors (see ``kiln.runtime.data.torch_loader``)."""

from kiln.runtime.data.torch_loader import DataLoader, Dataset, Subset, TensorDataset, random_split

__all__ = ["DataLoader", "Dataset", "Subset", "TensorDataset", "random_split"]
