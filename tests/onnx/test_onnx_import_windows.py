"""ONNX import of the window ops kiln has no single op for, against ``onnx.reference.ReferenceEvaluator``.

Dilated and 3-D pools (strided slices folded with maximum or add), MaxPool's
``Indices`` output (ties and padding included), and ConvTranspose in 1-D and
3-D, with auto_pad SAME_*, asymmetric pads and ``output_shape``. Each case is
one node on random inputs, run through the importer and the NumPy backend.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnx_nodes import FLOAT, INT64, OPSET, assert_matches_oracle, one_node_model, oracle_outputs
from oracles import require


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


MAX_POOLS = [  # (input shape, attributes)
    ((1, 2, 6, 7), {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    ((2, 1, 7, 8), {"kernel_shape": [2, 3], "dilations": [2, 2], "strides": [2, 1], "pads": [1, 0, 2, 1], "ceil_mode": 1}),
    ((2, 3, 11), {"kernel_shape": [3], "dilations": [2], "strides": [2], "pads": [1, 1]}),
    ((1, 2, 5, 6, 5), {"kernel_shape": [2, 3, 2], "dilations": [1, 2, 1], "strides": [2, 1, 2], "pads": [1, 0, 0, 0, 1, 1]}),
    ((1, 1, 7, 6), {"kernel_shape": [3, 3], "dilations": [2, 1], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("shape, attrs", MAX_POOLS)
def test_dilated_and_3d_max_pool_match_the_reference(shape, attrs):
    x = images(shape)
    assert_matches_oracle(one_node_model("MaxPool", {"x": x}, {"y": FLOAT}, **attrs), {"x": x})


SAME_LOWER_POOLS = [  # (input shape, window, its explicit pads: total (ceil(in / s) - 1) s + (k - 1) d + 1 - in, the odd cell first)
    ((1, 1, 7, 6), {"kernel_shape": [3, 2], "dilations": [2, 2], "strides": [2, 2]}, [2, 1, 2, 0]),
    ((1, 2, 4, 5, 3), {"kernel_shape": [2, 3, 2], "strides": [1, 1, 2]}, [1, 1, 1, 0, 1, 0]),
]


@pytest.mark.parametrize("shape, window, pads", SAME_LOWER_POOLS)
def test_max_pool_same_lower_is_its_explicit_padding(shape, window, pads):
    # oracles stray here: the reference's dilated MaxPool gives floor(in / s) cells and its 3-D one fails,
    # onnxruntime pads for the undilated kernel; so the reference runs the spec's explicit pads
    from kiln.backends.onnx.backend import KilnBackend

    x = images(shape)
    same = one_node_model("MaxPool", {"x": x}, {"y": FLOAT}, auto_pad="SAME_LOWER", **window)
    (expected,) = oracle_outputs(one_node_model("MaxPool", {"x": x}, {"y": FLOAT}, pads=pads, **window), {"x": x}, "reference")
    np.testing.assert_array_equal(KilnBackend.run_model(same, [x])[0], expected)


AVERAGE_POOLS = [
    ((1, 2, 6, 6), {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 1, 9), {"kernel_shape": [2], "dilations": [3], "pads": [2, 1]}),
    ((1, 1, 6, 7, 5), {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2], "pads": [1] * 6, "ceil_mode": 1}),
    ((1, 1, 6, 7, 5), {"kernel_shape": [2, 3, 2], "dilations": [2, 1, 2], "strides": [1, 2, 1]}),
]


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("shape, attrs", AVERAGE_POOLS)
def test_dilated_and_3d_average_pool_match_the_reference(shape, attrs, count_include_pad):
    x = images(shape)
    model = one_node_model("AveragePool", {"x": x}, {"y": FLOAT}, count_include_pad=count_include_pad, **attrs)
    assert_matches_oracle(model, {"x": x})


INDEXED_POOLS = [  # the reference gives Indices when a stride or a dilation is not 1
    ((2, 3, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 5, 7), {"kernel_shape": [2, 3], "strides": [2, 1], "dilations": [1, 2], "storage_order": 1}),
    ((2, 2, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((1, 2, 4, 5, 4), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    ((1, 2, 4, 5, 4), {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "pads": [1, 1, 0, 0, 1, 1], "storage_order": 1}),
]


@pytest.mark.parametrize("shape, attrs", INDEXED_POOLS)
def test_max_pool_indices_match_the_reference(shape, attrs):
    x = images(shape)
    model = one_node_model("MaxPool", {"x": x}, {"y": FLOAT, "indices": INT64}, **attrs)
    assert_matches_oracle(model, {"x": x}, rtol=0, atol=0)


def test_max_pool_indices_on_ties_and_infinities_pick_the_first_real_cell():
    # many equal values (row-major first wins) and -inf next to padding (a padding cell never wins)
    x = np.random.default_rng(3).integers(0, 2, (2, 2, 6, 6)).astype(np.float32)
    x[0, 0, :2, :] = -np.inf
    model = one_node_model("MaxPool", {"x": x}, {"y": FLOAT, "indices": INT64}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    assert_matches_oracle(model, {"x": x}, rtol=0, atol=0)


CONV_TRANSPOSES = [  # (input shape, weight shape, attributes)
    ((2, 3, 5), (3, 2, 3), {"strides": [2], "pads": [1, 0], "output_padding": [1]}),
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "dilations": [1, 2, 1], "pads": [1, 0, 0, 0, 1, 1]}),
    ((1, 1, 3, 4), (1, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 1, 3, 4), (1, 2, 3, 2), {"strides": [2, 3], "dilations": [2, 1], "auto_pad": "SAME_LOWER"}),
    ((2, 2, 4, 3), (2, 3, 3, 3), {"strides": [2, 3], "pads": [0, 1, 2, 0]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [3, 2], "pads": [1, 0, 0, 1], "output_shape": [10, 6]}),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_TRANSPOSES)
def test_conv_transpose_matches_the_reference(x_shape, w_shape, attrs):
    x, w = images(x_shape, 1), images(w_shape, 2)
    bias = images((w_shape[1] * attrs.get("group", 1),), 3)
    model = one_node_model("ConvTranspose", {"x": x, "w": w, "b": bias}, {"y": FLOAT}, **attrs)
    assert_matches_oracle(model, {"x": x, "w": w, "b": bias}, rtol=1e-5, atol=1e-5)


def test_grouped_3d_conv_transpose_matches_onnxruntime():
    # the reference slices a grouped weight by output channels (it holds only when in and out channels agree)
    x, w, bias = images((1, 4, 2, 3, 3), 1), images((4, 1, 3, 2, 2), 2), images((2,), 3)
    model = one_node_model("ConvTranspose", {"x": x, "w": w, "b": bias}, {"y": FLOAT}, strides=[3, 2, 1], group=2, output_padding=[2, 1, 0])
    assert_matches_oracle(model, {"x": x, "w": w, "b": bias}, atol=1e-5, oracle="onnxruntime")


def test_pool_over_symbolic_spatial_dims_is_refused_clearly():
    onnx = require("onnx")
    from onnx import helper

    from kiln.backends.onnx.importer import OnnxImportError, import_onnx

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2, 2])
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", FLOAT, [1, 1, "D", 4, 4])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 1, "E", 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=onnx.IR_VERSION)
    with pytest.raises(OnnxImportError, match="MaxPool over the symbolic spatial dims .* is not supported"):
        import_onnx(model)
