"""Recurrent layers with PyTorch's names (placeholder: being written)."""

from __future__ import annotations

__all__: list[str] = []
