"""Pending masked rows (``frontend/pending_masked_rows.py``) combined with rows already made under a mask the compiled
function's inputs give: torchvision's RetinaNet classification loss, ``sigmoid_focal_loss(cls_logits[valid],
gt_classes_target[valid])`` with ``valid = matched_idxs != -2``, computes ``p = sigmoid(inputs)`` (rows made, the mask
specialized and guarded) and then ``p * targets`` (``targets`` still pending): kiln refused that product as a
data-dependent shape, though the rows have one. Values and gradients against torch 2.13 in float64, each new mask a
new variant."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

LOGITS = np.random.default_rng(3).standard_normal((6, 2))
MATCHES = ([0, -2, 1, -1, -2, 0], [-1, -1, 1, -2, 0, 0], [0, -2, 1, -1, -2, 0])


def focal_rows(torch, F, logits, matched):
    """torchvision's ``sigmoid_focal_loss`` (alpha 0.25, gamma 2, summed) over the rows ``matched != -2``."""
    valid = matched != -2
    targets = torch.zeros_like(logits)
    targets[matched >= 0, 0] = 1.0
    inputs, targets = logits[valid], targets[valid]
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** 2)
    alpha_t = 0.25 * targets + (1 - 0.25) * (1 - targets)
    return (alpha_t * loss).sum()


def made_times_pending(torch, F, logits, matched):
    """Made rows on either side of pending ones, and pending rows of another source under the same mask."""
    valid = matched >= 0
    made = logits[valid].exp()
    return (made * logits[valid] + logits[valid] / made - (logits * 2)[valid] * made).sum()


@pytest.mark.parametrize("function", [focal_rows, made_times_pending])
def test_pending_rows_with_rows_made_under_an_input_mask_as_torch(float64_default, function):
    results = {}
    for name in ("kiln", "torch"):
        torch, _, F = libraries(name)
        run = kiln.compile(lambda *args: function(torch, F, *args), fullgraph=True) if torch is kiln else \
            (lambda *args: function(torch, F, *args))
        records = []
        for matched in MATCHES:
            logits = torch.tensor(LOGITS, requires_grad=True)
            loss = run(logits, torch.tensor(matched))
            loss.backward()
            records.append((loss.item(), np.array(logits.grad.numpy())))
        results[name] = records
    for (ours, our_grad), (theirs, their_grad) in zip(results["kiln"], results["torch"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
        np.testing.assert_allclose(our_grad, their_grad, rtol=1e-12, atol=1e-15)


def count_broadcast(x, y):
    x[x > 0] += y
    return x


def other_mask(x, y):
    x[x > 0] = x[x > 0] + y[y > 0]
    return x


def test_rows_under_input_masks_broadcast_or_combine_as_torch(float64_default):
    """With masks made from the inputs, rows under two different masks combine where the counts agree and a tensor
    broadcast along their count raises torch's broadcast error (both were the data-dependent-shape refusal)."""
    torch = libraries("torch")[0]
    x, y = np.array([1.0, -2.0, 3.0]), np.array([2.0, 1.0, -1.0])
    combined = kiln.compile(other_mask, fullgraph=True)(kiln.tensor(x), kiln.tensor(y))
    np.testing.assert_array_equal(combined.numpy(), other_mask(torch.tensor(x), torch.tensor(y)).numpy())
    with pytest.raises(RuntimeError) as theirs:
        count_broadcast(torch.tensor(x), torch.tensor(y))
    with pytest.raises(RuntimeError, match="count_broadcast") as ours:
        kiln.compile(count_broadcast, fullgraph=True)(kiln.tensor(x), kiln.tensor(y))
    assert str(theirs.value) in str(ours.value)


def intersection_of_boxes(torch, boxes1, boxes2, scale):
    """torchvision's ``_loss_inter_union`` (GIoU loss) on boxes a trained ``scale`` moves: its mask depends on the
    weight, so kiln cannot specialize it, and the write under it must stay one ``where``."""
    x1, y1, x2, y2 = (boxes1 * scale).unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    return intsctk.sum()


def test_rows_written_back_under_a_weight_made_mask_as_torch(float64_default):
    """``index_put``'s dtype check (4f7d7a6) read the pending rows' ``dtype`` through their values, which made them:
    under a mask made from a trained weight that raised the data-dependent-shape error (the compiled FCOS step's GIoU
    loss). The rows' dtype is their source's."""
    boxes1 = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0], [5.0, 5.0, 6.0, 6.0]])
    boxes2 = np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    results = {}
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        scale = torch.nn.Parameter(torch.tensor(1.25))
        function = lambda *boxes: intersection_of_boxes(torch, *boxes, scale)  # noqa: E731
        run = kiln.compile(function, fullgraph=True) if torch is kiln else function
        loss = run(torch.tensor(boxes1), torch.tensor(boxes2))
        loss.backward()
        results[name] = (loss.item(), scale.grad.item())
    np.testing.assert_allclose(results["kiln"], results["torch"], rtol=1e-12)
