"""Function transforms called on eager tensors (outside a trace) give eager tensors, equal to ``torch.func``'s."""

from __future__ import annotations

import numpy as np

import kiln
from kiln.frontend.tensor import Tensor
from oracles import require_torch


def _f(lib):
    return lambda v: (lib.tanh(v) * v ** 2).sum()


def test_transforms_of_eager_tensors_match_torch_func():
    torch = require_torch()
    x = np.array([0.5, -1.0, 2.0])
    k, t = kiln.tensor(x), torch.tensor(x)
    pairs = [
        (kiln.grad(_f(kiln))(k), torch.func.grad(_f(torch))(t)),
        (kiln.jacrev(lambda v: kiln.sin(v) * v)(k), torch.func.jacrev(lambda v: torch.sin(v) * v)(t)),
        (kiln.hessian(_f(kiln))(k), torch.func.hessian(_f(torch))(t)),
        (kiln.vmap(lambda v: (v * v).sum())(kiln.tensor(np.outer(x, x))), torch.vmap(lambda v: (v * v).sum())(torch.outer(t, t))),
        (kiln.vjp(lambda v: v ** 3, k)[1](k)[0], torch.func.vjp(lambda v: v ** 3, t)[1](t)[0]),
        (kiln.jvp(lambda v: v ** 3, (k,), (k,))[1], torch.func.jvp(lambda v: v ** 3, (t,), (t,))[1]),
    ]
    for got, want in pairs:
        assert isinstance(got, Tensor) and got.dtype == kiln.float64
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-14)


def test_arrays_still_give_arrays():
    assert isinstance(kiln.grad(_f(kiln))(np.array([0.5, 1.0])), np.ndarray)
