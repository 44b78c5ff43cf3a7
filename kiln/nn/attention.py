"""``kiln.nn.attention``: torch.nn.attention's ``sdpa_kernel`` and ``SDPBackend`` (``frontend/sdpa_backends.py``)."""

from kiln.frontend.sdpa_backends import SDPBackend, sdpa_kernel

__all__ = ["SDPBackend", "sdpa_kernel"]
