"""``mse_loss``, ``l1_loss``, ``smooth_l1_loss`` and ``huber_loss`` of a target shaped differently from the input
broadcast the two, with PyTorch's UserWarning, as torch 2.13 does: a critic's ``(B, 1)`` values against ``(B,)``
costs (attention-learn-to-route's ``CriticBaseline``: ``F.mse_loss(v, c.detach())``) score all ``B x B`` pairs.
Values and gradients against torch in float64, eagerly and compiled; shapes that do not broadcast stay an error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries

LOSSES = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"]
VALUES = np.random.default_rng(0).standard_normal((5, 1))
COSTS = np.random.default_rng(1).standard_normal(5)


def loss_and_gradient(name, loss, reduction, compiled=False):
    torch, nn, F = libraries(name)
    v = torch.tensor(VALUES, requires_grad=True)

    def score(v, c):
        return getattr(F, loss)(v * 2.0, c, reduction=reduction)

    run = kiln.compile(score, fullgraph=True) if compiled and torch is kiln else score
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = run(v, torch.tensor(COSTS))
    value.sum().backward()
    messages = [str(w.message).replace("kiln.", "torch.") for w in caught if "target size" in str(w.message)]
    return value.detach().numpy(), v.grad.numpy(), messages, [w.filename for w in caught if "target size" in str(w.message)]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", LOSSES)
def test_a_column_against_a_vector_broadcasts_and_warns_as_torch(loss, reduction, compiled):
    value, grad, messages, files = loss_and_gradient("kiln", loss, reduction, compiled)
    theirs, their_grad, their_messages, _ = loss_and_gradient("torch", loss, reduction)
    np.testing.assert_allclose(value, theirs, rtol=1e-12)
    np.testing.assert_allclose(grad, their_grad, rtol=1e-12)
    assert value.shape == theirs.shape == (() if reduction != "none" else (5, 5))
    assert messages == their_messages == [
        "Using a target size (torch.Size([5])) that is different to the input size (torch.Size([5, 1])). This will "
        "likely lead to incorrect results due to broadcasting. Please ensure they have the same size."]
    assert files == [__file__]


def test_the_loss_module_broadcasts_too():
    torch = libraries("torch")[0]
    with pytest.warns(UserWarning, match="different to the input size"):
        ours = kiln.nn.MSELoss()(kiln.tensor(VALUES), kiln.tensor(COSTS))
    with pytest.warns(UserWarning, match="different to the input size"):
        theirs = torch.nn.MSELoss()(torch.tensor(VALUES), torch.tensor(COSTS))
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_shapes_that_do_not_broadcast_are_an_error_naming_the_line(loss):
    expected = rf"(?s)test_regression_loss_broadcast.py.*{loss}: input tensor<3x2xf32> and target tensor<4xf32> differ"
    with pytest.warns(UserWarning), pytest.raises(kiln.TraceError, match=expected + " in shape and do not broadcast"):
        getattr(kiln.nn.functional, loss)(kiln.zeros(3, 2), kiln.zeros(4))
