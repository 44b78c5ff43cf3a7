"""PyTorch's text of a tensor's values, for a NumPy array: the digits, the fixed/scientific choice, summarising and line
wrapping that ``print(torch_tensor)`` shows (the rules of ``torch/_tensor_str.py``, written here for arrays).

```python
tensor_text(np.array([1.1, 2.5], np.float16), TextOptions(), np.float32)   # 'tensor([1.0996, 2.5000], dtype=kiln.float16)'
tensor_text(np.array([1e-5, 1.0], ml_dtypes.bfloat16), TextOptions(), np.float32)
# 'tensor([1.0014e-05, 1.0000e+00], dtype=kiln.bfloat16)'
```

kiln prints float16 and bfloat16 tensors this way (``Tensor.__repr__``), so a half tensor reads as PyTorch's, digit for
digit: ``precision`` digits after the point for every element, or ``d.dddde+xx`` for all of them when the nonzero
magnitudes span more than 1000x, exceed 1e8 or fall below 1e-4; whole numbers as ``2.``; a tensor of more than
``threshold`` elements summarised by ``edgeitems`` at each end; rows wrapped at ``linewidth``; ``dtype=`` last, on a
line of its own when it would overflow. Every value is formatted as the float64 it is exactly (half to float64 is exact).
A complex tensor prints each element as ``real+imagj``, the real and the imaginary parts with a formatter each (their
own notation and width): ``tensor([ 1.0000+2.5000e-05j, -3.0000-1.0000e+00j])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kiln.compiler.ir.types import is_float_array_dtype

PREFIX = "tensor("


@dataclass(frozen=True)
class TextOptions:
    """``torch.set_printoptions``' options (PyTorch's defaults)."""

    precision: int = 4
    """Digits after the point (fixed) or after the first digit (scientific)."""
    threshold: float = 1000
    """More elements than this and the text shows ``edgeitems`` at each end of each dim, ``...`` between."""
    edgeitems: int = 3
    linewidth: int = 80
    """Characters a line may hold: vector elements wrap at it, and the ``dtype=`` suffix moves to a new line past it."""
    sci_mode: bool | None = None
    """True or False forces scientific or fixed notation; None lets the values decide."""


class _Elements(Protocol):
    """How every element of one tensor prints: ``format`` one value; ``width``, what a line counts per element."""

    width: int

    def format(self, value: object) -> str: ...


def tensor_text(array: np.ndarray, options: TextOptions, default_dtype: np.dtype, requires_grad: bool = False,
                grad_fn: str | None = None) -> str:
    """``tensor([...], dtype=kiln.<dtype>)`` for ``array``; the dtype is left out when it is ``default_dtype`` (the
    default float dtype), its complex counterpart, int64 or bool, as PyTorch leaves it out. ``grad_fn`` (the name of
    the node that made it) adds PyTorch's ``grad_fn=<MulBackward0>``, else ``requires_grad`` its
    ``requires_grad=True`` (a leaf's), wrapped as the other suffixes are."""
    suffixes = []
    if array.size == 0:
        body = "[]"
        if array.ndim != 1:
            suffixes.append(f"size={tuple(array.shape)}")
        if array.dtype != default_dtype:
            suffixes.append(f"dtype=kiln.{array.dtype.name}")
    else:
        body = _body(array, len(PREFIX), options)
        if not options.edgeitems:
            suffixes.append(f"size={tuple(array.shape)}")
        if array.dtype not in (default_dtype, _default_complex(default_dtype), np.dtype(np.int64), np.dtype(np.bool_)):
            suffixes.append(f"dtype=kiln.{array.dtype.name}")
    if grad_fn is not None:
        suffixes.append(f"grad_fn=<{grad_fn}>")
    elif requires_grad:
        suffixes.append("requires_grad=True")
    return _with_suffixes(PREFIX + body, suffixes, len(PREFIX), options.linewidth)


def _default_complex(default_dtype: np.dtype) -> np.dtype:
    """PyTorch's complex dtype that goes unnamed: complex128 beside a float64 default, else complex64."""
    return np.dtype(np.complex128 if np.dtype(default_dtype) == np.float64 else np.complex64)


def _with_suffixes(text: str, suffixes: list[str], indent: int, linewidth: int) -> str:
    """Each suffix after ``, `` on the last line, or on a new line indented to the body when the line would pass
    ``linewidth`` (PyTorch's count: the last line's length plus 2, or the whole text's plus 2 without a newline). A
    suffix counts as PyTorch's (``dtype=torch.float16``, one letter longer), so the text breaks where PyTorch's does
    and is PyTorch's with ``torch.`` read as ``kiln.``."""
    parts, last_line = [text], len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix.replace("kiln.", "torch.")) + 2 > linewidth:
            parts.append(",\n" + " " * indent + suffix)
            last_line = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line += len(suffix) + 2
    return "".join(parts) + ")"


