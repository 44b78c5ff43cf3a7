"""Integer and bool values (an ``argmax``'s or ``topk``'s indices, a comparison's mask, ``.long()``) carry no gradient,
as in PyTorch: a parameter or marked tensor the loss reaches only through them gets no ``.grad`` (None, so an optimizer
does not step it: AdamW's weight decay leaves it alone), where kiln gave zeros; such values do not require grad. Compared
with torch in float64 (a hard-routed MoE's gate, read only through its argmax, is the case that showed it)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

ROUTES = {
    "argmax index": lambda lib, gate, w, x: w[(x @ gate).argmax(-1)].sum(),
    "topk indices": lambda lib, gate, w, x: w[lib.topk(x @ gate, 2, dim=-1).indices].pow(2).sum(),
    "comparison mask": lambda lib, gate, w, x: (w.sum(-1) * ((x @ gate) > 0).to(x.dtype).sum(0)).sum(),
    "long() then float()": lambda lib, gate, w, x: (w.sum() * (gate * 3).long().float().sum()),
}


def _run(lib, route):
    rng = np.random.default_rng(0)
    gate, w = (lib.nn.Parameter(lib.tensor(rng.standard_normal(shape))) for shape in ((3, 4), (4, 2)))
    x = lib.tensor(rng.standard_normal((5, 3)))
    optimizer = lib.optim.AdamW([gate, w], lr=0.1, weight_decay=0.5)
    loss = ROUTES[route](lib, gate, w, x)
    loss.backward()
    grads = [None if p.grad is None else np.array(p.grad) for p in (gate, w)]
    optimizer.step()
    return loss.item(), grads, [np.array(p.detach().numpy()) for p in (gate, w)]


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_parameter_read_only_through_integers_gets_no_grad_as_torch(route, float64_default):
    require_torch()
    (our_loss, our_grads, ours), (their_loss, their_grads, theirs) = (_run(lib, route) for lib in (kiln, float64_default))
    np.testing.assert_allclose(our_loss, their_loss, rtol=1e-13)
    assert our_grads[0] is None and their_grads[0] is None  # the gate: reached through integers only
    np.testing.assert_allclose(our_grads[1], their_grads[1], rtol=1e-13)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-13)  # the gate not stepped (no weight decay either)


def test_integer_results_do_not_require_grad_as_torch(float64_default):
    torch = float64_default
    for lib in (kiln, torch):
        x = lib.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
        assert x.requires_grad and (x * 2).requires_grad
        assert not x.argmax(-1).requires_grad and not (x > 0).requires_grad and not x.long().requires_grad
        w = lib.tensor(np.ones(3), requires_grad=True)
        (w * x.argmax()).sum().backward()  # a marked tensor read only through its argmax
        assert x.grad is None and w.grad is not None


def test_mixed_float_and_integer_paths_keep_the_float_gradient_as_torch(float64_default):
    """A router read through its top-k values (float) and indices (int): the gradient flows through the values only."""
    torch = float64_default

    def loss(lib, gate, w, x):
        values, indices = lib.topk((x @ gate).softmax(-1), 2, dim=-1)
        return (w[indices].sum(-1) * values).sum()

    results = []
    for lib in (kiln, torch):
        rng = np.random.default_rng(1)
        gate, w = (lib.tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((3, 4), (4, 2)))
        loss(lib, gate, w, lib.tensor(rng.standard_normal((5, 3)))).backward()
        results.append([np.array(gate.grad), np.array(w.grad)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
