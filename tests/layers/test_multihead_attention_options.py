"""``nn.MultiheadAttention``'s other options, against torch 2.13 in float64: keys and values of other widths
(``kdim``/``vdim``, separate ``q/k/v_proj_weight``), ``add_bias_kv`` and ``add_zero_attn``, in PyTorch's argument
order, with its parameter names and order (a torch state_dict loads as is)."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import torch_twins

import kiln

OPTIONS = {
    "kdim_vdim": dict(kdim=6, vdim=5),
    "bias_kv": dict(add_bias_kv=True),
    "zero_attn": dict(add_zero_attn=True),
    "all_batch_first": dict(kdim=6, vdim=5, add_bias_kv=True, add_zero_attn=True, batch_first=True),
}


def _inputs(options):
    first = options.get("batch_first", False)
    shape = lambda length, width: (2, length, width) if first else (length, 2, width)  # noqa: E731
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape(3, 8)), rng.standard_normal(shape(4, options.get("kdim", 8))),
            rng.standard_normal(shape(4, options.get("vdim", 8)))]


@pytest.mark.parametrize("name", OPTIONS)
def test_options_match_torch_values_weights_and_gradients(name):
    options = OPTIONS[name]
    torch, model, twin = torch_twins(lambda lib: lib.nn.MultiheadAttention(8, 2, **options).double())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]
    arrays = _inputs(options)
    padding = np.array([[False, False, False, True], [False, True, False, False]])
    out, weights = model(*(kiln.tensor(a) for a in arrays), key_padding_mask=kiln.tensor(padding))
    expected, expected_weights = twin(*(torch.tensor(a) for a in arrays), key_padding_mask=torch.tensor(padding))
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), expected_weights.detach().numpy(), rtol=1e-10, atol=1e-12)
    (out * out).sum().backward()
    (expected * expected).sum().backward()
    for (key, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=key)


def test_cross_attention_with_other_widths_trains_compiled_and_loads_torchs_state_dict():
    torch, model, twin = torch_twins(lambda lib: lib.nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True).double())
    model.load_state_dict(twin.state_dict())
    query, key, value = _inputs({"kdim": 6, "vdim": 5, "batch_first": True})

    class Loss(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = model

        def forward(self, q, k, v):
            return (self.attention(q, k, v, need_weights=False)[0] ** 2).mean()

    step = kiln.compile_train_step(Loss(), lambda loss, _: loss, kiln.optim.SGD(model.parameters(), lr=0.1), batch_dim=None)
    losses = [float(step(query, key, value, np.zeros(())))]
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    expected = (twin(*(torch.tensor(a) for a in (query, key, value)), need_weights=False)[0] ** 2).mean()
    optimizer.zero_grad(), expected.backward(), optimizer.step()
    assert abs(losses[0] - expected.detach().item()) < 1e-12
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert "kdim=6, vdim=5" in repr(model)
