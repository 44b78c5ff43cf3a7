"""Spatial functions with PyTorch's names: ``F.interpolate``, ``F.pixel_shuffle``, ``F.unfold``/``F.fold``, and the
non-constant modes of ``F.pad`` (placeholder: being written)."""

from __future__ import annotations

from typing import Sequence

from kiln.frontend.tensor import Tensor


def pad_from_edges(input: Tensor, pad: Sequence[int], mode: str) -> Tensor:
    raise NotImplementedError(f"pad mode {mode!r}")


__all__: list[str] = []