def _body(array: np.ndarray, indent: int, options: TextOptions) -> str:
    summarize = array.size > options.threshold
    shown = _summarized(array, options.edgeitems) if summarize else array
    if np.iscomplexobj(array):  # PyTorch formats the real and the imaginary parts each with its own formatter
        formatter: _Elements = _ComplexFormatter(_Formatter(shown.real, options), _Formatter(shown.imag, options))
    else:
        formatter = _Formatter(shown, options)
    return _nested(array, indent, summarize, formatter, options)


def _summarized(array: np.ndarray, edgeitems: int) -> np.ndarray:
    """The elements a summary shows (``edgeitems`` at each end of each dim): the formatter's widths come from them."""
    if array.ndim == 0:
        return array
    if array.ndim == 1:
        return np.concatenate([array[:edgeitems], array[-edgeitems:]]) if len(array) > 2 * edgeitems else array
    if not edgeitems:
        return array[(slice(0, 0),) * array.ndim]
    rows = [*array[:edgeitems], *array[len(array) - edgeitems:]] if len(array) > 2 * edgeitems else list(array)
    return np.stack([_summarized(row, edgeitems) for row in rows])


def _nested(array: np.ndarray, indent: int, summarize: bool, formatter: _Elements, options: TextOptions) -> str:
    if array.ndim == 0:
        return formatter.format(array.item())
    if array.ndim == 1:
        return _vector(array, indent, summarize, formatter, options)
    edge = options.edgeitems
    if summarize and len(array) > 2 * edge:
        rows = [*range(edge), None, *range(len(array) - edge, len(array))]
    else:
        rows = list(range(len(array)))
    slices = ["..." if row is None else _nested(array[row], indent + 1, summarize, formatter, options) for row in rows]
    return "[" + ("," + "\n" * (array.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def _vector(array: np.ndarray, indent: int, summarize: bool, formatter: _Elements, options: TextOptions) -> str:
    edge = options.edgeitems
    if summarize and not edge:
        items = ["..."]
    elif summarize and len(array) > 2 * edge:
        items = [*map(formatter.format, array[:edge].tolist()), " ...", *map(formatter.format, array[-edge:].tolist())]
    else:
        items = [formatter.format(value) for value in array.tolist()]
    per_line = max(1, math.floor((options.linewidth - indent) / (formatter.width + 2)))  # ", " after each element
    lines = [", ".join(items[start:start + per_line]) for start in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


class _Formatter:
    """One notation and one width for every element of a tensor, chosen from its nonzero finite values."""

    def __init__(self, array: np.ndarray, options: TextOptions):
        self.floating = is_float_array_dtype(array.dtype)
        self.precision, self.int_mode, self.sci_mode, self.width = options.precision, True, False, 1
        if not self.floating:
            self.width = max([self.width, *(len(f"{value}") for value in array.ravel().tolist())])
            return
        values = array.astype(np.float64).ravel()
        values = values[np.isfinite(values) & (values != 0)]
        if not values.size:
            return
        magnitudes = np.abs(values)
        smallest, largest = float(magnitudes.min()), float(magnitudes.max())
        self.int_mode = bool((values == np.ceil(values)).all())
        self.sci_mode = largest / smallest > 1000.0 or largest > 1.0e8 or smallest < 1.0e-4 if options.sci_mode is None \
            else options.sci_mode
        self.width = max(len(self._text(value)) for value in values.tolist())

    def _text(self, value: float) -> str:
        """A finite value's text before padding: what the width counts (``2.`` in int mode counts its point)."""
        if self.sci_mode:
            return f"{value:.{self.precision}e}"
        if self.int_mode:
            return f"{value:.0f}."
        return f"{value:.{self.precision}f}"

    def format(self, value: object) -> str:
        if not self.floating:
            text = f"{value}"
        elif self.sci_mode:
            text = f"{value:{self.width}.{self.precision}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")  # type: ignore[arg-type]
        else:
            text = f"{value:.{self.precision}f}"
        return text.rjust(self.width)


class _ComplexFormatter:
    """PyTorch's complex element: the real part padded to its formatter's width, then the imaginary part unpadded with
    its sign (``+`` added unless it has one: ``1.5000-0.0000j``, ``1.+nanj``) and ``j``. ``width`` is what a line
    counts per element: both parts' widths and the ``j``."""

    def __init__(self, real: _Formatter, imag: _Formatter):
        self.real, self.imag = real, imag
        self.width = real.width + imag.width + 1

    def format(self, value: complex) -> str:
        imag = self.imag.format(value.imag).lstrip() + "j"
        return self.real.format(value.real) + ("" if imag[0] in "+-" else "+") + imag


__all__ = ["TextOptions", "tensor_text"]
