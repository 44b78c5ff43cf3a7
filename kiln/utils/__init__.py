"""``kiln.utils``: PyTorch's ``torch.utils`` helpers that kiln has: ``checkpoint`` (activation checkpointing),
``data`` (``DataLoader``, ``TensorDataset``, ``Dataset``) and ``tensorboard`` (``SummaryWriter``)."""

from kiln.utils import checkpoint, data, tensorboard

__all__ = ["checkpoint", "data", "tensorboard"]
