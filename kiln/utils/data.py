"""``kiln.utils.data``: ``torch.utils.data``'s ``Dataset``, ``TensorDataset`` and ``DataLoader``, whose batches are kiln
tensors (see ``kiln.runtime.data.torch_loader``)."""

from kiln.runtime.data.torch_loader import DataLoader, Dataset, TensorDataset

__all__ = ["DataLoader", "Dataset", "TensorDataset"]
