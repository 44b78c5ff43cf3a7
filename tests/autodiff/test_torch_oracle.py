"""Forward values and gradients against PyTorch in float32, for a representative subset of the op table.

Each case computes ``op(x)`` and ``d sum(op(x) * w)/dx`` in kiln (NumPy
backend) and in torch from the same arrays. Without torch these tests skip,
unless ``KILN_REQUIRE_ORACLES=1`` makes them fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require_torch
from ops.op_table import ROWS, Case, OpRow, cases, concrete_attrs, extra_inputs, gradient_graph, make_inputs
from kiln.backends.numpy import NumpyBackend

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
SIZES = {"N": 3}
ORACLE_OPS = (
    *(f"tensor.{name}" for name in ("neg", "exp", "log", "tanh", "sigmoid", "relu", "sqrt")),
    *(f"tensor.{name}" for name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum")),
    "tensor.matmul",
    *(f"tensor.{name}" for name in ("reduce_sum", "reduce_mean", "reduce_max")),
    "nn.softmax",
    "nn.log_softmax",
    "nn.cross_entropy",
    "nn.mse",
    *(f"tensor.{name}" for name in ("sin", "cos", "floor", "ceil", "round", "cumsum")),
)


def torch_function(torch, name: str):
    """``name`` in torch, taking kiln's attributes."""
    functional = torch.nn.functional

    def dims(x, axes):
        return tuple(range(x.ndim)) if axes is None else axes

    table = {
        "tensor.neg": torch.neg,
        "tensor.exp": torch.exp,
        "tensor.log": torch.log,
        "tensor.tanh": torch.tanh,
        "tensor.sigmoid": torch.sigmoid,
        "tensor.relu": torch.relu,
        "tensor.sqrt": torch.sqrt,
        "tensor.add": torch.add,
        "tensor.sub": torch.sub,
        "tensor.mul": torch.mul,
        "tensor.div": torch.div,
        "tensor.pow": torch.pow,
        "tensor.maximum": torch.maximum,
        "tensor.minimum": torch.minimum,
        "tensor.matmul": torch.matmul,
        "tensor.reduce_sum": lambda x, *, axes, keepdims: torch.sum(x, dim=dims(x, axes), keepdim=keepdims),
        "tensor.reduce_mean": lambda x, *, axes, keepdims: torch.mean(x, dim=dims(x, axes), keepdim=keepdims),
        "tensor.reduce_max": lambda x, *, axes, keepdims: torch.amax(x, dim=dims(x, axes), keepdim=keepdims),
        "nn.softmax": lambda x, *, axis: torch.softmax(x, dim=axis),
        "nn.log_softmax": lambda x, *, axis: torch.log_softmax(x, dim=axis),
        "nn.cross_entropy": lambda x, y, *, reduction: functional.cross_entropy(x, y.long(), reduction=reduction),
        "nn.mse": lambda p, t, *, reduction: functional.mse_loss(p, t, reduction=reduction),
        "tensor.sin": torch.sin,
        "tensor.cos": torch.cos,
        "tensor.floor": torch.floor,
        "tensor.ceil": torch.ceil,
        "tensor.round": torch.round,
        "tensor.cumsum": lambda x, *, axis, reverse: torch.flip(torch.cumsum(torch.flip(x, (axis,)), axis), (axis,)) if reverse else torch.cumsum(x, axis),
    }
    return table[name]


def in_torch(torch, name: str, arrays: list[np.ndarray], weights: np.ndarray, attrs: dict):
    """``op(x)`` and the gradients of ``sum(op(x) * w)`` w.r.t. the float inputs, computed by torch."""
    tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    result = torch_function(torch, name)(*tensors, **attrs)
    (result * torch.tensor(weights)).sum().backward()
    return result.detach().numpy(), [t.grad.numpy() for t in tensors if t.requires_grad]


def _oracle_cases() -> list:
    params = cases([ROWS[name] for name in ORACLE_OPS], dtypes=("f32",))
    # torch reads dim=() as "every axis" where kiln reads axes=() as "none": leave those to the NumPy reference
    return [p for p in params if p.values[1].attrs.get("axes", None) != () or p.values[1].shapes == ((),)]


@pytest.mark.parametrize(("row", "case", "dtype"), _oracle_cases())
def test_forward_and_gradients_match_torch(row: OpRow, case: Case, dtype: str):
    torch = require_torch()
    graph, wrt = gradient_graph(row, case, dtype)
    arrays = make_inputs(row, case, dtype, SIZES)
    (weights,) = extra_inputs(graph, arrays, SIZES, f"torch{row.name}{case.id}")
    result, *grads = NumpyBackend().compile(graph)(*arrays, weights)
    expected_result, expected_grads = in_torch(torch, row.name, arrays, weights, concrete_attrs(case.attrs, SIZES))
    np.testing.assert_allclose(result, expected_result, **TOLERANCE)
    assert len(grads) == len(expected_grads) == len(wrt)
    for grad, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(grad, expected, **TOLERANCE)


@pytest.mark.parametrize("name", ["tensor.maximum", "tensor.minimum"])
def test_ties_split_the_gradient_like_torch(name: str):
    """Finite differences cannot see ties; torch shares the cotangent evenly between equal operands."""
    torch = require_torch()
    x = np.array([1.0, 2.0, 3.0, -1.0], np.float32)
    y = np.array([1.0, 0.0, 3.0, 5.0], np.float32)
    row, case = ROWS[name], Case(((4,), (4,)))
    graph, _ = gradient_graph(row, case, "f32")
    weights = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    _, *grads = NumpyBackend().compile(graph)(x, y, weights)
    _, expected = in_torch(torch, name, [x, y], weights, {})
    for grad, want in zip(grads, expected):
        np.testing.assert_allclose(grad, want, **TOLERANCE)


def test_reduce_max_ties_split_the_gradient_like_torch_amax():
    torch = require_torch()
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], np.float32)
    graph, _ = gradient_graph(ROWS["tensor.reduce_max"], Case(((2, 3),), {"axes": 1, "keepdims": False}), "f32")
    weights = np.array([1.0, 3.0], np.float32)
    _, grad = NumpyBackend().compile(graph)(x, weights)
    _, (expected,) = in_torch(torch, "tensor.reduce_max", [x], weights, {"axes": 1, "keepdims": False})
    np.testing.assert_allclose(grad, expected, **TOLERANCE)
