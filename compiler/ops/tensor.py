"""The ``tensor`` dialect: primitives every backend lowers directly.

Elementwise ops broadcast like NumPy; reductions take ``axes`` (``None`` for
all) and ``keepdims``; movement ops change layout, not values.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.errors import ShapeError, TorchShapeError
from kiln.compiler.ir.types import DType, Dim, TensorType, broadcast_shapes, dim_factors, dim_product, format_shape, normalize_axes
from kiln.compiler.ops.registry import register_decomposition, register_op

UNARY_ELEMENTWISE = ("neg", "exp", "log", "tanh", "sigmoid", "relu", "sqrt")
BINARY_ELEMENTWISE = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
COMPARISONS = ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")
FLOAT_ONLY = ("tensor.div", "tensor.reduce_mean")
"""Ops whose integer form would change dtype (true division, a mean): integers are cast first."""


def _same_dtype(op: str, *types: TensorType) -> DType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        listed = " and ".join(str(t) for t in types)
        raise ShapeError(f"{op} needs operands of one dtype, got {listed}; cast one of them first")
    return dtypes.pop()


def _float_operand(op: str, x: TensorType) -> TensorType:
    if not x.dtype.is_float:
        raise ShapeError(f"{op} needs a floating-point operand, got {x}")
    return x


def _unary_float_shape(op: str):
    return lambda x: _float_operand(op, x)


def _binary_shape(op: str):
    def shape(x: TensorType, y: TensorType) -> TensorType:
        dtype = _same_dtype(op, x, y)
        if op in FLOAT_ONLY:
            _float_operand(op, x)
        return TensorType(_broadcast(op, x, y), dtype)

    return shape


def _comparison_shape(op: str):
    def shape(x: TensorType, y: TensorType) -> TensorType:
        _same_dtype(op, x, y)
        return TensorType(_broadcast(op, x, y), DType.bool)

    return shape


def _broadcast(op: str, *types: TensorType) -> tuple[Dim, ...]:
    """The broadcast shape of ``op``'s operands; a mismatch raises PyTorch's words, naming no op (the verifier and the
    trace name ``op`` and the user's line)."""
    return broadcast_shapes(*(t.shape for t in types))


register_op("tensor.neg", traits={"elementwise"})(lambda x: x)
for _name in UNARY_ELEMENTWISE[1:]:
    register_op(f"tensor.{_name}", traits={"elementwise"})(_unary_float_shape(f"tensor.{_name}"))
for _name in BINARY_ELEMENTWISE:
    register_op(f"tensor.{_name}", traits={"elementwise"})(_binary_shape(f"tensor.{_name}"))
for _name in COMPARISONS:
    register_op(f"tensor.{_name}", traits={"elementwise", "non_differentiable"})(_comparison_shape(f"tensor.{_name}"))


@register_op("tensor.where", traits={"elementwise"})
def where_shape(condition: TensorType, x: TensorType, y: TensorType) -> TensorType:
    if condition.dtype is not DType.bool:
        raise ShapeError(f"tensor.where needs a bool condition, got {condition}")
    return TensorType(_broadcast("tensor.where", condition, x, y), _same_dtype("tensor.where", x, y))


@register_op("tensor.cast", traits={"elementwise"}, dtype=DType.f32)
def cast_shape(x: TensorType, *, dtype: DType) -> TensorType:
    return x.with_dtype(DType.of(dtype))


@register_op("tensor.constant", value=None)
def constant_shape(*, value: np.ndarray) -> TensorType:
    if not isinstance(value, np.ndarray):
        raise ShapeError(f"tensor.constant needs an ndarray value, got {type(value).__name__}")
    return TensorType.of_array(value)


@register_op("tensor.matmul")
def matmul_shape(a: TensorType, b: TensorType) -> TensorType:
    """NumPy ``matmul``: ``(..., m, k) @ (..., k, n) -> (..., m, n)``, batch dims broadcast, 1-D operands promoted."""
    dtype = _same_dtype("tensor.matmul", a, b)
    if a.rank == 0 or b.rank == 0:
        raise ShapeError(f"tensor.matmul needs operands of rank >= 1, got {a} and {b}")
    a_shape = a.shape if a.rank > 1 else (1,) + a.shape
    b_shape = b.shape if b.rank > 1 else b.shape + (1,)
    if a_shape[-1] != b_shape[-2]:
        raise ShapeError(
            f"tensor.matmul: contraction dims differ: {format_shape(a.shape)} @ {format_shape(b.shape)} "
            f"({a_shape[-1]} != {b_shape[-2]})"
        )
    batch = _broadcast("tensor.matmul", TensorType(a_shape[:-2], dtype), TensorType(b_shape[:-2], dtype))
    rows = (a_shape[-2],) if a.rank > 1 else ()
    cols = (b_shape[-1],) if b.rank > 1 else ()
    return TensorType(batch + rows + cols, dtype)


def _reduce_shape(op: str):
    def shape(x: TensorType, *, axes: tuple[int, ...] | None, keepdims: bool) -> TensorType:
        if op in FLOAT_ONLY:
            _float_operand(op, x)
        reduced = normalize_axes(axes, x.rank)
        if keepdims:
            return x.with_shape(tuple(1 if i in reduced else d for i, d in enumerate(x.shape)))
        return x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in reduced))

    return shape


for _name in ("reduce_sum", "reduce_mean", "reduce_max"):
    register_op(f"tensor.{_name}", traits={"reduction"}, axes=None, keepdims=False)(_reduce_shape(f"tensor.{_name}"))


