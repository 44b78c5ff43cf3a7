"""``vmap(grad(compute_loss, has_aux=True))``: per-sample gradients with each sample's loss and predictions carried
out as ``aux`` (the per-sample-gradients tutorial's variant, DP-SGD loops that log the per-sample losses). kiln's
``grad(has_aux=True)`` seeded its pullback with ``np.ones_like(np.asarray(output))``, which inside ``vmap`` (or
``kiln.compile``) reads a traced tensor's values and raised TracedArrayError; the seed is now built from the
output's type (``runtime/torch_func.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

RNG = np.random.default_rng(0)
W, B, XS, YS = RNG.standard_normal((4, 3)), RNG.standard_normal(3), RNG.standard_normal((5, 4)), RNG.integers(0, 3, 5)


def per_sample(lib):
    F = lib.nn.functional

    def compute_loss(params, x, y):
        logits = x.unsqueeze(0) @ params["w"] + params["b"]
        loss = F.cross_entropy(logits, y.unsqueeze(0))
        return loss, (loss.detach(), logits.squeeze(0))

    return lib.func.vmap(lib.func.grad(compute_loss, has_aux=True), in_dims=(None, 0, 0))


def run(lib, compiled=False):
    fn = per_sample(lib)
    fn = kiln.compile(fn, fullgraph=True) if compiled else fn
    grads, (losses, logits) = fn({"w": lib.tensor(W), "b": lib.tensor(B)}, lib.tensor(XS), lib.tensor(YS))
    return [grads["w"].numpy(), grads["b"].numpy(), losses.numpy(), logits.numpy()]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_grad_has_aux_under_vmap_as_torch(float64_default, compiled):
    ours, theirs = run(kiln, compiled), run(libraries("torch")[0])
    for mine, expected in zip(ours, theirs):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)
