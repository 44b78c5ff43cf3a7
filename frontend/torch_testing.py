"""``torch.testing`` for kiln: ``assert_close`` with PyTorch's default tolerances and mismatch messages, and
``make_tensor`` (``kiln/testing.py`` exports them).

```python
import kiln.testing
kiln.testing.assert_close(model(x), expected)               # rtol/atol from the dtype: float32 1.3e-6/1e-5, ...
kiln.testing.assert_close([loss, x.grad], [1.5, expected_grad])  # sequences compare item by item
x = kiln.testing.make_tensor((2, 3), dtype=kiln.float32, low=-1, high=1)
```

``actual``/``expected`` are eager kiln tensors or NumPy arrays (``x.grad`` is one), which compare as one kind of
tensor-like (PyTorch refuses a NumPy array against a tensor; here ``.grad`` is an array), Python or NumPy numbers, or
sequences and mappings of those. A failure raises PyTorch's ``AssertionError`` text: the mismatched count and the
greatest absolute and relative differences with their index.
"""

from __future__ import annotations

import collections.abc
import math
from typing import Any, Callable

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType, is_float_array_dtype
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_dtypes import promote_types

_TOLERANCES = {np.dtype(np.float16): (1e-3, 1e-5), DType.bf16.numpy: (1.6e-2, 1e-5), np.dtype(np.float32): (1.3e-6, 1e-5), np.dtype(np.float64): (1e-7, 1e-7),
               np.dtype(np.complex64): (1.3e-6, 1e-5), np.dtype(np.complex128): (1e-7, 1e-7)}
"""PyTorch's ``(rtol, atol)`` per dtype; every other dtype compares exactly."""


def assert_close(actual: Any, expected: Any, *, rtol: float | None = None, atol: float | None = None, equal_nan: bool = False,
                 check_dtype: bool = True, msg: str | Callable[[str], str] | None = None) -> None:
    """Raise ``AssertionError`` unless ``|actual - expected| <= atol + rtol |expected|`` elementwise (and shapes and,
    with ``check_dtype``, dtypes agree). Give both ``rtol`` and ``atol`` or neither (then the dtype's defaults)."""
    if (rtol is None) != (atol is None):
        raise ValueError(f"Both 'rtol' and 'atol' must be either specified or omitted, but got no {'rtol' if rtol is None else 'atol'}.")
    failure = _compare(actual, expected, rtol, atol, equal_nan, check_dtype, path="")
    if failure is not None:
        text, path = failure
        if path:
            text += f"\n\nThe failure occurred for item {path}"
        raise AssertionError(msg(text) if callable(msg) else msg if msg is not None else text)


def _compare(actual: Any, expected: Any, rtol: float | None, atol: float | None, equal_nan: bool, check_dtype: bool,
             path: str) -> tuple[str, str] | None:
    """The first failure's message and the item path leading to it, or None."""
    if _is_tensor_like(actual) and _is_tensor_like(expected):
        return _failed(_compare_arrays(_array(actual), _array(expected), rtol, atol, equal_nan, check_dtype), path)
    if _is_number(actual) and _is_number(expected):  # a NumPy scalar is its Python number, as in PyTorch
        actual, expected = (v.item() if isinstance(v, np.generic) else v for v in (actual, expected))
        return _failed(_compare_numbers(actual, expected, rtol, atol, equal_nan, check_dtype), path)
    if _is_sequence(actual) and _is_sequence(expected):
        if len(actual) != len(expected):
            return f"The length of the sequences mismatch: {len(actual)} != {len(expected)}", path
        for index, (a, e) in enumerate(zip(actual, expected)):
            failure = _compare(a, e, rtol, atol, equal_nan, check_dtype, f"{path}[{index}]")
            if failure is not None:
                return failure
        return None
    if isinstance(actual, collections.abc.Mapping) and isinstance(expected, collections.abc.Mapping):
        return _compare_mappings(actual, expected, rtol, atol, equal_nan, check_dtype, path)
    raise TypeError(f"No comparison pair was able to handle inputs of type {type(actual)} and {type(expected)}: kiln's "
                    "assert_close compares tensors and NumPy arrays with each other, numbers with numbers, and "
                    "sequences or mappings of those item by item")


def _compare_mappings(actual: Any, expected: Any, rtol: float | None, atol: float | None, equal_nan: bool, check_dtype: bool,
                      path: str) -> tuple[str, str] | None:
    if set(actual) != set(expected):
        missing, extra = sorted(set(expected) - set(actual), key=repr), sorted(set(actual) - set(expected), key=repr)
        return (f"The keys of the mappings do not match:\nMissing keys in the actual mapping: {missing}\n"
                f"Extra keys in the actual mapping: {extra}"), path
    for key in expected:
        failure = _compare(actual[key], expected[key], rtol, atol, equal_nan, check_dtype, f"{path}[{key!r}]")
        if failure is not None:
            return failure
    return None


def _failed(text: str | None, path: str) -> tuple[str, str] | None:
    return None if text is None else (text, path)


