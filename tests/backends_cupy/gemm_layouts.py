"""Operand layouts for ``gemm.batched_matmul``: what a GPT step hands its matmuls (transposed views, row slices of
transposed projections, broadcast weights), each with whether cuBLAS reads it in place (no copy)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

Layouts = dict[str, tuple[Callable[[Any, np.random.Generator, Any], tuple[Any, Any]], bool]]


def _normal(xp: Any, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> Any:
    return xp.asarray(rng.standard_normal(shape).astype(dtype))


LAYOUTS: Layouts = {
    "contiguous batches": (lambda xp, rng, dt: (_normal(xp, rng, (2, 3, 4, 5), dt), _normal(xp, rng, (2, 3, 5, 6), dt)), True),
    "a transposed (P^T g)": (lambda xp, rng, dt: (_normal(xp, rng, (2, 3, 7, 4), dt).swapaxes(-1, -2), _normal(xp, rng, (2, 3, 7, 5), dt)), True),
    "b transposed (q k^T)": (lambda xp, rng, dt: (_normal(xp, rng, (2, 3, 4, 6), dt), _normal(xp, rng, (2, 3, 5, 6), dt).swapaxes(-1, -2)), True),
    "both transposed": (lambda xp, rng, dt: (_normal(xp, rng, (3, 5, 4), dt).swapaxes(-1, -2), _normal(xp, rng, (3, 6, 5), dt).swapaxes(-1, -2)), True),
    "row slice of keys (a chunk)": (lambda xp, rng, dt: (_normal(xp, rng, (2, 3, 4, 6), dt), _normal(xp, rng, (2, 3, 9, 6), dt)[..., :5, :].swapaxes(-1, -2)), True),
    "heads of a projection (N, T, H, E) -> (N, H, T, E)": (
        lambda xp, rng, dt: (_normal(xp, rng, (2, 5, 3, 4), dt).transpose(0, 2, 1, 3), _normal(xp, rng, (2, 5, 3, 4), dt).transpose(0, 2, 3, 1)), False),
    "one matrix for every batch": (lambda xp, rng, dt: (_normal(xp, rng, (4, 5), dt), _normal(xp, rng, (2, 3, 5, 6), dt)), True),
    "a single query row": (lambda xp, rng, dt: (_normal(xp, rng, (2, 3, 9, 4), dt)[..., 8:9, :], _normal(xp, rng, (2, 3, 4, 9), dt)), True),
    "rows times a transposed weight (x W^T)": (lambda xp, rng, dt: (_normal(xp, rng, (2, 7, 5), dt), _normal(xp, rng, (6, 5), dt).T), True),
    "broadcast batch axis": (lambda xp, rng, dt: (_normal(xp, rng, (1, 3, 4, 5), dt), _normal(xp, rng, (2, 3, 5, 6), dt)), False),
}
"""name -> (make(array module, rng, dtype) -> (a, b), cuBLAS reads both operands in place)."""
