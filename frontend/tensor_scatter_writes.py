"""How ``MoreMethods``' scatter writes (``frontend/tensor_more.py``) are built: ``scatter_reduce``/``index_reduce``
as a one-hot of where each index lands, the written values reduced over the writes and combined with the tensor
(``_combined``); ``index_put`` as one flat index of the leading dims (``_flat_leading_index``), the last of
duplicate writes kept, as PyTorch's CPU kernel (``_rows_assigned``); ``select_scatter``/``slice_scatter`` through ``setitem``'s ``assigned``;
``diagonal_scatter`` with one one-hot matrix per diagonal place (``_one_hots``)."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType, broadcast_shapes
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor_mixin_ops import _apply, _constant, _is_tensor, _where
from kiln.frontend.tensor_shape_extras import _static_shape
from kiln.frontend.trace import located_error


_REDUCES = ("sum", "prod", "mean", "amax", "amin")

_ALIASES = {"max": "amax", "min": "amin"}
"""``scatter_reduce``'s other names, which PyTorch 2.13 accepts quietly (``index_reduce`` refuses them)."""


class ScatterReduceError(TraceError, RuntimeError):
    """A ``reduce`` that ``scatter_reduce``/``index_reduce`` do not know: a ``RuntimeError``, as PyTorch's."""


def _check_reduce(method: str, reduce: str, allowed: tuple[str, ...]) -> None:
    """PyTorch's refusal of an unknown ``reduce``, with its words (``scatter_reduce`` also takes ``"max"``/``"min"``)."""
    if reduce in allowed or (method == "scatter_reduce" and reduce in _ALIASES):
        return
    names = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
    words = (f"reduce argument must be either {names}, got {reduce}" if method == "scatter_reduce" else
             f"{method}(): Expected reduce to be one of {names} but got {reduce}.")
    raise located(ScatterReduceError, f"{words} ({method}: pick one of those names)")


def _static_dim(method: str, x: Any, axis: int) -> int:
    size = x.shape[axis]
    if not isinstance(size, int):
        raise located_error(f"{method} needs dim {axis} of {x.type} static (it is a one-hot width or a mask's size)")
    return size


def _as_tensor(value: Any, dtype: DType) -> Any:
    return value.to(dtype) if _is_tensor(value) else _constant(value, dtype)


def _wide(x: Any) -> DType:
    return x.dtype if x.dtype.is_float else DType.i64


def _one_hots(places: np.ndarray) -> list[np.ndarray]:
    """One boolean matrix per True place of ``places``, in row-major order."""
    result = []
    for row, column in zip(*np.nonzero(places)):
        single = np.zeros(places.shape)
        single[row, column] = 1.0
        result.append(single)
    return result


def _assigned(x: Any, index: tuple[Any, ...], src: Any) -> Any:
    from kiln.frontend.tensor_setitem import assigned

    return assigned(x, index, src)


# scatter_reduce / index_reduce ----------------------------------------------------------------------------------------


def _scatter_hits(x: Any, axis: int, index: Any) -> Any:
    """``(*index.shape moved, size)`` bools: where each index element lands along ``axis`` (the rest must match)."""
    size = _static_dim("scatter_reduce", x, axis)
    if index.ndim != x.ndim or any(a != b for d, (a, b) in enumerate(zip(index.shape, x.shape)) if d != axis):
        raise located_error(f"scatter_reduce: the index {index.type} must match {x.type} on every dim but {axis}")
    return _apply("tensor.one_hot", index.movedim(axis, -1), num_classes=size, dtype=DType.bool)


def _moved_values(source: Any, axis: int) -> Any:
    return source.movedim(axis, -1).unsqueeze(-1)


_IDENTITIES = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "amax": -math.inf, "amin": math.inf}


def _combined(x: Any, hits: Any, values: Any, reduce: str, include_self: bool, back: Callable[[Any], Any],
              forth: Callable[[Any], Any], at: int = -2) -> Any:
    """The written values reduced over the writes (axis ``at`` of ``hits``/``values``), combined with ``x`` where
    something was written; ``back`` moves the reduced result to ``x``'s layout, ``forth`` a tensor of ``x``'s layout
    to the writes' (``at`` of size 1). ``amax``/``amin`` share the gradient between ties as PyTorch's (``_ties_share``)."""
    reduce = _ALIASES.get(reduce, reduce)
    result = _reduced_writes(x, hits, values, reduce, include_self, back, at)
    if reduce in ("amax", "amin") and x.dtype.is_float:
        return _ties_share(x, hits, values, result, include_self, back, forth, at)
    return result


def _reduced_writes(x: Any, hits: Any, values: Any, reduce: str, include_self: bool, back: Callable[[Any], Any], at: int) -> Any:
    """``_combined``'s values: the writes reduced (from ``reduce``'s identity), with ``x`` where ``include_self``."""
    identity = _IDENTITIES[reduce]
    if not x.dtype.is_float and math.isinf(identity):
        identity = np.iinfo(x.dtype.numpy).min if identity < 0 else np.iinfo(x.dtype.numpy).max
    spread = _where(hits, values, _constant(identity, x.dtype))
    reducer = {"sum": "sum", "mean": "sum", "prod": "prod", "amax": "amax", "amin": "amin"}[reduce]
    written = back(getattr(spread, reducer)(at))
    counts = back(hits.long().sum(at))
    if include_self:
        written = {"sum": x + written, "mean": x + written, "prod": x * written,
                   "amax": x.maximum(written), "amin": x.minimum(written)}[reduce]
    if reduce == "mean":
        divisor = _where(counts > 0, counts + int(include_self), 1)
        written = written / divisor if written.dtype.is_float else written.div(divisor, rounding_mode="floor")  # PyTorch floors
    return _where(counts > 0, written, x)