# tensor-likes ---------------------------------------------------------------------------------------------------------

def _is_tensor_like(value: Any) -> bool:
    return isinstance(value, (Tensor, np.ndarray))


def _array(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        from kiln.frontend.eager_values import eager_array

        array = eager_array(value)
        if array is None:
            raise TypeError(f"assert_close needs values, but got a traced tensor ({value.type}); compare the outputs of "
                            "the compiled function (kiln.compile) instead")
        return np.asarray(array)
    return np.asarray(value)


def _dtype_name(dtype: np.dtype) -> str:
    return f"kiln.{dtype.name}"


def _shape_name(shape: tuple[int, ...]) -> str:
    return f"kiln.Size({list(shape)})"


def _compare_arrays(actual: np.ndarray, expected: np.ndarray, rtol: float | None, atol: float | None, equal_nan: bool,
                    check_dtype: bool) -> str | None:
    if actual.shape != expected.shape:
        return f"The values for attribute 'shape' do not match: {_shape_name(actual.shape)} != {_shape_name(expected.shape)}."
    if check_dtype and actual.dtype != expected.dtype:
        return f"The values for attribute 'dtype' do not match: {_dtype_name(actual.dtype)} != {_dtype_name(expected.dtype)}."
    if rtol is None:
        rtol, atol = (max(pair) for pair in zip(_TOLERANCES.get(actual.dtype, (0.0, 0)), _TOLERANCES.get(expected.dtype, (0.0, 0))))
    common = _common_dtype(actual.dtype, expected.dtype)
    actual, expected = actual.astype(common), expected.astype(common)
    matches = _isclose(actual, expected, rtol, atol, equal_nan)
    if matches.all():
        return None
    if actual.ndim == 0:
        return _scalar_message(actual.item(), expected.item(), rtol, atol)
    return _tensor_message(actual, expected, matches, rtol, atol)


def _common_dtype(actual: np.dtype, expected: np.dtype) -> np.dtype:
    """The dtype both compare in: ``torch.promote_types``' (float16 and bfloat16 meet in float32), NumPy's beyond kiln's dtypes."""
    try:
        return np.dtype(promote_types(DType.of(actual), DType.of(expected)).numpy)
    except Exception:
        return np.result_type(actual, expected)


def _isclose(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, equal_nan: bool) -> np.ndarray:
    """``torch.isclose``: exact for bools (and for integers at zero tolerance), infinities equal only to themselves;
    half arrays in their own precision, each step rounded as torch's half ops round."""
    if actual.dtype == np.bool_ or (actual.dtype.kind in "iu" and rtol == 0 and atol == 0):
        return actual == expected
    if DType.of(actual.dtype).is_half:
        return _half_isclose(actual, expected, rtol, atol, equal_nan)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan)


def _half_isclose(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, equal_nan: bool) -> np.ndarray:
    """``|actual - expected| <= atol + |rtol * expected|`` with every step in the half dtype (computed in float32,
    rounded), as ``torch.isclose`` on half tensors, so a pair at the tolerance's edge decides as PyTorch's does."""
    allowed = _half_step(atol + np.abs(_half_step(rtol * expected.astype(np.float32), actual.dtype)), actual.dtype)
    error = np.abs(_half_step(actual.astype(np.float32) - expected.astype(np.float32), actual.dtype))
    with np.errstate(invalid="ignore", over="ignore"):
        close = (actual == expected) | (np.isfinite(error) & (error.astype(np.float32) <= allowed.astype(np.float32)))
    return close | (np.isnan(actual.astype(np.float32)) & np.isnan(expected.astype(np.float32))) if equal_nan else close


