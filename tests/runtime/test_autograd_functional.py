"""``kiln.autograd.functional`` against ``torch.autograd.functional`` in float64: jacobian, hessian, vjp, jvp, hvp and
vhp, for one input and for a tuple of inputs (whose results nest as PyTorch's)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.autograd.functional as KF
from kiln.frontend.tensor import Tensor
from oracles import require_torch

A = np.array([0.5, -1.0, 2.0])
B = np.array([[1.0, 2.0], [0.3, -0.4]])


def _elementwise(lib):
    return lambda x: lib.sin(x) * x


def _scalar(lib):
    return lambda x, y: (lib.tanh(x) ** 2).sum() * (y ** 3).sum()


def _assert_same(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same(g, w)
        return
    assert isinstance(got, Tensor)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-12, atol=1e-14)


CASES = {
    "jacobian": lambda F, lib, t: F.jacobian(_elementwise(lib), t(A)),
    "jacobian-tuple": lambda F, lib, t: F.jacobian(_scalar(lib), (t(A), t(B))),
    "hessian-tuple": lambda F, lib, t: F.hessian(_scalar(lib), (t(A), t(B))),
    "vjp": lambda F, lib, t: F.vjp(_elementwise(lib), t(A), t(A[::-1].copy())),
    "vjp-scalar": lambda F, lib, t: F.vjp(_scalar(lib), (t(A), t(B))),
    "jvp": lambda F, lib, t: F.jvp(_scalar(lib), (t(A), t(B)), (t(A), t(B))),
    "hvp": lambda F, lib, t: F.hvp(_scalar(lib), (t(A), t(B)), (t(-A), t(B))),
    "vhp": lambda F, lib, t: F.vhp(lambda x: (lib.tanh(x) ** 2).sum(), t(A), t(-A)),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_autograd_functional(case):
    torch = require_torch()
    got = CASES[case](KF, kiln, kiln.tensor)
    want = CASES[case](torch.autograd.functional, torch, torch.tensor)
    _assert_same(got, want)


def test_a_float32_v_for_a_float64_function_is_cast_as_torch_does():
    out, grad = KF.vjp(_elementwise(kiln), kiln.tensor(A), np.ones(3, dtype=np.float32))
    assert grad.dtype == kiln.float64
