"""``kiln.trace`` is kiln's tracer, and given a tensor ``torch.trace``: the sum of a matrix's diagonal."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require


def test_trace_of_a_tensor_is_torchs_with_its_gradient():
    torch = require("torch")
    a = np.arange(12.0).reshape(3, 4)
    mine, theirs = kiln.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out, expected = kiln.trace(mine), torch.trace(theirs)
    out.backward(), expected.backward()
    assert out.item() == expected.item()
    np.testing.assert_array_equal(np.array(mine.grad), theirs.grad.numpy())
    layer = nn.Linear(3, 3)
    assert isinstance(kiln.trace(layer.weight.data), kiln.Tensor)  # a parameter's array is a tensor here too
    np.testing.assert_allclose(kiln.trace(layer.weight.data).item(), np.trace(np.array(layer.weight.data)), rtol=1e-6)


def test_a_function_or_module_is_still_traced_into_a_graph():
    graph = kiln.trace(nn.Linear(2, 2), kiln.TensorSpec(("N", 2)))
    assert type(graph).__name__ == "Graph"
    with pytest.raises(kiln.TraceError, match="torch.trace"):
        kiln.trace(kiln.eye(2), kiln.TensorSpec((2,)))
