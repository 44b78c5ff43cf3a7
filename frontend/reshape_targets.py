"""A reshape's target shape with its -1 filled in, remembered for the plain shapes eager code reshapes alike at every
step (``x.view(-1, 784)``): ``Tensor.reshape`` and ``view`` build their op from it."""

from __future__ import annotations

from typing import Any

from kiln.compiler.ir.types import Dim


def resolved_reshape(source: tuple[Dim, ...], target: tuple[Any, ...]) -> tuple[Any, ...]:
    """``target`` with its -1 filled in (``resolve_reshape``), or as given where it does not fit: the op's own shape
    rule then reports the error with the user's line. Remembered for plain shapes (ints and symbols), which eager code
    reshapes alike at every step."""
    key = (source, target)
    plain = all([type(dim) is int or type(dim) is str for dim in target])
    resolved = _RESOLVED.get(key) if plain else None
    if resolved is None:
        from kiln.compiler.ops.tensor import resolve_reshape

        try:
            resolved = resolve_reshape(source, target)
        except Exception:
            return target
        if plain and len(_RESOLVED) < 4096:
            _RESOLVED[key] = resolved
    return resolved


_RESOLVED: dict[tuple[tuple[Dim, ...], tuple[Any, ...]], tuple[Dim, ...]] = {}


__all__ = ["resolved_reshape"]
