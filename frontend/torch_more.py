"""More of ``torch.*``: joins and shape helpers (``hstack``, ``atleast_2d``, ``broadcast_tensors``, ``block_diag``,
``cartesian_prod``, ``combinations``, ``tensordot``...), creation (``logspace``, ``tril_indices``, the signal windows,
``vander``, ``scalar_tensor``), math (``std_mean``, ``rsub``, ``isin``, ``cumulative_trapezoid``, ``polygamma``...) and
the functional forms of the methods in ``frontend/tensor_more.py`` and of the in-place methods (``kiln.exp_(x)``).

```python
kiln.hstack([a, b]); kiln.atleast_2d(v); kiln.block_diag(a, b)
kiln.tensordot(a, b, dims=([1], [0]))
kiln.hann_window(400)                      # a constant, periodic as torch's by default
std, mean = kiln.std_mean(x, dim=0)
kiln.isin(labels, [1, 3, 5])               # the test elements are a constant (a list, an array) or a tensor
```

Creation functions give constants while tracing and NumPy arrays outside (as ``frontend/torch_functions.py``); their
float results default to ``kiln.get_default_dtype()``.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.torch_dtypes import get_default_dtype
from kiln.frontend.torch_functions import _created, _dtype, _forwarder, cat, meshgrid, stack
from kiln.frontend.trace import located_error


def _tensors(tensors: tuple[Any, ...]) -> tuple[Any, ...]:
    """``f(a, b)`` or ``f([a, b])``."""
    return tuple(tensors[0]) if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) else tuple(tensors)


def _one_or_tuple(results: list[Any]) -> Any:
    return results[0] if len(results) == 1 else tuple(results)


# shapes -----------------------------------------------------------------------------------------------------------------


def atleast_1d(*tensors: Any) -> Any:
    return _one_or_tuple([t.reshape(1) if t.ndim == 0 else t for t in _tensors(tensors)])


def atleast_2d(*tensors: Any) -> Any:
    """A 0-d tensor as ``(1, 1)``, a vector as a row ``(1, n)``."""
    return _one_or_tuple([t.reshape(1, 1) if t.ndim == 0 else t.unsqueeze(0) if t.ndim == 1 else t for t in _tensors(tensors)])


def atleast_3d(*tensors: Any) -> Any:
    """``(1, 1, 1)``, ``(1, n, 1)`` and ``(m, n, 1)`` from 0, 1 and 2 dims, as NumPy's."""
    shaped = {0: lambda t: t.reshape(1, 1, 1), 1: lambda t: t.reshape(1, -1, 1), 2: lambda t: t.unsqueeze(-1)}
    return _one_or_tuple([shaped.get(t.ndim, lambda t: t)(t) for t in _tensors(tensors)])


def hstack(tensors: Sequence[Any]) -> Tensor:
    """Joined along dim 1 (along dim 0 when every tensor is a vector)."""
    parts = [atleast_1d(t) for t in tensors]
    return cat(parts, 0 if all(p.ndim == 1 for p in parts) else 1)


def vstack(tensors: Sequence[Any]) -> Tensor:
    return cat([atleast_2d(t) for t in tensors], 0)


row_stack = vstack


def dstack(tensors: Sequence[Any]) -> Tensor:
    return cat([atleast_3d(t) for t in tensors], 2)


def column_stack(tensors: Sequence[Any]) -> Tensor:
    """Vectors (and 0-d tensors) as columns, joined with the matrices along dim 1."""
    return cat([t.reshape(-1, 1) if t.ndim <= 1 else t for t in tensors], 1)


def broadcast_shapes(*shapes: Any) -> tuple[Any, ...]:
    """The shape the given shapes broadcast to (a symbolic dim broadcasts with 1 and with itself)."""
    shapes = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    rank = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(-rank, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis and s[axis] != 1}
        if len(sizes) > 1:
            raise located_error(f"broadcast_shapes: the shapes {shapes} do not broadcast (dim {axis}: {sorted(map(str, sizes))})")
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def broadcast_tensors(*tensors: Any) -> tuple[Tensor, ...]:
    tensors = _tensors(tensors)
    shape = broadcast_shapes(*(t.shape for t in tensors))
    return tuple(t if tuple(t.shape) == shape else t.broadcast_to(shape) for t in tensors)


