"""``nn.utils.clip_grad_norm`` (no underscore), the deprecated spelling older word_language_model versions call:
the same clipping as ``clip_grad_norm_`` and PyTorch's, in float64, with PyTorch's ``FutureWarning``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln.nn as nn
from oracles import require_torch


def test_the_deprecated_spelling_clips_as_torchs_and_warns():
    torch = require_torch()
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 4)), rng.normal(size=(4,))]
    ours = [nn.Parameter(np.zeros_like(g)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = g.copy(), torch.tensor(g)
    with pytest.warns(FutureWarning, match="clip_grad_norm_"):
        norm = nn.utils.clip_grad_norm(ours, 0.5)
    with pytest.warns(FutureWarning):
        torch_norm = torch.nn.utils.clip_grad_norm(theirs, 0.5)
    assert float(norm) == pytest.approx(torch_norm.item(), rel=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)
