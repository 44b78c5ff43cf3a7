"""``kiln.utils``: PyTorch's ``torch.utils`` helpers that kiln has: ``checkpoint`` (activation checkpointing),
``data`` (``DataLoader``, ``TensorDataset``, ``Dataset``), ``hooks`` (``RemovableHandle``) and ``tensorboard``
(``SummaryWriter``)."""

from kiln.utils import checkpoint, data, hooks, tensorboard

__all__ = ["checkpoint", "data", "hooks", "tensorboard"]
