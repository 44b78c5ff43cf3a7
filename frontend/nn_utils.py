"""``torch.nn.utils``'s parameter helpers, for kiln's eager arrays: ``parameters_to_vector`` and
``vector_to_parameters``; and ``clip_grad_norm_``/``clip_grad_value_`` on the ``.grad`` an eager ``loss.backward()``
leaves (a compiled step clips inside its graph instead: ``kiln.compile_train_step``'s options, the same arithmetic)."""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType
from kiln.frontend.eager_values import eager_leaf
from kiln.frontend.module import Parameter, grad_array
from kiln.frontend.trace import step_capture


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


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: Any = None) -> Any:
    """Rescale the eager ``.grad`` of ``parameters`` (after ``loss.backward()``) by ``min(1, max_norm / (norm + 1e-6))``
    of their joint ``norm_type``-norm, in place; returns that norm as a 0-d tensor, as PyTorch's. In a ``kiln.compile``d
    training step, the traced ``.grad`` (``runtime/step_capture.py``)."""
    norm_type = float(norm_type)  # as PyTorch's: norm_type="inf" too
    if step_capture() is not None:
        return step_capture().clip_grad_norm(parameters, max_norm, norm_type, error_if_nonfinite)
    grads = _grads(parameters, "clip_grad_norm_", f"clip_grad_norm={max_norm!r}",
                   "PyTorch's rescale by min(1, max_norm / (norm + 1e-6)) of the global 2-norm")
    if not grads:
        return eager_leaf(np.asarray(0.0, np.float32))
    if DType.of(grads[0].dtype).is_half:
        return _clip_half_grad_norm(grads, float(max_norm), float(norm_type), error_if_nonfinite)
    norms = [np.linalg.norm(g.ravel(), ord=norm_type) for g in grads]
    total = np.linalg.norm(np.asarray(norms), ord=norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({total}), so it cannot be clipped")
    scale = min(1.0, float(max_norm) / (float(total) + 1e-6))
    for grad in grads:
        grad *= grad.dtype.type(scale)
    return eager_leaf(np.asarray(total, grads[0].dtype))


def _clip_half_grad_norm(grads: list[np.ndarray], max_norm: float, norm_type: float, error_if_nonfinite: bool) -> Any:
    """``clip_grad_norm_`` of half gradients as PyTorch's, op by op in their dtype: each norm and the norm of the norms
    accumulated in float32 and rounded once, then ``max_norm / (total + 1e-6)`` (a reciprocal times ``max_norm``, each
    rounded), clamped to 1, and each gradient times it, rounded."""
    dtype = grads[0].dtype
    total = _half_norm(np.asarray([_half_norm(g, norm_type) for g in grads]).astype(dtype), norm_type)
    if error_if_nonfinite and not np.isfinite(float(total)):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({total}), so it cannot be clipped")
    shifted = _rounded(np.float32(total) + _rounded(1e-6, dtype), dtype)
    coefficient = np.minimum(_rounded(_rounded(1 / shifted, dtype) * np.float32(max_norm), dtype), np.float32(1.0))
    for grad in grads:
        grad[...] = _rounded(grad.astype(np.float32) * coefficient, dtype)
    return eager_leaf(np.asarray(total, dtype))


def _half_norm(values: np.ndarray, norm_type: float) -> np.ndarray:
    """PyTorch's ``vector_norm`` of a half array: accumulated in float32 or wider, rounded once to its dtype."""
    magnitudes = np.abs(values.astype(np.float64)).ravel()
    if norm_type == np.inf:
        norm = magnitudes.max() if magnitudes.size else 0.0
    else:
        norm = np.sum(magnitudes**norm_type) ** (1 / norm_type)
    return _rounded(norm, values.dtype)


def _rounded(value: Any, dtype: np.dtype) -> np.ndarray:
    return np.asarray(np.asarray(value, np.float32).astype(dtype), np.float32)


def clip_grad_norm(parameters: Any, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach: Any = None) -> np.ndarray:
    """PyTorch's deprecated spelling of ``clip_grad_norm_`` (older pytorch/examples call it): the same, with the
    same ``FutureWarning``."""
    warnings.warn("`kiln.nn.utils.clip_grad_norm` is now deprecated in favor of `kiln.nn.utils.clip_grad_norm_`", FutureWarning,
                  stacklevel=2)
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters: Any, clip_value: float, foreach: Any = None) -> None:
    """Clamp each eager ``.grad`` of ``parameters`` to ``[-clip_value, clip_value]``, in place, as PyTorch's (in a
    ``kiln.compile``d training step, the traced ``.grad``)."""
    if step_capture() is not None:
        return step_capture().clip_grad_value(parameters, clip_value)
    for grad in _grads(parameters, "clip_grad_value_", f"clip_grad_value={clip_value!r}",
                       "each gradient clamped to [-v, v], as PyTorch"):
        np.clip(grad, -clip_value, clip_value, out=grad)


def _grads(parameters: Any, helper: str, option: str, what: str) -> list[np.ndarray]:
    """The ``.grad`` arrays of ``parameters`` that have one; none at all is an error that says where clipping goes."""
    parameters = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    grads = [grad_array(p) for p in parameters if p.grad is not None]
    if parameters and not grads:
        raise KilnError(f"{helper}: no parameter has a .grad to clip: call loss.backward() first in an eager loop; a compiled "
                        f"step clips inside its graph: pass {option} to kiln.compile_train_step ({what})")
    return grads


__all__ = ["clip_grad_norm", "clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]
