"""``kiln.finfo``/``kiln.iinfo`` asked about the wrong kind of dtype raise ``TypeError``, as torch 2.13's do (code that
probes ``try: finfo(d) except TypeError: iinfo(d)`` works alike), with a message that names the other function."""

from __future__ import annotations

import pytest

import kiln
from oracles import require_torch

CASES = [("finfo", "int32"), ("finfo", "int64"), ("finfo", "uint8"), ("finfo", "bool"), ("finfo", int),
         ("iinfo", "float32"), ("iinfo", "float16"), ("iinfo", "bfloat16"), ("iinfo", "bool"), ("iinfo", float), ("iinfo", bool)]


def _dtype(lib, name):
    return getattr(lib, name) if isinstance(name, str) else name


@pytest.mark.parametrize("function, dtype", CASES)
def test_the_wrong_kind_of_dtype_is_a_type_error_as_in_torch(function, dtype):
    torch = require_torch()
    with pytest.raises(TypeError):
        getattr(torch, function)(_dtype(torch, dtype))
    other = "iinfo" if function == "finfo" else "finfo"
    with pytest.raises(TypeError, match=f"kiln.{function} takes an? .*dtype.*use kiln.{other}"):
        getattr(kiln, function)(_dtype(kiln, dtype))


@pytest.mark.parametrize("function, dtype", [("finfo", float), ("iinfo", int), ("finfo", "bfloat16"), ("iinfo", "uint8")])
def test_the_right_kind_still_gives_torchs_limits(function, dtype):
    torch = require_torch()
    ours, theirs = getattr(kiln, function)(_dtype(kiln, dtype)), getattr(torch, function)(_dtype(torch, dtype))
    assert (ours.bits, ours.max, ours.min) == (theirs.bits, theirs.max, theirs.min) and repr(ours) == repr(theirs)


def test_what_is_not_a_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="kiln.finfo takes a dtype.*got 'x'"):
        kiln.finfo("x")
