"""``kiln.autograd.grad`` fills the ``.grad`` of ``retain_grad()``'d tensors between its outputs and its inputs, as
``torch.autograd.grad`` does (torch's retains_grad hook runs with their node): an input that is retained too, and a
tensor of a model's forward whose gradient penalty (WGAN-GP's ``grad(critic(mix).sum(), mix)``) passes through it.
A retained tensor upstream of the inputs, or on a branch they do not feed, keeps its ``.grad``; leaves never get one
from ``grad``. kiln left every ``.grad`` as it was."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.array([0.5, -1.0, 2.0])


def _grads_left(lib, create_graph):
    """The ``.grad`` of each retained tensor and leaf after two ``autograd.grad`` calls, as arrays (None: none)."""
    x = lib.tensor(X, requires_grad=True)
    w = lib.tensor(X[::-1].copy(), requires_grad=True)
    upstream = x * 3
    upstream.retain_grad()
    y = upstream.sin() * 2
    y.retain_grad()
    off_path = w * 5
    off_path.retain_grad()
    q = y * y
    q.retain_grad()
    z = (q * 1.5).sum() + (off_path * off_path).sum()
    lib.autograd.grad(z, y, retain_graph=True, create_graph=create_graph)
    lib.autograd.grad(z, [q, w], retain_graph=True)
    return {name: None if t.grad is None else np.asarray(t.grad.detach())
            for name, t in dict(x=x, w=w, upstream=upstream, y=y, off_path=off_path, q=q).items()}


@pytest.mark.parametrize("create_graph", [False, True], ids=["plain", "create_graph"])
def test_retained_grads_filled_as_torchs(create_graph):
    torch = require_torch()
    theirs, ours = _grads_left(torch, create_graph), _grads_left(kiln, create_graph)
    assert {k for k, v in theirs.items() if v is None} == {"x", "w", "upstream"}
    assert {k for k, v in ours.items() if v is None} == {"x", "w", "upstream"}
    for name in ("y", "q", "off_path"):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6)


def test_a_retained_activation_gets_its_gradient_from_a_penalty():
    """A retained hidden layer of a critic: ``grad(critic(mix).sum(), mix)`` passes through it."""
    torch = require_torch()
    found = []
    for lib in (kiln, torch):
        lib.manual_seed(0)
        layer = lib.nn.Linear(3, 4).double()
        with lib.no_grad():
            layer.weight.copy_(lib.tensor(np.arange(12.0).reshape(4, 3) / 10))
            layer.bias.copy_(lib.tensor([0.1, -0.2, 0.3, 0.0]))
        mix = lib.tensor(X[None], requires_grad=True)
        hidden = layer(mix).tanh()
        hidden.retain_grad()
        (gradient,) = lib.autograd.grad(hidden.pow(2).sum(), mix)
        found.append((np.asarray(hidden.grad), np.asarray(gradient.detach()), layer.weight.grad))
    np.testing.assert_allclose(found[0][0], found[1][0])
    np.testing.assert_allclose(found[0][1], found[1][1])
    assert found[0][2] is None and found[1][2] is None
