"""``clip_grad_norm_(..., foreach=True, error_if_nonfinite=True)`` on non-finite gradients: the RuntimeError with torch
2.13's words, and the gradients left as they were (as torch's, which raises before scaling them)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch


@pytest.mark.parametrize("norm_type", [2.0, "inf"])
def test_non_finite_norm_refused_with_torchs_message(norm_type):
    require_torch()
    messages, grads = [], []
    for name in ("kiln", "torch"):
        lib, nn, F = libraries(name)
        lib.manual_seed(0)
        model = nn.Linear(3, 2).double()
        loss = model(lib.tensor(np.ones((2, 3)))).sum() * float("inf")
        loss.backward()
        with pytest.raises(RuntimeError) as refused:
            lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0, norm_type=norm_type, foreach=True, error_if_nonfinite=True)
        messages.append(str(refused.value))
        grads.append(np.array(model.bias.grad.tolist()))
    assert messages[0] == messages[1]
    np.testing.assert_array_equal(grads[0], grads[1])
