"""``torch.tensor`` of a tensor or of lists holding tensors, eagerly and in a ``kiln.compile`` trace, as PyTorch
(``frontend/tensor_from_tensors.py``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch


def _cases(lib):
    """``(name, data, dtype)``: tensors alone and in lists, of other dtypes than the default, with Python numbers."""
    f64, i32 = lib.tensor([1.5, -2.0], dtype=lib.float64), lib.tensor(3, dtype=lib.int32)
    return [("tensor", f64, None), ("tensor as float32", f64, lib.float32), ("float64 scalars", [f64[0], f64.sum()], None),
            ("int32 with an int", [i32, 2], None), ("float16", [lib.tensor(1.0, dtype=lib.float16)], None),
            ("bool with a float", [lib.tensor(True), 2.5], None), ("nested", [[f64[1]], [3.0]], None),
            ("one-element vector", [lib.tensor([4.0], dtype=lib.float64)], None), ("cast", (i32, lib.tensor(True)), lib.float64),
            ("integers", [i32, lib.tensor(False), 7], lib.int64)]


def test_tensor_of_tensors_eagerly_as_torch():
    require_torch()
    results = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "To copy construct from a tensor"
            results[name] = [(case, lib.tensor(data, dtype=dtype)) for case, data, dtype in _cases(lib)]
    for (case, ours), (_, theirs) in zip(results["kiln"], results["torch"]):
        assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1], case
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=case)


def test_tensor_of_tensors_in_a_compiled_function_as_torch():
    """``torch.compile(fullgraph=True)`` traces these (measured); kiln's trace could not read a traced tensor's values
    (``np.asarray`` of it raised)."""
    torch = require_torch()

    def f(lib, x):
        return lib.tensor(x) * 2, lib.tensor(x, dtype=lib.float32), lib.tensor([x.sum(), x.max(), 1.0]), \
            lib.tensor([[x[0]], [x[1]]], dtype=lib.float16), lib.tensor([(x > 0).sum(), x.argmax()], dtype=lib.int32)

    x = np.array([1.25, -3.5, 2.0])
    ours = kiln.compile(lambda x: f(kiln, x), fullgraph=True)(kiln.tensor(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = f(torch, torch.tensor(x))
    for a, b in zip(ours, theirs):
        assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1]
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_tensor_of_tensors_detaches_and_refuses_wider_tensors_in_lists_as_torch():
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        x = lib.ones(2, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert not lib.tensor(x).requires_grad and not lib.tensor([x.sum()]).requires_grad
            assert lib.tensor([x.sum()], requires_grad=True).requires_grad
        with pytest.raises(ValueError, match="only one element tensors can be converted to Python scalars"):
            lib.tensor([lib.ones(2), lib.ones(2)])
        with pytest.raises(TypeError, match="only integer tensors of a single element can be converted to an index"):
            lib.tensor([lib.tensor(1.5)], dtype=lib.int64)
