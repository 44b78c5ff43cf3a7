"""``kiln.distributions.MixtureSameFamily`` (``frontend/distributions_mixture.py``) against torch 2.13's in float64:
``log_prob`` (values, and gradients to the logits and the components' parameters), ``mean``, ``variance``, ``cdf``,
the shapes (a mixture whose Categorical has fewer batch dims than the components, an ``Independent`` component's
event), ``sample``'s shape and moments, ``expand``, and the refusals. A mixture density network scores its targets by
``MixtureSameFamily(Categorical(logits=...), Independent(Normal(mu, sigma), 1)).log_prob(y)``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

LOGITS = np.array([[0.3, -1.0, 0.5], [1.2, 0.1, -0.4]])  # batch 2, K 3
LOC = np.array([[[0.0, 1.0], [-1.5, 0.5], [2.0, -0.3]], [[0.4, 0.2], [1.0, -1.0], [-0.7, 0.9]]])  # 2, 3, 2
SCALE = np.array([[[0.5, 1.2], [0.8, 0.3], [1.1, 0.7]], [[0.9, 0.6], [0.4, 1.5], [0.7, 0.8]]])
VALUES = np.array([[[0.1, 0.7], [-0.2, 0.4]], [[1.3, -0.6], [0.0, 0.0]]])  # sample 2, batch 2, event 2


def _mixture(name, univariate=False, shared_weights=False):
    """The mixture with its parameters as leaves that require grad: diagonal Gaussians over 2-vectors, or (with
    ``univariate``) over numbers; ``shared_weights`` gives one Categorical for the whole batch."""
    torch, nn, F = libraries(name)
    leaves = [torch.tensor(array, requires_grad=True) for array in (
        LOGITS[0] if shared_weights else LOGITS, LOC[..., 0] if univariate else LOC,
        SCALE[..., 0] if univariate else SCALE)]
    logits, loc, scale = leaves
    normal = torch.distributions.Normal(loc, scale)
    component = normal if univariate else torch.distributions.Independent(normal, 1)
    return torch, torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits), component), leaves


@pytest.mark.parametrize("univariate", [False, True], ids=["Independent Normal", "Normal"])
@pytest.mark.parametrize("shared_weights", [False, True], ids=["batched weights", "shared weights"])
def test_mixture_values_and_gradients_as_torch(float64_default, univariate, shared_weights):
    records = []
    for name in ("kiln", "torch"):
        torch, mixture, leaves = _mixture(name, univariate, shared_weights)
        values = torch.tensor(VALUES[..., 0] if univariate else VALUES)
        log_prob = mixture.log_prob(values)
        scalar = log_prob.sum() + mixture.mean.sum() + (mixture.variance * 0.5).sum()
        if univariate:
            scalar = scalar + mixture.cdf(values).sum()
        scalar.backward()
        record = {"log_prob": log_prob, "mean": mixture.mean, "variance": mixture.variance, "stddev": mixture.stddev}
        record = {key: value.detach().numpy() for key, value in record.items()}
        record.update({f"grad {i}": leaf.grad.numpy() for i, leaf in enumerate(leaves)})
        record["shapes"] = (tuple(mixture.batch_shape), tuple(mixture.event_shape), tuple(log_prob.shape))
        records.append(record)
    ours, theirs = records
    assert ours.pop("shapes") == theirs.pop("shapes") == (((2,), (), (2, 2)) if univariate else ((2,), (2,), (2, 2)))
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_mixture_draws_have_its_shape_and_moments_reproducibly(float64_default):
    torch, mixture, _ = _mixture("kiln")
    kiln.manual_seed(3)
    draws = mixture.sample((20000,))
    kiln.manual_seed(3)
    again = mixture.sample(kiln.Size([20000]))
    assert tuple(draws.shape) == (20000, 2, 2) and draws.dtype == kiln.float64 and not draws.requires_grad
    np.testing.assert_array_equal(draws.numpy(), again.numpy())
    _, expected, _ = _mixture("torch")
    assert tuple(expected.sample((5,)).shape) == tuple(mixture.sample((5,)).shape) == (5, 2, 2)
    # 20000 draws: the standard error of each mean is below 0.015
    np.testing.assert_allclose(draws.numpy().mean(0), expected.mean.detach().numpy(), atol=0.06)
    np.testing.assert_allclose(draws.numpy().var(0), expected.variance.detach().numpy(), rtol=0.06)


@pytest.mark.parametrize("mixture_logits_shape", [(3,), (1, 3)], ids=["unbatched weights", "broadcast weights"])
def test_mixture_with_weights_shared_over_the_batch_draws_each_element(float64_default, mixture_logits_shape):
    """Weights shared by a batch of 2 component sets: a draw per batch element, shaped ``sample_shape + batch_shape +
    event_shape``, with the mixture's mean. torch 2.13 raises there (``(3,)``: "Index tensor must have the same
    number of dimensions as input tensor") or returns ``(n, 1, 2)`` (``(1, 3)``), against its own batch shape (2,)."""
    D = kiln.distributions
    logits = kiln.tensor(LOGITS[0].reshape(mixture_logits_shape))
    mixture = D.MixtureSameFamily(D.Categorical(logits=logits), D.Independent(D.Normal(kiln.tensor(LOC), kiln.tensor(SCALE)), 1))
    kiln.manual_seed(5)
    draws = mixture.sample((20000,)).numpy()
    assert draws.shape == (20000, 2, 2) and tuple(mixture.batch_shape) == (2,)
    np.testing.assert_allclose(draws.mean(0), mixture.mean.numpy(), atol=0.06)
    np.testing.assert_allclose(draws.var(0), mixture.variance.numpy(), rtol=0.06)
    torch = libraries("torch")[0]
    theirs = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.tensor(LOGITS[0].reshape(mixture_logits_shape))),
        torch.distributions.Independent(torch.distributions.Normal(torch.tensor(LOC), torch.tensor(SCALE)), 1))
    np.testing.assert_allclose(mixture.mean.numpy(), theirs.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(mixture.variance.numpy(), theirs.variance.numpy(), rtol=1e-12)


def test_gaussian_mixture_model_of_multivariate_normals_as_torch(float64_default):
    """A GMM as torch's docstring builds it: ``Categorical(probs=...)`` (broadcast over the batch) mixing
    ``MultivariateNormal(loc, scale_tril=...)``; log_prob of sample-shaped values, mean, variance, and the refusals of
    a value of the wrong shape (torch's ``ValueError`` words)."""
    rng = np.random.default_rng(0)
    loc, tril = rng.standard_normal((4, 3, 2)), np.tril(rng.standard_normal((4, 3, 2, 2)) * 0.3)
    tril[..., [0, 1], [0, 1]] = np.abs(tril[..., [0, 1], [0, 1]]) + 0.5
    probs, values = rng.random((1, 3)) + 0.1, rng.standard_normal((5, 4, 2))
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        D = torch.distributions
        gmm = D.MixtureSameFamily(D.Categorical(probs=torch.tensor(probs)),
                                  D.MultivariateNormal(torch.tensor(loc), scale_tril=torch.tensor(tril)))
        records.append({"log_prob": gmm.log_prob(torch.tensor(values)).numpy(), "mean": gmm.mean.numpy(),
                        "variance": gmm.variance.numpy()})
        assert (tuple(gmm.batch_shape), tuple(gmm.event_shape)) == ((4,), (2,))
        for value, words in ((torch.zeros(4, 3), "must match event_shape"), (torch.zeros(3, 2), "not broadcastable")):
            with pytest.raises(ValueError, match=words):
                gmm.log_prob(value)
    for key in records[1]:
        np.testing.assert_allclose(records[0][key], records[1][key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_mixture_in_a_compiled_function_and_its_gradient_as_torch(float64_default):
    def negative_log_likelihood(module, logits, loc, scale, values):
        component = module.Independent(module.Normal(loc, scale.exp()), 1)
        return -module.MixtureSameFamily(module.Categorical(logits=logits), component).log_prob(values).mean()

    arguments = (LOGITS, LOC, np.log(SCALE), VALUES)
    ours = kiln.compile(lambda *a: negative_log_likelihood(kiln.distributions, *a), fullgraph=True)(*arguments)
    our_grads = kiln.grad(lambda *a: negative_log_likelihood(kiln.distributions, *a), argnums=(0, 1, 2))(*arguments)
    torch = libraries("torch")[0]
    leaves = [torch.tensor(array, requires_grad=True) for array in arguments[:3]]
    theirs = negative_log_likelihood(torch.distributions, *leaves, torch.tensor(VALUES))
    theirs.backward()
    np.testing.assert_allclose(float(ours), theirs.item(), rtol=1e-10)
    for our_grad, leaf in zip(our_grads, leaves):
        np.testing.assert_allclose(our_grad, leaf.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_mixture_expand_as_torch(float64_default):
    shapes = []
    for name in ("kiln", "torch"):
        torch, mixture, _ = _mixture(name)
        expanded = mixture.expand((4, 2))
        values = torch.tensor(VALUES[0])
        shapes.append((tuple(expanded.batch_shape), tuple(expanded.event_shape), tuple(expanded.log_prob(values).shape)))
        np.testing.assert_allclose(expanded.log_prob(values).detach().numpy()[3], mixture.log_prob(values).detach().numpy())
    assert shapes[0] == shapes[1] == ((4, 2), (2,), (4, 2))


@pytest.mark.parametrize("name", ["kiln", "torch"])
@pytest.mark.parametrize("make", [
    lambda D, t: D.MixtureSameFamily(D.Normal(t.zeros(3), t.ones(3)), D.Normal(t.zeros(3), t.ones(3))),
    lambda D, t: D.MixtureSameFamily(D.Categorical(logits=t.zeros(3)), "Normal"),
    lambda D, t: D.MixtureSameFamily(D.Categorical(logits=t.zeros(4)), D.Normal(t.zeros(3), t.ones(3))),
    lambda D, t: D.MixtureSameFamily(D.Categorical(logits=t.zeros(2, 3)), D.Normal(t.zeros(5, 3), t.ones(5, 3))),
], ids=["mixture not Categorical", "component not a distribution", "component counts differ", "batch shapes differ"])
def test_mixture_refuses_as_torch(name, make):
    torch, nn, F = libraries(name)
    with pytest.raises(ValueError) as raised:
        make(torch.distributions, torch)
    if name == "kiln":
        assert "test_torch_surface_mixture_same_family.py" in str(raised.value)


def test_mixture_rsample_is_not_implemented_as_torch():
    for name in ("kiln", "torch"):
        torch, mixture, _ = _mixture(name)
        assert not mixture.has_rsample
        with pytest.raises(NotImplementedError):
            mixture.rsample()


def test_mixture_is_reached_through_torchs_submodule():
    assert kiln.distributions.mixture_same_family.MixtureSameFamily is kiln.distributions.MixtureSameFamily
