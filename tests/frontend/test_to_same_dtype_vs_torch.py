"""``Tensor.to`` that changes nothing returns the tensor itself, as PyTorch's: ``x.float()`` on a float32 tensor,
``x.to(x)``, ``x.to(device)``; an in-place write to the result writes ``x``. ``copy=True`` (or the second positional
flag) copies. It used to copy always, so code relying on the alias (``y = x.float(); y.clamp_(0, 1)``) lost the
write."""

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()


def _aliasing(lib):
    x = lib.tensor([1.0, -2.0, 3.0])
    p = lib.nn.Parameter(lib.ones(2))
    same = x.float()
    same.clamp_(0, 2)
    cases = {
        "float()": same is x,
        "to(x)": x.to(x) is x,
        "to('cpu')": x.to("cpu") is x,
        "to(dtype=float32)": x.to(dtype=lib.float32) is x,
        "copy=True": x.to(lib.float32, copy=True) is x,
        "positional copy": x.to(lib.float32, False, True) is x,
        "double()": x.double() is x,
        "parameter float()": p.float() is p,
        "parameter type": type(p.float()).__name__,
    }
    return cases, x.tolist()


def test_to_that_changes_nothing_is_the_tensor_itself_as_torch():
    assert _aliasing(kiln) == _aliasing(torch)


@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_to_another_dtype_still_converts_and_copies(dtype):
    x = kiln.tensor([1.5, -2.5])
    y = x.to(getattr(kiln, dtype))
    assert y is not x and str(y.dtype) == f"kiln.{dtype}"
    np.testing.assert_array_equal(y.numpy(), torch.tensor([1.5, -2.5]).to(getattr(torch, dtype)).numpy())
