"""``kiln.nn.functional`` (``F``): PyTorch's functional API, with its argument names and defaults."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, broadcast_shapes, dim_product, normalize_axes
from kiln.frontend.functional_half import bias_added_in_opmath, in_opmath
from kiln.frontend.tensor import Tensor, ValuesIndices, apply
from kiln.frontend.trace import located_error, located_kind
from kiln.frontend.warn_once import NONPOSITIVE_DOF, warn_at_user_line
from kiln.frontend.tensor_inplace import honors_inplace, in_place_variant
from kiln.frontend.torch_array import tensor_operand
from kiln.frontend.autocast import autocasts, region_enabled
from kiln.frontend.linear_shape_checks import check_linear_shapes
from kiln.frontend.zero_gradient import zeros_on_gradient_path


@honors_inplace
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return apply("tensor.relu", input)


relu_ = in_place_variant(relu)


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def exp(input: Tensor) -> Tensor:
    return input.exp()


def log(input: Tensor) -> Tensor:
    return input.log()


def sqrt(input: Tensor) -> Tensor:
    return input.sqrt()


def maximum(input: Tensor, other: Any) -> Tensor:
    return apply("tensor.maximum", input, other)


def minimum(input: Tensor, other: Any) -> Tensor:
    return apply("tensor.minimum", input, other)


def where(condition: Tensor, input: Any = None, other: Any = None) -> Any:
    """``input`` where ``condition`` holds, else ``other``; ``where(condition)`` alone is ``condition.nonzero(as_tuple=True)``."""
    if input is None and other is None:
        return condition.nonzero(as_tuple=True)
    return apply("tensor.where", bool_condition(condition), input, other)


def bool_condition(condition: Any) -> Any:
    """``where``'s condition; a uint8 one (pytorch-crf's ``mask.byte()``) as ``condition != 0``, with PyTorch's warning of
    that deprecated form."""
    if not (isinstance(condition, Tensor) and condition.dtype is DType.u8):
        return condition
    warnings.warn("where received a uint8 condition tensor. This behavior is deprecated and will be removed in a future "
                  "version of PyTorch. Use a boolean condition instead.", UserWarning, stacklevel=3)
    return condition != 0


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """``dtype`` casts the input first, as PyTorch's (``F.softmax(half_logits, -1, dtype=kiln.float32)``)."""
    input = input if dtype is None else input.to(dtype)
    return apply("nn.softmax", input, axis=implicit_softmax_dim("softmax", input, dim))


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """``dtype`` casts the input first, as PyTorch's."""
    input = input if dtype is None else input.to(dtype)
    return apply("nn.log_softmax", input, axis=implicit_softmax_dim("log_softmax", input, dim))


def implicit_softmax_dim(function: str, input: Tensor, dim: int | None) -> int:
    """``dim``, or without one PyTorch's deprecated implicit choice, with its warning: dim 0 for a 0-, 1- or 3-d input
    (an unbatched vector, or a sequence-first batch), else dim 1 (the class dim of ``(N, C, ...)``)."""
    if dim is not None:
        return dim
    implicit = 0 if input.ndim in (0, 1, 3) else 1
    # torch's sentence first, so a filter written for torch's (``filterwarnings(..., "Implicit dimension choice for
    # softmax has been deprecated. Change the call")``) matches kiln's; then the dim kiln picked
    warnings.warn(f"Implicit dimension choice for {function} has been deprecated. Change the call to include dim=X as an "
                  f"argument. (kiln picked dim={implicit} for {input.type}: write dim={implicit}.)", UserWarning, stacklevel=3)
    return implicit


