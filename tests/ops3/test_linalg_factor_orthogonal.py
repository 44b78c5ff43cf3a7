"""``orthogonal(..., orthogonal_map="householder")`` (``frontend/parametrizations.py`` over
``kiln.linalg.householder_product``) against ``torch.nn.utils.parametrizations.orthogonal`` in float64.

Registration with and without the dynamic trivialization (the householder map is PyTorch's default for a non-square
weight), the parametrized weight and the gradient w.r.t. the original to rtol 1e-10, on tall, wide and batched
weights; assigning an orthogonal matrix without the trivialization (LAPACK's geqrf reflectors); the results are
orthogonal.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.nn.utils.parametrizations import orthogonal
from oracles import require

F64 = dict(rtol=1e-10, atol=1e-12)
SHAPES = [(5, 3), (3, 5), (2, 4, 3), (4, 4)]


def _twins(shape, use_trivialization, seed=0):
    """A module holding one ``shape`` weight, orthogonally parametrized (householder) in kiln and in torch."""
    torch = require("torch")
    weight = np.random.default_rng(seed).standard_normal(shape)
    ours, theirs = nn.Module(), torch.nn.Module()
    ours.weight = nn.Parameter(weight.copy())
    theirs.weight = torch.nn.Parameter(torch.tensor(weight))
    orthogonal(ours, orthogonal_map="householder", use_trivialization=use_trivialization)
    torch.nn.utils.parametrizations.orthogonal(theirs, orthogonal_map="householder", use_trivialization=use_trivialization)
    return torch, ours, theirs


def _assert_weight_and_gradient_match(torch, ours, theirs):
    original = ours.parametrizations.weight.original.data
    np.testing.assert_allclose(original, theirs.parametrizations.weight.original.detach().numpy(), **F64)
    np.testing.assert_allclose(ours.weight, theirs.weight.detach().numpy(), **F64)
    weights = np.random.default_rng(9).standard_normal(original.shape)
    grad = kiln.grad(lambda o: (ours.parametrizations.weight[0](o) * weights).sum())(original)
    (expected,) = torch.autograd.grad((theirs.weight * torch.tensor(weights)).sum(), theirs.parametrizations.weight.original)
    np.testing.assert_allclose(grad, expected.numpy(), **F64)


def _moved_below_the_diagonal(original, seed):
    """``original`` plus noise strictly below its diagonal: the diagonal holds the columns' signs (+-1), which the map
    reads through an int cast (truncating), so training never moves it."""
    noise = 0.4 * np.random.default_rng(seed).standard_normal(original.shape)
    tall = original.shape[-2] >= original.shape[-1]
    return original + (np.tril(noise, -1) if tall else np.triu(noise, 1))


def _assert_orthogonal(q):
    wide = q.shape[-2] < q.shape[-1]
    gram = q @ np.swapaxes(q, -1, -2) if wide else np.swapaxes(q, -1, -2) @ q
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(min(q.shape[-2:])), gram.shape), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_householder_without_trivialization_matches_torch(shape):
    torch, ours, theirs = _twins(shape, use_trivialization=False)
    assert list(ours.state_dict()) == ["parametrizations.weight.original"]
    _assert_weight_and_gradient_match(torch, ours, theirs)
    _assert_orthogonal(ours.weight)
    ours.parametrizations.weight.original.data[...] = _moved_below_the_diagonal(ours.parametrizations.weight.original.data, 4)
    theirs.parametrizations.weight.original.data.copy_(torch.tensor(ours.parametrizations.weight.original.data))
    _assert_weight_and_gradient_match(torch, ours, theirs)  # reflectors away from geqrf's, the diagonal's signs kept


@pytest.mark.parametrize("shape", SHAPES)
def test_householder_with_trivialization_matches_torch(shape):
    torch, ours, theirs = _twins(shape, use_trivialization=True)
    base = ours.parametrizations.weight[0].base.data  # a tall weight's completion is random: give torch kiln's
    theirs.parametrizations.weight[0].base.copy_(torch.tensor(base))
    original = _moved_below_the_diagonal(ours.parametrizations.weight.original.data, 3)
    ours.parametrizations.weight.original.data[...] = original
    theirs.parametrizations.weight.original.data.copy_(torch.tensor(original))
    _assert_weight_and_gradient_match(torch, ours, theirs)
    _assert_orthogonal(ours.weight)


def test_householder_is_the_default_for_a_non_square_weight_and_assigning_matches_torch():
    torch = require("torch")
    ours, theirs = orthogonal(nn.Linear(3, 5).double(), use_trivialization=False), torch.nn.Linear(3, 5).double()
    torch.nn.utils.parametrizations.orthogonal(theirs, use_trivialization=False)
    assert ours.parametrizations.weight[0].orthogonal_map == "householder"
    q = np.linalg.qr(np.random.default_rng(2).standard_normal((5, 3)))[0]
    ours.weight = q
    with torch.no_grad():
        theirs.weight = torch.tensor(q)
    _assert_weight_and_gradient_match(torch, ours, theirs)
    np.testing.assert_allclose(np.abs(ours.weight), np.abs(q), **F64)  # Q up to the columns' signs
