"""The rest of PyTorch's commonly used ``Tensor`` methods, each a few existing ops (no new IR op):

- the scatter family of GNN code: ``scatter`` (``src`` or ``value``, ``reduce="add"|"multiply"``), ``scatter_add``,
  ``index_add``/``index_fill``/``index_copy``, ``masked_scatter``, ``nonzero_static``, with their in-place ``_`` forms;
- shape: ``unfold`` (sliding windows), ``fliplr``/``flipud``/``rot90``, ``tensor_split``/``hsplit``/``vsplit``/
  ``dsplit``, ``split_with_sizes``, ``ravel``, ``select``, ``narrow_copy``, ``diag_embed``/``diagflat``/``trace``, and
  the metadata-only in-place ``transpose_``/``t_``/``swapdims_``/``squeeze_``/``unsqueeze_``;
- special functions: ``erfc``, ``erfinv``, ``lgamma``, ``digamma`` (below), ``xlogy``, ``logit``, ``sinc``, ...;
- reductions and small linear algebra: ``nansum``/``nanmean``, ``count_nonzero``, ``aminmax``, ``quantile``, ``mv``,
  ``inner``, ``addmv``, ``addr``, ``cross``, ``cov``/``corrcoef``;
- PyTorch's aliases (``multiply``, ``divide``...) and the in-place ``xxx_`` of the out-of-place methods, generated
  from one list (``_IN_PLACE``) through ``in_place``.

Scatter writes. A static-shaped scatter is one ``tensor.scatter_add`` into the flattened tensor at ``index * stride +
offset`` (its gradient a ``take``); with a symbolic dim, a one-hot sum over the indexed dim (which must be static).
``scatter_add``/``index_add`` accumulate duplicate indices, as PyTorch's. For the assigning ``scatter``/``index_copy``
PyTorch leaves duplicates unspecified; kiln writes their mean (truncated toward zero for integers), so equal values
written twice give that value; ``scatter(dim, index, value)`` writes ``value`` exactly, duplicates or not.

Special functions (their helpers in ``frontend/tensor_special.py``), accurate to a few ulps in float64 (PyTorch's float64 as the oracle, gradients included):
``erfc`` is ``1 - erf`` below 2 and Laplace's continued fraction (60 terms, converged to an ulp) above, so its tail
keeps its digits down to the underflow; ``erfinv`` starts from Giles' single-precision approximation and takes Newton
steps on ``erf`` (on ``erfc`` of the exact ``1 - |y|`` above 1/2, so results near +-1 keep their digits), the last
step alone differentiated, whose slope is ``1 / erf'(x)``; ``lgamma``/``digamma`` shift by the recurrence to
``x + 10``, sum the Stirling (asymptotic) series there, and reflect below 1/2 through ``sin(pi r)`` of the exact
``r = x - round(x)`` (no loss for large negative ``x``).

The methods that need the values (``unique``, ``bincount``, ``allclose``, ``nonzero``...) are in
frontend/tensor_value_dependent.py, inherited from here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor_inplace import check_fresh, in_place
from kiln.frontend.tensor_math import _magnitude, _promoted, _scaled, _sign_bit
from kiln.frontend.tensor_methods import _floating, _is_one
from kiln.frontend.tensor_value_dependent import ValueDependentMethods
from kiln.frontend.tensor_special import _digamma_positive, _erfc, _erfinv_inside, _lgamma_positive, _sin_pi, _sin_pi_fraction
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


def _is_tensor(value: Any) -> bool:
    from kiln.frontend.tensor import Tensor

    return isinstance(value, Tensor)


def _constant(value: Any, dtype: DType | None = None) -> Any:
    array = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype.numpy)
    return _apply("tensor.constant", value=array)


def _where(condition: Any, x: Any, y: Any) -> Any:
    return _apply("tensor.where", condition, x, y)


class MinMax(NamedTuple):
    """What ``x.aminmax()`` returns, as PyTorch's ``torch.return_types.aminmax``."""

    min: Any
    max: Any


