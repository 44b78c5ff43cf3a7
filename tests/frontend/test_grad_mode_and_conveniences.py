"""``kiln.no_grad`` (values traced inside are constants to the gradient, as under ``torch.no_grad``) and the PyTorch
conveniences a training loop calls: ``optimizer.zero_grad()``, ``model.cpu()``/``cuda()``, ``Parameter.dtype`` and
``Parameter.detach()`` outside a trace."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require


def test_no_grad_makes_a_traced_value_a_constant_to_the_gradient_as_torch():
    torch = require("torch")
    x = np.random.default_rng(0).standard_normal((3, 4))

    def ours(t):
        with kiln.no_grad():
            weights = F.softmax(t * 2.0, dim=-1)
        return (t * t * weights).sum()

    expected_input = torch.tensor(x, requires_grad=True)
    with torch.no_grad():
        weights = torch.softmax(expected_input * 2.0, dim=-1)
    (expected_input * expected_input * weights).sum().backward()
    np.testing.assert_allclose(kiln.grad(ours)(x), expected_input.grad.numpy(), rtol=1e-12)
    graph = kiln.trace(ours, kiln.TensorSpec((3, 4), "float64"))
    assert sum(op.name == "tensor.stop_gradient" for op in graph.ops) >= 2  # the scaled input and the softmax


def test_a_teacher_run_under_no_grad_is_not_trained_and_the_student_matches_torch():
    torch = require("torch")

    def pair(lib):
        return lib.nn.Linear(4, 3), lib.nn.Linear(4, 3)

    class Distill(nn.Module):
        def __init__(self):
            super().__init__()
            self.student, self.teacher = pair(kiln)

        def forward(self, x):
            with kiln.no_grad():
                target = self.teacher(x)
            return self.student(x) - target

    kiln.manual_seed(0)
    model = Distill()
    student, teacher = pair(torch)
    student.load_state_dict({k: torch.tensor(v) for k, v in model.student.state_dict().items()})
    teacher.load_state_dict({k: torch.tensor(v) for k, v in model.teacher.state_dict().items()})
    teacher_before = {k: v.copy() for k, v in model.teacher.state_dict().items()}
    step = kiln.compile_train_step(model, lambda gap, zero: F.mse_loss(gap, zero), kiln.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(list(student.parameters()) + list(teacher.parameters()), lr=0.1)
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    zero = np.zeros((8, 3), np.float32)
    for _ in range(3):
        loss = step(x, zero)
        optimizer.zero_grad()
        with torch.no_grad():
            target = teacher(torch.tensor(x))
        expected = torch.nn.functional.mse_loss(student(torch.tensor(x)) - target, torch.tensor(zero))
        expected.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
    for name, value in model.teacher.state_dict().items():
        np.testing.assert_array_equal(value, teacher_before[name])
    np.testing.assert_allclose(model.student.weight.data, student.weight.detach().numpy(), rtol=1e-5)


def test_no_grad_restores_the_mode_when_nested_as_a_decorator_and_does_nothing_untraced():
    @kiln.no_grad()
    def constant(t):
        return t * 3.0

    def fn(t):
        with kiln.no_grad():
            with kiln.no_grad():
                a = t * 2.0
            b = t * 5.0  # still inside the outer no_grad
        return (constant(t) + a + b + t).sum()

    np.testing.assert_allclose(kiln.grad(fn)(np.ones(3)), np.ones(3))
    with kiln.no_grad():  # outside a trace: nothing to do
        assert kiln.compile(lambda t: t * 2.0)(np.ones(2)).tolist() == [2.0, 2.0]


def test_training_loop_conveniences_behave_as_pytorch_code_expects():
    model = nn.Linear(3, 2)
    optimizer = kiln.optim.Adam(model.parameters())
    assert optimizer.zero_grad() is None and model.zero_grad() is None
    assert model.cpu() is model and model.cuda() is model
    assert model.weight.dtype is kiln.DType.f32
    model.double()
    assert next(model.parameters()).dtype is kiln.DType.f64
    detached = model.weight.detach()
    assert np.shares_memory(detached.numpy(), model.weight.data) and type(detached.numpy()) is np.ndarray  # as torch's
    assert not detached.requires_grad and model.weight.requires_grad
    model.half()
    assert next(model.parameters()).dtype is kiln.DType.f16 and model.weight.data.dtype == np.float16
    model.bfloat16()
    assert next(model.parameters()).dtype is kiln.DType.bf16


def test_grad_treats_a_closed_over_copy_of_its_argument_as_a_constant():
    """``grad(lambda z: (z * 2x).sum())(x)`` is ``2x``, as in JAX and torch.func: ``fn`` differentiates only its own
    argument, not the same traced value it closes over (it read both before: ``4x``)."""
    torch = require("torch")
    x = np.array([1.0, -2.0, 0.5])
    inner = kiln.compile(lambda x: kiln.grad(lambda z: (z * (2 * x)).sum())(x))(x)
    expected = torch.func.grad(lambda z: (z * (2 * torch.tensor(x))).sum())(torch.tensor(x))
    np.testing.assert_allclose(inner, expected.numpy(), rtol=1e-12)
    nested = kiln.grad(lambda x: kiln.grad(lambda z: (z * x.sin()).sum())(x).sum())(x)
    np.testing.assert_allclose(nested, np.cos(x), rtol=1e-12)  # d/dx sum(sin x), the inner gradient being sin x
