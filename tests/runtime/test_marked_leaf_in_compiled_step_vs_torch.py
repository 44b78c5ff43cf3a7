"""A tensor marked after it was made (``log_alpha = torch.tensor(x); log_alpha.requires_grad = True``, Yarats' SAC;
``torch.randn(3).requires_grad_()``) trains in a ``kiln.compile``'d step as one made with ``requires_grad=True``
does: the step differentiates it and its optimizer updates it, as torch's eager loop. The compiled step refused
('backward(): the loss depends on no trained parameter of this step') and ran eagerly."""

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()


def _marked(lib, how):
    if how == "attribute":
        t = lib.tensor([0.1, -0.3], dtype=lib.float64)
        t.requires_grad = True
        return t
    return lib.tensor([0.5, 1.5], dtype=lib.float64).mul(2).requires_grad_()  # a result that needs no grad: a leaf


@pytest.mark.parametrize("how", ["attribute", "requires_grad_"])
def test_a_marked_leaf_trains_in_a_compiled_step_as_torch(how):
    results = {}
    for lib in (torch, kiln):
        weights = _marked(lib, how)
        optimizer = lib.optim.Adam([weights], lr=0.1)

        def step(x):
            optimizer.zero_grad()
            loss = ((x * weights.exp()).sum() - 1.0) ** 2
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # compiled: no eager fallback
            losses = [run(lib.tensor([1.0, 2.0], dtype=lib.float64) * (k + 1)).item() for k in range(3)]
        results[lib] = losses, weights.detach().numpy().copy(), weights.grad.numpy().copy()
        assert weights.is_leaf and weights.requires_grad
    for got, expected in zip(results[kiln], results[torch]):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_marked_view_keeps_its_mark_on_the_chain():
    """A view is not made a leaf of its own: a gradient through it still reaches its use, as torch's."""
    base = kiln.tensor([1.0, 2.0, 3.0])
    view = base[:2].requires_grad_()
    (view * view).sum().backward()
    np.testing.assert_array_equal(np.asarray(view.grad), [2.0, 4.0])
