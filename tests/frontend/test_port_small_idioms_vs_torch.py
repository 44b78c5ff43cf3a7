"""Small PyTorch idioms a ported script meets: ``x.squeeze(dim)`` of a dim that is not 1, ``zeros(size=...)``,
``Sequential.append/extend``, ``F.batch_norm`` on plain running-statistics tensors, ``f(number, tensor)``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.random.default_rng(0).standard_normal((4, 1, 5))


@pytest.mark.parametrize("call", [
    lambda t: t.squeeze(0), lambda t: t.squeeze(1), lambda t: t.squeeze((0, 1)), lambda t: t.squeeze(-1),
    lambda t: t.squeeze(), lambda t: t[:1].squeeze((0, 1, 2)),
])
def test_squeeze_leaves_a_dim_of_another_size_as_torch(call):
    torch = require_torch()
    np.testing.assert_array_equal(call(kiln.tensor(X)).numpy(), call(torch.tensor(X)).numpy())


def test_squeeze_in_a_trace_keeps_the_symbolic_batch_and_drops_the_unit_dim():
    graph = kiln.trace(lambda t: t.squeeze(1).squeeze(-1), kiln.TensorSpec(("N", 1, 5), "float64"))
    assert graph.outputs[0].type.shape == ("N", 5)


@pytest.mark.parametrize("name", ["zeros", "ones", "rand", "randn"])
def test_constructors_take_size_as_a_keyword(name):
    torch = require_torch()
    assert tuple(getattr(kiln, name)(size=(2, 3)).shape) == tuple(getattr(torch, name)(size=(2, 3)).shape) == (2, 3)
    with pytest.raises(TypeError, match="multiple values"):
        getattr(kiln, name)(2, size=(2, 3))
    with pytest.raises(TypeError, match="unexpected keyword"):
        getattr(kiln, name)(2, shape=(2, 3))


def test_sequential_append_and_extend_return_the_container():
    model = kiln.nn.Sequential(kiln.nn.Linear(3, 4))
    assert model.append(kiln.nn.ReLU()) is model and model.extend([kiln.nn.Linear(4, 2)]) is model
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"] and "2.weight" in model.state_dict()
    assert tuple(model(kiln.ones(5, 3)).shape) == (5, 2)


def test_functional_batch_norm_updates_plain_running_tensors_as_torch():
    torch = require_torch()
    x = np.random.default_rng(1).standard_normal((6, 5))
    results = []
    for lib in (kiln, torch):
        mean, var = lib.zeros(5, dtype=lib.float64), lib.ones(5, dtype=lib.float64)
        out = lib.nn.functional.batch_norm(lib.tensor(x), mean, var, training=True, momentum=0.3)
        results.append([np.asarray(t.numpy()) for t in (out, mean, var)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["add", "mul", "sub", "div", "pow", "bitwise_and", "bitwise_or", "bitwise_xor"])
def test_a_number_first_binary_function_as_torch(name):
    torch = require_torch()
    values = np.array([3, 5, 6]) if name.startswith("bitwise") else np.array([2.0, 4.0, 0.5])
    number = 6 if name.startswith("bitwise") else 2.0
    ours = getattr(kiln, name)(number, kiln.tensor(values))
    theirs = getattr(torch, name)(number, torch.tensor(values))
    assert ours.numpy().dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
