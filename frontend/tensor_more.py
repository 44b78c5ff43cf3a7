"""More of PyTorch's ``Tensor`` methods, each a few existing ops (no new IR op):

- scatter writes: ``scatter_reduce`` (``sum``/``prod``/``mean``/``amax``/``amin``, ``include_self``), ``index_reduce``,
  ``index_put`` (integer index tensors, ``accumulate``), ``select_scatter``/``slice_scatter``/``diagonal_scatter``,
  ``fill_diagonal_``;
- statistics: ``nanmedian``, ``nanquantile``, ``mode``, ``renorm``, ``sum_to_size``, ``addbmm``;
- special functions (kernels in ``frontend/tensor_more_special.py``): ``i0``, ``polygamma``, ``mvlgamma``,
  ``igamma``/``igammac``, ``frexp``, ``ldexp``, ``nextafter``, ``gcd``/``lcm`` (bit operations: tensor_bitwise.py);
- ``hardshrink``/``prelu`` as methods, the metadata ``itemsize``, ``nbytes``, ``is_signed``, ``is_same_size``,
  ``new_empty``, and ``byte``/``char``/``short`` (dtypes the IR lacks: an error, as ``half()``);
- the in-place ``xxx_`` of each, generated from ``_IN_PLACE`` as ``tensor_extras.py`` does.

```python
counts.scatter_reduce(0, index, src, "amax", include_self=False)
x.nanmedian(1).values, x.nanquantile(0.25, dim=0)
x.index_put((rows, cols), v, accumulate=True)
x.diagonal_scatter(d, 1)
```

Ties. ``mode`` returns the smallest most frequent value and the last index holding it, ``nanmedian`` the lower
median, as PyTorch's CPU kernels. ``index_put`` without ``accumulate`` writes the mean of duplicate writes (PyTorch
leaves which one wins unspecified), as ``index_copy`` does.

How the scatter writes are built is in ``frontend/tensor_scatter_writes.py``, how the NaN statistics order and pick
in ``frontend/tensor_nan_statistics.py``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend import tensor_more_special as special
from kiln.frontend.functional_half import computes_in_opmath, in_opmath
from kiln.frontend.index_put_dtype_checks import check_index_put_source
from kiln.frontend.tensor_extras import (_constant, _cut, _float_pair, _in_place_form, _is_tensor, _static_shape, _vector_index,
                                         _where)
from kiln.frontend.tensor_inplace import in_place
from kiln.frontend.tensor_methods import _flatten_args, _floating, _tensor_class
from kiln.frontend.tensor_nan_statistics import _nan_last_order, _quantile_at, _stack_levels
from kiln.frontend.tensor_scatter import same_dtype
from kiln.frontend.tensor_scatter_writes import (_REDUCES, _as_tensor, _assigned, _check_reduce, _combined, _flat_leading_index,
                                                 _moved_values, _one_hots, _rows_assigned, _scatter_hits, _static_dim)
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts


def _drawing_from_its_generator(method: Callable[..., Any]) -> Callable[..., Any]:
    """An in-place sampler whose eager draws come from its ``generator=`` (a ``kiln.Generator``), as PyTorch's."""

    @functools.wraps(method)
    def sample(self: Any, *args: Any, generator: Any = None, **kwargs: Any) -> Any:
        from kiln.frontend.torch_generator import drawing_from

        with drawing_from(generator):
            return method(self, *args, **kwargs)

    return sample


