"""More ``tensor`` primitives: elementwise math, index movement, masks.

Gather and scatter-add are each other's VJP; slice and pad (with XLA's
interior padding) are too; concat's VJP is slices. Every attribute is a plain
int or a tuple, so graphs print and parse; a symbolic dim may appear only
where the op leaves that axis whole.
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, Dim, TensorType, format_shape, normalize_axes, normalize_axis
from kiln.compiler.ops.registry import register_op
from kiln.compiler.ops.tensor import _reduce_shape, _unary_float_shape

EXTRA_UNARY = ("abs", "erf", "rsqrt", "sin", "cos", "floor", "ceil", "round", "atan", "asin", "acos")
"""All float-only but ``abs``. ``floor``/``ceil``/``round`` give the integral float below, above, nearest (half to even,
as NumPy's ``rint`` and ONNX's Round), in the operand's dtype, with a zero gradient. ``atan``/``asin``/``acos`` are the
principal values (C's, NumPy's ``arctan``..., ONNX's Atan...): NaN outside [-1, 1] for ``asin``/``acos``."""

register_op("tensor.abs", traits={"elementwise"})(lambda x: x)
for _name in EXTRA_UNARY[1:]:
    register_op(f"tensor.{_name}", traits={"elementwise"})(_unary_float_shape(f"tensor.{_name}"))
register_op("tensor.reduce_min", traits={"reduction"}, axes=None, keepdims=False)(_reduce_shape("tensor.reduce_min"))


@register_op("tensor.clip", traits={"elementwise"}, min=None, max=None)
def clip_shape(x: TensorType, *, min: float | None, max: float | None) -> TensorType:
    """``clip(x) = min(max(x, lo), hi)``; either bound may be ``None``."""
    if min is not None and max is not None and min > max:
        raise ShapeError(f"tensor.clip: min {min} is above max {max}")
    return x


@register_op("tensor.argmax", traits={"non_differentiable"}, axis=-1, keepdims=False)
def argmax_shape(x: TensorType, *, axis: int, keepdims: bool) -> TensorType:
    """The index of the largest element along ``axis`` (the first on ties), as int64."""
    axis = normalize_axis(axis, x.rank)
    shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape)) if keepdims else x.shape[:axis] + x.shape[axis + 1 :]
    return TensorType(shape, DType.i64)


def _int_indices(op: str, indices: TensorType) -> None:
    if not indices.dtype.is_int:
        raise ShapeError(f"{op} needs integer indices, got {indices}")


@register_op("tensor.take", axis=0)
def take_shape(x: TensorType, indices: TensorType, *, axis: int) -> TensorType:
    """NumPy ``take``: ``x[..., indices, ...]`` at ``axis``; the result has ``indices``' dims in place of that axis."""
    _int_indices("tensor.take", indices)
    axis = normalize_axis(axis, x.rank)
    return x.with_shape(x.shape[:axis] + indices.shape + x.shape[axis + 1 :])


@register_op("tensor.scatter_add", axis=0, shape=())
def scatter_add_shape(updates: TensorType, indices: TensorType, *, axis: int, shape: tuple[Dim, ...]) -> TensorType:
    """Zeros of ``shape`` with ``updates`` summed in at ``indices`` along ``axis``: the transpose of ``take``."""
    _int_indices("tensor.scatter_add", indices)
    shape = tuple(shape)
    axis = normalize_axis(axis, len(shape))
    expected = shape[:axis] + indices.shape + shape[axis + 1 :]
    if updates.shape != expected:
        raise ShapeError(
            f"tensor.scatter_add: updates {format_shape(updates.shape)} do not fit indices {format_shape(indices.shape)} "
            f"into {format_shape(shape)} at axis {axis} (expected updates {format_shape(expected)})"
        )
    return updates.with_shape(shape)