def block_diag(*tensors: Any) -> Tensor:
    """The matrices (vectors as rows, 0-d tensors as 1 x 1) down the diagonal of a zero matrix."""
    from kiln.frontend.functional import pad

    blocks = [atleast_2d(t) for t in tensors]
    if any(b.ndim != 2 for b in blocks):
        raise located_error(f"block_diag takes tensors of at most 2 dims, got {[b.type for b in blocks]}")
    widths = [b.shape[1] for b in blocks]
    total, before = sum(widths), 0
    rows = []
    for block, width in zip(blocks, widths):
        rows.append(pad(block.to(_common_dtype(blocks)), (before, total - before - width)))
        before += width
    return cat(rows, 0)


def _common_dtype(tensors: Sequence[Any]) -> DType:
    from kiln.frontend.torch_dtypes import result_type

    return result_type(*tensors)


def cartesian_prod(*tensors: Any) -> Tensor:
    """Every combination of the vectors' elements, one per row (a single vector is returned as it is)."""
    tensors = _tensors(tensors)
    if len(tensors) == 1:
        return tensors[0]
    return stack([grid.reshape(-1) for grid in meshgrid(*tensors, indexing="ij")], 1)


def combinations(input: Tensor, r: int = 2, with_replacement: bool = False) -> Tensor:
    """The length-``r`` combinations of a vector's elements, one per row (``itertools.combinations`` order)."""
    if input.ndim != 1 or not isinstance(input.shape[0], int):
        raise located_error(f"combinations takes a vector of static length, got {input.type}")
    choose = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    picks = np.array(list(choose(range(input.shape[0]), r)), dtype=np.int64).reshape(-1, r)
    if picks.shape[0] == 0:
        return input[:0].reshape(0, r) if r else input[:0]
    return input.take(apply("tensor.constant", value=picks))


def tensordot(a: Tensor, b: Tensor, dims: Any = 2) -> Tensor:
    """The sum over ``dims`` pairs of ``a``'s and ``b``'s dims (``dims=k``: ``a``'s last ``k`` with ``b``'s first ``k``)."""
    from kiln.frontend.functional_einsum import einsum

    if isinstance(dims, int):
        pairs = (list(range(a.ndim - dims, a.ndim)), list(range(dims)))
    else:
        pairs = tuple([d] if isinstance(d, int) else list(d) for d in dims)
    left, right = [d % a.ndim for d in pairs[0]], [d % b.ndim for d in pairs[1]]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    a_names = [next(letters) for _ in range(a.ndim)]
    b_names = [a_names[left[right.index(d)]] if d in right else next(letters) for d in range(b.ndim)]
    kept = [n for d, n in enumerate(a_names) if d not in left] + [n for d, n in enumerate(b_names) if d not in right]
    return einsum(f"{''.join(a_names)},{''.join(b_names)}->{''.join(kept)}", a, b)