class MoreMethods:
    """See the module docstring; ``Tensor`` inherits these last, so a method defined elsewhere wins."""

    def angle(self) -> Any:
        """``torch.Tensor.angle`` of a real tensor: ``kiln.angle`` (a complex tensor's is ``ComplexTensor.angle``)."""
        from kiln.frontend.complex_functions import angle  # lazily: complex_functions imports the Tensor

        return angle(self)

    # scatter writes ------------------------------------------------------------------------------------------------
    def scatter_reduce(self, dim: int, index: Any, src: Any, reduce: str, *, include_self: bool = True) -> Any:
        """``src[i][j]`` combined by ``reduce`` into ``self[index[i][j]][j]`` (``dim = 0``); places no index names keep
        ``self``. Without ``include_self`` the written places start from the reduction's identity."""
        _check_reduce("scatter_reduce", reduce, _REDUCES)
        same_dtype("scatter_reduce", self, src)
        axis = dim % self.ndim
        hits = _scatter_hits(self, axis, index)
        values = _moved_values(_cut(src.to(self.dtype), index.shape), axis)
        return _combined(self, hits, values, reduce, include_self, lambda r: r.movedim(-1, axis),
                         lambda r: r.movedim(axis, -1).unsqueeze(-2))

    def index_reduce(self, dim: int, index: Any, source: Any, reduce: str, *, include_self: bool = True) -> Any:
        """The slices of ``source`` along ``dim`` combined by ``reduce`` (``prod``/``mean``/``amax``/``amin``) into
        the slices ``index`` of ``self``."""
        _check_reduce("index_reduce", reduce, _REDUCES[1:])
        same_dtype("index_reduce", self, source)
        axis = dim % self.ndim
        index = _vector_index("index_reduce", index)
        hits = _apply("tensor.one_hot", index, num_classes=_static_dim("index_reduce", self, axis), dtype=DType.bool)
        hits = hits.reshape(tuple(hits.shape) + (1,) * (self.ndim - 1))
        values = source.to(self.dtype).movedim(axis, 0).unsqueeze(1)
        return _combined(self, hits, values, reduce, include_self, lambda r: r.movedim(0, axis),
                         lambda r: r.movedim(axis, 0).unsqueeze(0), at=0)

    def index_put(self, indices: Any, values: Any, accumulate: bool = False) -> Any:
        """``self[indices] = values`` (``+=`` with ``accumulate``) for a tuple of integer index tensors (broadcast
        together, indexing the leading dims), or one bool mask."""
        indices = tuple(indices)
        check_index_put_source(self, indices, values, accumulate)  # another dtype: torch's RuntimeError
        if len(indices) == 1 and _is_tensor(indices[0]) and indices[0].dtype is DType.bool and not accumulate:
            result = self.clone()
            result[indices[0]] = values
            return result
        indices = _known_masks_as_positions(self, indices)  # x.index_put_((mask,), v, accumulate=True), as torch's
        flat, rest = _flat_leading_index(self, indices)
        positions = flat.reshape(-1)
        source = _as_tensor(values, self.dtype).broadcast_to(tuple(flat.shape) + rest).reshape((-1,) + rest)
        rows = self.reshape((-1,) + rest)
        if accumulate:
            written = rows + _apply("tensor.scatter_add", source, positions, axis=0, shape=tuple(rows.shape))
        else:
            written = _rows_assigned(rows, positions, source, len(rest))
        return written.reshape(self.shape)

    def put(self, index: Any, source: Any, accumulate: bool = False) -> Any:
        """``source`` written at the flat positions ``index`` of this tensor (added with ``accumulate``)."""
        flat = self.reshape(-1).index_put((index.reshape(-1),), _as_tensor(source, self.dtype).reshape(-1), accumulate)
        return flat.reshape(self.shape)

    def put_(self, index: Any, source: Any, accumulate: bool = False) -> Any:
        return in_place(self, "put_", lambda x: x.put(index, source, accumulate))

    def index_put_(self, indices: Any, values: Any, accumulate: bool = False) -> Any:
        return in_place(self, "index_put_", lambda x: x.index_put(indices, values, accumulate))

    def select_scatter(self, src: Any, dim: int, index: int) -> Any:
        """``self`` with ``src`` written at ``index`` along ``dim`` (the inverse of ``select``)."""
        return _assigned(self, (slice(None),) * (dim % self.ndim) + (index,), src)

    def slice_scatter(self, src: Any, dim: int = 0, start: int | None = None, end: int | None = None, step: int = 1) -> Any:
        """``self`` with ``src`` written into ``[start:end:step]`` along ``dim``."""
        return _assigned(self, (slice(None),) * (dim % self.ndim) + (slice(start, end, step),), src)

    def diagonal_scatter(self, src: Any, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any:
        """``self`` with ``src`` written onto the diagonal ``diagonal(offset, dim1, dim2)`` reads."""
        moved = self.movedim((dim1 % self.ndim, dim2 % self.ndim), (-2, -1))
        rows, columns = _static_dim("diagonal_scatter", moved, -2), _static_dim("diagonal_scatter", moved, -1)
        places = np.eye(rows, columns, offset, dtype=bool)
        picks = np.stack(_one_hots(places))  # (diagonal length, rows, columns): where each diagonal element goes
        embedded = (src.to(self.dtype).unsqueeze(-1).unsqueeze(-1) * _constant(picks, self.dtype)).sum(-3)
        written = _where(_constant(places), embedded, moved)
        return written.movedim((-2, -1), (dim1 % self.ndim, dim2 % self.ndim))

    def fill_diagonal_(self, fill_value: Any, wrap: bool = False) -> Any:
        """``fill_value`` on the main diagonal (all dims equal, or a tall matrix, whose diagonal restarts after
        ``columns + 1`` rows with ``wrap``), in place; NumPy's ``fill_diagonal``, as PyTorch's."""
        shape = _static_shape("fill_diagonal_", self)
        if len(shape) < 2 or (len(shape) > 2 and len(set(shape)) != 1):
            raise located_error(f"fill_diagonal_ needs a matrix or a tensor with all dims equal, got {self.type}")
        places = np.zeros(shape, bool)
        np.fill_diagonal(places, True, wrap=wrap)
        return in_place(self, "fill_diagonal_", lambda x: _where(_constant(places), _as_tensor(fill_value, x.dtype), x))

    # statistics ----------------------------------------------------------------------------------------------------
    def nanmedian(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """The lower median of the non-NaN elements (NaN where all are); with ``dim``, ``(values, indices)``."""
        from kiln.frontend.tensor import ValuesIndices

        flat = dim is None
        x = self.reshape(-1) if flat else self
        axis = -1 if flat else dim
        order, valid = _nan_last_order(x, axis)
        rank = ((valid - 1).clamp(min=0) // 2).unsqueeze(axis)
        position = order.take_along_dim(rank, axis)
        values = x.take_along_dim(position, axis)  # NaN where the row has no number: its NaNs start at rank 0
        if flat:
            return values.reshape(())
        if not keepdim:
            values, position = values.squeeze(axis), position.squeeze(axis)
        return ValuesIndices(values, position)

    @autocasts("nanquantile")
    def nanquantile(self, q: Any, dim: int | None = None, keepdim: bool = False, *, interpolation: str = "linear") -> Any:
        """``quantile`` over the non-NaN elements only: the rank ``q (count - 1)`` among them (NaN where all are)."""
        if interpolation not in ("linear", "lower", "higher", "midpoint", "nearest"):
            raise located_error(f"nanquantile: interpolation must be linear, lower, higher, midpoint or nearest, got {interpolation!r}")
        x = self.reshape(-1) if dim is None else self.movedim(dim, -1)
        order, valid = _nan_last_order(x, -1)
        ordered = x.take_along_dim(order, -1)
        levels = np.atleast_1d(np.asarray(q, dtype=x.dtype.numpy))
        if not ((levels >= 0) & (levels <= 1)).all():
            raise located_error(f"nanquantile: q must be in [0, 1], got {q!r}")
        picks = [_quantile_at(ordered, valid, float(level), interpolation) for level in levels]
        result = _stack_levels(picks)
        if keepdim:
            result = result.reshape((len(levels),) + (1,) * self.ndim) if dim is None else result.unsqueeze(dim % self.ndim + 1)
        return result[0] if np.ndim(q) == 0 else result

    def mode(self, dim: int = -1, keepdim: bool = False) -> Any:
        """The most frequent value along ``dim`` (the smallest of equally frequent ones) and the last index of it."""
        from kiln.frontend.tensor import ValuesIndices

        x = self.movedim(dim, -1)
        length = _static_dim("mode", x, -1)
        counts = (x.unsqueeze(-1) == x.unsqueeze(-2)).long().sum(-1)
        frequent = counts == counts.amax(-1, keepdim=True)
        values = _where(frequent, x.detach(), math.inf if x.dtype.is_float else np.iinfo(x.dtype.numpy).max).amin(-1, keepdim=True)
        positions = _constant(np.arange(length, dtype=np.int64))
        index = _where(x == values, positions, -1).amax(-1, keepdim=True)
        values = x.take_along_dim(index, -1)
        values, index = values.movedim(-1, dim), index.movedim(-1, dim)
        if not keepdim:
            values, index = values.squeeze(dim), index.squeeze(dim)
        return ValuesIndices(values, index)

    def renorm(self, p: float, dim: int, maxnorm: float) -> Any:
        """Each slice along ``dim`` whose ``p``-norm exceeds ``maxnorm`` scaled down to it (norm + 1e-7, as PyTorch's)."""
        others = tuple(d for d in range(self.ndim) if d != dim % self.ndim)
        norms = self.abs().pow(p).sum(others, keepdim=True).pow(1.0 / p)
        return self * _where(norms > maxnorm, maxnorm / (norms + 1e-7), 1.0)

    def sum_to_size(self, *size: Any) -> Any:
        """Summed down to ``size`` (which ``self`` broadcasts from): the leading dims away, dims of size 1 kept."""
        shape = tuple(_flatten_args(size))
        lead = self.ndim - len(shape)
        if lead < 0 or any(s != 1 and s != d for s, d in zip(shape, self.shape[lead:])):
            raise located_error(f"sum_to_size: {self.type} does not broadcast from the size {shape}")
        result = self.sum(tuple(range(lead))) if lead else self
        squeezed = tuple(d for d, (s, have) in enumerate(zip(shape, result.shape)) if s == 1 and have != 1)
        return result.sum(squeezed, keepdim=True) if squeezed else result

    @autocasts("addbmm")
    def addbmm(self, batch1: Any, batch2: Any, *, beta: float = 1, alpha: float = 1) -> Any:
        """``beta self + alpha sum_b batch1[b] @ batch2[b]`` (``self`` ignored when ``beta`` is 0, NaN included)."""
        product = batch1.bmm(batch2).sum(0)
        product = product * alpha if alpha != 1 else product
        if beta == 0:
            return product  # already the (n, p) result that self broadcasts to
        return (self * beta if beta != 1 else self) + product

    # special functions ---------------------------------------------------------------------------------------------
    @computes_in_opmath  # a half input: float32 inside, one rounding (PyTorch's)
    def i0(self) -> Any:
        return special.i0(_floating(self))

    @computes_in_opmath
    def polygamma(self, n: int) -> Any:
        if not isinstance(n, int) or n < 0:
            raise located_error(f"polygamma: n must be a non-negative int, got {n!r}")
        return special.polygamma(n, _floating(self))

    def mvlgamma(self, p: int) -> Any:
        """The multivariate log-gamma ``p (p - 1) / 4 log pi + sum_j lgamma(x - j / 2)``; every element must exceed
        ``(p - 1) / 2`` (PyTorch checks the values eagerly; here they are unknown, so the result is NaN or inf there)."""
        def multivariate(x: Any) -> Any:
            total = x.lgamma()
            for j in range(1, p):
                total = total + (x - j / 2).lgamma()
            return total + p * (p - 1) / 4 * math.log(math.pi)

        return _in_float64(multivariate, _floating(self))

    def igamma(self, other: Any) -> Any:
        """The regularized lower incomplete gamma ``P(self, other)``, differentiable in both (PyTorch: in ``other`` only)."""
        return _in_float64(special.lower_regularized_gamma, *_float_pair(self, other))

    def igammac(self, other: Any) -> Any:
        """The regularized upper incomplete gamma ``Q(self, other) = 1 - P``, without its cancellation."""
        return _in_float64(special.upper_regularized_gamma, *_float_pair(self, other))

    def frexp(self) -> MantissaExponent:
        mantissa, exponent = special.frexp(_require_float("frexp", self))
        return MantissaExponent(mantissa, exponent)

    def ldexp(self, other: Any) -> Any:
        """``self * 2^other``."""
        x = _floating(self)
        two = _constant(2.0, x.dtype)
        return x * two.pow(other.to(x.dtype) if _is_tensor(other) else float(other))

    def nextafter(self, other: Any) -> Any:
        x, y = _float_pair(self, other)
        return special.nextafter(x.detach(), y.detach())

    def gcd(self, other: Any) -> Any:
        a, b = _integer_operands("gcd", self, other)
        return special.gcd(a, b)

    def lcm(self, other: Any) -> Any:
        """``|a b| / gcd(a, b)``, 0 where either is."""
        a, b = _integer_operands("lcm", self, other)
        divisor = special.gcd(a, b)
        return _where(divisor == 0, 0, (a.div(_where(divisor == 0, 1, divisor), rounding_mode="trunc") * b).abs())

    # aliases --------------------------------------------------------------------------------------------------------
    def unsafe_chunk(self, chunks: int, dim: int = 0) -> Any:
        """``chunk``: a traced value has no storage to share, so nothing is unsafe about it."""
        return self.chunk(chunks, dim)  # type: ignore[attr-defined]

    def unsafe_split(self, split_size: Any, dim: int = 0) -> Any:
        return self.split(split_size, dim)  # type: ignore[attr-defined]

    def unsafe_split_with_sizes(self, split_sizes: Any, dim: int = 0) -> Any:
        return self.split_with_sizes(split_sizes, dim)  # type: ignore[attr-defined]

    def adjoint(self) -> Any:
        """The conjugate transpose of the last two dims: the transpose, for kiln's real dtypes."""
        return self.transpose(-2, -1)  # type: ignore[attr-defined]

    @property
    def mH(self) -> Any:  # noqa: N802  (torch's name)
        return self.adjoint()

    @property
    def H(self) -> Any:  # noqa: N802  (torch's name)
        """The conjugate transpose of a matrix."""
        if self.ndim != 2:  # type: ignore[attr-defined]
            raise located_error(f"Tensor.H is for matrices, got {self.type}; use mH for a batch")  # type: ignore[attr-defined]
        return self.t()  # type: ignore[attr-defined]

    def detach_(self) -> Any:
        """This tensor, now constant to the gradient (``detach`` written into it); a view is refused, as PyTorch's (the
        write would cut its base's gradient where the view lies)."""
        if "_view_of" in self.__dict__ or "_indexed_from" in self.__dict__:
            from kiln.frontend.inplace_leaf_checks import ViewDetachError, located

            raise located(ViewDetachError, f"Can't detach views in-place. Use detach() instead. ({self.type} is a view "
                          "of another tensor: x = x.detach() keeps the base's gradient)")
        return in_place(self, "detach_", lambda x: x.detach())

    # activations as methods ----------------------------------------------------------------------------------------
    def hardshrink(self, lambd: float = 0.5) -> Any:
        from kiln.frontend.functional import hardshrink

        return hardshrink(self, lambd)

    def prelu(self, weight: Any) -> Any:
        from kiln.frontend.functional import prelu

        return prelu(self, weight)

    # short-time Fourier transforms (frontend/stft.py, frontend/istft.py) ---------------------------------------------
    def stft(self, n_fft: int, *args: Any, **kwargs: Any) -> Any:
        from kiln.frontend.stft import stft

        return stft(self, n_fft, *args, **kwargs)

    def istft(self, n_fft: int, *args: Any, **kwargs: Any) -> Any:
        from kiln.frontend.istft import istft

        return istft(self, n_fft, *args, **kwargs)

    # sampling (frontend/torch_random.py) ----------------------------------------------------------------------------
    def bernoulli(self, p: float | None = None, *, generator: Any = None) -> Any:
        from kiln.frontend.torch_random import bernoulli

        return bernoulli(self, p, generator=generator)

    def multinomial(self, num_samples: int, replacement: bool = False, *, generator: Any = None) -> Any:
        from kiln.frontend.torch_random import multinomial

        return multinomial(self, num_samples, replacement, generator=generator)

    # in-place sampling: a parameter outside a trace draws from kiln's initialisation generator -----------------------
    @_drawing_from_its_generator
    def uniform_(self, from_: float = 0.0, to: float = 1.0, *, generator: Any = None) -> Any:
        return _draw_into(self, "uniform_", lambda u: u * (to - from_) + from_, lambda rng, shape: rng.uniform(from_, to, shape))

    @_drawing_from_its_generator
    def normal_(self, mean: float = 0.0, std: float = 1.0, *, generator: Any = None) -> Any:
        from kiln.frontend.torch_functions import randn_like

        return in_place(self, "normal_", lambda x: (randn_like(x) * std + mean).detach(),
                        lambda array: _generator().normal(mean, std, array.shape).astype(array.dtype))

    @_drawing_from_its_generator
    def log_normal_(self, mean: float = 1.0, std: float = 2.0, *, generator: Any = None) -> Any:
        from kiln.frontend.torch_functions import randn_like

        return in_place(self, "log_normal_", lambda x: (randn_like(x) * std + mean).exp().detach(),
                        lambda array: _generator().lognormal(mean, std, array.shape).astype(array.dtype))

    @_drawing_from_its_generator
    def bernoulli_(self, p: Any = 0.5, *, generator: Any = None) -> Any:
        return _draw_into(self, "bernoulli_", lambda u: (u < p).to(u.dtype), lambda rng, shape: rng.random(shape) < np.asarray(p))

    @_drawing_from_its_generator
    def exponential_(self, lambd: float = 1.0, *, generator: Any = None) -> Any:
        """``-log(1 - u) / lambd``: exponential with rate ``lambd``."""
        return _draw_into(self, "exponential_", lambda u: (1.0 - u).log() * (-1.0 / lambd), lambda rng, shape: rng.exponential(1 / lambd, shape))

    @_drawing_from_its_generator
    def cauchy_(self, median: float = 0.0, sigma: float = 1.0, *, generator: Any = None) -> Any:
        """``median + sigma tan(pi (u - 1/2))``."""
        return _draw_into(self, "cauchy_", lambda u: ((u - 0.5) * math.pi).tan() * sigma + median,
                          lambda rng, shape: median + sigma * rng.standard_cauchy(shape))

    @_drawing_from_its_generator
    def geometric_(self, p: float, *, generator: Any = None) -> Any:
        """The number of Bernoulli(``p``) trials to the first success (1, 2, ...): ``ceil(log(1 - u) / log(1 - p))``."""
        return _draw_into(self, "geometric_", lambda u: ((1.0 - u).log() / math.log1p(-p)).ceil().clamp(min=1.0),
                          lambda rng, shape: rng.geometric(p, shape))

    @_drawing_from_its_generator
    def random_(self, from_: int = 0, to: int | None = None, *, generator: Any = None) -> Any:
        """Integers uniform in ``[from_, to)`` (``random_(to)``: ``[0, to)``; no bound: ``[0, 2^mantissa]`` for floats,
        ``[0, max]`` for integers, as PyTorch's)."""
        low, high = (0, from_) if to is None and from_ != 0 else (from_, to)
        if high is None:
            high = 2 ** (ml_dtypes.finfo(self.dtype.numpy).nmant + 1) + 1 if self.dtype.is_float else int(np.iinfo(self.dtype.numpy).max)  # type: ignore[attr-defined]
        return _draw_into(self, "random_", lambda u: ((u.double() * (high - low)).floor() + low).to(self.dtype),
                          lambda rng, shape: rng.integers(low, high, shape))

    # metadata ------------------------------------------------------------------------------------------------------
    @property
    def itemsize(self) -> int:
        return self.dtype.numpy.itemsize  # type: ignore[attr-defined]

    @property
    def nbytes(self) -> Any:
        """The bytes of the elements: an int for a static shape (a 0-d tensor with symbolic dims, as ``numel``)."""
        return self.numel() * self.itemsize  # type: ignore[attr-defined]

    def is_signed(self) -> bool:
        return self.dtype.is_signed  # type: ignore[attr-defined]

    def is_same_size(self, other: Any) -> bool:
        return tuple(self.shape) == tuple(other.shape)  # type: ignore[attr-defined]

    def new_empty(self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
        """Zeros: a traced program has no uninitialised memory to give."""
        return self.new_zeros(*size, dtype=dtype)  # type: ignore[attr-defined]

    def new(self, *args: Any) -> Any:
        """The legacy ``x.new(*sizes)`` (zeros, as ``new_empty``; Tacotron 2's ``memory.data.new(B, n).zero_()``) or
        ``x.new(data)`` (a copy of ``data``), in this tensor's dtype: ``torch.Tensor(...)`` of ``x``'s type. A tuple or
        list is data, as in PyTorch; a ``Size`` is sizes."""
        from kiln.frontend.torch_legacy import legacy_value

        sizes = args[0] if len(args) == 1 and type(args[0]).__name__ == "Size" else args
        if sizes and all(not isinstance(size, (bool, list, tuple)) and not hasattr(size, "shape") for size in sizes):
            return self.new_zeros(*sizes)  # type: ignore[attr-defined]  (symbolic dims too)
        return _tensor_class()(legacy_value(args, self.dtype))  # type: ignore[attr-defined]

    def byte(self) -> Any:
        return self.to(DType.u8)  # type: ignore[attr-defined]

    def char(self) -> Any:
        return self.to(DType.i8)  # type: ignore[attr-defined]

    def short(self) -> Any:
        return self.to(DType.i16)  # type: ignore[attr-defined]


class MantissaExponent(tuple):
    """What ``x.frexp()`` returns, as PyTorch's ``torch.return_types.frexp``: ``(mantissa, exponent)``."""

    def __new__(cls, mantissa: Any, exponent: Any) -> "MantissaExponent":
        return super().__new__(cls, (mantissa, exponent))

    @property
    def mantissa(self) -> Any:
        return self[0]

    @property
    def exponent(self) -> Any:
        return self[1]


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


def _known_masks_as_positions(x: Any, indices: tuple[Any, ...]) -> tuple[Any, ...]:
    """``indices`` with each bool mask whose values are known replaced by its true positions (int64 index tensors),
    as torch reads a mask among ``index_put``'s indices (``bool_mask_positions.py``)."""
    from kiln.frontend.bool_mask_positions import bool_masks_as_positions  # lazily: it builds on the Tensor

    positions = bool_masks_as_positions(x, indices)
    if positions is indices:
        return indices
    return tuple(item if _is_tensor(item) else _constant(np.asarray(item, np.int64)) for item in positions)


def _in_float64(function: Callable[..., Any], *operands: Any) -> Any:
    """``function`` computed in float64 and cast back for float32 operands: a sum of many terms (the incomplete gamma
    series, lgamma's near its roots) would lose float32 digits that PyTorch's kernels keep. Half operands compute in
    float32 and round once, as PyTorch's."""
    if operands[0].dtype.is_half:
        return in_opmath(function, *operands)
    if operands[0].dtype is not DType.f32:
        return function(*operands)
    return function(*(x.double() for x in operands)).float()


def _generator() -> np.random.Generator:
    from kiln.frontend import init

    return init._generator


def _draw_into(tensor: Any, method: str, transform: Callable[[Any], Any], numpy_draw: Callable[[Any, tuple[int, ...]], Any]) -> Any:
    """``transform`` of uniform draws written into ``tensor``; a parameter outside a trace takes ``numpy_draw`` from
    kiln's initialisation generator (``kiln.manual_seed``), as PyTorch's initialisation code draws in place."""
    from kiln.frontend.torch_functions import rand_like

    return in_place(tensor, method, lambda x: transform(rand_like(x, dtype=DType.f64 if not x.dtype.is_float else x.dtype)).detach(),
                    lambda array: np.asarray(numpy_draw(_generator(), array.shape)).astype(array.dtype))


# operands -------------------------------------------------------------------------------------------------------------


def _require_float(method: str, x: Any) -> Any:
    if not x.dtype.is_float:
        raise located_error(f"{method} takes a floating tensor, got {x.type}; cast it first (x.double())")
    return x


def _integer_operands(method: str, x: Any, y: Any) -> tuple[Any, Any]:
    y = y if _is_tensor(y) else _constant(y, x.dtype)
    if x.dtype.is_float or y.dtype.is_float or x.dtype is DType.bool:
        raise located_error(f"{method} takes integer tensors, got {x.type} and {y.type}")
    wide = DType.i64 if DType.i64 in (x.dtype, y.dtype) else x.dtype
    return x.to(wide), y.to(wide)


# in-place forms -------------------------------------------------------------------------------------------------------

_IN_PLACE = ("scatter_reduce", "index_reduce", "renorm", "addbmm", "i0", "polygamma", "mvlgamma", "igamma", "igammac",
             "ldexp", "nextafter", "gcd", "lcm")
"""Methods whose in-place ``name_`` form is ``in_place`` of ``name``; one already defined elsewhere wins."""


for _name in _IN_PLACE:
    setattr(MoreMethods, f"{_name}_", _in_place_form(_name))
