"""``kiln.autograd.grad`` refuses what ``torch.autograd.grad`` refuses, with torch's RuntimeError and words: an input
that does not require grad (a plain tensor, a detached one; ``allow_unused`` does not excuse it), an output that does
not ("element i of tensors does not require grad and does not have a grad_fn"), an unused input without
``allow_unused``, and ``materialize_grads=True`` with ``allow_unused=False`` (a ValueError). Kiln differentiated
unmarked inputs and outputs before. Traced the same: a ``kiln.compile``d function's input requires grad once marked
by ``requires_grad_()`` (as torch's), and ``kiln.grad``'s (``torch.func.grad``'s) argument requires grad inside it."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.array([0.5, -1.0, 2.0])


def _refusal(call):
    """The error's type and torch's words (kiln adds its line and advice after them)."""
    with pytest.raises(Exception) as caught:
        call()
    return caught.type, str(caught.value)


TORCH_WORDS = ["One of the differentiated Tensors does not require grad",
               "element 0 of tensors does not require grad and does not have a grad_fn",
               "element 1 of tensors does not require grad and does not have a grad_fn",
               "The differentiated Tensor at index 1 appears to not have been used in the graph",
               "Expected allow_unused to be True or not passed when materialize_grads=True, but got: allow_unused=False."]

CASES = {
    "input without requires_grad": (lambda lib, x, y: lib.autograd.grad((x * y).sum(), y), 0),
    "allow_unused does not excuse it": (lambda lib, x, y: lib.autograd.grad((x * y).sum(), [x, y], allow_unused=True), 0),
    "a detached input": (lambda lib, x, y: lib.autograd.grad((x * 2).sum(), x.detach()), 0),
    "output without requires_grad": (lambda lib, x, y: lib.autograd.grad((y * 2).sum(), x), 1),
    "second output without": (lambda lib, x, y: lib.autograd.grad([(x * 2).sum(), (y * 2).sum()], x), 2),
    "unused input": (lambda lib, x, y: lib.autograd.grad((x * 2).sum(), [x, (x * 3)]), 3),
    "materialize with allow_unused=False": (
        lambda lib, x, y: lib.autograd.grad((x * 2).sum(), x, materialize_grads=True, allow_unused=False), 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_match_torch(case):
    torch = require_torch()
    call, words = CASES[case]
    found = []
    for lib in (kiln, torch):
        x, y = lib.tensor(X, requires_grad=True), lib.tensor(X)
        kind, message = _refusal(lambda: call(lib, x, y))
        assert TORCH_WORDS[words] in message, (lib.__name__, message)
        found.append(issubclass(kind, RuntimeError) if words < 4 else issubclass(kind, ValueError))
    assert found == [True, True]


def test_a_compiled_functions_input_is_differentiated_once_marked_as_torchs():
    torch = require_torch()

    def input_gradient(lib, x, mark):
        if mark:
            x.requires_grad_()
        (g,) = lib.autograd.grad((x ** 3).sum(), x)
        return g

    with pytest.raises(RuntimeError, match=TORCH_WORDS[1]):  # (the output is checked first)
        input_gradient(torch, torch.tensor(X), False)
    with pytest.raises(RuntimeError, match=TORCH_WORDS[1]):
        kiln.compile(lambda x: input_gradient(kiln, x, False))(X)
    ours = kiln.compile(lambda x: input_gradient(kiln, x, True))(X)
    np.testing.assert_allclose(ours, input_gradient(torch, torch.tensor(X), True).numpy(), rtol=1e-12)


def test_grad_inside_func_grad_matches_torch_func():
    torch = require_torch()
    results = []
    for lib, transform in ((kiln, kiln.grad), (torch, torch.func.grad)):
        def loss(v, lib=lib):
            (g,) = lib.autograd.grad((v ** 3).sum(), v)  # 3 v^2, detached
            return (g * v).sum()

        results.append(np.asarray(transform(loss)(lib.tensor(X) if lib is torch else X)))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)
