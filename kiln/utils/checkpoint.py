"""``kiln.utils.checkpoint``: ``torch.utils.checkpoint``'s ``checkpoint`` and ``checkpoint_sequential``
(see ``kiln.frontend.checkpoint``), and ``get_device_states``/``set_device_states``."""

from kiln.frontend.checkpoint import checkpoint, checkpoint_sequential, get_device_states, set_device_states

__all__ = ["checkpoint", "checkpoint_sequential", "get_device_states", "set_device_states"]
