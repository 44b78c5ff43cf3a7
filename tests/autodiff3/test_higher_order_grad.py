"""``kiln.grad`` composed with itself against ``torch.autograd.grad(..., create_graph=True)``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
W = RNG.standard_normal((4, 5))
V = RNG.standard_normal((3, 4))
GAMMA, BETA = RNG.standard_normal(4), RNG.standard_normal(4)


def functions(torch):
    """``name -> (kiln function, torch function)`` of one ``(3, 4)`` float64 argument, each a weighted sum to a scalar."""
    weights = RNG.standard_normal((3, 4))
    wt = torch.tensor(weights)
    return {
        "tanh": (lambda x: (x.tanh() * weights).sum(), lambda x: (x.tanh() * wt).sum()),
        "mul": (lambda x: (x * x * x * weights).sum(), lambda x: (x * x * x * wt).sum()),
        "matmul": (lambda x: ((x @ W).tanh() @ W.T * weights).sum(), lambda x: ((x @ torch.tensor(W)).tanh() @ torch.tensor(W).T * wt).sum()),
        "softmax": (lambda x: (F.softmax(x, 0) * weights).sum(), lambda x: (torch.softmax(x, 0) * wt).sum()),
        "layer_norm": (
            lambda x: (F.layer_norm(x, (4,), kiln_constant(GAMMA), kiln_constant(BETA)) * weights).sum(),
            lambda x: (torch.nn.functional.layer_norm(x, (4,), torch.tensor(GAMMA), torch.tensor(BETA)) * wt).sum(),
        ),
    }


def kiln_constant(array):
    from kiln.frontend.tensor import apply

    return apply("tensor.constant", value=np.asarray(array))


@pytest.mark.parametrize("name", ["tanh", "mul", "matmul", "softmax", "layer_norm"])
def test_second_order_matches_torch(name):
    torch = require("torch")
    ours, theirs = functions(torch)[name]
    x = torch.tensor(X, requires_grad=True)
    (first,) = torch.autograd.grad(theirs(x), x, create_graph=True)
    (second,) = torch.autograd.grad((first * torch.tensor(V)).sum(), x, create_graph=True)
    np.testing.assert_allclose(kiln.grad(ours)(X), first.detach().numpy(), rtol=1e-10, atol=1e-12)
    hessian_vector = kiln.grad(lambda y: (kiln.grad(ours)(y) * V).sum())
    np.testing.assert_allclose(hessian_vector(X), second.detach().numpy(), rtol=1e-9, atol=1e-11)


def test_third_order_of_tanh_matches_torch():
    torch = require("torch")
    ours, theirs = functions(torch)["tanh"]
    x = torch.tensor(X, requires_grad=True)
    gradient = x
    value = theirs(x)
    for _ in range(3):
        (gradient,) = torch.autograd.grad(value, x, create_graph=True)
        value = gradient.sum()
    third = kiln.grad(lambda y: kiln.grad(lambda z: kiln.grad(ours)(z).sum())(y).sum())
    np.testing.assert_allclose(third(X), gradient.detach().numpy(), rtol=1e-9, atol=1e-11)


def test_value_and_grad_and_argnums():
    f = lambda x, y: (x * y).sum()  # noqa: E731
    value, (dx, dy) = kiln.value_and_grad(f, argnums=(0, 1))(X, V)
    np.testing.assert_allclose(value, (X * V).sum())
    np.testing.assert_allclose(dx, V)
    np.testing.assert_allclose(dy, X)


def test_grad_of_non_scalar_says_what_to_do():
    with pytest.raises(kiln.KilnError, match="scalar"):
        kiln.grad(lambda x: x * 2)(X)
