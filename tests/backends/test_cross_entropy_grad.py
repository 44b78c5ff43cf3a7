"""``nn.cross_entropy_grad``: the NumPy kernels (alone, and fused with the loss) against PyTorch's autograd.

Every option of the loss: class weight, ignore_index, label smoothing, probability targets, the three reductions,
a spatial axis, and a cotangent other than 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require_torch
from kiln.backends.numpy import lowering_losses

OPTIONS = [
    dict(),
    dict(weight=True),
    dict(ignore_index=1),
    dict(label_smoothing=0.2),
    dict(weight=True, ignore_index=2, label_smoothing=0.1),
    dict(probabilities=True),
    dict(probabilities=True, weight=True, label_smoothing=0.3),
]


def _inputs(rng, shape, options):
    logits = rng.standard_normal(shape) * 3
    classes = shape[1]
    if options.get("probabilities"):
        target = rng.dirichlet(np.ones(classes), size=(shape[0],) + shape[2:])
        target = np.moveaxis(target, -1, 1)
    else:
        target = rng.integers(0, classes, (shape[0],) + shape[2:])
    weight = rng.uniform(0.5, 2.0, classes) if options.get("weight") else None
    return logits, target, weight


def _torch_gradient(torch, logits, target, weight, cotangent, reduction, ignore_index, label_smoothing):
    x = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(
        x, torch.tensor(target), weight=None if weight is None else torch.tensor(weight), reduction=reduction,
        ignore_index=ignore_index, label_smoothing=label_smoothing)
    loss.backward(torch.tensor(cotangent))
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("shape", [(7, 5), (4, 6, 3)], ids=["2d", "spatial"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_gradient_and_fused_loss_match_torch(shape, reduction, options):
    torch = require_torch()
    rng = np.random.default_rng(len(shape) * 10 + len(options))
    logits, target, weight = _inputs(rng, shape, options)
    ignore_index, smoothing = options.get("ignore_index", -100), options.get("label_smoothing", 0.0)
    loss_shape = (shape[0],) + shape[2:] if reduction == "none" else ()
    cotangent = rng.uniform(0.5, 2.0, loss_shape)
    want_loss, want_grad = _torch_gradient(torch, logits, target, weight, cotangent, reduction, ignore_index, smoothing)
    attrs = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=smoothing)
    operands = (logits, target, cotangent) + (() if weight is None else (weight,))
    grad = lowering_losses.cross_entropy_grad(*operands, **attrs)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-12)
    out = np.empty_like(logits)
    loss = lowering_losses.softmax_cross_entropy_grad_into(*operands, out=out, **attrs)
    np.testing.assert_array_equal(out, grad)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-10, atol=1e-12)
    assert np.array_equal(loss, lowering_losses.cross_entropy(*((logits, target) + operands[3:]), **attrs))


def test_out_of_range_label_is_an_error_naming_it():
    logits, labels = np.zeros((3, 4)), np.array([0, 4, 1])
    with pytest.raises(Exception, match=r"label 4 at \(1,\) is outside \[0, 4\)"):
        lowering_losses.cross_entropy_grad(logits, labels, np.array(1.0), reduction="mean", ignore_index=7)
