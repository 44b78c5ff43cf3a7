"""``kiln.distributions.constraints`` answers torch's names (``constraints.real``, ``constraints.interval(-1.0,
1.0)``...) with torch's ``check`` results: Denis Yarats' SAC writes its ``TanhTransform`` with ``domain =
pyd.constraints.real`` and ``codomain = pyd.constraints.interval(-1.0, 1.0)``, and imports
``pyd.transformed_distribution.TransformedDistribution``; kiln had neither module (AttributeError)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

VALUES = np.array([[-2.0, -1.0, 0.0, 0.5], [1.0, 3.0, np.inf, np.nan]])
NAMED = ["real", "positive", "nonnegative", "unit_interval", "boolean", "nonnegative_integer", "positive_integer"]
MADE = [("interval", (-1.0, 1.0)), ("half_open_interval", (-1.0, 1.0)), ("greater_than", (0.0,)),
        ("greater_than_eq", (0.0,)), ("less_than", (1.0,)), ("integer_interval", (0, 2))]
VECTORS = np.array([[0.2, 0.8], [0.5, 0.6], [-0.1, 1.1], [1.0, 0.0]])


def torch_and_ours(name, args=None):
    torch = require_torch()
    theirs, ours = getattr(torch.distributions.constraints, name), getattr(kiln.distributions.constraints, name)
    return (theirs, ours) if args is None else (theirs(*args), ours(*args))


@pytest.mark.parametrize("name", NAMED)
def test_named_constraints_check_as_torch(name):
    torch = require_torch()
    theirs, ours = torch_and_ours(name)
    np.testing.assert_array_equal(np.asarray(ours.check(VALUES)), theirs.check(torch.tensor(VALUES)).numpy())
    assert ours.event_dim == theirs.event_dim


@pytest.mark.parametrize("name, args", MADE)
def test_made_constraints_check_as_torch(name, args):
    torch = require_torch()
    theirs, ours = torch_and_ours(name, args)
    np.testing.assert_array_equal(np.asarray(ours.check(VALUES)), theirs.check(torch.tensor(VALUES)).numpy())


def test_kiln_names_are_torch_names():
    torch = require_torch()
    assert set(kiln.distributions.constraints.__all__) <= set(torch.distributions.constraints.__all__)


def test_vector_constraints_check_per_event_as_torch():
    torch = require_torch()
    for theirs, ours in (torch_and_ours("simplex"), torch_and_ours("real_vector"),
                         (torch.distributions.constraints.independent(torch.distributions.constraints.positive, 1),
                          kiln.distributions.constraints.independent(kiln.distributions.constraints.positive, 1))):
        np.testing.assert_array_equal(np.asarray(ours.check(VECTORS)), theirs.check(torch.tensor(VECTORS)).numpy())
        assert ours.event_dim == theirs.event_dim == 1


MATRICES = np.array([[[2.0, 1.0], [1.0, 2.0]], [[1.0, 3.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]],
                     [[1.0, 0.0], [0.5, 1.0]]])


@pytest.mark.parametrize("name", ["lower_triangular", "square", "symmetric", "positive_semidefinite", "corr_cholesky",
                                  "lower_cholesky", "positive_definite"])
def test_matrix_constraints_check_as_torch(name):
    torch = require_torch()
    theirs, ours = torch_and_ours(name)
    # torch's positive (semi)definite checks eigenvalues only when every matrix is symmetric: compared on such batches
    definite = name.startswith("positive")
    for matrices in (MATRICES[[0, 2]],) if definite else (MATRICES, MATRICES[[0, 2]]):
        np.testing.assert_array_equal(np.asarray(ours.check(matrices)), theirs.check(torch.tensor(matrices)).numpy())
    assert ours.event_dim == theirs.event_dim == 2
    if definite:  # kiln answers per matrix: the symmetric indefinite one fails beside an asymmetric one
        assert np.asarray(ours.check(MATRICES)).tolist() == [True, False, False, False]


def test_cat_stack_and_multinomial_constraints_check_as_torch():
    torch = require_torch()
    rows = np.array([[0.5, 2.0, -1.0], [0.0, 3.0, 1.0]])
    for make in (lambda c: c.cat([c.unit_interval, c.positive], dim=-1, lengths=[1, 2]),
                 lambda c: c.stack([c.unit_interval, c.positive, c.real], dim=-1), lambda c: c.multinomial(4)):
        theirs, ours = make(torch.distributions.constraints), make(kiln.distributions.constraints)
        np.testing.assert_array_equal(np.asarray(ours.check(rows)), theirs.check(torch.tensor(rows)).numpy())


def test_yarats_squashed_normal_as_torch():
    """pytorch_sac's ``TanhTransform`` subclass on ``constraints`` and its ``SquashedNormal``: sample, log-prob,
    mean and gradients vs torch 2.13 (the draw fed to both)."""
    torch = require_torch()
    from e2e.sac_program import yarats_squashed_normal

    eps = np.random.default_rng(0).standard_normal((4, 2))
    results = []
    for lib in (kiln, torch):
        SquashedNormal = yarats_squashed_normal(lib)
        mu = lib.tensor(np.linspace(-1, 1, 8).reshape(4, 2), requires_grad=True)
        log_std = lib.tensor(np.linspace(-2, 0.5, 8).reshape(4, 2), requires_grad=True)
        dist = SquashedNormal(mu, log_std.exp())
        action = dist.transforms[0](mu + log_std.exp() * lib.tensor(eps))  # rsample's formula, with the noise given
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        (log_prob.sum() + dist.mean.sum()).backward()
        results.append([np.array(t.detach().numpy()) for t in (action, log_prob, dist.mean, mu.grad, log_std.grad)])
    for ours, theirs in zip(*results):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
