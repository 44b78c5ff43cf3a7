"""``kiln.nn.utils.parametrizations``: ``torch.nn.utils.parametrizations``' ``weight_norm``, ``spectral_norm`` and
``orthogonal`` (``frontend/parametrizations.py``)."""

from kiln.frontend.parametrizations import orthogonal, spectral_norm, weight_norm

__all__ = ["orthogonal", "spectral_norm", "weight_norm"]
