"""``mse_loss``, ``l1_loss`` and ``smooth_l1_loss`` promote an input and a target of different float dtypes, as
PyTorch's: a float64 critic's value against ``torch.tensor([R])`` (float32 by default), as actor_critic.py writes it
after ``model.double()``. Values, result dtypes and gradients against torch in float64, eagerly and traced."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require

LOSSES = ["mse_loss", "l1_loss", "smooth_l1_loss"]
INPUT = np.array([0.3, -1.7, 2.25, 0.05])
TARGET = np.array([0.5, 0.1, -0.4, 0.05])


@pytest.mark.parametrize("input_dtype, target_dtype", [("float64", "float32"), ("float32", "float64")])
@pytest.mark.parametrize("loss", LOSSES)
def test_mixed_float_dtypes_promote_as_torch_eagerly(loss, input_dtype, target_dtype):
    torch = require("torch")
    x = kiln.tensor(INPUT, dtype=getattr(kiln, input_dtype), requires_grad=True)
    ours = getattr(F, loss)(x * 2.0, kiln.tensor(TARGET, dtype=getattr(kiln, target_dtype)), reduction="sum")
    ours.backward()
    torch_x = torch.tensor(INPUT, dtype=getattr(torch, input_dtype), requires_grad=True)
    theirs = getattr(torch.nn.functional, loss)(torch_x * 2.0, torch.tensor(TARGET, dtype=getattr(torch, target_dtype)), reduction="sum")
    theirs.backward()
    assert ours.dtype == kiln.float64 and theirs.dtype == torch.float64
    tolerance = 1e-12 if input_dtype == "float64" else 1e-6
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-12)
    np.testing.assert_allclose(x.grad, torch_x.grad.numpy(), rtol=tolerance)
    assert x.grad.dtype == torch_x.grad.numpy().dtype


@pytest.mark.parametrize("loss", LOSSES)
def test_a_traced_float64_prediction_against_a_float32_target_differentiates_as_torch(loss):
    torch = require("torch")
    target = TARGET.astype(np.float32)
    gradient = kiln.grad(lambda x, t: getattr(F, loss)(x.sin(), t))(INPUT, target)
    torch_x = torch.tensor(INPUT, requires_grad=True)
    getattr(torch.nn.functional, loss)(torch_x.sin(), torch.tensor(target)).backward()
    np.testing.assert_allclose(gradient, torch_x.grad.numpy(), rtol=1e-12)


def test_a_shape_mismatch_is_still_an_error_naming_the_line():
    with pytest.raises(kiln.TraceError, match=r"(?s)test_port_misc_loss_promotion.py.*differ in shape"):
        F.mse_loss(kiln.tensor(INPUT, requires_grad=True), kiln.tensor(TARGET[:3], dtype=kiln.float32))
