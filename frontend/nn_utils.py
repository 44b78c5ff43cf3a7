"""``torch.nn.utils``'s parameter helpers, for kiln's eager arrays: ``parameters_to_vector`` and
``vector_to_parameters``; and ``clip_grad_norm_``/``clip_grad_value_``, which have no eager gradients to clip in kiln
and say where the clipping goes instead (``kiln.compile_train_step``'s options, the same arithmetic as PyTorch's)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend.module import Parameter


def parameters_to_vector(parameters: Iterable[Parameter]) -> np.ndarray:
    """The parameters' values flattened and joined in order: a new array (PyTorch's, on arrays)."""
    arrays = [np.asarray(parameter.data).ravel() for parameter in parameters]
    if not arrays:
        raise ValueError("parameters_to_vector: no parameters given")
    return np.concatenate(arrays)


def vector_to_parameters(vector: Any, parameters: Iterable[Parameter]) -> None:
    """Write consecutive slices of the 1-D ``vector`` into the parameters, in place (each keeps its dtype)."""
    vector, parameters = np.asarray(vector), list(parameters)
    if vector.ndim != 1:
        raise ValueError(f"vector_to_parameters: expected a 1-D vector, got shape {vector.shape}")
    total = sum(int(np.prod(p.data.shape)) for p in parameters)
    if vector.size != total:
        raise ValueError(f"vector_to_parameters: the vector has {vector.size} elements, the parameters {total}")
    start = 0
    for parameter in parameters:
        size = int(np.prod(parameter.data.shape))
        parameter.data[...] = vector[start : start + size].reshape(parameter.data.shape)
        start += size


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0, *args: Any, **kwargs: Any) -> None:
    raise KilnError("clip_grad_norm_: kiln has no eager gradients to clip; a compiled step clips inside its graph: pass "
                    f"clip_grad_norm={max_norm!r} to kiln.compile_train_step (PyTorch's rescale by min(1, max_norm / (norm + 1e-6)) "
                    "of the global 2-norm)" + ("" if norm_type == 2.0 else f"; only the 2-norm is supported, not {norm_type!r}"))


def clip_grad_value_(parameters: Any, clip_value: float, *args: Any, **kwargs: Any) -> None:
    raise KilnError("clip_grad_value_: kiln has no eager gradients to clip; a compiled step clips inside its graph: pass "
                    f"clip_grad_value={clip_value!r} to kiln.compile_train_step (each gradient clamped to [-v, v], as PyTorch)")


__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]
