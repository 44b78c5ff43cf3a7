"""PyTorch's reductions and small linear algebra as ``Tensor`` methods over existing ops: ``nansum``/``nanmean``,
``count_nonzero``, ``aminmax``, ``quantile``, ``mv``, ``inner``, ``vdot``, ``addmv``, ``addr``, ``ger``, ``dist``,
``cross``, ``cov``/``corrcoef``. ``Tensor`` inherits them through ``ExtraMethods`` (``tensor_extras.py``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from kiln.frontend.autocast import autocasts
from kiln.frontend.matmul_shape_checks import check_inner_shapes, check_mv_shapes
from kiln.frontend.tensor_math import _promoted, _scaled
from kiln.frontend.tensor_methods import _floating
from kiln.frontend.tensor_mixin_ops import _where
from kiln.frontend.trace import located_error


class MinMax(NamedTuple):
    """What ``x.aminmax()`` returns, as PyTorch's ``torch.return_types.aminmax``."""

    min: Any
    max: Any


class ReductionMethods:
    """The reductions and small linear algebra; see the module docstring."""

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
        check_mv_shapes(self, vec)
        return self @ vec

    def inner(self, other: Any) -> Any:
        """Sums of products over the last dims: ``self.shape[:-1] + other.shape[:-1]`` (one matmul)."""
        if self.ndim == 0 or other.ndim == 0:
            return self * other
        check_inner_shapes(self, other)
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


# reduction helpers --------------------------------------------------------------------

_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile_ranks(q: Any, length: Any, interpolation: str) -> np.ndarray:
    """``q (n - 1)``: where each quantile sits among the ``n`` sorted values (float64, as PyTorch's for float64)."""
    from kiln.frontend.eager_data_dependent import argument_values  # lazily: it builds on the tensor

    q = argument_values(q, "quantile: q is a tensor whose values exist only when the graph runs (computed from "
                           "trained weights or a random draw); give it as a number, a list or an eager tensor")
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
