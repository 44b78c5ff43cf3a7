"""``exp``, ``log``, ``sqrt``, ``tanh`` and ``sigmoid`` of an integer or bool tensor return the default float dtype,
as PyTorch's (``torch.log(torch.arange(1, 4))`` is float32): kiln refused them ("tensor.log needs a floating-point
operand") while ``sin``, ``rsqrt``, ``log1p``... already promoted. Mamba's ``A_log = nn.Parameter(torch.log(A))`` of
``A = torch.arange(1, d_state + 1).repeat(d_inner, 1)`` broke on it. As ``torch.*`` functions, Tensor methods and
``F.sigmoid``/``F.tanh``, eagerly and in a ``kiln.compile``d function, under both default dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as KF
from oracles import require_torch

OPS = ("exp", "log", "sqrt", "tanh", "sigmoid")
INPUTS = {"int64": lambda lib: lib.arange(1, 7).view(2, 3), "int32": lambda lib: lib.tensor([[0, 3, 9]], dtype=lib.int32),
          "bool": lambda lib: lib.tensor([True, False, True])}


def _calls(lib, functional, op, x):
    calls = [getattr(lib, op)(x), getattr(x, op)()]
    return calls + [getattr(functional, op)(x)] if op in ("tanh", "sigmoid") else calls


@pytest.mark.parametrize("default", ["float32", "float64"])
@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("op", OPS)
def test_integer_input_promotes_to_the_default_float(op, kind, default):
    torch = require_torch()
    saved = kiln.get_default_dtype(), torch.get_default_dtype()
    kiln.set_default_dtype(getattr(kiln, default))
    torch.set_default_dtype(getattr(torch, default))
    try:
        theirs = _calls(torch, torch.nn.functional, op, INPUTS[kind](torch))
        ours = _calls(kiln, KF, op, INPUTS[kind](kiln))
        compiled = kiln.compile(lambda x: tuple(_calls(kiln, KF, op, x)))(INPUTS[kind](kiln))
    finally:
        kiln.set_default_dtype(saved[0])
        torch.set_default_dtype(saved[1])
    for our, traced, their in zip(ours, compiled, theirs):
        assert str(our.dtype).split(".")[-1] == str(their.dtype).split(".")[-1] == default
        assert np.asarray(traced).dtype == np.dtype(default)
        np.testing.assert_allclose(our.numpy(), their.numpy(), rtol=1e-6 if default == "float32" else 1e-15)
        np.testing.assert_allclose(np.asarray(traced), their.numpy(), rtol=1e-6 if default == "float32" else 1e-15)
