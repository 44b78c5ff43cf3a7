"""A loss's ``weight`` / ``pos_weight`` made inside a compiled function (``F.binary_cross_entropy_with_logits(...,
pos_weight=torch.tensor([3.0]))`` in the step, a weight computed there) is a traced tensor; it was refused ("a constant of the loss"), so a
U-Net's compiled step ran eagerly. It is an operand now, without gradient as in PyTorch; values and input gradients
vs torch 2.13 in float64, in ``kiln.compile`` (traced) and eagerly."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

RNG = np.random.default_rng(0)
LOGITS, PROBABILITIES = RNG.standard_normal((4, 3)), RNG.random((4, 3))
LABELS = np.array([0, 2, 1, 2])

LOSSES = {
    "bce_with_logits pos_weight": lambda F, lib, x: F.binary_cross_entropy_with_logits(
        x, lib.tensor(PROBABILITIES), pos_weight=lib.tensor([3.0, 1.0, 0.5])),
    "bce_with_logits weight": lambda F, lib, x: F.binary_cross_entropy_with_logits(
        x, lib.tensor(PROBABILITIES), weight=lib.tensor(PROBABILITIES) * 2, pos_weight=lib.ones(3) * 2),
    "BCEWithLogitsLoss module": lambda F, lib, x: lib.nn.BCEWithLogitsLoss(pos_weight=lib.tensor([3.0]))(x, lib.tensor(PROBABILITIES)),
    "binary_cross_entropy weight": lambda F, lib, x: F.binary_cross_entropy(
        x.sigmoid(), lib.tensor(PROBABILITIES), weight=lib.tensor(PROBABILITIES) + 0.5),
    "cross_entropy weight": lambda F, lib, x: F.cross_entropy(x, lib.tensor(LABELS), weight=lib.tensor([1.0, 2.0, 0.5]) * 2),
    "nll_loss weight": lambda F, lib, x: F.nll_loss(x.log_softmax(-1), lib.tensor(LABELS), weight=lib.tensor([1.0, 2.0, 0.5])),
    "multilabel_soft_margin_loss weight": lambda F, lib, x: F.multilabel_soft_margin_loss(
        x, lib.tensor((PROBABILITIES > 0.5) * 1.0), weight=lib.tensor([1.0, 2.0, 0.5])),
    "multi_margin_loss weight": lambda F, lib, x: F.multi_margin_loss(x, lib.tensor(LABELS), weight=lib.tensor([1.0, 2.0, 0.5])),
}


def _kiln_loss_and_grad(loss, compiled):
    class Head(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = kiln.nn.Parameter(kiln.tensor(LOGITS))

        def forward(self, shift):
            return loss(kiln.nn.functional, kiln, self.x + shift)

    head = Head()
    value = (kiln.compile(head, fullgraph=True) if compiled else head)(kiln.zeros(3))  # fullgraph: no eager fallback
    value.backward()
    return value.item(), head.x.grad.numpy()


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_weight_made_in_the_step_is_torchs(name, compiled, float64_default):
    torch = float64_default
    x = torch.tensor(LOGITS, requires_grad=True)
    theirs = LOSSES[name](torch.nn.functional, torch, x)
    theirs.backward()
    ours, our_grad = _kiln_loss_and_grad(LOSSES[name], compiled)
    np.testing.assert_allclose(ours, theirs.item(), rtol=1e-13)
    np.testing.assert_allclose(our_grad, x.grad.numpy(), rtol=1e-12, atol=1e-15)