@register_op("tensor.reshape", traits={"movement"}, shape=())
def reshape_shape(x: TensorType, *, shape: tuple[Dim, ...]) -> TensorType:
    target = resolve_reshape(x.shape, tuple(shape))
    return x.with_shape(target)


def resolve_reshape(source: tuple[Dim, ...], target: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """Fill in one ``-1`` in ``target`` and check the element counts agree, symbols included.

    A ``-1`` over symbolic dims becomes their product: ``(N, 5, 11) -> (-1, 11)`` gives ``(5*N, 11)``.
    """
    problem = f"cannot reshape {format_shape(source)} to {format_shape(target)}"
    known = tuple(d for d in target if d != -1)
    if len(target) - len(known) > 1:
        raise TorchShapeError("only one dimension can be inferred")
    source_factor, source_symbols = dim_factors(dim_product(source))
    target_factor, target_symbols = dim_factors(dim_product(known))
    leftover = list(source_symbols)
    for symbol in target_symbols:
        if symbol not in leftover:
            raise ShapeError(f"{problem}: symbol {symbol} is not a dim of the source")
        leftover.remove(symbol)
    inferred = len(known) < len(target)
    if _counts_differ(source_factor, target_factor, bool(leftover), inferred):  # PyTorch's words: the shape as given
        raise TorchShapeError(f"shape '[{', '.join(map(str, target))}]' is invalid for input of size {dim_product(source)}")
    if not inferred:
        return target
    filled = dim_product([source_factor // target_factor, *leftover])
    return tuple(filled if d == -1 else d for d in target)


def _counts_differ(source_factor: int, target_factor: int, symbols_left: bool, inferred: bool) -> bool:
    """Whether a reshape would change the element count; with a ``-1``, whether the known dims divide the source's."""
    if inferred:
        return target_factor == 0 or source_factor % target_factor != 0
    return symbols_left or source_factor != target_factor


@register_op("tensor.transpose", traits={"movement"}, perm=None)
def transpose_shape(x: TensorType, *, perm: tuple[int, ...] | None) -> TensorType:
    perm = tuple(reversed(range(x.rank))) if perm is None else tuple(perm)
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"tensor.transpose: perm {perm} is not a permutation of the {x.rank} axes of {x}")
    return x.with_shape(tuple(x.shape[i] for i in perm))


@register_op("tensor.broadcast_to", traits={"movement"}, shape=())
def broadcast_to_shape(x: TensorType, *, shape: tuple[Dim, ...]) -> TensorType:
    """``x`` expanded to ``shape``; a refusal in PyTorch's words (``expand``'s, the rightmost mismatch first)."""
    shape = tuple(shape)
    if len(shape) < x.rank:
        raise TorchShapeError(f"expand({_listed(x.shape)}, size={_listed(shape)}): the number of sizes provided "
                              f"({len(shape)}) must be greater or equal to the number of dimensions in the tensor ({x.rank})")
    for axis in reversed(range(x.rank)):
        dim, target = x.shape[axis], shape[axis - x.rank + len(shape)]
        if dim != 1 and dim != target:
            raise TorchShapeError(f"The expanded size of the tensor ({target}) must match the existing size ({dim}) at "
                                  f"non-singleton dimension {axis - x.rank + len(shape)}.  Target sizes: "
                                  f"{_listed(shape)}.  Tensor sizes: {_listed(x.shape)}")
    return x.with_shape(shape)


def _listed(shape: tuple[Dim, ...]) -> str:
    """A shape as PyTorch prints sizes in its messages: ``[2, 3]``."""
    return "[" + ", ".join(map(str, shape)) + "]"


@register_op("tensor.stop_gradient", traits={"composite", "non_differentiable"})
def stop_gradient_shape(x: TensorType) -> TensorType:
    """``x`` as it is, through which no gradient flows (``Tensor.detach()``, JAX's ``stop_gradient``): autodiff takes
    the result for a constant. It only means something to autodiff, so every backend expands it to ``x`` itself."""
    return x


@register_decomposition("tensor.stop_gradient")
def stop_gradient_decomposition(b, x):
    return x


@register_op("tensor.one_hot", traits={"non_differentiable"}, num_classes=0, dtype=DType.f32)
def one_hot_shape(labels: TensorType, *, num_classes: int, dtype: DType) -> TensorType:
    if not labels.dtype.is_int:
        raise ShapeError(f"tensor.one_hot needs integer labels, got {labels}")
    if num_classes <= 0:
        raise ShapeError(f"tensor.one_hot needs num_classes > 0, got {num_classes}")
    return TensorType(labels.shape + (num_classes,), DType.of(dtype))


@register_op("tensor.check_index", traits={"non_differentiable"}, size=0, message="")
def check_index_shape(index: TensorType, *, size: int, message: str) -> TensorType:
    """``index`` itself, checked at run time: a value outside ``[0, size)`` raises ``IndexValueError`` with
    ``message`` (``{value}`` and ``{position}``, its flat position, filled in). What ``F.embedding``, ``gather`` and
    ``one_hot`` put before a traced index, whose values the trace cannot check (PyTorch's kernels check them)."""
    if not index.dtype.is_int:
        raise ShapeError(f"tensor.check_index needs an integer index, got {index}")
    if size <= 0:
        raise ShapeError(f"tensor.check_index needs size > 0, got {size}")
    return index


@register_op("tensor.numel", traits={"non_differentiable"}, axes=None, dtype=DType.f32)
def numel_shape(x: TensorType, *, axes: tuple[int, ...] | None, dtype: DType) -> TensorType:
    """The number of elements of ``x`` along ``axes`` (all by default) as a scalar; resolves symbolic dims at run time."""
    normalize_axes(axes, x.rank)
    return TensorType((), DType.of(dtype))

