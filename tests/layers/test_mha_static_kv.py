"""``F.multi_head_attention_forward`` with ``static_k``/``static_v`` against PyTorch 2.13 in float64: outputs and
attention weights, gradients of the query, the static keys/values, the other projections' inputs and every weight
(the projection rows a static tensor replaces get torch's zero gradient). Static keys of another length than the
key input, one of the two static, ``add_zero_attn`` after them (the key padding mask of S keys is padded for it), unbatched inputs;
errors: a static with a bias_k, and a static of the wrong shape."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from kiln.frontend.tensor import Tensor
from layer_parity import kiln_outputs_and_grads, normal, randomize
from oracles import require

EXACT = dict(rtol=1e-10, atol=1e-12)
EMBED, HEADS = 8, 2


class StaticAttention(nn.Module):
    """MultiheadAttention's weights, called through ``F.multi_head_attention_forward`` with static keys and values."""

    def __init__(self, **options):
        super().__init__()
        self.inner = nn.MultiheadAttention(EMBED, HEADS, dtype="float64")
        self.options = options

    def forward(self, q, k, v, static_k=None, static_v=None, functional=F):
        inner, options = self.inner, self.options
        pair = functional.multi_head_attention_forward(
            q, k, v, EMBED, HEADS, inner.in_proj_weight, inner.in_proj_bias, None, None, options.get("zero", False), 0.0,
            inner.out_proj.weight, inner.out_proj.bias, key_padding_mask=options.get("padding"),
            static_k=static_k if options.get("static_k", True) else None,
            static_v=static_v if options.get("static_v", True) else None, average_attn_weights=options.get("average", True))
        return flat(pair)


def flat(pair):
    output, weights = pair
    concatenate = F.cat if isinstance(output, Tensor) else require("torch").cat
    return concatenate([output.reshape(-1), weights.reshape(-1)], 0)


def assert_matches_torch(torch, module, reference, arrays) -> None:
    """Outputs, parameter and input gradients as torch's; an input torch never reads (the key projected for a static
    key) has no torch gradient, and kiln's is zero."""
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in module.state_dict().items()})
    weights = np.random.default_rng(11).standard_normal(reference(*[torch.tensor(a) for a in arrays]).shape)
    output, grads, input_grads = kiln_outputs_and_grads(module, lambda m, *xs: m(*xs), arrays, weights)
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = reference(*tensors)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(output, expected.detach().numpy(), **EXACT, err_msg="output")
    for name, parameter in reference.named_parameters():
        np.testing.assert_allclose(grads[name], parameter.grad.numpy(), **EXACT, err_msg=name)
    for index, (grad, tensor) in enumerate(zip(input_grads, tensors)):
        wanted = np.zeros_like(grad) if tensor.grad is None else tensor.grad.numpy()
        np.testing.assert_allclose(grad, wanted, **EXACT, err_msg=f"input {index}")


def torch_twin(torch, options: dict):
    reference = torch.nn.Module()
    reference.inner = torch.nn.MultiheadAttention(EMBED, HEADS).double()
    state = type("S", (), {"inner": reference.inner, "options": options})()
    reference.forward = lambda *xs: StaticAttention.forward(state, *xs, functional=torch.nn.functional)
    return reference


@pytest.mark.parametrize("options", [
    {},
    {"zero": True, "average": False},
    {"static_v": False},  # only the keys static: S equals the key input's length
    {"static_k": False, "zero": True},
    {"padding": np.array([[False, True, False, False, True, False, True], [False] * 7])},  # S = 7 keys, not the input's 5
    {"zero": True, "padding": np.array([[False, True, False, False, True, False, True], [True] + [False] * 6])},
])
def test_static_keys_and_values_match_torch(options):
    torch = require("torch")
    length = 5 if options.get("static_v") is False or options.get("static_k") is False else 7
    q, k, v = normal(3, 2, EMBED, dtype="float64"), normal(5, 2, EMBED, dtype="float64", seed=1), normal(5, 2, EMBED, dtype="float64", seed=2)
    static_k, static_v = (normal(2 * HEADS, length, EMBED // HEADS, dtype="float64", seed=seed) for seed in (3, 4))
    torch_options = {key: torch.tensor(value) if key == "padding" else value for key, value in options.items()}
    module, reference = randomize(StaticAttention(**options)), torch_twin(torch, torch_options)
    assert_matches_torch(torch, module, reference, [q, k, v, static_k, static_v])


def test_unbatched_static_keys_and_values_match_torch():
    torch = require("torch")
    q, kv = normal(3, EMBED, dtype="float64"), normal(4, EMBED, dtype="float64", seed=1)
    static_k, static_v = (normal(HEADS, 6, EMBED // HEADS, dtype="float64", seed=seed) for seed in (3, 4))
    module, reference = randomize(StaticAttention(zero=True)), torch_twin(torch, {"zero": True})
    assert_matches_torch(torch, module, reference, [q, kv, kv.copy(), static_k, static_v])


def test_static_keys_refuse_a_bias_and_a_wrong_shape():
    inner = nn.MultiheadAttention(EMBED, HEADS, dtype="float64")
    bias = nn.Parameter(normal(1, 1, EMBED, dtype="float64"))

    def attend(q, static_k, bias_k=None):
        return F.multi_head_attention_forward(q, q, q, EMBED, HEADS, inner.in_proj_weight, inner.in_proj_bias, bias_k, bias_k, False,
                                              0.0, inner.out_proj.weight, inner.out_proj.bias, static_k=static_k)[0]

    q = normal(3, 2, EMBED, dtype="float64")
    with pytest.raises(KilnError, match=r"(?s)test_mha_static_kv.py:\d+.*cannot be added to a static key"):
        kiln.compile(lambda q, s: attend(q, s, bias), batch_dim=None)(q, normal(4, 5, 4, dtype="float64"))
    with pytest.raises(KilnError, match=r"static_k must be \(N \* num_heads, S, E / num_heads\) = \(4, S, 4\) .* got tensor<6x5x4xf64>"):
        kiln.compile(attend, batch_dim=None)(q, normal(6, 5, 4, dtype="float64"))
    with pytest.raises(KilnError, match=r"= \(4, S, 4\) .* got tensor<4x5x3xf64>"):
        kiln.compile(attend, batch_dim=None)(q, normal(4, 5, 3, dtype="float64"))
