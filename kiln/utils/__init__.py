"""``kiln.utils``: PyTorch's ``torch.utils`` helpers that kiln has: ``checkpoint`` (activation checkpointing) and
``data`` (``DataLoader``, ``TensorDataset``, ``Dataset``)."""

from kiln.utils import checkpoint, data

__all__ = ["checkpoint", "data"]
