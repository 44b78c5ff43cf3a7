"""ONNX import of ScatterElements' reductions and of ReduceProd on run-time data, against ``onnx.reference``.

ScatterElements combines every update that lands on a cell, duplicates included:
a one-hot mask selects them, a reduction (sum, ``tensor.reduce_prod``, max,
min) combines them, and the result combines with the data.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnx_nodes import FLOAT, INT64, assert_matches_oracle, one_node_model

SCATTERS = [  # (data shape, indices (with repeats), axis)
    ((3, 4), np.array([[1, 0, 2, 1], [1, 0, -3, 1]]), 0),
    ((2, 5), np.array([[4, 4, 0], [-1, 2, 4]]), 1),
    ((2, 3, 4), np.array([[[3, 3], [0, 1], [2, 0]], [[1, 1], [1, 1], [-4, 0]]]), -1),
]


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
@pytest.mark.parametrize("shape, indices, axis", SCATTERS)
def test_scatter_elements_reductions_combine_repeated_indices(shape, indices, axis, reduction):
    rng = np.random.default_rng(0)
    data, updates = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(indices.shape).astype(np.float32)
    inputs = {"data": data, "indices": indices.astype(np.int64), "updates": updates}
    model = one_node_model("ScatterElements", inputs, {"y": FLOAT}, opset=18, axis=axis, reduction=reduction)
    assert_matches_oracle(model, inputs)


@pytest.mark.parametrize("reduction", ["max", "min", "mul"])
def test_integer_scatter_elements_reductions_are_exact(reduction):
    data = np.array([[5, -7, 0, 2], [1, 1, -1, 9]], np.int64)
    indices = np.array([[0, 0, 3], [2, 2, 2]], np.int64)
    updates = np.array([[6, -9, 3], [-4, 8, 2]], np.int64)
    inputs = {"data": data, "indices": indices, "updates": updates}
    assert_matches_oracle(one_node_model("ScatterElements", inputs, {"y": INT64}, opset=18, axis=1, reduction=reduction), inputs, rtol=0, atol=0)


REDUCE_PRODS = [  # (axes, keepdims)
    ([0, 2], 1),
    ([-1], 0),
    ([], 1),  # no axes: every axis
]


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("axes, keepdims", REDUCE_PRODS)
def test_reduce_prod_of_run_time_data(axes, keepdims, dtype):
    x = np.random.default_rng(1).integers(-3, 4, (3, 4, 2)).astype(dtype)
    x[0, 1, 0] = 0  # a zero in some products
    inputs = {"x": x, "axes": np.array(axes, np.int64)}
    rank = x.ndim if keepdims else x.ndim - len(axes)
    model = one_node_model("ReduceProd", inputs, {"y": FLOAT if dtype == np.float32 else INT64}, rank=rank, keepdims=keepdims)
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(inputs.pop("axes"), "axes"))  # axes are a constant
    del model.graph.input[1]
    assert_matches_oracle(model, inputs)
