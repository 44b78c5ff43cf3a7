"""``torch._softmax_backward_data`` and ``torch._log_softmax_backward_data`` (ATen's backward kernels, public enough
that custom ``autograd.Function``s call them: NVlabs/edm's ``AttentionOp.backward``) as PyTorch 2.13
(``frontend/torch_nn_forms.py``); kiln had neither."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

RNG = np.random.default_rng(5)
LOGITS, GRAD = RNG.standard_normal((3, 4, 5)), RNG.standard_normal((3, 4, 5))
WEIGHTS = RNG.standard_normal((3, 5, 5))


def _backwards(torch, dim, dtype):
    x, g = torch.tensor(LOGITS, dtype=dtype), torch.tensor(GRAD, dtype=dtype)
    soft = torch._softmax_backward_data(grad_output=g, output=x.softmax(dim), dim=dim, input_dtype=dtype)
    log = torch._log_softmax_backward_data(g, x.log_softmax(dim), dim, dtype)
    return np.asarray(soft), np.asarray(log)


@pytest.mark.parametrize("dim", [2, 0, -2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_backward_data_as_torch(dim, dtype):
    (kiln, _, _), (torch, _, _) = libraries("kiln"), libraries("torch")
    ours, theirs = _backwards(kiln, dim, getattr(kiln, dtype)), _backwards(torch, dim, getattr(torch, dtype))
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-12 if dtype == "float64" else 1e-5, atol=1e-7 if dtype == "float32" else 0)


def _attention_grads(torch):
    class AttentionOp(torch.autograd.Function):  # NVlabs/edm training/networks.py, in float64
        @staticmethod
        def forward(ctx, q, k):
            w = torch.einsum('ncq,nck->nqk', q, k / np.sqrt(k.shape[1])).softmax(dim=2)
            ctx.save_for_backward(q, k, w)
            return w

        @staticmethod
        def backward(ctx, dw):
            q, k, w = ctx.saved_tensors
            db = torch._softmax_backward_data(grad_output=dw, output=w, dim=2, input_dtype=torch.float64)
            dq = torch.einsum('nck,nqk->ncq', k, db) / np.sqrt(k.shape[1])
            dk = torch.einsum('ncq,nqk->nck', q, db) / np.sqrt(k.shape[1])
            return dq, dk

    q = torch.tensor(LOGITS[:, :2], requires_grad=True)
    k = torch.tensor(GRAD[:, :2], requires_grad=True)
    (AttentionOp.apply(q, k) * torch.tensor(WEIGHTS)).sum().backward()
    return np.asarray(q.grad), np.asarray(k.grad)


def test_a_custom_attention_function_backward_as_torch():
    ours, theirs = _attention_grads(libraries("kiln")[0]), _attention_grads(libraries("torch")[0])
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
