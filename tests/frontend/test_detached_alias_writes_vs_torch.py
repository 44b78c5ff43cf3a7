"""Writes through a detached alias (``x.data``, ``x.detach()``) of a leaf that requires grad, and writes under
``no_grad`` to a marked leaf that is itself a view, against torch 2.13: the same code runs on both libraries.

PyTorch differentiates no write through ``.data`` or ``detach()``, so it allows one into a leaf that requires grad
(or a view of one) with gradients on; and a leaf stays the leaf ``backward()`` fills after a write under ``no_grad``,
whatever storage it shares. TRADES' l_2 attack writes both: ``delta = Variable(delta.data, requires_grad=True)`` (a
detached view of the start, marked), then ``delta.data.add_(x_natural)``, ``delta.data.clamp_(0, 1).sub_(x_natural)``,
``delta.data.renorm_(...)`` between its backward passes; adversarial code writes ``x = x0.detach();
x.requires_grad_()`` then ``with torch.no_grad(): x.clamp_(0, 1)``. kiln refused the first (``LeafInPlaceError``) and,
after the second, dropped the leaf from every later gradient (``backward()``: nothing to differentiate)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

START = np.arange(6, dtype=np.float64).reshape(2, 3) / 4 - 0.5


def _variable(lib):
    """``Variable(delta.data, requires_grad=True)``: a detached view of a plain tensor, marked."""
    return lib.autograd.Variable(lib.tensor(START).data, requires_grad=True)


def _detached(lib):
    return lib.tensor(START).detach().requires_grad_()


def _row_of_marked(lib):
    """A view (a row) of a marked leaf: written through its detach, the leaf is."""
    return lib.tensor(START).requires_grad_()


LEAVES = {"variable": _variable, "detached_then_marked": _detached, "marked": _row_of_marked}

ALIAS_WRITES = {
    "data_add_": lambda lib, t: t.data.add_(1.0),
    "detach_mul_": lambda lib, t: t.detach().mul_(3.0),
    "data_clamp_then_sub_": lambda lib, t: t.data.clamp_(0, 1).sub_(lib.full((2, 3), 0.25)),
    "data_renorm_": lambda lib, t: t.data.renorm_(p=2, dim=0, maxnorm=0.5),
    "row_detach_fill_": lambda lib, t: t[0].detach().fill_(2.0),
    "data_index_assignment": lambda lib, t: t.data.__setitem__((slice(None), 1), -1.0),
}


def _written_then_differentiated(name, leaf, write):
    """The leaf's values after ``write`` (gradients on) and its ``.grad`` of ``(leaf ** 2).sum()`` after it."""
    lib, _, _ = libraries(name)
    tensor = LEAVES[leaf](lib)
    write(lib, tensor)
    (tensor ** 2).sum().backward()
    return np.array(tensor.detach().numpy()), np.array(tensor.grad.detach().numpy()), tensor.is_leaf, tensor.requires_grad


@pytest.mark.parametrize("write", ALIAS_WRITES)
@pytest.mark.parametrize("leaf", LEAVES)
def test_a_write_through_a_detached_alias_of_a_leaf_is_allowed_as_torch(leaf, write):
    ours = _written_then_differentiated("kiln", leaf, ALIAS_WRITES[write])
    theirs = _written_then_differentiated("torch", leaf, ALIAS_WRITES[write])
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(mine, other, rtol=1e-15)
    assert not np.allclose(ours[0], START)  # it was written


NO_GRAD_WRITES = {
    "clamp_": lambda lib, t: t.clamp_(0, 0.5),
    "mul_": lambda lib, t: t.mul_(3.0),
    "add_then_index_assignment": lambda lib, t: (t.add_(1.0), t.__setitem__(0, 0.0)),
    "row_fill_": lambda lib, t: t[1].fill_(2.0),
}


@pytest.mark.parametrize("write", NO_GRAD_WRITES)
@pytest.mark.parametrize("leaf", ["variable", "detached_then_marked"])
def test_a_marked_view_written_under_no_grad_stays_the_leaf_backward_fills(leaf, write):
    results = []
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        tensor = LEAVES[leaf](lib)
        for _ in range(2):  # written, differentiated, written again: .grad accumulates on the same leaf
            with lib.no_grad():
                NO_GRAD_WRITES[write](lib, tensor)
            (tensor ** 3).sum().backward()
        results.append((np.array(tensor.detach().numpy()), np.array(tensor.grad.detach().numpy()), tensor.is_leaf))
    for mine, other in zip(*results):
        np.testing.assert_allclose(mine, other, rtol=1e-15)


def test_trades_l2_projection_between_backward_passes_as_torch():
    """trades.py's l_2 branch on a tiny linear 'model': SGD on ``delta``, its gradient renormed in place, then the
    projection written through ``delta.data`` (add_, clamp_, sub_, renorm_), three rounds."""
    rng = np.random.default_rng(0)
    x, w, noise = rng.uniform(size=(2, 3)), rng.standard_normal((3, 2)), rng.standard_normal((2, 3))
    results = []
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        x_natural, weight = lib.tensor(x), lib.tensor(w)
        delta = lib.autograd.Variable((0.001 * lib.tensor(noise)).data, requires_grad=True)
        optimizer_delta = lib.optim.SGD([delta], lr=0.2)
        for _ in range(3):
            optimizer_delta.zero_grad()
            loss = (-1) * ((x_natural + delta) @ weight).tanh().sum()
            loss.backward()
            grad_norms = delta.grad.view(2, -1).norm(p=2, dim=1)
            delta.grad.div_(grad_norms.view(-1, 1))
            optimizer_delta.step()
            delta.data.add_(x_natural)
            delta.data.clamp_(0, 1).sub_(x_natural)
            delta.data.renorm_(p=2, dim=0, maxnorm=0.3)
        results.append(np.array(delta.detach().numpy()))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-13, atol=1e-15)
