"""A ``clone()`` is new storage in PyTorch: writing its source in place after a backward saved the clone leaves that
backward alone, as torch 2.13's. kiln makes an eager clone by a ``tensor.broadcast_to`` of the source (a view op), and
the version check (``runtime/saved_versions.py``) followed it up to the source and refused with 'modified by an
inplace operation'; HF Longformer's global attention does exactly this (``torch.matmul(attn_probs.narrow(...)
.transpose(1, 2).clone(), ...)`` then ``attn_probs[is_index_global_attn_nonzero] = 0``). A real view still refuses."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

CASES = {
    "clone, mul": (lambda torch, p, w: (p.clone() * w).sum(), False),
    "clone of a transposed slice, matmul": (
        lambda torch, p, w: torch.matmul(p.narrow(-1, 0, 2).transpose(1, 2).clone(), w[..., :2].transpose(1, 2)
                                         .transpose(-1, -2)).sum(), False),
    "clone of a clone, exp": (lambda torch, p, w: (p.clone().clone().exp() * w).sum(), False),
    "view, mul": (lambda torch, p, w: (p.transpose(1, 2) * w.transpose(1, 2)).sum(), True),
    "expand of a view, mul": (lambda torch, p, w: (p[:1].expand(2, 4, 2, 3) * w).sum(), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_write_to_the_source_after_the_forward_as_torch(case):
    function, refused = CASES[case]
    outcomes = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        x = torch.tensor(np.linspace(-1.0, 1.0, 48).reshape(2, 4, 2, 3), requires_grad=True)
        w = torch.tensor(np.linspace(0.5, 2.0, 48).reshape(2, 4, 2, 3), requires_grad=True)
        p = x * 2
        loss = function(torch, p, w)
        p[torch.tensor([0]), torch.tensor([3])] = 0
        try:
            loss.backward()
        except RuntimeError as error:
            assert "modified by an inplace operation" in str(error)
            outcomes.append("refused")
            continue
        outcomes.append((x.grad.numpy().copy(), w.grad.numpy().copy()))
    assert (outcomes[0] == "refused") == (outcomes[1] == "refused") == refused
    if not refused:
        for ours, theirs in zip(outcomes[0], outcomes[1]):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12)
