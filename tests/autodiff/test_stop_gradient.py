"""``Tensor.detach()`` (``tensor.stop_gradient``): the values pass, the gradient does not, at any order, as PyTorch's."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require


def test_detached_values_pass_and_their_gradient_is_zero():
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(kiln.grad(lambda t: (t * t.detach()).sum())(x), x)  # d/dt t * c = c, not 2t
    np.testing.assert_array_equal(kiln.grad(lambda t: (t.detach() ** 2).sum() + t.sum())(x), np.ones(3))
    second = kiln.grad(lambda t: kiln.grad(lambda u: (u * u * u.detach()).sum())(t).sum())(x)
    np.testing.assert_array_equal(second, 2 * x)  # d/dt sum(2 t c), c = t held constant


def test_a_training_step_with_a_detached_target_matches_torch():
    """A bootstrapped target, ``mse(f(x), 0.5 f(x).detach())``: only the prediction side is differentiated."""
    torch = require("torch")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    loss = lambda out, _: F.mse_loss(out, out.detach() * 0.5)  # noqa: E731
    step = kiln.compile_train_step(model, loss, kiln.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    for _ in range(3):
        ours = float(step(x, np.zeros(6)))
        optimizer.zero_grad()
        out = reference(torch.tensor(x))
        theirs = torch.nn.functional.mse_loss(out, out.detach() * 0.5)
        theirs.backward()
        optimizer.step()
        np.testing.assert_allclose(ours, theirs.item(), rtol=1e-5)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_seeded_differentiation_of_a_composite_result_without_a_rule_follows_its_expansion():
    """``of`` produced by ``nn.layer_norm_grad`` (no VJP rule: autodiff expands it in place): the seed must reach the
    expansion, so H v of a layer-norm loss is torch's, not zeros."""
    torch = require("torch")
    from kiln.backends.numpy import NumpyBackend
    from kiln.compiler.autodiff import differentiate
    from kiln.compiler.ir.types import TensorType
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.trace import TraceContext

    x = np.random.default_rng(0).normal(size=(2, 4))
    v = np.random.default_rng(1).normal(size=(2, 4))
    with TraceContext("hvp") as context:
        value = context.graph.add_input(TensorType((2, 4), "float64"), "x")
        loss = (F.layer_norm(Tensor(value), (4,)) ** 3).sum()
        (gradient,) = differentiate(context.graph, loss.value, [value])
        assert gradient.producer.name == "nn.layer_norm_grad"
        seed = kiln.tensor(v).value
        (hessian_vector,) = differentiate(context.graph, gradient, [value], seed=seed)
        context.graph.outputs = [hessian_vector]
    (got,) = NumpyBackend().compile(context.graph)(x)
    tx = torch.tensor(x, requires_grad=True)
    (g,) = torch.autograd.grad((torch.nn.functional.layer_norm(tx, (4,)) ** 3).sum(), tx, create_graph=True)
    (expected,) = torch.autograd.grad(g, tx, grad_outputs=torch.tensor(v))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-10, atol=1e-12)
    assert np.abs(got).max() > 0.1
