"""A one-element loss that is not 0-d (``(loss + 0 * real_pred[0]).backward()`` in StyleGAN2's R1 step, where
``real_pred`` is ``(B, 1)``; ``autograd.grad(out[0], x)``) takes the implicit gradient 1, as PyTorch 2.13's (it checks
``numel() == 1``, not the rank). Eagerly kiln did; in a ``kiln.compile``d step or a traced ``autograd.grad`` the
autodiff pass refused it ("autodiff needs a floating-point scalar to differentiate, got tensor<1xf64>"). A tensor of
more than one element is still refused."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import AutodiffError, differentiate
from kiln.compiler.ir.types import TensorType
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext
from oracles import require_torch, torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 1)).double()


def _step(lib, model, optimizer):
    def step(x):
        optimizer.zero_grad()
        pred = model(x)  # (B, 1)
        loss = pred.square().mean() + 0.5 * pred[0]  # shape (1,)
        loss.backward()
        optimizer.step()
        return loss

    return step


def test_a_one_element_loss_backward_in_a_compiled_step_as_torch():
    torch, model, twin = torch_twins(_net)
    step = kiln.compile(_step(kiln, model, kiln.optim.SGD(model.parameters(), lr=0.1)), fullgraph=True)
    twin_step = _step(torch, twin, torch.optim.SGD(twin.parameters(), lr=0.1))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((5, 3))
        ours, theirs = step(kiln.tensor(x)), twin_step(torch.tensor(x))
        assert tuple(ours.shape) == tuple(theirs.shape) == (1,)
        np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_traced_autograd_grad_of_a_one_element_output_as_torch():
    torch = require_torch()
    x0 = np.random.default_rng(1).standard_normal((2, 3))

    def input_gradient(lib, x):
        x.requires_grad_(True)
        out = (x.sin() * x).sum(1, keepdim=True)[:1]  # shape (1, 1)
        return lib.autograd.grad(out, x, create_graph=True)[0] * 2.0

    ours = kiln.compile(lambda x: input_gradient(kiln, x), fullgraph=True)(kiln.tensor(x0))
    theirs = input_gradient(torch, torch.tensor(x0))
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape, refused", [((1, 1), False), ((1,), False), ((2,), True), ((1, 2), True)])
def test_the_autodiff_pass_seeds_one_element_outputs_only(shape, refused):
    with TraceContext("one-element") as context:
        x = context.graph.add_input(TensorType(shape, "float64"), "x")
        y = (Tensor(x) * Tensor(x)).value
        if refused:
            with pytest.raises(AutodiffError, match=r"floating-point scalar to differentiate, got tensor<"):
                differentiate(context.graph, y, [x])
            return
        context.graph.outputs = differentiate(context.graph, y, [x])
    (grad,) = NumpyBackend().compile(context.graph)(np.full(shape, 1.5))
    np.testing.assert_array_equal(grad, np.full(shape, 3.0))
