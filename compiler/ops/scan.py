"""Ops along one axis: ``tensor.cumsum`` and ``tensor.cumprod``, the inclusive running sum and product, and
``tensor.argsort``, the sorting order.

```
%y = "tensor.cumsum"(%x) {axis = 1, reverse = false} : (tensor<Nx4xf32>) -> tensor<Nx4xf32>
%p = "tensor.cumprod"(%x) {axis = 1, reverse = true} : (tensor<Nx4xf32>) -> tensor<Nx4xf32>
%i = "tensor.argsort"(%x) {axis = 1, descending = false} : (tensor<Nx4xf32>) -> tensor<Nx4xi64>
%l = "tensor.logcumsumexp"(%x) {axis = 1, reverse = false} : (tensor<Nx4xf32>) -> tensor<Nx4xf32>
%m = "tensor.cumargmax"(%x) {axis = 1} : (tensor<Nx4xf32>) -> tensor<Nx4xi64>
%t = "tensor.decayed_cumsum"(%g, %l) {axis = 1, reverse = true} : (tensor<Nx4xf32>, tensor<Nx4xf32>) -> tensor<Nx4xf32>
```

``y[..., i, ...] = x[..., 0, ...] + ... + x[..., i, ...]`` along ``axis``;
with ``reverse`` the sum runs from the end: ``x[..., i, ...] + ... + x[..., n-1, ...]``.
The result has the operand's type, so any dim may be symbolic, the scanned one too.
Its VJP is the cumsum of the cotangent the other way. ``tensor.cumprod`` is the same scan with products (an empty
product is 1); its VJP (``compiler/autodiff/rules_movement.py``) is exact where the operand has zeros.

``tensor.logcumsumexp`` is the scan with ``logaddexp``: ``y_i = log(exp(x_0) + ... + exp(x_i))`` (floats only), with no
overflow or underflow. Its VJP (``compiler/autodiff/rules_scan.py``) is ``exp(x - y)`` times ``tensor.decayed_cumsum``
of the cotangent: ``t_i = sum_{j <= i} g_j exp(y_j - y_i)`` (with ``reverse``: ``j >= i``), linear in ``g`` (so
forward mode transposes it: the transpose is the other direction's with ``-y``) and, for a ``y`` that never decreases
along the scan (a logcumsumexp's), a sum of weights at most 1.

``tensor.cumargmax``/``tensor.cumargmin`` are the int64 indices of ``torch.cummax``/``torch.cummin``: where the running
maximum (minimum) along ``axis`` was taken, the LATEST index on ties (a later element equal to the running extreme takes
over; -0.0 equals 0.0), and once a NaN is seen the index of the latest NaN. They have no gradient: the values are
``x`` gathered at these indices, so the gradient reaches exactly the selected elements, as PyTorch's scatter-add.
Every dim may be symbolic, the scanned one too; the NumPy kernels are linear (``np.maximum.accumulate``).

``tensor.argsort`` is PyTorch's ``torch.sort(x, dim=axis, descending=descending, stable=True).indices``: int64 indices
that order ``x`` along ``axis``, ascending or descending, STABLE both ways (equal elements keep their original order;
descending is not ascending read backwards, which would reverse the ties), NaN the largest value (last ascending,
first descending; NaNs in their original order), -0.0 equal to 0.0. It has no gradient (``non_differentiable``, as
``tensor.argmax``). The sorted axis must be static (ONNX's TopK takes its size as ``k``); the other dims may be symbolic.
ONNX exports it as ``TopK(x, k = that size, largest = descending, sorted = 1)``'s Indices. The ONNX spec breaks ties by
the lower index (stable both ways) but says nothing of NaN; onnxruntime 1.32 and onnx 1.23's reference evaluator both
sort NaN as the largest, as PyTorch does (``tests/onnx/test_onnx_argsort.py`` holds them to it).
"""

from __future__ import annotations

from typing import Callable

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType, normalize_axis
from kiln.compiler.ops.registry import register_op


def _scan_shape(name: str) -> Callable[..., TensorType]:
    def shape(x: TensorType, *, axis: int, reverse: bool) -> TensorType:
        """Same type as ``x`` (numeric, rank >= 1); ``axis`` counts from the end when negative."""
        if x.rank == 0 or x.dtype is DType.bool:
            fix = "cast it to an integer or float dtype" if x.dtype is DType.bool else "reshape it to one element, (1,)"
            raise ShapeError(f"{name} needs a numeric operand of rank >= 1, got {x}; {fix}")
        normalize_axis(axis, x.rank)
        return x

    return shape


cumsum_shape = register_op("tensor.cumsum", axis=-1, reverse=False)(_scan_shape("tensor.cumsum"))
cumprod_shape = register_op("tensor.cumprod", axis=-1, reverse=False)(_scan_shape("tensor.cumprod"))


@register_op("tensor.logcumsumexp", axis=-1, reverse=False)
def logcumsumexp_shape(x: TensorType, *, axis: int, reverse: bool) -> TensorType:
    """Same type as ``x`` (floating point, rank >= 1)."""
    if x.rank == 0 or not x.dtype.is_float:
        fix = "cast it to a float dtype" if x.rank else "reshape it to one element, (1,)"
        raise ShapeError(f"tensor.logcumsumexp needs a floating-point operand of rank >= 1, got {x}; {fix}")
    normalize_axis(axis, x.rank)
    return x


@register_op("tensor.decayed_cumsum", axis=-1, reverse=False)
def decayed_cumsum_shape(g: TensorType, y: TensorType, *, axis: int, reverse: bool) -> TensorType:
    """``g``'s type; ``y`` (the log decay) of the same type, floating point."""
    if g != y:
        raise ShapeError(f"tensor.decayed_cumsum needs the values and the log decay of one type, got {g} and {y}")
    return logcumsumexp_shape(g, axis=axis, reverse=reverse)


def _running_index_shape(name: str) -> Callable[..., TensorType]:
    def shape(x: TensorType, *, axis: int) -> TensorType:
        """``x``'s shape in int64 (numeric ``x``, rank >= 1)."""
        _scan_shape(name)(x, axis=axis, reverse=False)
        return TensorType(x.shape, DType.i64)

    return shape


cumargmax_shape = register_op("tensor.cumargmax", traits={"non_differentiable"}, axis=-1)(_running_index_shape("tensor.cumargmax"))
cumargmin_shape = register_op("tensor.cumargmin", traits={"non_differentiable"}, axis=-1)(_running_index_shape("tensor.cumargmin"))


@register_op("tensor.argsort", traits={"non_differentiable"}, axis=-1, descending=False)
def argsort_shape(x: TensorType, *, axis: int, descending: bool) -> TensorType:
    """``x``'s shape in int64 (numeric ``x``, rank >= 1); the sorted axis static, ``axis`` from the end when negative."""
    if x.rank == 0 or x.dtype is DType.bool:
        raise ShapeError(f"tensor.argsort needs a numeric operand of rank >= 1, got {x}")
    size = x.shape[normalize_axis(axis, x.rank)]
    if isinstance(size, str):
        raise ShapeError(f"tensor.argsort needs a static size along the sorted axis {axis}, got the symbolic dim {size} in {x}")
    return TensorType(x.shape, DType.i64)
