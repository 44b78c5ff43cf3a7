"""A symbolic dim as ``x.shape`` gives it while tracing with a dynamic size (``kiln.onnx.export``'s ``dynamic_axes``,
``kiln.compile``'s batch dim): a ``str`` (the IR's name, ``"N"`` or a product ``"24*N"``) whose multiplication is the
dims' product, as torch's SymInt multiplies.

DGCNN's ``get_graph_feature`` writes ``x.view(batch_size * num_points, -1)`` and ``torch.arange(0, batch_size)``: as a
plain ``str`` the product was Python's string repetition (``"NNNN..."``, then a confusing reshape error) and
``arange`` refused the name. Now ``batch_size * num_points`` is the dim ``"24*N"`` and ``arange`` of a symbolic length
traces (``symbolic_arange``); a symbolic dim given to a tensor op (``G.div(a * b * c * d)``) is a traced scalar of its
run-time size (``symbolic_scalar``); ``//`` divides a product exactly (``"2*N" // 2`` is ``"N"``: Stable Diffusion's
attention splits ``b_h // h`` back out). Other arithmetic stays a ``TypeError`` (``kiln.compile`` then traces static
shapes).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType, dim_factors, dim_product

_STATIC_ON_DEMAND: ContextVar[frozenset[str]] = ContextVar("kiln_static_on_demand", default=frozenset())
"""The symbols of this trace that a static retrace can replace (``kiln.compile``'s batch dim ``N``)."""


@contextmanager
def static_on_demand(symbols: frozenset[str]) -> Iterator[None]:
    """While tracing, a constant position picked from a dim of these ``symbols`` (``x[0]`` of the batch) is refused,
    so the caller traces again with static shapes: the pick is then checked against the real size (torch's
    ``IndexError`` at the user's line) and stays a view that writes reach, where a take of a run-time size would copy
    and wrap a negative index past the start."""
    token = _STATIC_ON_DEMAND.set(symbols)
    try:
        yield
    finally:
        _STATIC_ON_DEMAND.reset(token)


class SymbolicDim(str):
    """A dim without a value while tracing; ``dim * int`` and ``dim * dim`` are the product dim."""

    __slots__ = ()

    def __mul__(self, other: Any) -> Any:  # type: ignore[override]
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool) or isinstance(other, str):
            return SymbolicDim(dim_product([str(self), other if isinstance(other, str) else int(other)]))
        return NotImplemented

    __rmul__ = __mul__

    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        """A name equals a name (``"N" == "N"``). Compared with a number in the user's code under ``kiln.compile``
        (``if x.shape[0] == 2``), the trace is refused, so it is traced again with static shapes, as torch.compile
        specializes a size it compares: as a ``str`` the answer was False whatever the size, a branch taken silently
        wrong. Kiln's own shape checks compare as a ``str``."""
        if _is_number(other):
            _refuse_number_comparison(self, other, "==")
        return str.__eq__(self, other)

    def __ne__(self, other: Any) -> bool:  # type: ignore[override]
        if _is_number(other):
            _refuse_number_comparison(self, other, "!=")
        return str.__ne__(self, other)

    __hash__ = str.__hash__

    def __int__(self) -> int:
        """``int(x.shape[0])``: a dim without a value. Under ``kiln.compile`` the trace is refused, so it is traced
        again with static shapes, as torch.compile specializes a size made an int (``int("N")`` was a ``ValueError``,
        ``invalid literal``, that failed the call)."""
        _refuse_conversion(self, "int")
        raise TypeError(f"int() of the symbolic dim {self}: it has no value while tracing (a dynamic axis); keep it "
                        "as x.shape[...] in tensor ops, or export with a fixed size")

    def __float__(self) -> float:
        _refuse_conversion(self, "float")
        raise TypeError(f"float() of the symbolic dim {self}: it has no value while tracing (a dynamic axis); keep it "
                        "as x.shape[...] in tensor ops, or export with a fixed size")

    def __floordiv__(self, other: Any) -> Any:
        """``dim // int`` or ``dim // dim`` where it divides exactly: ``"2*N" // 2`` is ``"N"``, as torch's SymInt
        traces ldm's ``b_h // h`` after heads were merged into the batch (``(b h) n d``). Else a ``TypeError``."""
        if not (isinstance(other, (int, np.integer)) and not isinstance(other, bool) or isinstance(other, str)):
            return NotImplemented
        factor, symbols = dim_factors(str(self))
        other_factor, other_symbols = dim_factors(other if isinstance(other, str) else int(other))
        remaining = list(symbols)
        for name in other_symbols:
            if name not in remaining:
                return NotImplemented
            remaining.remove(name)
        if other_factor <= 0 or factor % other_factor:
            return NotImplemented
        return symbolic(dim_product([factor // other_factor, *remaining]))


def _is_number(other: Any) -> bool:
    return isinstance(other, (int, np.integer)) and not isinstance(other, bool)


def _refuse_number_comparison(dim: SymbolicDim, number: Any, operator: str) -> None:
    """Raise where the user's code (frames: this, the operator, its caller) compares ``dim``, a symbol a static retrace
    replaces, with a number."""
    from kiln.frontend.trace import called_from_user  # lazily: the trace builds on the dims

    if set(dim_factors(str(dim))[1]) & _STATIC_ON_DEMAND.get() and called_from_user(depth=3):
        raise TraceError(f"the dynamic dim {dim} compared with {number} ({operator}): traced again with static shapes")


def _refuse_conversion(dim: SymbolicDim, kind: str) -> None:
    """Raise where ``dim``, a symbol a static retrace replaces, is made a Python number."""
    if set(dim_factors(str(dim))[1]) & _STATIC_ON_DEMAND.get():
        raise TraceError(f"{kind}() of the dynamic dim {dim}: traced again with static shapes")


def symbolic(dim: Any) -> Any:
    """``dim`` as a ``SymbolicDim`` when it is a name, else as it is."""
    return SymbolicDim(dim) if type(dim) is str else dim


def symbolic_scalar(dim: str, dtype: DType) -> Any:
    """A symbolic dim as a traced scalar of ``dtype`` (``G.div(a * b * c * d)`` in the neural-style tutorial's
    ``gram_matrix`` exported with a dynamic batch, ``loss.sum() / x.shape[0]``): the element count of a constant
    broadcast to ``(dim,)``, which the graph resolves at run time, as torch's SymInt becomes a traced size."""
    from kiln.frontend.tensor import apply

    ones = apply("tensor.constant", value=np.ones((), dtype.numpy)).broadcast_to((str(dim),))
    return apply("tensor.numel", ones, axes=None, dtype=dtype)


def symbolic_arange(start: Any, end: Any, step: Any, dtype: DType) -> Any:
    """``torch.arange(end)``/``arange(0, end)`` of a symbolic ``end`` while tracing: ones broadcast to ``(end,)``,
    their running sum minus one (one graph for every size); other bounds of a symbolic range are refused."""
    from kiln.frontend.tensor import apply
    from kiln.frontend.trace import located_error

    if not (isinstance(end, str) and start == 0 and step == 1 and not isinstance(start, str)):
        raise located_error(f"arange({start}, {end}, {step}): a range over a symbolic dim traces only from 0 by 1 "
                            "(arange(n) or arange(0, n)); write the rest as arithmetic on that range")
    ones = apply("tensor.constant", value=np.ones((), dtype.numpy)).broadcast_to((str(end),))
    return ones.cumsum(0) - 1


def symbolic_prefix(input: Any, axis: int, stop: str) -> Any:
    """``input[..., :stop]`` of a known dim up to a symbolic ``stop`` (BERT's ``self.position_ids[:, :seq_length]``
    exported with a dynamic sequence): the rows ``arange(stop)`` taken along ``axis``, one graph for every size. As
    torch's export assumes ``stop <= size``; a longer run-time ``stop`` fails there as an out-of-range index."""
    from kiln.frontend.tensor import apply

    return apply("tensor.take", input, symbolic_arange(0, stop, 1, DType.i64), axis=axis)


def symbolic_row(input: Any, axis: int, index: int) -> Any:
    """``input[..., index]`` (kept as a dim of 1; the caller drops it) of a symbolic dim at a known ``index``
    (BERT's pooler ``hidden_states[:, 0]``, a GPT's last-token ``logits[:, -1, :]`` with a dynamic sequence): a take of
    that one position, a negative one counted from the run-time size."""
    from kiln.frontend.tensor import apply

    size = input.shape[axis]
    if set(dim_factors(str(size))[1]) & _STATIC_ON_DEMAND.get():
        raise TraceError(f"x[{index}] picks one position of the symbolic dim {size} of {input.type}: traced again with "
                         "static shapes")
    position = apply("tensor.constant", value=np.array([index], np.int64))
    if index < 0:
        position = position + symbolic_scalar(size, DType.i64)
    return apply("tensor.take", input, position, axis=axis)