@register_op("tensor.concat", traits={"movement"}, axis=0)
def concat_shape(*xs: TensorType, axis: int) -> TensorType:
    if not xs:
        raise ShapeError("tensor.concat needs at least one operand")
    axis = normalize_axis(axis, xs[0].rank)
    dims = [x.shape[axis] for x in xs]
    for x in xs:
        if x.dtype != xs[0].dtype or x.rank != xs[0].rank or any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape)) if i != axis):
            listed = ", ".join(str(t) for t in xs)
            raise ShapeError(f"tensor.concat along axis {axis} needs operands equal in dtype and every other dim, got {listed}")
    if len(dims) > 1 and any(isinstance(d, str) for d in dims):
        raise ShapeError(f"tensor.concat cannot join along a symbolic dim ({', '.join(map(str, dims))}): the result's "
                         "size is not one symbol. Compile with static shapes (batch_dim=None), or stack the parts on a "
                         "new axis (kiln.stack) and reduce over it")
    total: Dim = dims[0] if len(dims) == 1 else sum(dims)  # type: ignore[arg-type]
    return xs[0].with_shape(xs[0].shape[:axis] + (total,) + xs[0].shape[axis + 1 :])


@register_op("tensor.slice", traits={"movement"}, axis=0, start=0, stop=0, step=1)
def slice_shape(x: TensorType, *, axis: int, start: int, stop: int, step: int) -> TensorType:
    """``x[..., start:stop:step, ...]`` at ``axis``, with ``0 <= start <= stop <= dim`` and ``step >= 1`` (the frontend normalizes)."""
    axis = normalize_axis(axis, x.rank)
    dim = x.shape[axis]
    if isinstance(dim, str) or step < 1 or not 0 <= start <= stop <= dim:
        raise ShapeError(f"tensor.slice: [{start}:{stop}:{step}] does not fit axis {axis} of {x} (needs a static dim, 0 <= start <= stop <= dim, step >= 1)")
    return x.with_shape(x.shape[:axis] + (len(range(start, stop, step)),) + x.shape[axis + 1 :])


@register_op("tensor.pad", traits={"movement"}, low=(), high=(), interior=(), value=0.0)
def pad_shape(x: TensorType, *, low: tuple[int, ...], high: tuple[int, ...], interior: tuple[int, ...], value: float) -> TensorType:
    """XLA's pad: ``low``/``high`` fill before/after each axis, ``interior`` between elements (all >= 0, one per axis)."""
    if not len(low) == len(high) == len(interior) == x.rank or min(low + high + interior, default=0) < 0:
        raise ShapeError(f"tensor.pad needs non-negative low, high and interior pads, one per axis of {x}; got {low}, {high}, {interior}")
    return x.with_shape(tuple(_padded_dim(d, lo, hi, mid) for d, lo, hi, mid in zip(x.shape, low, high, interior)))


def _padded_dim(dim: Dim, low: int, high: int, interior: int) -> Dim:
    if isinstance(dim, str):
        if low or high or interior:
            raise ShapeError(f"tensor.pad cannot pad the symbolic dim {dim}")
        return dim
    return low + dim + max(dim - 1, 0) * interior + high


@register_op("tensor.expand_dims", traits={"movement"}, axes=())
def expand_dims_shape(x: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    """Insert size-1 axes at ``axes`` (positions in the result)."""
    rank = x.rank + len(axes)
    inserted = normalize_axes(tuple(axes), rank)
    if len(inserted) != len(axes):
        raise ShapeError(f"tensor.expand_dims: repeated axes {axes}")
    dims = iter(x.shape)
    return x.with_shape(tuple(1 if i in inserted else next(dims) for i in range(rank)))


@register_op("tensor.squeeze", traits={"movement"}, axes=())
def squeeze_shape(x: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    """Drop size-1 axes at ``axes``."""
    removed = normalize_axes(tuple(axes), x.rank)
    if any(x.shape[axis] != 1 for axis in removed):
        raise ShapeError(f"tensor.squeeze: axes {axes} of {x} are not all of size 1")
    return x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in removed))


def _mask_shape(op: str):
    def shape(x: TensorType, *, k: int) -> TensorType:
        if x.rank < 2:
            raise ShapeError(f"{op} needs rank >= 2 (it masks the last two axes), got {x}")
        return x

    return shape


register_op("tensor.triu", k=0)(_mask_shape("tensor.triu"))  # keep j - i >= k, zero the rest
register_op("tensor.tril", k=0)(_mask_shape("tensor.tril"))  # keep j - i <= k, zero the rest
