"""A Python float written into an integer or bool tensor by ``masked_fill``/``masked_fill_``/``fill_``/
``index_fill(_)`` keeps the tensor's dtype and is truncated toward zero, as PyTorch's (the translation tutorial's
``torch.ones(1, 1).type_as(src.data).fill_(next_word)`` pattern with a float): kiln promoted ``long.masked_fill(mask,
2.7)`` to float32 (silently another dtype and values) and refused ``long.fill_(2.7)``. A float the dtype cannot hold is
PyTorch's RuntimeError. Eagerly and in ``kiln.compile``."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
from oracles import require_torch

MASK = [True, False, True]

WRITES = {
    "masked_fill": lambda lib, x, v: x.masked_fill(lib.tensor(MASK), v),
    "masked_fill_": lambda lib, x, v: x.masked_fill_(lib.tensor(MASK), v),
    "fill_": lambda lib, x, v: x.fill_(v),
    "index_fill": lambda lib, x, v: x.index_fill(0, lib.tensor([1]), v),
    "index_fill_": lambda lib, x, v: x.index_fill_(0, lib.tensor([1]), v),
    "torch.masked_fill": lambda lib, x, v: lib.masked_fill(x, lib.tensor(MASK), v),
}
VALUES = [("int64", 2.7), ("int64", -2.7), ("int32", 5.99), ("uint8", 200.5), ("bool", 0.0), ("bool", 0.25),
          ("float32", 2.7), ("float64", -1e300), ("int64", 3)]


def _written(lib, write, dtype, value):
    result = WRITES[write](lib, lib.ones(3, dtype=getattr(lib, dtype)), value)
    return np.array(result.tolist()), str(result.dtype).split(".")[-1]


@pytest.mark.parametrize("dtype, value", VALUES)
@pytest.mark.parametrize("write", list(WRITES))
def test_float_value_is_converted_to_the_tensor_dtype_as_torch(write, dtype, value):
    torch = require_torch()
    (ours, our_dtype), (theirs, their_dtype) = (_written(lib, write, dtype, value) for lib in (kiln, torch))
    assert our_dtype == their_dtype == dtype
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("write", ["masked_fill", "index_fill"])
def test_compiled_write_keeps_the_dtype_as_torch(write):
    torch = require_torch()
    run = kiln.compile(lambda x: WRITES[write](kiln, x, -2.7) * 2, fullgraph=True)
    ours = run(kiln.ones(3, dtype=kiln.int64))
    theirs = WRITES[write](torch, torch.ones(3, dtype=torch.int64), -2.7) * 2
    assert ours.dtype == kiln.int64
    np.testing.assert_array_equal(np.array(ours.tolist()), theirs.numpy())


@pytest.mark.parametrize("dtype, value", [("int64", float("inf")), ("int64", float("nan")), ("int64", 1e19), ("int32", 2.0 ** 31),
                                          ("int8", 127.9), ("float32", 1e300), ("float16", 70000.0)])
@pytest.mark.parametrize("write", ["masked_fill", "fill_"])
def test_a_value_the_dtype_cannot_hold_raises_as_torch(write, dtype, value):
    torch = require_torch()
    with pytest.raises(RuntimeError, match="without overflow"):
        _written(torch, write, dtype, value)
    with pytest.raises(RuntimeError, match=f"without overflow.*{re.escape(repr(value))} is outside what kiln.{dtype} holds"):
        _written(kiln, write, dtype, value)


def test_values_in_range_still_fill_as_torch():
    """The largest float16, NaN and -inf into floats, bool into an integer: unchanged."""
    torch = require_torch()
    for dtype, value in [("float16", 65504.0), ("float32", float("nan")), ("float32", float("-inf")), ("int64", True)]:
        (ours, our_dtype), (theirs, their_dtype) = (_written(lib, "masked_fill", dtype, value) for lib in (kiln, torch))
        assert our_dtype == their_dtype
        np.testing.assert_array_equal(ours, theirs)
