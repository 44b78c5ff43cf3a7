"""``Tensor.permute`` / ``kiln.permute`` with dims counted from the end, as torch's: siren's ``BatchLinear`` multiplies
by ``weight.permute(*[i for i in range(len(weight.shape) - 2)], -1, -2)`` (its hypernetwork's per-sample weights),
which kiln refused ("perm (-1, -2) is not a permutation"). Values and gradients eagerly and compiled, and the refusals
in torch's types and words (a wrong count, a repeated dim, a dim out of range)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.arange(24.0).reshape(2, 3, 4)


@pytest.mark.parametrize("permute", [
    lambda lib, x: x.permute(-1, 0, 1),
    lambda lib, x: x.permute(0, -1, -2),
    lambda lib, x: x.permute([2, -2, 0]),
    lambda lib, x: x.permute(dims=(-3, -1, -2)),
    lambda lib, x: lib.permute(x, (-1, -3, 1)),
    lambda lib, x: x.permute(*[i for i in range(len(x.shape) - 2)], -1, -2),
], ids=["method", "last two swapped", "list", "dims keyword", "function", "siren's BatchLinear"])
def test_permute_with_negative_dims_as_torch(permute):
    results = []
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        x = lib.tensor(X, requires_grad=True)
        y = permute(lib, x)
        (y * lib.arange(y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
        results.append((y.detach().numpy(), x.grad.numpy()))
    (ours, our_grad), (theirs, their_grad) = results
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_grad, their_grad)
    compiled = kiln.compile(lambda x: permute(kiln, x), fullgraph=True)(kiln.tensor(X))
    np.testing.assert_array_equal(compiled.numpy(), theirs)


@pytest.mark.parametrize("dims, words", [
    ((0, 1), "is not equal to len(dims) = 2"),
    ((0, 0, 1), "duplicate dims are not allowed"),
    ((-1, 2, 0), "duplicate dims are not allowed"),
    ((0, 1, 3), "Dimension out of range (expected to be in range of [-3, 2], but got 3)"),
    ((-4, 0, 1), "Dimension out of range (expected to be in range of [-3, 2], but got -4)"),
], ids=["too few", "repeated", "repeated from the end", "too large", "too small"])
def test_permute_refuses_as_torch(dims, words):
    errors = []
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        with pytest.raises((RuntimeError, IndexError)) as raised:
            lib.zeros(2, 3, 4).permute(*dims)
        assert words in str(raised.value), (name, str(raised.value))
        errors.append(raised.value)
    assert isinstance(errors[0], type(errors[1])), errors
    assert "test_permute_negative_dims_vs_torch.py" in str(errors[0])
