"""``torch.nn.utils``'s parameter helpers, for kiln's eager arrays: ``parameters_to_vector`` and
``vector_to_parameters``; and ``clip_grad_norm_``/``clip_grad_value_`` on the ``.grad`` an eager ``loss.backward()``
leaves (a compiled step clips inside its graph instead: ``kiln.compile_train_step``'s options, the same arithmetic)."""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType
from kiln.frontend.eager_values import eager_array, eager_leaf
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.module import ArrayLeaf, Parameter, grad_array
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.tensor_linalg import vector_norm
from kiln.frontend.torch_dtypes import get_default_dtype
from kiln.frontend.torch_functions import cat, stack
from kiln.frontend.trace import TraceContext, located_error, step_capture


def parameters_to_vector(parameters: Iterable[Any]) -> Tensor:
    """The tensors (parameters, their ``.grad``, masks) flattened and joined in order: a new tensor, as PyTorch's
    ``torch.cat([p.view(-1) for p in parameters])``, so it is differentiable (an L2 penalty on it trains) and traced in
    a compiled step."""
    tensors = [_as_eager_tensor(p).view(-1) for p in parameters]
    if not tensors:
        raise ValueError("parameters_to_vector: no parameters given")
    return cat(tensors)


def _as_eager_tensor(item: Any) -> Any:
    """A tensor as it is; an array (a ``.grad``) as an eager tensor of its values."""
    return item if isinstance(item, Tensor) else eager_leaf(np.asarray(item))


def vector_to_parameters(vector: Any, parameters: Iterable[Parameter]) -> None:
    """Write consecutive slices of the 1-D ``vector`` into the parameters, in place (each keeps its dtype), as
    torch's ``param.data = vec[...].view_as(param).data``: outside autograd, and in a ``kiln.compile``d step from a
    vector the step computed (a flat natural-gradient or line-search update)."""
    vector = vector if isinstance(vector, Tensor) else np.asarray(vector)
    parameters = list(parameters)
    if vector.ndim != 1:
        raise ValueError(f"vector_to_parameters: expected a 1-D vector, got shape {tuple(vector.shape)}")
    total = sum(int(np.prod(p.data.shape)) for p in parameters)
    if vector.shape[0] != total:
        raise ValueError(f"vector_to_parameters: the vector has {vector.shape[0]} elements, the parameters {total}")
    start = 0
    for parameter in parameters:
        size = int(np.prod(parameter.data.shape))
        piece = vector[start : start + size].reshape(parameter.data.shape)
        if isinstance(piece, Tensor):
            with no_grad():
                parameter.copy_(piece)
        else:
            parameter.data[...] = piece
        start += size


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: Any = None) -> Any:
    """Rescale the eager ``.grad`` of ``parameters`` (after ``loss.backward()``) by ``min(1, max_norm / (norm + 1e-6))``
    of their joint ``norm_type``-norm, in place; returns that norm as a 0-d tensor, as PyTorch's: ``get_total_norm``
    then ``clip_grads_with_norm_``. In a ``kiln.compile``d training step, the traced ``.grad`` (``runtime/step_capture.py``)."""
    norm_type, capture = float(norm_type), step_capture()  # float: as PyTorch's, norm_type="inf" too
    if capture is not None:
        return capture.clip_grad_norm(parameters, max_norm, norm_type, error_if_nonfinite)
    grads = _grads(parameters)
    if not grads:
        return eager_leaf(zero_norm())
    total = get_total_norm(grads, norm_type, error_if_nonfinite)
    _scale_grads(grads, _clip_coefficient(float(max_norm), np.asarray(total)))
    return total