def unravel_index(indices: Any, shape: Any) -> tuple[Tensor, ...]:
    """The coordinates in ``shape`` of flat ``indices``, one int64 tensor per dim."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    flat = indices if isinstance(indices, Tensor) else apply("tensor.constant", value=np.asarray(indices, np.int64))
    strides = np.cumprod((1,) + shape[:0:-1])[::-1]
    return tuple(flat.long().div(int(stride), rounding_mode="floor").remainder(size) for stride, size in zip(strides, shape))


# creation ---------------------------------------------------------------------------------------------------------------


def logspace(start: float, end: float, steps: int, base: float = 10.0, *, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Any:
    return _created(np.power(base, np.linspace(start, end, steps)).astype(_dtype(dtype, "float32")))


def scalar_tensor(s: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    return _created(np.asarray(s, dtype=_dtype(dtype, "float32")))


def tril_indices(row: int, col: int, offset: int = 0, *, dtype: Any = None, device: Any = None) -> Any:
    """The ``(2, n)`` row and column indices of the lower triangle of a ``row x col`` matrix."""
    return _created(np.stack(np.tril_indices(row, offset, col)).astype(_dtype(dtype, "int64")).reshape(2, -1))


def triu_indices(row: int, col: int, offset: int = 0, *, dtype: Any = None, device: Any = None) -> Any:
    return _created(np.stack(np.triu_indices(row, offset, col)).astype(_dtype(dtype, "int64")).reshape(2, -1))


def _window(length: int, periodic: bool, dtype: Any, formula: Any) -> Any:
    """A window of ``length`` from ``formula(n, N)`` on the symmetric grid (``N + 1`` points, the last dropped, when
    ``periodic``), computed in float64."""
    if length < 0:
        raise located_error(f"window_length must be non-negative, got {length}")
    if length <= 1:
        return _created(np.ones(length, _dtype(dtype, "float32")))
    size = length + 1 if periodic else length
    values = formula(np.arange(size, dtype=np.float64), size - 1)
    return _created(values[:length].astype(_dtype(dtype, "float32")))


def hann_window(window_length: int, periodic: bool = True, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    return _window(window_length, periodic, dtype, lambda n, m: 0.5 - 0.5 * np.cos(2 * np.pi * n / m))


def hamming_window(window_length: int, periodic: bool = True, alpha: float = 0.54, beta: float = 0.46, *,
                   dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    return _window(window_length, periodic, dtype, lambda n, m: alpha - beta * np.cos(2 * np.pi * n / m))


def blackman_window(window_length: int, periodic: bool = True, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    return _window(window_length, periodic, dtype,
                   lambda n, m: 0.42 - 0.5 * np.cos(2 * np.pi * n / m) + 0.08 * np.cos(4 * np.pi * n / m))


def bartlett_window(window_length: int, periodic: bool = True, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    return _window(window_length, periodic, dtype, lambda n, m: 1 - np.abs(2 * n / m - 1))


def kaiser_window(window_length: int, periodic: bool = True, beta: float = 12.0, *, dtype: Any = None, device: Any = None,
                  requires_grad: bool = False) -> Any:
    return _window(window_length, periodic, dtype,
                   lambda n, m: np.i0(beta * np.sqrt(np.clip(1 - (2 * n / m - 1) ** 2, 0, None))) / np.i0(beta))


def vander(x: Tensor, N: int | None = None, increasing: bool = False) -> Tensor:  # noqa: N803  (torch's name)
    """The Vandermonde matrix of a vector: columns ``x^(N-1), ..., x, 1`` (ascending with ``increasing``), by
    repeated products so the gradient at ``x = 0`` is finite."""
    if x.ndim != 1:
        raise located_error(f"vander takes a vector, got {x.type}")
    count = x.shape[0] if N is None else N
    if not isinstance(count, int):
        raise located_error(f"vander needs N for a vector of symbolic length {x.type}")
    x = x.long() if x.dtype is DType.bool else x
    columns = [x * 0 + 1] if count else []
    for _ in range(1, count):
        columns.append(columns[-1] * x)
    if not columns:
        return x.unsqueeze(1)[:, :0]
    return stack(columns if increasing else columns[::-1], 1)


# math -------------------------------------------------------------------------------------------------------------------


def std_mean(input: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
             correction: float | None = None) -> tuple[Tensor, Tensor]:
    """``(std, mean)`` over ``dim`` (Bessel's correction by default, as ``std``)."""
    return input.std(dim, unbiased, keepdim, correction=correction), input.mean(dim, keepdim)


def var_mean(input: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
             correction: float | None = None) -> tuple[Tensor, Tensor]:
    return input.var(dim, unbiased, keepdim, correction=correction), input.mean(dim, keepdim)


def rsub(input: Tensor, other: Any, alpha: Any = 1) -> Tensor:
    """``other - alpha * input``."""
    return (input * alpha if alpha != 1 else input).neg() + other


def isin(elements: Any, test_elements: Any, *, assume_unique: bool = False, invert: bool = False) -> Tensor:
    """Whether each element is among ``test_elements`` (a tensor, a list, an array or a number), as a bool tensor."""
    if not isinstance(elements, Tensor):
        return isin(apply("tensor.constant", value=np.asarray(elements)), test_elements, invert=invert)
    tests = test_elements if isinstance(test_elements, Tensor) else apply("tensor.constant", value=np.asarray(test_elements))
    found = (elements.unsqueeze(-1) == tests.reshape(-1)).any(-1)
    return ~found if invert else found


def cumulative_trapezoid(y: Tensor, x: Tensor | None = None, *, dx: float | None = None, dim: int = -1) -> Tensor:
    """The running trapezoidal integral along ``dim``: one fewer element than ``y`` there (a static dim)."""
    size = y.shape[dim]
    if not isinstance(size, int):
        raise located_error(f"cumulative_trapezoid: dim {dim} of {y.type} is symbolic; it integrates along a static dim")
    pairs = (y.narrow(dim, 1, size - 1) + y.narrow(dim, 0, size - 1)) * 0.5
    if x is not None:
        pairs = pairs * x.diff(dim=-1 if x.ndim == 1 else dim)
    elif dx is not None:
        pairs = pairs * dx
    return pairs.cumsum(dim)


def gradient(input: Tensor, *, spacing: Any = 1, dim: Any = None, edge_order: int = 1) -> tuple[Tensor, ...]:
    """NumPy's ``gradient``: central differences inside, one-sided ones of ``edge_order`` (1 or 2) at the ends, one
    tensor per dim in ``dim`` (every dim by default); ``spacing`` is a number or one per dim (sample coordinates as
    tensors are not supported)."""
    dims = list(range(input.ndim)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    steps = list(spacing) if isinstance(spacing, (list, tuple)) else [spacing] * len(dims)
    if len(steps) != len(dims) or not all(isinstance(h, (int, float)) for h in steps):
        raise located_error(f"gradient: spacing must be a number or one number per dim ({len(dims)}), got {spacing!r}; "
                            "coordinates as tensors are not supported")
    if edge_order not in (1, 2):
        raise located_error(f"gradient: edge_order must be 1 or 2, got {edge_order}")
    return tuple(_gradient_along(input, d, float(h), edge_order) for d, h in zip(dims, steps))


def _gradient_along(x: Tensor, dim: int, h: float, edge_order: int) -> Tensor:
    size = x.shape[dim]
    if not isinstance(size, int) or size < edge_order + 1:
        raise located_error(f"gradient: dim {dim} of {x.type} needs at least {edge_order + 1} samples")
    x = x if x.dtype.is_float else x.to(get_default_dtype())
    at = lambda start, length=1: x.narrow(dim, start % size, length)  # noqa: E731
    inner = (at(2, size - 2) - at(0, size - 2)) / (2 * h)
    if edge_order == 1:
        first, last = (at(1) - at(0)) / h, (at(-1) - at(-2)) / h
    else:
        first = (at(0) * -3 + at(1) * 4 - at(2)) / (2 * h)
        last = (at(-1) * 3 - at(-2) * 4 + at(-3)) / (2 * h)
    return cat([first, inner, last], dim)


def polygamma(n: int, input: Tensor) -> Tensor:
    """``torch.polygamma(n, input)``: ``input.polygamma(n)`` (the order comes first here)."""
    return input.polygamma(n)


def fill(input: Tensor, value: Any) -> Tensor:
    """A tensor shaped and typed as ``input``, all ``value`` (a number or a 0-d tensor)."""
    if isinstance(value, Tensor):
        return value.to(input.dtype).broadcast_to(tuple(input.shape))
    return input.new_full(tuple(input.shape), value)


def clamp_min(input: Tensor, min: Any) -> Tensor:  # noqa: A002
    return input.clamp(min=min)


def clamp_max(input: Tensor, max: Any) -> Tensor:  # noqa: A002
    return input.clamp(max=max)


# forwarded ---------------------------------------------------------------------------------------------------------------

METHOD_FORMS = (
    # in-place math, as torch's top-level xxx_
    "abs_", "acos_", "acosh_", "arccos_", "arccosh_", "arcsin_", "arcsinh_", "arctan_", "arctanh_", "asin_", "asinh_",
    "atan_", "atanh_", "ceil_", "clamp_", "clamp_max_", "clamp_min_", "clip_", "cos_", "cosh_", "deg2rad_", "erf_",
    "erfc_", "exp2_", "exp_", "expm1_", "fill_", "fix_", "floor_", "frac_", "log10_", "log1p_", "log2_", "log_",
    "logit_", "nan_to_num_", "neg_", "negative_", "rad2deg_", "reciprocal_", "round_", "rsqrt_", "sigmoid_", "sin_",
    "sinc_", "sinh_", "sqrt_", "square_", "tan_", "tanh_", "trunc_", "xlogy_", "zero_", "addmv_",
    # tensor_more.py's methods
    "scatter_reduce", "index_reduce", "index_put", "index_put_", "select_scatter", "slice_scatter", "diagonal_scatter",
    "nanmedian", "nanquantile", "mode", "renorm", "addbmm", "i0", "i0_", "mvlgamma", "igamma", "igammac", "frexp",
    "ldexp", "ldexp_", "nextafter", "gcd", "gcd_", "lcm", "lcm_", "bitwise_left_shift", "bitwise_right_shift",
    # queries and the rest
    "unsafe_chunk", "unsafe_split", "unsafe_split_with_sizes", "adjoint", "put", "detach_", "detach", "moveaxis", "is_floating_point", "is_complex", "is_nonzero", "is_same_size", "is_signed",
    "argwhere", "masked_select", "nonzero",
)
"""``torch.xxx(input, ...)`` that is ``input.xxx(...)`` here (``argwhere``/``masked_select``/``nonzero`` give the
methods' error: their shapes depend on the data)."""

FORWARDERS = {name: _forwarder(name) for name in METHOD_FORMS}

__all__ = [
    "atleast_1d", "atleast_2d", "atleast_3d", "bartlett_window", "blackman_window", "block_diag", "broadcast_shapes",
    "broadcast_tensors", "cartesian_prod", "clamp_max", "clamp_min", "column_stack", "combinations",
    "cumulative_trapezoid", "dstack", "fill", "gradient", "hamming_window", "hann_window", "hstack", "isin", "kaiser_window",
    "logspace", "polygamma", "row_stack", "rsub", "scalar_tensor", "std_mean", "tensordot", "tril_indices",
    "triu_indices", "unravel_index", "vander", "var_mean", "vstack",
]


def exports() -> dict[str, Any]:
    """Every ``kiln.*`` name this module and its siblings add: the nn functional forms, the samplers, the dtype queries,
    the grad modes, and the functional forms above (``kiln/__init__.py`` exports them)."""
    from kiln.frontend import fake_quantize, grad_mode, torch_asarray, torch_dtypes, torch_foreach, torch_nn_forms, torch_random

    modules = (torch_nn_forms, torch_random, torch_dtypes, torch_foreach, fake_quantize, torch_asarray)
    names = {name: getattr(module, name) for module in modules for name in module.__all__}
    names.update({name: getattr(grad_mode, name) for name in grad_mode.__all__ if name != "no_grad"})
    names.update(torch_dtypes.FUNCTIONS)
    names.update({name: globals()[name] for name in __all__})
    names.update(FORWARDERS)
    return names
