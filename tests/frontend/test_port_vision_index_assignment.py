"""Integer index arrays over the leading dims, as PyTorch's advanced indexing: assignment (``index_put_``: the
Forward-Forward example's ``x_[range(x.shape[0]), y] = x.max()``, ``x[[0, 2]] = row``, ``x[idx, 3] = v``) and reading
(a gather: its ``torch.tensor(allowed)[torch.randint(n, size=(1,))]``, ``x[rows, cols]``). Values and gradients against
torch in float64, eagerly and traced; kiln used to refuse every integer index array."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

X = np.random.default_rng(0).normal(size=(5, 12))
LABELS = np.array([3, 0, 9, 3, 1])


def overlay(lib, x, y):
    """The example's overlay_y_on_x: the first 10 features zeroed, the label's one set to the image's max."""
    x_ = x.clone()
    x_[:, :10] *= 0.0
    x_[range(x.shape[0]), y] = x.max()
    return x_


def rows_and_points(lib, x, y):
    z = x * 1.0
    z[[0, 2]] = x[1] * 2.0  # whole rows, the value broadcast
    z[y[:2], 3] = -x[4, :2]  # an index tensor and an int
    z[-1, [0, -1]] = 7.0  # negative indices wrap
    return z


def gathered(lib, x, y):
    y = y % 5
    picked = x[y] * 2.0 + x[[4, 0]].sum(0)  # rows at a tensor's and a list's indices
    return picked[:, :4] + x[y[:2, None], lib.tensor([[1, -1]])].sum() + x[range(5), 3][:, None]  # broadcast pairs, a range


PROGRAMS = [overlay, rows_and_points, gathered]


@pytest.mark.parametrize("program", PROGRAMS)
def test_eager_values_and_gradients_match_torch_in_float64(program):
    torch = require_torch()
    x = kiln.tensor(X, requires_grad=True)
    out = program(kiln, x * 1.0, kiln.tensor(LABELS))
    weights = np.random.default_rng(1).normal(size=out.shape)
    (out * weights).sum().backward()
    leaf = torch.tensor(X, requires_grad=True)
    expected = program(torch, leaf * 1.0, torch.tensor(LABELS))
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(x.grad, leaf.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("program", PROGRAMS)
def test_traced_values_and_gradients_match_torch_in_float64(program):
    torch = require_torch()
    values = kiln.compile(lambda x, y: program(kiln, x, y), batch_dim=None)(X, LABELS)
    weights = np.random.default_rng(2).normal(size=values.shape)
    grad = kiln.grad(lambda x, y: (program(kiln, x, y) * weights).sum())(X, LABELS)
    leaf = torch.tensor(X, requires_grad=True)
    expected = program(torch, leaf, torch.tensor(LABELS))
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(values, expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_an_index_array_after_a_slice_writes_as_torch():
    torch = require_torch()

    def after_a_slice(x):
        z = x * 1.0
        z[:, [0, 1]] = 0.0
        return z

    np.testing.assert_array_equal(kiln.compile(after_a_slice, batch_dim=None)(X), after_a_slice(torch.tensor(X)).numpy())


@pytest.mark.parametrize("bad", [
    lambda lib, x: x[[0, 7]],
    lambda lib, x: x[lib.tensor([1, -6])],
    lambda lib, x: x[[1], [12]],
    lambda lib, x: x.clone().__setitem__(([0, 5], 1), 0.0),
], ids=["list", "eager-tensor", "second-dim", "assignment"])
def test_an_index_out_of_bounds_is_refused_at_the_users_line_as_torch_does(bad):
    torch = require_torch()
    with pytest.raises(IndexError, match="out of bounds"):
        bad(torch, torch.tensor(X))
    with pytest.raises(TraceError, match=r"test_port_vision_index_assignment\.py:\d+[\s\S]*out of bounds for dim"):
        bad(kiln, kiln.tensor(X))
