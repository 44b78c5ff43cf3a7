"""``nn.GroupNorm(..., bias=False)`` (torch 2.13's keyword-only ``bias``: the weight alone; kiln took no such argument)
and GroupNorm's repr, which torch ends with ``bias=...``. Values, the weight and input gradients against torch in
float64 on a 5-D volume (pytorch-3dunet's GroupNorm), the state_dict keys and the repr."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries


@pytest.mark.parametrize("options", [dict(), dict(bias=False), dict(affine=False)], ids=["default", "no_bias", "no_affine"])
def test_group_norm_bias_as_torch(options, float64_default):
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 2, 5))
    records = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        norm = nn.GroupNorm(2, 4, **options)
        if norm.weight is not None:
            with lib.no_grad():
                norm.weight.copy_(lib.tensor([0.5, 1.5, -1.0, 2.0]))
        t = lib.tensor(x, requires_grad=True)
        out = norm(t)
        (out * out * lib.tensor(np.arange(4.0).reshape(1, 4, 1, 1, 1))).sum().backward()
        grads = [np.array(p.grad.numpy()) for p in norm.parameters()]
        records.append((np.array(out.detach().numpy()), np.array(t.grad.numpy()), grads, list(norm.state_dict()), repr(norm)))
    (ours, our_input_grad, our_grads, our_keys, our_repr), (theirs, their_input_grad, their_grads, their_keys, their_repr) = records
    assert our_keys == their_keys and our_repr == their_repr and len(our_grads) == len(their_grads)
    for mine, torch_value in zip([ours, our_input_grad] + our_grads, [theirs, their_input_grad] + their_grads):
        np.testing.assert_allclose(mine, torch_value, rtol=1e-10, atol=1e-12)


def test_group_norm_bias_is_keyword_only_as_torch():
    with pytest.raises(TypeError):
        kiln.nn.GroupNorm(2, 4, 1e-5, True, None, False)
