"""``x[mask, -1] = 0`` (one bool mask among ints and slices) in a ``kiln.compile(fullgraph=True)`` step where the mask
has no values while tracing (computed from a trained weight): one ``where`` of the basic assignment with the mask's
dims taken whole (``frontend/tensor_setitem.py``). HashNeRF's ``outputs_flat[~keep_mask, -1] = 0`` raised "x[index] =
value takes ints, slices, ..." there. Losses, gradients and parameters vs torch 2.13 float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def masked_loss(lib, weight, x):
    out = x @ weight  # (6, 3)
    keep = out[:, 0] > 0  # from the trained weight: no values while tracing
    out[~keep, -1] = 0
    out[keep, :2] = lib.tensor([1.5, -0.5])  # a row for each selected element
    cube = (x[:, None, :] * out[:, :, None])  # (6, 3, 3)
    cube[:, keep[:3], 1] = 2.0  # the mask in the middle
    return (out ** 2).sum() + cube.sin().sum()


def _train(lib, compiled, steps=3):
    rng = np.random.default_rng(0)
    weight = lib.nn.Parameter(lib.tensor(rng.standard_normal((3, 3))))
    optimizer = lib.optim.SGD([weight], lr=0.05)

    def step(x):
        optimizer.zero_grad()
        loss = masked_loss(lib, weight, x)
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [float(run(lib.tensor(rng.standard_normal((6, 3))))) for _ in range(steps)]
    return losses, np.array(weight.detach().numpy()), np.array(weight.grad.numpy())


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_a_traced_mask_among_ints_and_slices_assigns_as_torch(compiled, float64_default):
    ours, theirs = _train(kiln, compiled), _train(float64_default, False)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