@autocasts("linear")
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias`` with PyTorch's ``(out_features, in_features)`` weight. In a CPU autocast region the
    bias is added in float32 before the one rounding, as torch's addmm kernel (a half model outside one keeps two ops,
    the product a half GEMM on CuPy)."""
    check_linear_shapes(input, weight)
    if bias is None:
        return input @ weight.T
    if not region_enabled("cpu"):  # bias_added_in_opmath's own first case, two frames shallower (each op walks them)
        return input @ weight.T + bias
    return bias_added_in_opmath(lambda x, w, b: x @ w.T + b, input, weight, bias)


# Reductions (torch.*) -----------------------------------------------------------
#
# ``dim`` is an int, a sequence of ints or None (every dim), negative dims count from the end, and a dim that does
# not fit is a TraceError naming the function, the dim and the tensor. Square roots and ``p``-th roots are taken
# through ``_root``, whose gradient at 0 is the 0 subgradient PyTorch reports, not ``0 * inf = NaN``.


def _dims(function: str, input: Tensor, dim: Any) -> tuple[int, ...]:
    """``dim`` as sorted non-negative axes of ``input`` (every axis for None)."""
    if dim is None:
        return tuple(range(input.ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim) if isinstance(dim, (tuple, list)) else None
    if dims is None or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise located_error(f"{function}: dim must be an int or a tuple of ints, got {dim!r}")
    try:
        return normalize_axes(tuple(int(d) for d in dims), input.ndim)
    except ShapeError as error:  # PyTorch's words (and IndexError) in the parenthesis
        raise located_error(f"{function}: dim {dim!r} does not fit {input.type} ({error}); dims run from {-input.ndim} to "
                            f"{input.ndim - 1}", kind=located_kind(error)) from None


def _one_dim(function: str, input: Tensor, dim: Any) -> int:
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise located_error(f"{function}: dim must be one int, got {dim!r}")
    if input.ndim == 0 and dim in (0, -1):
        return 0
    return _dims(function, input, dim)[0]


def _float_input(function: str, input: Tensor) -> None:
    if not input.dtype.is_float:
        raise located_error(f"{function} needs a floating-point tensor, got {input.type}; cast it first (x.float())")


def _root(total: Tensor, p: float) -> Tensor:
    """``total ** (1/p)`` for ``total >= 0``, with gradient 0 where ``total`` is 0 (a zero vector's norm, a constant
    row's std): the root sees 1 there, so its infinite slope never meets the zero cotangent (a ``where``'s zero
    cotangent may reach its untaken branch as ``0 * g``: the NumPy backend multiplies by masks); NaN stays NaN."""
    positive = total > 0
    safe = where(positive, total, 1.0)
    root = safe.sqrt() if p == 2 else safe ** (1.0 / p)
    zero_or_nan = where(positive, 0.0, total) * 0.0  # no inf * 0 where total is inf, no gradient
    return where(positive, root, zero_or_nan)


def amax(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """The largest elements along ``dim``; positions that tie share the gradient evenly, as PyTorch's ``amax``."""
    return apply("tensor.reduce_max", input, axes=_dims("amax", input, dim), keepdims=keepdim)


def _argmax(input: Tensor, dim: Any, keepdim: bool, function: str = "argmax") -> Tensor:
    """``torch.argmax``: the first largest along ``dim``; over the flattened tensor for None."""
    if dim is not None:
        return apply("tensor.argmax", input, axis=_one_dim(function, input, dim), keepdims=keepdim)
    index = apply("tensor.argmax", input.reshape(-1), axis=0, keepdims=False)
    return index.reshape((1,) * input.ndim) if keepdim else index