def _half_step(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A float32 result rounded to the half dtype, as a half op rounds its float32 computation."""
    with np.errstate(over="ignore"):
        return np.asarray(np.asarray(value, np.float32).astype(dtype))


def _tensor_message(actual: np.ndarray, expected: np.ndarray, matches: np.ndarray, rtol: float, atol: float) -> str:
    """PyTorch's: differences in the tensors' dtype (integers and bools in int64, their ratio in float32), the first
    index of each greatest one among the mismatches (a NaN is the greatest)."""
    total, mismatches = matches.size, int(matches.size - matches.sum())
    if actual.dtype.kind not in "fc" and not is_float_array_dtype(actual.dtype):
        actual, expected = actual.astype(np.int64), expected.astype(np.int64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        absolute = np.abs(actual - expected).ravel()  # a half difference rounds to its dtype (ml_dtypes' bfloat16 too)
        absolute[matches.ravel()] = 0
        relative = absolute / np.abs(expected).ravel()
        if relative.dtype == np.float64 and actual.dtype.kind not in "fc":
            relative = relative.astype(np.float32)
        relative[matches.ravel()] = 0
    extra = f"Mismatched elements: {mismatches} / {total} ({mismatches / total:.1%})"
    worst_absolute, worst_relative = int(np.argmax(absolute)), int(np.argmax(relative))
    return _mismatch_message("Tensor-likes", extra, absolute[worst_absolute].item(), np.unravel_index(worst_absolute, matches.shape),
                             relative[worst_relative].item(), np.unravel_index(worst_relative, matches.shape), rtol, atol)


def _mismatch_message(identifier: str, extra: str, absolute: Any, absolute_index: Any, relative: Any, relative_index: Any,
                      rtol: float, atol: float) -> str:
    equality = rtol == 0 and atol == 0
    lines = [f"{identifier} are not {'equal' if equality else 'close'}!", "", extra]
    for kind, diff, index, tolerance in (("absolute", absolute, absolute_index, atol), ("relative", relative, relative_index, rtol)):
        line = f"{kind.title()} difference: {diff}" if index is None else \
            f"Greatest {kind} difference: {diff} at index {tuple(int(i) for i in index)}"
        lines.append(line if equality else f"{line} (up to {tolerance} allowed)")
    return "\n".join(lines)


# numbers --------------------------------------------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float, complex, np.generic))


def _compare_numbers(actual: Any, expected: Any, rtol: float | None, atol: float | None, equal_nan: bool,
                     check_dtype: bool) -> str | None:
    if isinstance(actual, bool) and isinstance(expected, bool):
        return None if actual == expected else f"Booleans mismatch: {actual} is not {expected}"
    if check_dtype and type(actual) is not type(expected):
        return f"The (d)types do not match: {type(actual)} != {type(expected)}."
    if rtol is None:
        exact = all(isinstance(v, int) for v in (actual, expected))
        rtol, atol = (0.0, 0) if exact else _TOLERANCES[np.dtype(np.float64)]
    if _numbers_close(actual, expected, rtol, atol, equal_nan):
        return None
    return _scalar_message(actual, expected, rtol, atol)


def _numbers_close(actual: Any, expected: Any, rtol: float, atol: float, equal_nan: bool) -> bool:
    if equal_nan and _is_nan(actual) and _is_nan(expected):
        return True
    if actual == expected:
        return True
    if any(math.isinf(abs(v)) for v in (actual, expected)):
        return False
    return abs(actual - expected) <= atol + rtol * abs(expected)


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, complex)) and value != value


def _scalar_message(actual: Any, expected: Any, rtol: float, atol: float) -> str:
    absolute = abs(actual - expected)
    relative = math.inf if expected == 0 else absolute / abs(expected)
    return _mismatch_message("Scalars", f"Expected {expected} but got {actual}.", absolute, None, relative, None, rtol, atol)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, collections.abc.Sequence) and not isinstance(value, str)


# make_tensor ----------------------------------------------------------------------------------------------------------

def make_tensor(*shape: Any, dtype: Any, device: Any = None, low: float | None = None, high: float | None = None,
                requires_grad: bool = False, noncontiguous: bool = False, exclude_zero: bool = False,
                memory_format: Any = None) -> Any:
    """A tensor of ``shape`` drawn uniformly from ``[low, high)`` (PyTorch's defaults -9 and 9, clamped to the dtype's
    range; integers exclude ``high``; bools are fair coins) from kiln's generator (``kiln.manual_seed`` repeats it).
    ``exclude_zero`` replaces zeros by the dtype's smallest positive normal (by 1 for integers); ``device``,
    ``noncontiguous`` and ``memory_format`` change nothing in kiln."""
    from kiln.frontend import init
    from kiln.frontend.torch_functions import tensor

    size = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)
    numpy_dtype = np.dtype(DType.of(dtype).numpy)
    values = _draw(init._generator, size, numpy_dtype, low, high)
    if exclude_zero:
        values[values == 0] = 1 if numpy_dtype.kind in "iub" else ml_dtypes.finfo(numpy_dtype).tiny
    return tensor(values, dtype=dtype, requires_grad=requires_grad)


def _draw(generator: np.random.Generator, size: tuple[int, ...], dtype: np.dtype, low: float | None, high: float | None) -> np.ndarray:
    if dtype == np.bool_:
        return generator.integers(0, 2, size=size).astype(np.bool_)
    integral = dtype.kind in "iu"
    info = np.iinfo(dtype) if integral else ml_dtypes.finfo(dtype)  # ml_dtypes' finfo knows bfloat16 too
    low, high = _bounds(low, high, float(info.min), float(info.max), integral)
    if integral:
        return generator.integers(math.ceil(low), math.ceil(high), size=size).astype(dtype)
    if low == high:
        return np.full(size, low, dtype=dtype)
    return generator.uniform(low, high, size=size).astype(dtype)


def _bounds(low: float | None, high: float | None, lowest: float, highest: float, integral: bool) -> tuple[float, float]:
    """PyTorch's defaults (-9, 9) and checks, then the dtype's range."""
    low, high = -9 if low is None else low, 9 if high is None else high
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"`low` and `high` cannot be NaN, but got low={low} and high={high}")
    if low > high or (integral and low == high):
        raise ValueError(f"`low` must be less than `high`, but got {low} >= {high}")
    return max(low, lowest), min(high, highest)


__all__ = ["assert_close", "make_tensor"]
