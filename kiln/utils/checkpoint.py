"""``kiln.utils.checkpoint``: ``torch.utils.checkpoint``'s ``checkpoint`` and ``checkpoint_sequential``
(see ``kiln.frontend.checkpoint``)."""

from kiln.frontend.checkpoint import checkpoint, checkpoint_sequential

__all__ = ["checkpoint", "checkpoint_sequential"]