class ExtraMethods(ValueDependentMethods):
    """See the module docstring; ``Tensor`` inherits these last, so a method defined elsewhere wins."""

    # scatter family ---------------------------------------------------------
    def scatter_add(self, dim: int, index: Any, src: Any) -> Any:
        """``self[index[i][j]][j] += src[i][j]`` for ``dim = 0`` (PyTorch's); duplicate indices accumulate."""
        return self + _scattered_sum(self, dim, index, _source(self, index, src))

    def scatter(self, dim: int, index: Any, src: Any = None, value: Any = None, *, reduce: str | None = None) -> Any:
        """``self[index[i][j]][j] = src[i][j]`` (or ``value``) for ``dim = 0``; ``reduce="add"`` or ``"multiply"``
        combines with what is there. Duplicate indices: see the module docstring."""
        source = value if src is None else src
        if reduce is None:
            return _scatter_assign(self, dim, index, source)
        if reduce == "add":
            return self.scatter_add(dim, index, _source(self, index, source))
        if reduce == "multiply":
            return self * _one_hot_scatter(self, dim, index, _source(self, index, source), "prod")
        raise located_error(f"scatter: reduce must be None, 'add' or 'multiply', got {reduce!r}")

    def index_add(self, dim: int, index: Any, source: Any, *, alpha: Any = 1) -> Any:
        """``self[..., index[i], ...] += alpha * source[..., i, ...]`` along ``dim``; duplicate indices accumulate."""
        scaled = source if _is_one(alpha) else source * alpha
        return self + _index_sum(self, dim, _vector_index("index_add", index), scaled.to(self.dtype))

    def index_fill(self, dim: int, index: Any, value: Any) -> Any:
        """``value`` in the slices ``index`` along ``dim``."""
        written = _index_counts(self, dim, _vector_index("index_fill", index), DType.i64) > 0
        return self.masked_fill(written, value)

    @autocasts("index_copy")
    def index_copy(self, dim: int, index: Any, source: Any) -> Any:
        """The slices of ``source`` into the slices ``index`` along ``dim`` (duplicates: their mean)."""
        index = _vector_index("index_copy", index)
        counts = _index_counts(self, dim, index, _count_dtype(self))
        return _where(counts > 0, _mean_of_writes(_index_sum(self, dim, index, source.to(self.dtype)), counts), self)

    def masked_scatter(self, mask: Any, source: Any) -> Any:
        """``source``'s elements in order into the places where ``mask`` (broadcast to this tensor) is True: the k-th
        True place takes ``source.flatten()[k]``, a ``take`` at the running count of the mask."""
        places = mask.broadcast_to(self.shape).reshape(-1)
        slot = places.long().cumsum(0) - 1
        picked = _apply("tensor.take", source.to(self.dtype).reshape(-1), _where(places, slot, 0), axis=0)
        return _where(places, picked, self.reshape(-1)).reshape(self.shape)

    def nonzero_static(self, *, size: int, fill_value: int = -1) -> Any:
        """The first ``size`` indices of nonzero elements, ``(size, ndim)`` int64, rows past the count ``fill_value``:
        the s-th nonzero is where the running count of nonzeros reaches ``s + 1`` (a static shape, so it traces)."""
        shape = _static_shape("nonzero_static", self)
        nonzero = (self != 0).reshape(-1)
        rank = nonzero.long().cumsum(0) - 1
        hits = (rank.unsqueeze(0) == _constant(np.arange(size)[:, None])) & nonzero  # (size, numel)
        flat = _where(hits, _constant(np.arange(int(np.prod(shape)))), 0).sum(1, keepdim=True)
        strides = _constant(np.cumprod((1,) + shape[:0:-1])[::-1].copy())
        coordinates = flat.floor_divide(strides).remainder(_constant(np.asarray(shape, np.int64)))
        return _where(hits.any(1, keepdim=True), coordinates, _constant(fill_value, DType.i64))

    # shape -------------------------------------------------------------------
    def unfold(self, dimension: int, size: int, step: int) -> Any:
        """Every window of ``size`` along ``dimension``, ``step`` apart, as a new last dim (one ``take``)."""
        from kiln.frontend.functional import movedim

        axis = dimension % max(self.ndim, 1)
        length = self.shape[axis]
        if not isinstance(length, int) or not 0 < size <= length or step <= 0:
            raise located_error(f"unfold: size={size} and step={step} must fit dim {dimension} of {self.type} "
                                "(a static dim, 0 < size <= its length, step > 0)")
        windows = np.arange((length - size) // step + 1)[:, None] * step + np.arange(size)
        taken = _apply("tensor.take", self, _constant(windows), axis=axis)
        return movedim(taken, axis + 1, -1)

    def fliplr(self) -> Any:
        _require_rank("fliplr", self, 2)
        return self.flip(1)

    def flipud(self) -> Any:
        _require_rank("flipud", self, 1)
        return self.flip(0)

    def rot90(self, k: int = 1, dims: Any = (0, 1)) -> Any:
        """Rotated by 90 degrees ``k`` times from the first of ``dims`` toward the second, as PyTorch's."""
        first, second = dims
        turns = k % 4
        if turns == 1:
            return self.flip(second).transpose(first, second)
        if turns == 2:
            return self.flip(first, second)
        if turns == 3:
            return self.flip(first).transpose(first, second)
        return self.clone()

    def tensor_split(self, indices_or_sections: Any, dim: int = 0) -> tuple[Any, ...]:
        """``n`` near-equal pieces (the first ``length % n`` one longer), or pieces cut at the listed indices."""
        length = self.shape[dim]
        if not isinstance(length, int):
            raise located_error(f"tensor_split along the symbolic dim {length} of {self.type} is not supported")
        cuts = _section_cuts(length, indices_or_sections)
        bounds = [min(max(c if c >= 0 else c + length, 0), length) for c in cuts]
        edges = list(zip([0] + bounds, bounds + [length]))
        return tuple(self.narrow(dim, start, max(end - start, 0)) for start, end in edges)

    def hsplit(self, sections: Any) -> tuple[Any, ...]:
        return _even_split("hsplit", self, sections, 1 if self.ndim > 1 else 0)

    def vsplit(self, sections: Any) -> tuple[Any, ...]:
        _require_rank("vsplit", self, 2)
        return _even_split("vsplit", self, sections, 0)

    def dsplit(self, sections: Any) -> tuple[Any, ...]:
        _require_rank("dsplit", self, 3)
        return _even_split("dsplit", self, sections, 2)

    def split_with_sizes(self, split_sizes: Any, dim: int = 0) -> tuple[Any, ...]:
        sizes = list(split_sizes)
        if sum(sizes) != self.shape[dim]:
            raise located_error(f"split_with_sizes: the sizes {sizes} must add up to dim {dim} of {self.type}")
        return self.split(sizes, dim)

    def ravel(self) -> Any:
        return self.reshape(-1)

    def narrow_copy(self, dim: int, start: int, length: int) -> Any:
        return self.narrow(dim, start, length)

    def select(self, dim: int, index: int) -> Any:
        """The slice at ``index`` along ``dim``, without that dim."""
        size = self.shape[dim]
        start = index + size if index < 0 and isinstance(size, int) else index
        return self.narrow(dim, start, 1).squeeze(dim)

    def diag_embed(self, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Any:
        """Each vector along the last dim as the ``offset`` diagonal of a matrix in the new dims ``(dim1, dim2)``."""
        from kiln.frontend.functional import movedim
        from kiln.frontend.functional_nn import pad

        length = self.shape[-1]
        if not isinstance(length, int):
            raise located_error(f"diag_embed of the symbolic-length {self.type} is not supported")
        size = length + abs(offset)
        vectors = pad(self, (0, abs(offset)))  # element i on row i (offset >= 0) or on column i (offset < 0)
        placed = vectors.unsqueeze(-1 if offset >= 0 else -2)
        matrices = _where(_constant(np.eye(size, k=offset, dtype=bool)), placed, 0)
        rank = self.ndim + 1
        return movedim(matrices, (-2, -1), (dim1 % rank, dim2 % rank))

    def diagflat(self, offset: int = 0) -> Any:
        return self.reshape(-1).diag(offset)

    @autocasts("trace")
    def trace(self) -> Any:
        """The sum of the main diagonal of a matrix (integers sum in int64, as PyTorch's)."""
        _require_rank("trace", self, 2, exactly=True)
        diagonal = self.diagonal()
        return (diagonal if diagonal.dtype.is_float else diagonal.long()).sum()

    def transpose_(self, dim0: int, dim1: int) -> Any:
        return _reshaped_in_place(self, self.transpose(dim0, dim1), "transpose_")

    def t_(self) -> Any:
        return _reshaped_in_place(self, self.t(), "t_")

    def swapdims_(self, dim0: int, dim1: int) -> Any:
        return _reshaped_in_place(self, self.transpose(dim0, dim1), "swapdims_")

    swapaxes_ = swapdims_

    def squeeze_(self, dim: Any = None) -> Any:
        return _reshaped_in_place(self, self.squeeze(dim), "squeeze_")

    def unsqueeze_(self, dim: int) -> Any:
        return _reshaped_in_place(self, self.unsqueeze(dim), "unsqueeze_")

    # special functions -------------------------------------------------------
    def erfc(self) -> Any:
        return _erfc(_floating(self))

    def erfinv(self) -> Any:
        """The ``x`` with ``erf(x) = y``: +-inf at +-1, NaN beyond (see the module docstring)."""
        y = _floating(self)
        magnitude = _magnitude(y)  # its slope at 0 is 1, so erfinv'(0) is sqrt(pi) / 2
        inside = magnitude < 1
        root = _erfinv_inside(_where(inside, magnitude, 0.5))
        edge = (1.0 - magnitude).rsqrt()  # inf at +-1, NaN beyond and at NaN; its slope too (PyTorch's), not 0
        root = _where(inside, root, edge)
        return _where(y < 0, -root, root)

    def lgamma(self) -> Any:
        """``log |Gamma(x)|``; inf at the poles 0, -1, -2, ... (see the module docstring)."""
        x = _floating(self)
        reflect = x < 0.5
        positive = _lgamma_positive(_where(reflect, 1.0 - x, x))
        sine = _sin_pi_fraction(x, reflect).abs()
        result = _where(reflect, math.log(math.pi) - sine.log() - positive, positive)
        return _where(x == math.inf, x, result)

    def digamma(self) -> Any:
        """``Gamma'(x) / Gamma(x)``; at the poles PyTorch's: -inf at +0, inf at -0, NaN at -1, -2, ..."""
        x = _floating(self)
        reflect = x < 0.5
        positive = _digamma_positive(_where(reflect, 1.0 - x, x))
        fraction = _where(reflect, x - x.round(), 0.25)
        turned = fraction * math.pi
        result = _where(reflect, positive - math.pi * turned.cos() / turned.sin(), positive)
        at_zero = _where(_sign_bit(x), x.new_tensor(math.inf), x.new_tensor(-math.inf))
        pole = _where(x == 0, at_zero, x.new_tensor(math.nan))
        return _where(reflect & (fraction == 0), pole, result)

    def xlogy(self, other: Any) -> Any:
        """``x * log(y)``, 0 where ``x`` is 0 (unless ``y`` is NaN), as PyTorch's; its slopes too."""
        x, y = _float_pair(self, other)
        zero = (x == 0) & ~y.isnan()
        return _where(zero, 0.0, x * _where(zero, 1.0, y).log())

    def logit(self, eps: float | None = None) -> Any:
        """``log(p / (1 - p))`` of ``p`` clamped to ``[eps, 1 - eps]`` when ``eps`` is given, as ``log(p) - log1p(-p)``
        (within 1e3 ulps where the quotient's rounding cost 4e6 near 1/2), whose slope ``1 / p + 1 / (1 - p)`` is inf
        at 0 and 1. Outside [0, 1] value and slope are NaN, as PyTorch's: ``0 * sqrt(p (1 - p))`` is a zero term whose
        slope is NaN there."""
        from kiln.frontend.functional_activation import _log1p

        p = _floating(self)
        if eps is not None:
            p = p.clamp(eps, 1 - eps)
        spread = p * (1.0 - p)
        domain = _where(spread == 0, 1.0, spread).sqrt() * 0.0  # sqrt(0)'s slope would be inf, times 0: NaN
        return p.log() - _log1p(-p) + domain

    def sinc(self) -> Any:
        """``sin(pi x) / (pi x)`` with ``sin(pi x)`` from ``x - round(x)`` (``_sin_pi``: 0 at every integer). Below
        ``|x| = 1e-4`` the series ``1 - p^2 / 6 + p^4 / 120`` (``p = pi x``), whose slope is ``-pi^2 x / 3`` down to 0
        (the quotient's is inf - inf once ``p^2`` underflows)."""
        x = _floating(self)
        small = x.abs() < 1e-4
        far = _where(small, 1.0, x)
        near = _where(small, x, 0.0) * math.pi
        series = 1.0 - near * near * (1.0 / 6.0 - near * near * (1.0 / 120.0))
        return _where(small, series, _sin_pi(far) / (far * math.pi))

    def deg2rad(self) -> Any:
        return _floating(self) * (math.pi / 180.0)

    def rad2deg(self) -> Any:
        return _floating(self) * (180.0 / math.pi)

    def float_power(self, exponent: Any) -> Any:
        """``self ** exponent`` in float64, as PyTorch's."""
        return self.double() ** (exponent.double() if _is_tensor(exponent) else float(exponent))

    def copysign(self, other: Any) -> Any:
        """``|self|`` with the sign of ``other`` (-0.0's too), in a floating dtype."""
        x, y = _float_pair(self, other)
        return _where(_sign_bit(y), -x.abs(), x.abs())

    def signbit(self) -> Any:
        if self.dtype.is_float:
            return _sign_bit(self)
        return self < 0 if self.dtype is not DType.bool else self.new_full(self.shape, False, dtype=DType.bool)

    def sgn(self) -> Any:
        return self.sign()

    def isclose(self, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:
        """``|self - other| <= atol + rtol |other|`` elementwise; equal infinities are close, NaN only with ``equal_nan``."""
        close = (self == other) | ((self - other).abs() <= atol + rtol * _abs(other))
        if equal_nan and self.dtype.is_float:
            close = close | (self.isnan() & (other.isnan() if _is_tensor(other) else math.isnan(other)))
        return close

    def isposinf(self) -> Any:
        return self == math.inf if self.dtype.is_float else self.new_full(self.shape, False, dtype=DType.bool)

    def isneginf(self) -> Any:
        return self == -math.inf if self.dtype.is_float else self.new_full(self.shape, False, dtype=DType.bool)

    def isreal(self) -> Any:
        return self.new_full(self.shape, True, dtype=DType.bool)

    def fmax(self, other: Any) -> Any:
        """The larger of the two, ignoring a NaN (NaN only where both are)."""
        return _where(_nan_of(other), self, _where(self.isnan(), other, self.maximum(other)))

    def fmin(self, other: Any) -> Any:
        return _where(_nan_of(other), self, _where(self.isnan(), other, self.minimum(other)))

    def logaddexp2(self, other: Any) -> Any:
        """``log2(2**x + 2**y)``, through ``logaddexp`` in natural units."""
        return (self * math.log(2)).logaddexp(other * math.log(2)) * (1 / math.log(2))

    # aliases -------------------------------------------------------------------
    def multiply(self, other: Any) -> Any:
        return self * other

    def subtract(self, other: Any, *, alpha: Any = 1) -> Any:
        return self.sub(other, alpha=alpha)

    def divide(self, other: Any, *, rounding_mode: str | None = None) -> Any:
        return self.div(other, rounding_mode=rounding_mode)

    def true_divide(self, other: Any) -> Any:
        return self / other

    def negative(self) -> Any:
        return -self

    def positive(self) -> Any:
        if self.dtype is DType.bool:
            raise located_error("positive() of a bool tensor is not supported (as in PyTorch); use logical ops")
        return self

    def not_equal(self, other: Any) -> Any:
        return self.ne(other)

    def absolute(self) -> Any:
        return self.abs()

    # reductions ------------------------------------------------------------------
    def nansum(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
        """The sum with NaN as 0 (integers and bools sum in int64, as PyTorch's)."""
        x = self if dtype is None else self.to(dtype)
        if not x.dtype.is_float:
            return x.long().sum(dim, keepdim)
        return _where(x.isnan(), 0.0, x).sum(dim, keepdim)

    def nanmean(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
        """The mean of the elements that are not NaN (NaN where all are)."""
        x = self if dtype is None else self.to(dtype)
        if not x.dtype.is_float:
            raise located_error(f"nanmean of a {x.dtype} tensor: PyTorch takes floating tensors only; cast first (x.float())")
        counted = (~x.isnan()).to(x.dtype)
        return x.nansum(dim, keepdim) / counted.sum(dim, keepdim)

    def count_nonzero(self, dim: Any = None) -> Any:
        return (self != 0).long().sum(dim)

    def aminmax(self, *, dim: int | None = None, keepdim: bool = False) -> MinMax:
        """``(min, max)`` over ``dim`` (all elements without one), as PyTorch's named pair."""
        if dim is None and keepdim:
            ones = (1,) * self.ndim
            return MinMax(self.amin().reshape(ones), self.amax().reshape(ones))
        return MinMax(self.amin(dim, keepdim), self.amax(dim, keepdim))

    @autocasts("quantile")
    def quantile(self, q: Any, dim: int | None = None, keepdim: bool = False, *, interpolation: str = "linear") -> Any:
        """The ``q``-quantiles along ``dim`` (of all elements without one) from the sorted values, PyTorch's rule:
        rank ``q (n - 1)`` between the two neighbours by ``interpolation``; NaN where a slice holds a NaN. ``q`` is
        a number or a list (a leading dim of the result); ``dim`` must be static."""
        values = self.reshape(-1) if dim is None else self
        axis = 0 if dim is None else dim % self.ndim
        ranks = _quantile_ranks(q, values.shape[axis], interpolation)
        ordered = values.sort(axis).values
        has_nan = values.isnan().any(axis, keepdim=True)
        picks = [_where(has_nan, math.nan, _quantile_pick(ordered, axis, rank, interpolation)) for rank in ranks.ravel()]
        picks = [_quantile_shape(p, self, dim, axis, keepdim) for p in picks]
        return picks[0] if ranks.ndim == 0 else _stack(picks)

    # small linear algebra ----------------------------------------------------------
    @autocasts("mv")
    def mv(self, vec: Any) -> Any:
        if self.ndim != 2 or vec.ndim != 1:
            raise located_error(f"mv takes a matrix and a vector, got {self.type} and {vec.type}")
        return self @ vec

    def inner(self, other: Any) -> Any:
        """Sums of products over the last dims: ``self.shape[:-1] + other.shape[:-1]`` (one matmul)."""
        if self.ndim == 0 or other.ndim == 0:
            return self * other
        product = self.reshape(-1, self.shape[-1]) @ other.reshape(-1, other.shape[-1]).transpose()
        return product.reshape(tuple(self.shape[:-1]) + tuple(other.shape[:-1]))

    def vdot(self, other: Any) -> Any:
        return self.dot(other)

    @autocasts("addmv")
    def addmv(self, mat: Any, vec: Any, *, beta: float = 1, alpha: float = 1) -> Any:
        return _scaled(self, beta) + _scaled(mat.mv(vec), alpha)

    def addr(self, vec1: Any, vec2: Any, *, beta: float = 1, alpha: float = 1) -> Any:
        return _scaled(self, beta) + _scaled(vec1.outer(vec2), alpha)

    def ger(self, vec2: Any) -> Any:
        return self.outer(vec2)

    def dist(self, other: Any, p: float = 2) -> Any:
        return (self - other).norm(p)

    def cross(self, other: Any, dim: int | None = None) -> Any:
        """The cross product of 3-vectors along ``dim`` (without one, the first dim of size 3, as PyTorch's)."""
        from kiln.frontend.functional_nn import cat

        a, b = _broadcast_pair(self, other)
        axis = _cross_axis(a, dim)
        a0, a1, a2 = (a.narrow(axis, i, 1) for i in range(3))
        b0, b1, b2 = (b.narrow(axis, i, 1) for i in range(3))
        return cat([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis)

    def cov(self, *, correction: int = 1, fweights: Any = None, aweights: Any = None) -> Any:
        """The covariance matrix of the variables in the rows (a 1-D tensor is one variable: a 0-d result)."""
        if fweights is not None or aweights is not None:
            raise located_error("cov: fweights and aweights are not supported; weight the observations yourself")
        if not 1 <= self.ndim <= 2:
            raise located_error(f"cov takes a 1-D or 2-D tensor (variables in rows), got {self.type}")
        observations = _floating(self) if self.ndim == 2 else _floating(self).reshape(1, -1)
        centered = observations - observations.mean(1, keepdim=True)
        covariance = centered @ centered.transpose() / max(observations.shape[1] - correction, 0)
        return covariance if self.ndim == 2 else covariance.reshape(())

    def corrcoef(self) -> Any:
        """Pearson's correlation matrix of the rows: the covariance over the outer product of the deviations, clipped
        to [-1, 1] as PyTorch's."""
        covariance = self.cov()
        if covariance.ndim == 0:
            return covariance / covariance
        deviation = covariance.diagonal().sqrt()
        return (covariance / deviation.unsqueeze(1) / deviation.unsqueeze(0)).clamp(-1, 1)


# scatter helpers -----------------------------------------------------------------


def _source(x: Any, index: Any, src: Any) -> Any:
    """What is scattered: ``src`` in ``x``'s dtype, or a number as a tensor of ``index``'s shape."""
    if _is_tensor(src):
        return src.to(x.dtype)
    return _constant(src, x.dtype).broadcast_to(index.shape)


def _scattered_sum(x: Any, dim: int, index: Any, source: Any) -> Any:
    """Zeros of ``x``'s shape plus ``source[p]`` at ``p`` with ``index[p]`` put in place along ``dim``."""
    axis = dim % x.ndim
    if index.ndim != x.ndim or source.ndim != x.ndim:
        raise located_error(f"scatter: the index {index.type} and source {source.type} need the rank of {x.type}")
    source = _cut(source, index.shape)
    if x.dtype is DType.bool:
        return _scattered_sum(x.long(), dim, index, source.long()) > 0
    if not all(isinstance(d, int) for d in tuple(x.shape) + tuple(index.shape)):
        return _one_hot_scatter(x, axis, index, source, "sum")
    positions = _flat_positions(x.shape, axis, index).reshape(-1)
    total = _apply("tensor.scatter_add", source.reshape(-1), positions, axis=0, shape=(int(np.prod(x.shape)),))
    return total.reshape(x.shape)


def _flat_positions(shape: tuple[int, ...], axis: int, index: Any) -> Any:
    """Where each ``index`` element lands in the flattened ``shape``: ``index * stride[axis]`` plus its own offset."""
    strides = np.cumprod((1,) + tuple(reversed(shape[1:])))[::-1]
    offsets = sum((np.arange(size).reshape((-1,) + (1,) * (index.ndim - d - 1)) * int(strides[d])
                   for d, size in enumerate(index.shape) if d != axis), np.zeros((), np.int64))
    return index.long() * int(strides[axis]) + _constant(np.asarray(offsets, np.int64))


def _one_hot_scatter(x: Any, axis: int, index: Any, source: Any, combine: str) -> Any:
    """``source`` summed (or multiplied) into the places ``index`` along ``axis`` of ``x``'s shape, through a one-hot
    of the index over that (static) dim; the identity elsewhere. The index must span ``x`` outside ``axis``."""
    from kiln.frontend.functional import movedim

    axis = axis % x.ndim
    size = x.shape[axis]
    if not isinstance(size, int) or any(a != b for d, (a, b) in enumerate(zip(index.shape, x.shape)) if d != axis):
        raise located_error(f"scatter with the index {index.type} into {x.type}: with symbolic dims (or reduce="
                            "'multiply') the scattered dim must be static and the index must match the tensor on the "
                            "other dims; index_add takes a symbolic scattered dim")
    hits = _apply("tensor.one_hot", movedim(index, axis, -1), num_classes=size, dtype=DType.bool)
    values = movedim(_cut(source, index.shape), axis, -1).unsqueeze(-1)
    if combine == "prod":
        return movedim(_where(hits, values, 1).prod(-2), -1, axis)
    return movedim(_where(hits, values, 0).sum(-2), -1, axis)


def _cut(x: Any, shape: tuple[Any, ...]) -> Any:
    """``x`` narrowed to ``shape`` on every dim where it is longer (PyTorch's scatter reads only that much)."""
    for dim, (size, wanted) in enumerate(zip(x.shape, shape)):
        if size != wanted:
            if not isinstance(size, int) or not isinstance(wanted, int) or wanted > size:
                raise located_error(f"scatter: the source {x.type} does not cover the index shape {shape}")
            x = x.narrow(dim, 0, wanted)
    return x


def _count_dtype(x: Any) -> DType:
    return x.dtype if x.dtype.is_float else DType.i64


def _scatter_assign(x: Any, dim: int, index: Any, source: Any) -> Any:
    """PyTorch's assigning ``scatter``: a number written where ``index`` points, a tensor's values (their mean on
    duplicates) there too; ``x`` elsewhere."""
    count_dtype = _count_dtype(x)
    counts = _scattered_sum(x.to(count_dtype), dim, index, _constant(1, count_dtype).broadcast_to(index.shape))
    if not _is_tensor(source):
        return _where(counts > 0, _constant(source, x.dtype), x)
    wide = x.to(count_dtype)
    total = _scattered_sum(wide, dim, index, source.to(count_dtype))
    return _where(counts > 0, _mean_of_writes(total, counts).to(x.dtype), x)


def _mean_of_writes(total: Any, counts: Any) -> Any:
    """``total / counts`` where something was written (truncated for integers), so a single write is exact."""
    safe = _where(counts > 0, counts, 1)
    return total / safe if total.dtype.is_float else total.div(safe, rounding_mode="trunc")


def _vector_index(method: str, index: Any) -> Any:
    if index.ndim > 1:
        raise located_error(f"{method} takes a 1-D (or 0-d) index, got {index.type}")
    return index.reshape(1) if index.ndim == 0 else index


def _index_sum(x: Any, dim: int, index: Any, source: Any) -> Any:
    """Zeros of ``x``'s shape plus the slices of ``source`` along ``dim`` summed in at ``index`` (the IR's op)."""
    if source.dtype is DType.bool:
        return _index_sum(x.long(), dim, index, source.long()) > 0
    return _apply("tensor.scatter_add", source, index, axis=dim, shape=tuple(x.shape))


def _index_counts(x: Any, dim: int, index: Any, dtype: DType) -> Any:
    """How often each slice along ``dim`` is indexed, shaped to broadcast against ``x``."""
    axis = dim % x.ndim
    ones = _constant(1, dtype).broadcast_to(index.shape)
    counts = _apply("tensor.scatter_add", ones, index, axis=0, shape=(x.shape[axis],))
    return counts.reshape((x.shape[axis],) + (1,) * (x.ndim - axis - 1))


# shape helpers ---------------------------------------------------------------------


def _require_rank(method: str, x: Any, rank: int, exactly: bool = False) -> None:
    if x.ndim < rank or (exactly and x.ndim != rank):
        wanted = f"{rank}-D" if exactly else f"at least {rank} dims"
        raise located_error(f"{method} needs a tensor of {wanted}, got {x.type}")


def _static_shape(method: str, x: Any) -> tuple[int, ...]:
    if x.ndim == 0 or not all(isinstance(d, int) for d in x.shape):
        raise located_error(f"{method} needs a static shape of at least one dim, got {x.type}")
    return tuple(x.shape)


def _section_cuts(length: int, indices_or_sections: Any) -> list[int]:
    """Where ``tensor_split`` cuts: after each near-equal section, or at the listed indices."""
    if _is_tensor(indices_or_sections):
        raise located_error("tensor_split takes an int or a list of indices: a traced tensor's values are unknown")
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise located_error(f"tensor_split: the number of sections must be positive, got {sections}")
        base, extra = divmod(length, sections)
        return list(np.cumsum([base + 1] * extra + [base] * (sections - extra))[:-1])
    return [int(i) for i in indices_or_sections]


def _even_split(method: str, x: Any, sections: Any, dim: int) -> tuple[Any, ...]:
    if isinstance(sections, int) and (sections <= 0 or x.shape[dim] % sections):
        raise located_error(f"{method}: dim {dim} of {x.type} does not split into {sections} equal parts")
    return x.tensor_split(sections, dim)


def _reshaped_in_place(tensor: Any, result: Any, method: str) -> Any:
    """PyTorch's metadata-only in-place ops (``t_``, ``squeeze_``...): the tensor becomes another view of the same
    storage; no element is written, so the other views stay valid. A write through it later is an ordinary one."""
    from kiln.frontend.module import Parameter

    if isinstance(tensor, Parameter):
        raise located_error(f"{method} on a parameter or buffer would change its shape; take the view out of place")
    check_fresh(tensor)
    tensor._value = result.value
    tensor.__dict__.pop("_indexed_from", None)  # no longer base[index] in that shape: later writes rebind it alone
    return tensor


def _float_pair(x: Any, y: Any) -> tuple[Any, Any]:
    """Both operands floating, in one dtype (a number takes ``x``'s)."""
    x = _floating(x)
    y = _floating(y) if _is_tensor(y) else x.new_tensor(y)
    return _promoted(x, y)


def _abs(value: Any) -> Any:
    return value.abs() if _is_tensor(value) else abs(value)


def _nan_of(value: Any) -> Any:
    if _is_tensor(value):
        return value.isnan()
    return _constant(isinstance(value, float) and math.isnan(value))


# reduction helpers --------------------------------------------------------------------

_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile_ranks(q: Any, length: Any, interpolation: str) -> np.ndarray:
    """``q (n - 1)``: where each quantile sits among the ``n`` sorted values (float64, as PyTorch's for float64)."""
    if _is_tensor(q):
        raise located_error("quantile takes q as a number or a list: a traced tensor's values are unknown while tracing")
    if interpolation not in _INTERPOLATIONS:
        raise located_error(f"quantile: interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    if not isinstance(length, int) or length == 0:
        raise located_error(f"quantile needs a static, non-empty dim, got one of size {length}")
    qs = np.asarray(q, np.float64)
    if qs.ndim > 1 or ((qs < 0) | (qs > 1)).any():
        raise located_error(f"quantile: q must be a number or a 1-D list in [0, 1], got {q!r}")
    return qs * (length - 1)


def _quantile_pick(ordered: Any, axis: int, rank: float, interpolation: str) -> Any:
    low, high = math.floor(rank), math.ceil(rank)
    below, above = ordered.narrow(axis, low, 1), ordered.narrow(axis, high, 1)
    if interpolation == "lower":
        return below
    if interpolation == "higher":
        return above
    if interpolation == "nearest":
        return ordered.narrow(axis, round(rank), 1)  # half to even, as PyTorch's round
    return below.lerp(above, 0.5 if interpolation == "midpoint" else rank - low)


def _quantile_shape(pick: Any, x: Any, dim: int | None, axis: int, keepdim: bool) -> Any:
    if dim is None:
        return pick.reshape((1,) * x.ndim if keepdim else ())
    return pick if keepdim else pick.squeeze(axis)


def _stack(tensors: list[Any]) -> Any:
    from kiln.frontend.functional_nn import stack

    return stack(tensors, 0)


def _broadcast_pair(a: Any, b: Any) -> tuple[Any, Any]:
    from kiln.compiler.ir.types import broadcast_shapes

    shape = broadcast_shapes(tuple(a.shape), tuple(b.shape))
    a, b = _promoted(a, b) if a.dtype.is_float and b.dtype.is_float else (a, b)
    return (a if a.shape == shape else a.broadcast_to(shape)), (b if b.shape == shape else b.broadcast_to(shape))


def _cross_axis(x: Any, dim: int | None) -> int:
    if dim is None:
        axis = next((d for d, size in enumerate(x.shape) if size == 3), None)
        if axis is None:
            raise located_error(f"cross: no dim of size 3 in {x.type}")
        return axis
    if x.shape[dim] != 3:
        raise located_error(f"cross: dim {dim} of {x.type} must have size 3")
    return dim % x.ndim


# in-place forms ------------------------------------------------------------------------

_IN_PLACE = (
    # unary math
    "absolute", "acos", "acosh", "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctanh", "asin", "asinh", "atan",
    "atanh", "ceil", "cos", "cosh", "deg2rad", "digamma", "erf", "erfc", "erfinv", "exp2", "expm1", "fix", "floor",
    "frac", "lgamma", "log10", "log1p", "log2", "logit", "nan_to_num", "negative", "rad2deg", "reciprocal", "round",
    "rsqrt", "sgn", "sign", "sin", "sinc", "sinh", "square", "tan", "trunc", "tril", "triu", "logical_not",
    # binary math, comparisons (written as 0/1 into a float tensor) and scans
    "addcdiv", "addcmul", "addmm", "addmv", "addr", "baddbmm", "arctan2", "atan2", "copysign", "cumprod", "cumsum",
    "divide", "eq", "float_power", "floor_divide", "fmod", "ge", "greater", "greater_equal", "gt", "heaviside", "hypot",
    "le", "less", "less_equal", "logical_and", "logical_or", "logical_xor", "lt", "multiply", "ne", "not_equal",
    "remainder", "subtract", "true_divide", "xlogy",
    # scatter family
    "scatter", "scatter_add", "index_add", "index_copy", "index_fill", "masked_scatter",
)
"""Methods whose in-place ``name_`` form is ``in_place`` of ``name``; one already defined elsewhere wins."""


def _in_place_form(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return in_place(self, f"{name}_", lambda x: getattr(x, name)(*args, **kwargs))

    method.__name__ = method.__qualname__ = f"{name}_"
    method.__doc__ = f"``{name}``, written into this tensor (it keeps its shape and dtype), as PyTorch's ``{name}_``."
    return method


for _name in _IN_PLACE:
    setattr(ExtraMethods, f"{_name}_", _in_place_form(_name))


EXTRA_FORWARDED = (
    "scatter", "scatter_add", "index_add", "index_fill", "index_copy", "masked_scatter", "nonzero_static",
    "fliplr", "flipud", "rot90", "tensor_split", "hsplit", "vsplit", "dsplit", "split_with_sizes", "ravel", "select",
    "narrow_copy", "diag_embed", "diagflat", "swapdims", "swapaxes",
    "erfc", "erfinv", "lgamma", "digamma", "xlogy", "logit", "sinc", "deg2rad", "rad2deg", "float_power", "copysign",
    "signbit", "sgn", "isclose", "isposinf", "isneginf", "isreal", "fmax", "fmin", "logaddexp2",
    "multiply", "subtract", "divide", "true_divide", "negative", "positive", "not_equal", "absolute", "greater",
    "greater_equal", "less", "less_equal", "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor", "fix", "trunc",
    "frac", "remainder", "fmod", "floor_divide",
    "nansum", "nanmean", "count_nonzero", "aminmax", "quantile", "mv", "inner", "vdot", "addmv", "addr", "ger", "dist",
    "cross", "cov", "corrcoef", "unique", "unique_consecutive", "bincount", "histc", "allclose", "equal",
)
"""The ``torch.xxx(input, ...)`` functions that are ``input.xxx(...)`` here, exported as ``kiln.xxx``
(``torch_functions.FORWARDERS``); each is a ``torch`` function (tested) not in ``torch_functions.FORWARDED``.
``torch.trace`` is left out: ``kiln.trace`` is the tracer (``x.trace()`` is the method)."""