def _ties_share(x: Any, hits: Any, values: Any, result: Any, include_self: bool, back: Callable[[Any], Any],
               forth: Callable[[Any], Any], at: int) -> Any:
    """``result`` (an ``amax``/``amin`` scatter) with PyTorch's gradient: each written place's gradient split evenly
    between the values equal to it, ``self``'s counted even without ``include_self`` (whose own share is then 0), as
    ``scatter_reduce_backward``. The values stay ``result``'s; the gradient comes through ``s - s.detach()`` (exactly
    0), ``s`` linear in ``x`` and the writes with those shares (a tie at an infinite value carries none: inf - inf)."""
    value = result.detach()
    self_tied = x.detach() == value
    writes_tied = hits & (values.detach() == forth(value))
    ties = self_tied.to(x.dtype) + back(writes_tied.to(x.dtype).sum(at))
    share, zero = 1 / _where(ties > 0, ties, _constant(1, x.dtype)), _constant(0, x.dtype)
    surrogate = back((_where(writes_tied & values.detach().isfinite(), values, zero) * forth(share)).sum(at))
    if include_self:
        surrogate = surrogate + _where(self_tied & x.detach().isfinite(), x, zero) * share
    written = back(hits.sum(at)) > 0  # elsewhere the result is x itself, its gradient whole
    return _where(written, value + (surrogate - surrogate.detach()), result)


# index_put ------------------------------------------------------------------------------------------------------------


def _flat_leading_index(x: Any, indices: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """The index tensors broadcast together and folded into one index of ``x``'s leading dims flattened, and the
    shape of the dims they leave."""
    if not indices or len(indices) > x.ndim or not all(_is_tensor(i) and not i.dtype.is_float for i in indices):
        raise located_error(f"index_put takes a tuple of up to {x.ndim} integer index tensors (or one bool mask), got {indices!r}")
    if any(i.dtype is DType.bool for i in indices):
        raise located_error("index_put with accumulate=True (or more than one index) takes integer index tensors; turn "
                            "a bool mask into a where(mask, x + v, x)")
    if x.ndim == 0 or _known_into_symbolic(x, indices):
        _static_shape("index_put", x)  # raises: a known index is checked against a static size (kiln.compile retries so)
    broadcast = broadcast_shapes(*(tuple(i.shape) for i in indices))
    flat = None
    for axis, index in enumerate(indices):
        size = _dim_size(x, axis)
        wrapped = _where(index < 0, index.long() + size, index.long()).broadcast_to(broadcast)
        flat = wrapped if flat is None else flat * size + wrapped
    return flat, tuple(x.shape[len(indices):])


def _known_into_symbolic(x: Any, indices: tuple[Any, ...]) -> bool:
    """Whether a symbolic dim is indexed by values known while tracing (a list, a constant): those are checked against
    the dim's size with torch's words, which needs static shapes (``kiln.compile`` traces them so)."""
    from kiln.frontend.trace_known_values import known_value  # lazily: it evaluates with the backend's kernels

    symbolic = any(not isinstance(size, int) for size in x.shape[: len(indices)])
    return symbolic and any(known_value(index) is not None for index in indices)


def _dim_size(x: Any, axis: int) -> Any:
    """The size of ``x``'s ``axis``: the int, or for a symbolic dim (a dynamic batch: DGCNN's ``x.view(batch_size *
    num_points, -1)[idx, :]`` exported with ``dynamic_axes``) a 0-d int64 tensor of its size at run time."""
    size = x.shape[axis]
    return size if isinstance(size, int) else _apply("tensor.numel", x, axes=(axis,), dtype=DType.i64)


def _rows_assigned(rows: Any, positions: Any, source: Any, trailing: int) -> Any:
    """``rows`` with the rows at ``positions`` replaced by ``source``'s rows; where a position is written more than once
    the last write stays, as PyTorch's CPU kernel writes them in order (and NumPy's). Each written row's gradient is
    the gradient at its position, duplicates' too, as torch's: the values are the last writes (picked by ``where``, so
    an infinite write stays infinite: Whisper's ``logits[:, suppress_tokens] = -np.inf``), the gradient comes through
    every finite write's ``w - w.detach()`` summed (exactly 0; an infinite write's would be nan, so it carries none)."""
    wide, zero = _wide(rows), _constant(0, _wide(rows))
    ones = _constant(1, wide).broadcast_to((positions.shape[0],))
    counts = _apply("tensor.scatter_add", ones, positions, axis=0, shape=(rows.shape[0],)).reshape((-1,) + (1,) * trailing)
    last = _last_writes(positions).reshape((-1,) + (1,) * trailing) > 0
    kept = _apply("tensor.scatter_add", _where(last, source.detach().to(wide), zero), positions, axis=0,
                  shape=tuple(rows.shape))
    finite = _where(source.detach().isfinite(), source, _constant(0, source.dtype)).to(wide) if wide.is_float \
        else source.to(wide)
    carried = _apply("tensor.scatter_add", finite - finite.detach(), positions, axis=0, shape=tuple(rows.shape))
    return _where(counts > 0, (kept + carried).to(rows.dtype), rows)


def _last_writes(positions: Any) -> Any:
    """1 for each write to a flat position no later write goes to, else 0 (write order): the positions sorted
    stably, the last of each run of equal ones, put back in write order."""
    if positions.shape[0] == 0:
        return positions
    order = positions.argsort(stable=True)
    ranked = positions.index_select(0, order)
    ends = _apply("tensor.concat", ranked[1:] != ranked[:-1], _constant(np.ones(1, bool), DType.bool), axis=0)
    return _apply("tensor.scatter_add", ends.long(), order, axis=0, shape=tuple(positions.shape))
