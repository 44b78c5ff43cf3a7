"""``F.binary_cross_entropy_with_logits`` / ``nn.BCEWithLogitsLoss`` with logits and targets of two float dtypes, as
PyTorch 2.13: accepted (NCF's ``loss_function(prediction, label.float())`` with a float64 model), the loss in the
target's dtype (PyTorch's kernel writes ``(1 - target).mul_(input)...`` in place), the gradient reaching the logits in
theirs and equal to PyTorch's. kiln refused the pair (``nn.bce_with_logits needs float logits and targets of one
type``). ``F.binary_cross_entropy`` refuses it in both (tests/frontend/test_bce_target_dtype_vs_torch.py)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

LOGITS, TARGETS, WEIGHTS = np.linspace(-3.0, 2.0, 6), np.array([0.0, 1.0, 1.0, 0.0, 0.25, 1.0]), np.arange(1.0, 7.0)


def loss_and_gradient(name, input_dtype, target_dtype, reduction, weighted, pos_weighted, through_module):
    lib, nn, F = libraries(name)
    x = lib.tensor(LOGITS, dtype=getattr(lib, input_dtype), requires_grad=True)
    y = lib.tensor(TARGETS, dtype=getattr(lib, target_dtype))
    options = dict(weight=lib.tensor(WEIGHTS) if weighted else None, pos_weight=lib.tensor([2.0]) if pos_weighted else None)
    if through_module:
        loss = nn.BCEWithLogitsLoss(reduction=reduction, **options)(x, y)
    else:
        loss = F.binary_cross_entropy_with_logits(x, y, reduction=reduction, **options)
    loss.sum().backward()
    return str(loss.dtype).split(".")[-1], np.array(loss.detach().numpy()), str(x.grad.dtype).split(".")[-1], np.array(x.grad.numpy())


@pytest.mark.parametrize("through_module", [False, True], ids=["F", "nn.BCEWithLogitsLoss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("input_dtype, target_dtype", [("float64", "float32"), ("float32", "float64"), ("float16", "float32")])
def test_two_float_dtypes_give_torchs_loss_dtype_and_gradient(input_dtype, target_dtype, reduction, through_module):
    require_torch()
    theirs = loss_and_gradient("torch", input_dtype, target_dtype, reduction, False, False, through_module)
    ours = loss_and_gradient("kiln", input_dtype, target_dtype, reduction, False, False, through_module)
    assert (ours[0], ours[2]) == (theirs[0], theirs[2]) == (target_dtype, input_dtype)
    loose = dict(rtol=1e-3, atol=1e-3) if "float16" in (input_dtype, target_dtype) else dict(rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours[1], theirs[1], **loose)  # the loss: to the narrower dtype's precision
    exact = loose if input_dtype != "float64" else dict(rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(ours[3], theirs[3], **exact)  # float64 logits: their gradient in float64, as torch's


@pytest.mark.parametrize("weighted, pos_weighted", [(True, False), (False, True), (True, True)], ids=["weight", "pos_weight", "both"])
def test_weights_with_two_float_dtypes_as_torch(weighted, pos_weighted):
    require_torch()
    theirs = loss_and_gradient("torch", "float64", "float32", "mean", weighted, pos_weighted, True)
    ours = loss_and_gradient("kiln", "float64", "float32", "mean", weighted, pos_weighted, True)
    assert (ours[0], ours[2]) == (theirs[0], theirs[2]) == ("float32", "float64")
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)
    exact = dict(rtol=1e-6, atol=1e-8) if pos_weighted else dict(rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(ours[3], theirs[3], **exact)  # torch's pos_weight backward rounds through float32 here
