"""``torch.func.vmap`` given an eager tensor (a closure's, or one made in the function) inside a ``torch.func.grad``
trace, against torch 2.13: a functional PINN's ``vmap(u, in_dims=(None, 0, 0))(params, torch.zeros_like(X0), X0)``
with ``X0`` a closure tensor. vmap bound the mapped input to the eager tensor's own value, which belongs to no graph
being built: compiling the gradient failed with ``KeyError: Value(%?: tensor<5xf64>)``. It now takes the trace's value
for it (a constant, or a lifted input under ``kiln.compile``), as any op's operand does (``runtime/vmap.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

POINTS = np.linspace(-1.0, 1.0, 5)


def _gradient(name, case, compiled=False):
    torch = libraries(name)[0]
    func = torch.func
    points = torch.tensor(POINTS)
    w = torch.tensor(np.array([0.7, -0.3]))

    def f(w):
        if case == "mapped":
            return func.vmap(lambda x: torch.tanh(w[0] * x) * w[1])(points).sum()
        if case == "unmapped":
            return func.vmap(lambda x, c: (w[0] * x - c.sum()) ** 2, in_dims=(0, None))(points, points * 2).sum()
        return func.vmap(lambda a, b: w[0] * a + w[1] * b ** 2, in_dims=(0, 0))(torch.zeros_like(points), points).sum()

    gradient = func.grad(f)
    if compiled:
        gradient = kiln.compile(gradient, fullgraph=True)
    return np.array(gradient(w).detach().numpy())


@pytest.mark.parametrize("case", ["mapped", "unmapped", "made-inside"])
def test_vmap_of_an_eager_tensor_inside_grad(case, float64_default):
    np.testing.assert_allclose(_gradient("kiln", case), _gradient("torch", case), rtol=1e-12, atol=1e-15)


def test_vmap_of_a_closure_tensor_inside_grad_compiled(float64_default):
    np.testing.assert_allclose(_gradient("kiln", "mapped", compiled=True), _gradient("torch", "mapped"), rtol=1e-12)