def get_total_norm(tensors: Any, norm_type: float = 2.0, error_if_nonfinite: bool = False, foreach: Any = None) -> Any:
    """The ``norm_type``-norm of ``tensors`` (one tensor or an iterable) as if joined into one vector: the norm of their
    norms, a 0-d tensor, as PyTorch's ``torch.nn.utils.get_total_norm`` (``foreach`` is accepted, as on PyTorch's CPU).
    Traced tensors (the ``.grad`` in a ``kiln.compile``d step) give a traced norm."""
    tensors = [tensors] if isinstance(tensors, (Tensor, np.ndarray)) else list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return eager_leaf(zero_norm())
    if TraceContext.active() and any(isinstance(t, Tensor) and eager_array(t) is None for t in tensors):
        if error_if_nonfinite:
            raise located_error("get_total_norm(error_if_nonfinite=True) of traced tensors: the check raises on a value "
                                "the trace does not have; check the returned norm after the call instead")
        return traced_total_norm([_as_tensor(t) for t in tensors], norm_type)
    arrays = [np.asarray(t) for t in tensors]
    norms = [_half_norm(a, norm_type) if DType.of(a.dtype).is_half else _array_norm(a, norm_type) for a in arrays]
    dtype = np.result_type(*(a.dtype for a in arrays))
    total = _half_norm(np.asarray(norms, dtype), norm_type) if DType.of(dtype).is_half else _array_norm(np.asarray(norms, dtype), norm_type)
    if error_if_nonfinite and not np.isfinite(float(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
                           "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")  # torch's words
    return eager_leaf(np.asarray(total, dtype))


def zero_norm() -> np.ndarray:
    """The total norm of no tensors (no parameter has a ``.grad``): 0 in the default dtype, PyTorch's ``tensor(0.0)``."""
    return np.asarray(0.0, get_default_dtype().numpy)


def traced_total_norm(tensors: list[Tensor], norm_type: float) -> Tensor:
    """``get_total_norm`` of traced tensors: the ``norm_type``-norm of the stacked norms, in the graph."""
    return vector_norm(stack([vector_norm(t, norm_type) for t in tensors]), norm_type)


def _as_tensor(item: Any) -> Tensor:
    return item if isinstance(item, Tensor) else apply("tensor.constant", value=np.asarray(item))


def clip_grads_with_norm_(parameters: Any, max_norm: float, total_norm: Any, foreach: Any = None) -> None:
    """Scale the eager ``.grad`` of ``parameters`` in place by ``min(1, max_norm / (total_norm + 1e-6))``, with a norm
    computed before (``get_total_norm``), as PyTorch's ``torch.nn.utils.clip_grads_with_norm_``. In a ``kiln.compile``d
    training step, the traced ``.grad`` (``runtime/step_capture.py``)."""
    if not isinstance(total_norm, (Tensor, np.ndarray)):
        raise TypeError(f"clip_grads_with_norm_: total_norm must be a tensor (what get_total_norm returns), got "
                        f"{type(total_norm).__name__} {total_norm!r}; pass kiln.tensor({total_norm!r}), as PyTorch requires")
    capture = step_capture()
    if capture is not None:
        return capture.clip_grads_with_norm(parameters, max_norm, _as_tensor(total_norm))
    grads = _grads(parameters)
    if grads:
        _scale_grads(grads, _clip_coefficient(float(max_norm), np.asarray(total_norm)))


def _array_norm(values: np.ndarray, norm_type: float) -> np.ndarray:
    return np.asarray(np.linalg.norm(values.ravel(), ord=norm_type), values.dtype)


def _clip_coefficient(max_norm: float, total: np.ndarray) -> np.ndarray:
    """PyTorch's ``clamp(max_norm / (total + 1e-6), max=1)`` op by op in ``total``'s dtype: the sum, its reciprocal, that
    times ``max_norm`` (half: each computed in float32 and rounded to its dtype)."""
    dtype = total.dtype
    compute = np.dtype(np.float32) if DType.of(dtype).is_half else dtype

    def rounded(value: Any) -> np.ndarray:
        return np.asarray(np.asarray(value, compute).astype(dtype), compute)

    shifted = rounded(total.astype(compute) + rounded(1e-6))
    coefficient = rounded(rounded(compute.type(1.0) / shifted) * compute.type(max_norm))
    return np.minimum(coefficient, compute.type(1.0)).astype(dtype)


def _scale_grads(grads: list[np.ndarray], coefficient: np.ndarray) -> None:
    """Each gradient times the coefficient in place, as PyTorch's ``grad.mul_``: the coefficient in the gradient's dtype,
    the product computed in it (half: in float32, rounded once)."""
    for grad in grads:
        compute = np.float32 if DType.of(grad.dtype).is_half else grad.dtype
        grad[...] = (grad.astype(compute) * coefficient.astype(grad.dtype).astype(compute)).astype(grad.dtype)


def _half_norm(values: np.ndarray, norm_type: float) -> np.ndarray:
    """PyTorch's ``vector_norm`` of a half array: accumulated in float32 or wider, rounded once to its dtype."""
    magnitudes = np.abs(values.astype(np.float64)).ravel()
    if norm_type == np.inf:
        norm = magnitudes.max() if magnitudes.size else 0.0
    else:
        norm = np.sum(magnitudes**norm_type) ** (1 / norm_type)
    return np.asarray(norm, np.float32).astype(values.dtype)


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
    parameters, capture = _listed(parameters), step_capture()
    if capture is not None:
        if not any(capture.grad_of(p) is not None for p in parameters):
            raise NoGradToClipError(_no_grad_message(clip_value))
        return capture.clip_grad_value(parameters, clip_value)
    grads = _grads(parameters)
    if not grads:
        raise NoGradToClipError(_no_grad_message(clip_value))
    for grad in grads:
        np.clip(grad, -clip_value, clip_value, out=grad)


class NoGradToClipError(KilnError, RuntimeError):
    """``clip_grad_value_`` where no parameter has a ``.grad``: a ``RuntimeError``, as torch 2.13's (whose
    ``clip_grad_norm_`` returns ``tensor(0.)`` there instead)."""


def _no_grad_message(clip_value: float) -> str:
    return ("clip_grad_value_: no parameter has a .grad to clip (PyTorch raises here too): call loss.backward() before "
            f"clipping, or pass clip_grad_value={clip_value!r} to kiln.compile_train_step, which clips inside its graph")


def _listed(parameters: Any) -> list[Any]:
    return [parameters] if isinstance(parameters, (ArrayLeaf, Tensor)) else list(parameters)


def _grads(parameters: Any) -> list[np.ndarray]:
    """The ``.grad`` arrays of ``parameters`` that have one (none: an empty list, PyTorch's no-op)."""
    return [grad_array(p) for p in _listed(parameters) if p.grad is not None]


__all__ = ["NoGradToClipError", "clip_grad_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm", "parameters_to_vector",
           "traced_total_norm", "vector_to_parameters", "zero_norm"]