def argmin(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """The index of the first smallest element: ``argmax`` of an order-reversed copy, ``-x`` for floats (NaN stays
    the largest, as PyTorch's ``argmin`` picks it) and ``-x - 1`` (``~x``) for integers, which cannot overflow."""
    if input.dtype is DType.bool:
        input = input.to(DType.i32)
    reversed_order = -input if input.dtype.is_float else -input - 1
    return _argmax(reversed_order, dim, keepdim, "argmin")


def _extremum(kind: str, input: Tensor, dim: Any, keepdim: bool) -> Tensor | ValuesIndices:
    """``Tensor.max``/``Tensor.min``: the reduction (no dim), the elementwise op (a tensor), or ``(values, indices)``.

    With a dim the gradient goes to the element at ``indices`` alone, as PyTorch's: ``values`` sums the input
    masked to that position. The masked terms are -0.0, the additive identity, so the value keeps its bits, and they
    are ``where``'s first branch: the NumPy backend turns ``where(c, x, 0)`` into ``x * c``, which an infinite loser
    would make NaN."""
    if isinstance(dim, Tensor):
        if keepdim:
            raise located_error(f"{kind}(other) is elementwise; keepdim does not apply")
        return apply("tensor.maximum" if kind == "max" else "tensor.minimum", input, dim)
    if dim is None:
        return apply("tensor.reduce_max" if kind == "max" else "tensor.reduce_min", input, axes=None, keepdims=keepdim)
    axis = _one_dim(kind, input, dim)
    indices = _argmax(input, axis, True, kind) if kind == "max" else argmin(input, axis, True)
    if input.ndim == 0:
        return ValuesIndices(input, indices)
    if not input.dtype.is_float:
        values = apply("tensor.reduce_max" if kind == "max" else "tensor.reduce_min", input, axes=(axis,), keepdims=True)
    else:
        size = input.shape[axis]
        if not isinstance(size, int):
            raise located_error(f"{kind}(dim={dim}) of {input.type}: dim {axis} is symbolic ({size}), and routing the gradient to "
                         f"the index needs its size; use amax/amin (ties share the gradient) or a static dim")
        positions = np.arange(size, dtype=np.int64).reshape((size,) + (1,) * (input.ndim - 1 - axis))
        others = apply("tensor.not_equal", apply("tensor.constant", value=positions), indices)
        values = apply("tensor.where", others, np.asarray(-0.0), input).sum(axis, keepdim=True)
    if not keepdim:
        values, indices = values.squeeze(axis), indices.squeeze(axis)
    return ValuesIndices(values, indices)


def _all_or_any(kind: str, input: Tensor, dim: Any, keepdim: bool) -> Tensor:
    """``Tensor.all``/``Tensor.any``: whether every/some element along ``dim`` is nonzero (NaN counts), as bool."""
    truth = input if input.dtype is DType.bool else apply("tensor.not_equal", input, 0)
    reduce = "tensor.reduce_min" if kind == "all" else "tensor.reduce_max"
    reduced = apply(reduce, truth.to(DType.f32), axes=_dims(kind, input, dim), keepdims=keepdim)
    return reduced > 0.5


def prod(input: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """The product along ``dim``; integers and bools multiply as int64, as PyTorch. The gradient is the product of
    the other elements, zeros included (``tensor.reduce_prod``'s rule)."""
    if dtype is not None:
        input = input.to(dtype)
    elif not input.dtype.is_float:
        input = input.to(DType.i64)
    return apply("tensor.reduce_prod", input, axes=_dims("prod", input, dim), keepdims=keepdim)


def _correction(function: str, unbiased: bool | None, correction: float | None) -> float:
    if unbiased is not None and correction is not None:
        raise located_error(f"{function}: give unbiased or correction, not both")
    if correction is not None:
        return float(correction)
    return 1.0 if unbiased is None or unbiased else 0.0


def var(input: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None) -> Tensor:
    """``sum((x - mean)^2) / max(n - correction, 0)`` along ``dim`` (Bessel's ``correction=1`` by default, or
    ``unbiased=False`` for 0); ``n`` is counted at run time, so a symbolic batch dim reduces too. ``var(x, False)``
    is PyTorch's ``unbiased`` overload."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim if unbiased is None else unbiased
    input = tensor_operand(input)
    _float_input("var", input)
    dims = _dims("var", input, dim)
    subtracted = _correction("var", unbiased, correction)
    _warn_nonpositive_dof("var", input, dims, subtracted)
    return in_opmath(lambda x: _variance(x, dims, subtracted, keepdim), input)  # a half input: float32 inside, one rounding


def _variance(x: Tensor, dims: Any, subtracted: float, keepdim: bool) -> Tensor:
    centered = x - x.mean(dims, keepdim=True)
    count = apply("tensor.numel", x, axes=dims, dtype=x.dtype)
    return (centered * centered).sum(dims, keepdim) / apply("tensor.maximum", count - subtracted, 0.0)


def _warn_nonpositive_dof(name: str, input: Tensor, dims: Any, subtracted: float) -> None:
    """torch's warning where the reduced count is known and ``correction`` leaves no degree of freedom (the std of one
    sample: NaN)."""
    sizes = [input.shape[d] for d in (dims if dims is not None else range(input.ndim))]
    if all(isinstance(size, int) for size in sizes) and math.prod(sizes) - subtracted <= 0:
        warn_at_user_line(NONPOSITIVE_DOF.format(name))


def std(input: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None) -> Tensor:
    """``sqrt(var(...))``; a constant slice has std 0 and gradient 0, as PyTorch."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim if unbiased is None else unbiased
    input = tensor_operand(input)
    _float_input("std", input)
    dims, subtracted = _dims("std", input, dim), _correction("std", unbiased, correction)
    _warn_nonpositive_dof("std", input, dims, subtracted)
    return in_opmath(lambda x: _root(_variance(x, dims, subtracted, keepdim), 2), input)  # one rounding


def _nuclear_norm(input: Tensor, dim: Any, keepdim: bool) -> Tensor:
    from kiln.frontend.tensor_linalg import matrix_norm  # lazily: the linalg methods build on this module

    dims = tuple(range(input.ndim)) if dim is None else tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if len(dims) != 2:
        raise located_error(f"norm(p='nuc') is over two dims (a matrix), got dim={dim!r} for a {input.ndim}-d tensor")
    return matrix_norm(input, "nuc", dims, keepdim)


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` along ``dim``, shifted by the max so nothing overflows.

    Where the max is infinite (a row of -inf, or one holding +inf) the shift is 0 instead, so no ``inf - inf``
    appears: a -inf row gives -inf, a row with +inf gives +inf, as PyTorch; the gradient is ``softmax(x)`` (NaN in a
    -inf row, as PyTorch's). The shift's own gradient is ``1 - sum(softmax) = 0``, so tied maxima change nothing.
    Integers are promoted to float32."""
    if not input.dtype.is_float:
        input = input.to(DType.f32)
    dims = _dims("logsumexp", input, dim)
    peak = input.amax(dims, keepdim=True)
    shift = where(apply("tensor.equal", apply("tensor.abs", peak), math.inf), 0.0, peak)
    total = (input - shift).exp().sum(dims, keepdim)
    return total.log() + (shift if keepdim else apply("tensor.squeeze", shift, axes=dims))


def norm(input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """The vector ``p``-norm over ``dim`` (every dim by default): ``'fro'`` and 2, 1, ``inf`` (largest magnitude),
    ``-inf`` (smallest), 0 (nonzero count) and any other ``p`` as ``sum(|x|^p)^(1/p)``. Gradients follow PyTorch's:
    0 at a zero vector (the subgradient), shared by ties for ``+-inf``. ``'nuc'``: the sum of the singular values over
    two dims (``kiln.linalg.matrix_norm``)."""
    input = tensor_operand(input) if dtype is None else tensor_operand(input).to(dtype)
    from kiln.frontend.complex_functions import is_complex  # lazily: complex tensors build on this module's tensor

    if p != "nuc" and is_complex(input):
        input = input.abs()  # a vector norm of complex values is that of their magnitudes, real (as torch's)
    _float_input("norm", input)
    if p == "nuc":
        return _nuclear_norm(input, dim, keepdim)
    if isinstance(p, str) and p != "fro":
        raise located_error(f"norm: p must be a number, 'fro' or 'nuc', got {p!r}")
    dims = _dims("norm", input, dim)
    p = 2.0 if p == "fro" else float(p)
    return in_opmath(lambda x: _vector_norm(x, p, dims, keepdim), input)  # a half input: float32 sums, one rounding


def _vector_norm(input: Tensor, p: float, dims: tuple[int, ...], keepdim: bool) -> Tensor:
    magnitude = apply("tensor.abs", input)
    if p == math.inf:
        return magnitude.amax(dims, keepdim)
    if p == -math.inf:
        return magnitude.amin(dims, keepdim)
    if p == 0:  # a nonzero count, on the gradient path of an input that requires grad (zero .grad), as torch's
        counts = apply("tensor.not_equal", input, 0.0).to(input.dtype)
        counts = counts + zeros_on_gradient_path(input) if input.requires_grad else counts
        return counts.sum(dims, keepdim)
    if p == 1:
        return magnitude.sum(dims, keepdim)
    if p == 2:
        return _root((input * input).sum(dims, keepdim), 2)
    # |x|^p where x != 0, else 0^p (0, or inf for p < 0); the power sees 1 at zeros, so its slope there (infinite
    # for p < 1) never meets the zero cotangent (the NumPy backend multiplies by masks, so 0 * inf would be NaN)
    nonzero = apply("tensor.not_equal", input, 0.0)
    powers = where(nonzero, where(nonzero, magnitude, 1.0) ** p, 0.0 if p > 0 else math.inf)
    return _root(powers.sum(dims, keepdim), p)


# Shape (torch.*) ----------------------------------------------------------------


def movedim(input: Tensor, source: int | Sequence[int], destination: int | Sequence[int]) -> Tensor:
    """Move the dims at ``source`` to the positions ``destination``; the others keep their order."""
    sources = (source,) if isinstance(source, int) else tuple(source)
    destinations = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(sources) != len(destinations):
        raise located_error(f"movedim: source {source} and destination {destination} name different numbers of dims")
    moved = [_dims("movedim", input, d)[0] for d in sources]
    placed = [_dims("movedim", input, d)[0] for d in destinations]
    if len(set(moved)) != len(moved) or len(set(placed)) != len(placed):
        raise located_error(f"movedim: repeated dim in source {source} or destination {destination}")
    perm: list[int | None] = [None] * input.ndim
    for s, d in zip(moved, placed):
        perm[d] = s
    rest = iter(axis for axis in range(input.ndim) if axis not in moved)
    return apply("tensor.transpose", input, perm=tuple(axis if axis is not None else next(rest) for axis in perm))


def flip(input: Tensor, dims: int | Sequence[int]) -> Tensor:
    """Reverse the order along ``dims``: a gather with reversed indices per dim (its gradient the matching
    scatter), so each flipped dim must be static."""
    for axis in _dims("flip", input, dims):
        size = input.shape[axis]
        if not isinstance(size, int):
            raise located_error(f"flip: dim {axis} of {input.type} is symbolic; only static dims can be reversed")
        input = apply("tensor.take", input, apply("tensor.constant", value=np.arange(size - 1, -1, -1, dtype=np.int64)), axis=axis)
    return input


def _repeat(input: Tensor, *sizes: Any) -> Tensor:
    """``Tensor.repeat``: tile ``sizes[i]`` copies along each dim (extra leading sizes add dims). Each repeated dim
    gets a size-1 axis before it, broadcast to the count, then merged: one reshape, one broadcast, one reshape."""
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    if len(sizes) < input.ndim or not all(isinstance(r, (int, np.integer)) and r >= 0 for r in sizes):
        raise located_error(f"repeat: needs a non-negative count per dim of {input.type} (at least {input.ndim}), got {sizes}")
    shape = (1,) * (len(sizes) - input.ndim) + tuple(input.shape)
    spread, tiled, merged = [], [], []
    for count, size in zip(sizes, shape):
        spread += [1, size] if count != 1 else [size]
        tiled += [int(count), size] if count != 1 else [size]
        merged.append(dim_product([int(count), size]))
    from kiln.frontend.view_writes import own_storage  # lazily: it builds on the tensor

    return own_storage(input.reshape(tuple(spread)).broadcast_to(tuple(tiled)).reshape(tuple(merged)), input)  # a copy


def _narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    """``Tensor.narrow``: ``length`` elements from ``start`` (negative counts from the end) along a static dim; as
    PyTorch's, a view: ``x.narrow(2, t, n).fill_(1)`` writes ``x`` (it is ``x[:, :, t:t + n]``)."""
    axis = _one_dim("narrow", input, dim)
    size = input.shape[axis]
    if not isinstance(size, int):
        raise located_error(f"narrow: dim {axis} of {input.type} is symbolic; narrow a static dim")
    begin = start + size if start < 0 else start
    if not 0 <= begin <= size or length < 0 or begin + length > size:
        raise located_error(f"narrow: start {start} and length {length} do not fit dim {axis} of size {size} in {input.type}")
    from kiln.frontend.functional_indexing import getitem  # lazily: indexing builds on this module

    return getitem(input, (slice(None),) * axis + (slice(begin, begin + length),))  # a view a write goes through


def unbind(input: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices along ``dim``, each without that dim; it must be static."""
    axis = _one_dim("unbind", input, dim)
    size = input.shape[axis]
    if not isinstance(size, int):
        raise located_error(f"unbind: dim {axis} of {input.type} is symbolic; unbind a static dim")
    return tuple(apply("tensor.squeeze", _narrow(input, axis, index, 1), axes=(axis,)) for index in range(size))


# Distances and normalization (torch.nn.functional) ------------------------------


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """``x / max(norm_p(x, dim), eps)``, as PyTorch (where the norm is below ``eps`` it is a constant)."""
    input = tensor_operand(input)
    return input / norm(input, p, dim, keepdim=True).clamp(min=eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``sum((x1 / max(|x1|, eps)) (x2 / max(|x2|, eps)))`` along ``dim`` of the broadcast inputs, as PyTorch:
    normalizing first keeps the result in [-1, 1]. Below ``eps`` a norm is clamped to a constant; PyTorch clamps
    without telling autograd, so for ``0 < |x| < eps`` its gradient differs from this one (the clamped formula's own
    derivative); at ``x = 0`` and above ``eps`` they agree."""
    x1, x2 = (x if x.dtype.is_float else x.to(DType.f32) for x in map(tensor_operand, (x1, x2)))
    try:
        shape = broadcast_shapes(x1.shape, x2.shape)
    except ShapeError as error:
        raise located_error(f"cosine_similarity: {x1.type} and {x2.type} do not broadcast ({error})") from None
    x1, x2 = (x if x.shape == shape else x.broadcast_to(shape) for x in (x1, x2))
    axis = _one_dim("cosine_similarity", x1, dim)
    unit1 = x1 / norm(x1, 2, axis, keepdim=True).clamp(min=eps)
    unit2 = x2 / norm(x2, 2, axis, keepdim=True).clamp(min=eps)
    return (unit1 * unit2).sum(axis)


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """``norm_p(x1 - x2 + eps)`` over the last dim, as PyTorch (``eps`` keeps the 2-norm's gradient finite)."""
    return norm(tensor_operand(x1) - tensor_operand(x2) + eps, p, -1, keepdim)


from kiln.frontend.functional_losses import *  # noqa: E402,F401,F403  (losses: cross_entropy, mse_loss, l1_loss, ...)
from kiln.frontend.functional_nn import *  # noqa: E402,F401,F403  (CNN and transformer functions: gelu, layer_norm, conv2d, ...)
from kiln.frontend.functional_activation import *  # noqa: E402,F401,F403  (silu, leaky_relu, elu, softplus, mish, ...)
from kiln.frontend.functional_norm import *  # noqa: E402,F401,F403  (group_norm, rms_norm, ...)
from kiln.frontend.functional_conv import *  # noqa: E402,F401,F403  (conv1d, conv_transpose2d, adaptive_avg_pool2d, ...)
from kiln.frontend.functional_spatial import *  # noqa: E402,F401,F403  (interpolate, pixel_shuffle, unfold, fold, ...)
from kiln.frontend.functional_pool1d import *  # noqa: E402,F401,F403  (max_pool1d, avg_pool1d, adaptive_*_pool1d)
from kiln.frontend.functional_extra import *  # noqa: E402,F401,F403  (conv_transpose1d, embedding_bag, lp_pool2d, max_unpool2d, ...)
from kiln.frontend.functional_extra_random import *  # noqa: E402,F401,F403  (alpha_dropout, feature_alpha_dropout, gumbel_softmax)
from kiln.frontend.functional_extra_losses import *  # noqa: E402,F401,F403  (pdist, multilabel_margin_loss, ...; cdist is kiln.cdist)
from kiln.frontend.functional_conv3d import *  # noqa: E402,F401,F403  (conv3d, max_pool3d, avg_pool3d, adaptive_*_pool3d)
from kiln.frontend.functional_ctc import *  # noqa: E402,F401,F403  (ctc_loss)
from kiln.frontend.functional_sampling import *  # noqa: E402,F401,F403  (affine_grid, grid_sample)
from kiln.frontend.functional_more import *  # noqa: E402,F401,F403  (fractional_max_pool2d/3d, multi_head_attention_forward, ...)
from kiln.frontend.linear_cross_entropy import linear_cross_entropy  # noqa: E402,F401
