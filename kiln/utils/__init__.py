"""``kiln.utils``: PyTorch's ``torch.utils`` helpers that kiln has: ``checkpoint`` (activation checkpointing)."""

from kiln.utils import checkpoint

__all__ = ["checkpoint"]
