"""``kiln.distributions.Dirichlet`` (``frontend/distributions_dirichlet.py``) against torch 2.13's in float64:
``log_prob`` (values and its gradient to the concentration), ``entropy``, ``mean``, ``mode``, ``variance``, shapes and
``validate_args``' refusals; draws on the simplex, reproducible under ``kiln.manual_seed``, with the distribution's
moments. set_transformer's ``mog.sample`` draws its mixture weights by ``Dirichlet(torch.ones(K)).sample(...)``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require

CONCENTRATION = np.array([[0.5, 2.0, 3.0], [1.5, 1.0, 0.7], [0.3, 0.4, 0.2]])
VALUES = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.05, 0.9, 0.05]])


def _moments(name):
    torch, nn, F = libraries(name)
    concentration = torch.tensor(CONCENTRATION, requires_grad=True)
    dirichlet = torch.distributions.Dirichlet(concentration)
    log_prob = dirichlet.log_prob(torch.tensor(VALUES))
    log_prob.sum().backward()
    record = {name: getattr(dirichlet, name) for name in ("mean", "mode", "variance", "stddev")}
    record.update(log_prob=log_prob, entropy=dirichlet.entropy(), grad=concentration.grad)
    shapes = (tuple(dirichlet.batch_shape), tuple(dirichlet.event_shape))
    return {key: value.detach().numpy() for key, value in record.items()}, shapes


def test_dirichlet_values_and_gradient_as_torch(float64_default):
    (ours, our_shapes), (theirs, their_shapes) = _moments("kiln"), _moments("torch")
    assert our_shapes == their_shapes == ((3,), (3,))
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", ["kiln", "torch"])
@pytest.mark.parametrize("make", [
    lambda torch: torch.distributions.Dirichlet(torch.tensor([0.5, -1.0])),
    lambda torch: torch.distributions.Dirichlet(torch.tensor(2.0)),
    lambda torch: torch.distributions.Dirichlet(torch.tensor([0.5, 1.0])).log_prob(torch.tensor([0.5, 0.6])),
], ids=["negative concentration", "0-d concentration", "value off the simplex"])
def test_dirichlet_refuses_as_torch(name, make):
    torch, nn, F = libraries(name)
    with pytest.raises(ValueError):
        make(torch)


def test_dirichlet_draws_lie_on_the_simplex_reproducibly_with_its_moments(float64_default):
    concentration = kiln.tensor([[0.5, 2.0, 5.0], [1.0, 1.0, 1.0]])
    kiln.manual_seed(4)
    draws = kiln.distributions.Dirichlet(concentration).sample(kiln.Size([20000]))
    kiln.manual_seed(4)
    again = kiln.distributions.Dirichlet(concentration).sample((20000,))
    values = draws.numpy()
    assert tuple(draws.shape) == (20000, 2, 3) and draws.dtype == kiln.float64 and not draws.requires_grad
    np.testing.assert_array_equal(values, again.numpy())
    assert values.min() > 0 and np.abs(values.sum(-1) - 1).max() < 1e-12
    torch = libraries("torch")[0]
    expected = torch.distributions.Dirichlet(torch.tensor(concentration.numpy()))
    np.testing.assert_allclose(values.mean(0), expected.mean.numpy(), atol=5e-3)  # 20000 draws: ~10 standard errors
    np.testing.assert_allclose(values.var(0), expected.variance.numpy(), rtol=0.05)


def test_dirichlet_samples_inside_a_compiled_function_on_the_simplex():
    def mixture_weights(concentration):
        return kiln.distributions.Dirichlet(concentration).sample((2,))

    weights = kiln.compile(mixture_weights, fullgraph=True, seed=0)(kiln.ones(3)).numpy()
    assert weights.shape == (2, 3) and weights.min() > 0 and np.allclose(weights.sum(-1), 1, atol=1e-6)


def test_dirichlet_rsample_passes_gradients_to_the_concentration():
    concentration = kiln.tensor([0.5, 2.0, 3.0], requires_grad=True)
    dirichlet = kiln.distributions.Dirichlet(concentration)
    assert dirichlet.has_rsample
    dirichlet.rsample((64,))[:, 0].sum().backward()
    assert concentration.grad is not None and concentration.grad[0] > 0 > concentration.grad[1]
