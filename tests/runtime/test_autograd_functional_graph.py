"""``kiln.autograd.functional.*(..., create_graph=True)`` against ``torch.autograd.functional`` in float64: the values,
and a further backward through them into the inputs' and a model's ``.grad``
(``runtime/autograd_functional_graph.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.autograd.functional as KF
from kiln.frontend.tensor import Tensor
from oracles import require_torch, torch_twins

A = np.array([0.5, -1.0, 2.0])
B = np.array([[1.0, 2.0], [0.3, -0.4]])


def _elementwise(lib):
    return lambda x: lib.sin(x) * x


def _pair(lib):
    return lambda x, y: ((lib.tanh(x) ** 2).sum() * (y ** 3).sum(), lib.cos(y) * x[:2])  # two outputs


def _scalar(lib):
    return lambda x, y: (lib.tanh(x) ** 2).sum() * (y ** 3).sum()


CASES = {
    "jacobian": lambda F, lib, t: F.jacobian(_elementwise(lib), t(A), create_graph=True),
    "jacobian-tuples": lambda F, lib, t: F.jacobian(_pair(lib), (t(A), t(B)), create_graph=True),
    "hessian": lambda F, lib, t: F.hessian(lambda x: (lib.tanh(x) ** 3).sum(), t(A), create_graph=True),
    "hessian-tuple": lambda F, lib, t: F.hessian(_scalar(lib), (t(A), t(B)), create_graph=True),
    "vjp": lambda F, lib, t: F.vjp(_elementwise(lib), t(A), t(A[::-1].copy()), create_graph=True),
    "vjp-scalar": lambda F, lib, t: F.vjp(_scalar(lib), (t(A), t(B)), create_graph=True),
    "jvp": lambda F, lib, t: F.jvp(_pair(lib), (t(A), t(B)), (t(-A), t(B)), create_graph=True),
    "hvp": lambda F, lib, t: F.hvp(_scalar(lib), (t(A), t(B)), (t(-A), t(B)), create_graph=True),
    "vhp": lambda F, lib, t: F.vhp(lambda x: (lib.tanh(x) ** 2).sum() * x[0], t(A), t(-A), create_graph=True),
}


def _leaves(result):
    return [leaf for item in result for leaf in _leaves(item)] if isinstance(result, tuple) else [result]


def _weighted_sum(leaves, lib):
    """A scalar of every result with weights that differ by place (a plain sum could hide a wrong layout)."""
    rng = np.random.RandomState(0)
    return sum((leaf * lib.tensor(rng.randn(*leaf.shape))).sum() for leaf in leaves)


@pytest.mark.parametrize("case", CASES)
def test_results_and_a_gradient_through_them_match_torch(case):
    torch = require_torch()
    kiln_inputs, torch_inputs = [], []
    got = CASES[case](KF, kiln, lambda a: kiln_inputs.append(kiln.tensor(a, requires_grad=True)) or kiln_inputs[-1])
    want = CASES[case](torch.autograd.functional, torch,
                       lambda a: torch_inputs.append(torch.tensor(a, requires_grad=True)) or torch_inputs[-1])
    got, want = _leaves(got), _leaves(want)
    assert len(got) == len(want) and all(isinstance(g, Tensor) for g in got)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-12, atol=1e-13)
    _weighted_sum(got, kiln).backward()
    _weighted_sum(want, torch).backward()
    for k, t in zip(kiln_inputs, torch_inputs):
        assert (k.grad is None) == (t.grad is None)
        if k.grad is not None:
            np.testing.assert_allclose(np.asarray(k.grad), t.grad.numpy(), rtol=1e-11, atol=1e-12)


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 5), lib.nn.Tanh(), lib.nn.Linear(5, 2)).double()


def test_a_jacobian_penalty_reaches_the_models_parameters():
    torch, net, twin = torch_twins(_net, 3)
    x = np.random.RandomState(3).randn(3)
    jacobians = [KF.jacobian(net, kiln.tensor(x), create_graph=True),
                 torch.autograd.functional.jacobian(twin, torch.tensor(x), create_graph=True)]
    np.testing.assert_allclose(jacobians[0].numpy(), jacobians[1].detach().numpy(), rtol=1e-12, atol=1e-13)
    for jacobian in jacobians:
        (jacobian ** 2).sum().backward()  # Jacobian regularisation: d ||J||^2 / d parameters
    for p, q in zip(net.parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None)  # the last bias: J does not depend on it, in both
        if p.grad is not None:
            np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-11, atol=1e-12)


def test_an_input_no_output_reads_gets_zeros_as_torch():
    torch = require_torch()
    got = KF.jacobian(lambda x, y: x * 2.0, (kiln.tensor(A), kiln.tensor(B)), create_graph=True)
    want = torch.autograd.functional.jacobian(lambda x, y: x * 2.0, (torch.tensor(A), torch.tensor(B)), create_graph=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w.numpy())
    _, pushed = KF.jvp(lambda x, y: (y * 1.0, x.sum()), (kiln.tensor(A), kiln.tensor(B)), (np.ones(3), np.ones((2, 2))),
                       create_graph=True)
    np.testing.assert_array_equal(pushed[1].numpy(), 3.0)


def test_arrays_are_taken_as_inputs_and_a_float32_v_is_cast():
    out, grad = KF.vjp(_elementwise(kiln), A, np.ones(3, dtype=np.float32), create_graph=True)
    assert grad.dtype == kiln.float64
    np.testing.assert_allclose(grad.numpy(), np.sin(A) + A * np.cos(A), rtol=1e-14)


def test_errors_say_what_and_what_to_do():
    with pytest.raises(kiln.KilnError, match=r"hessian: the function must return a single tensor with one element, not \(3,\)"):
        KF.hessian(_elementwise(kiln), kiln.tensor(A), create_graph=True)
    with pytest.raises(kiln.KilnError, match=r"output 0 is float, not an eager tensor"):
        KF.vjp(lambda x: 1.0, kiln.tensor(A), create_graph=True)
    with pytest.raises(kiln.KilnError, match=r"v has shape \(2,\) where the tensor it goes with has \(3,\)"):
        KF.vjp(_elementwise(kiln), kiln.tensor(A), np.ones(2), create_graph=True)
    with pytest.raises(kiln.KilnError, match=r"v has 1 entries for 2 tensors"):
        KF.hvp(_scalar(kiln), (kiln.tensor(A), kiln.tensor(B)), (np.ones(3),), create_graph=True)
