"""``torch.zeros(..., requires_grad=True)`` (and the other factories' ``requires_grad=True``) inside a ``kiln.compile``d
function, against torch 2.13's eager code: torch makes a leaf that requires grad, so ``autograd.grad`` may
differentiate by it and a ``backward()`` fills its ``.grad``. Traced, kiln ignored the flag: a PINN step's
``autograd.grad(u_x.sum(), [x, torch.zeros(1, requires_grad=True)], allow_unused=True)`` raised "One of the
differentiated Tensors does not require grad". The traced tensor is now marked as by ``requires_grad_()``
(``frontend/torch_functions.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.linspace(-1.0, 1.0, 6).reshape(2, 3)

FACTORIES = {
    "zeros": lambda torch: torch.zeros(2, 3, requires_grad=True),
    "ones": lambda torch: torch.ones(2, 3, requires_grad=True),
    "full": lambda torch: torch.full((2, 3), 0.5, requires_grad=True),
    "tensor": lambda torch: torch.tensor(X * 0.25, requires_grad=True),
    "zeros_like": lambda torch: torch.zeros_like(torch.tensor(X), requires_grad=True),
    "linspace": lambda torch: torch.linspace(0.0, 1.0, 3, requires_grad=True).expand(2, 3),
}


def _run(name, factory, compiled):
    torch = libraries(name)[0]
    weight = torch.nn.Parameter(torch.tensor(X.T.copy()))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def step(x):
        shift = FACTORIES[factory](torch)
        unused = torch.zeros(1, requires_grad=True)
        y = torch.tanh((x + shift) @ weight)
        d_shift, d_unused = torch.autograd.grad(y.sum(), [shift, unused], create_graph=True, allow_unused=True)
        assert d_unused is None
        loss = (d_shift ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach(), d_shift.detach()

    run = kiln.compile(step, fullgraph=True) if compiled else step
    outputs = [run(torch.tensor(X * scale)) for scale in (1.0, 0.5)]
    return [np.array(o.numpy()) for pair in outputs for o in pair] + [np.array(weight.detach().numpy())]


@pytest.mark.parametrize("factory", sorted(FACTORIES))
def test_a_factory_tensor_that_requires_grad_in_a_compiled_step(factory, float64_default):
    for ours, theirs in zip(_run("kiln", factory, True), _run("torch", factory, False), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
