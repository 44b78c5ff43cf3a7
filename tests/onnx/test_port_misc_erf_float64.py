"""``tensor.erf`` and ``nn.gelu`` exported to ONNX in float64 run in onnxruntime (whose Erf, and so its Gelu, is
float32-only): Cephes' erf from arithmetic, within 2 ulps of ``math.erf`` from 1e-300 to 1e300, +-inf and NaN, in
onnxruntime and onnx's reference evaluator; GELU against torch in float64, its gradient in an exported training step
too. float32 keeps the native Erf and Gelu nodes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.ir import Builder, Graph, TensorType
from onnx_nodes import exported_sessions
from oracles import require

SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, 1 + 2.0**-52, -1 - 2.0**-52, 8.0, -8.0, 5.9, 6.0, 27.0, np.inf, -np.inf, np.nan,
                     1e-300, 5e-324, -1e-10, 1e300, -1e300, 0.4769362762044699])


def _graph(name, dtype, build):
    graph = Graph(name)
    graph.outputs = [build(Builder(graph), graph.add_input(TensorType(("N",), dtype), "x"))]
    return graph


def test_float64_erf_is_within_two_ulps_of_math_erf_in_both_oracles():
    rng = np.random.default_rng(5)
    x = np.concatenate([SPECIALS, rng.standard_normal(4000) * 10.0 ** rng.integers(-12, 3, 4000), rng.uniform(-7, 7, 4000)])
    proto, names, oracles = exported_sessions(_graph("erf", "f64", lambda b, x: b.op("tensor.erf", x)))
    assert "Erf" not in {node.op_type for node in proto.graph.node}
    expected = np.array([math.erf(v) for v in x])
    numbers = ~np.isnan(expected)
    for oracle, session in oracles.items():
        with np.errstate(all="ignore"):  # the reference evaluator computes the branch Where does not take
            (got,) = session.run(None, {names[0]: x})
        np.testing.assert_array_equal(np.isnan(got), ~numbers, err_msg=oracle)
        np.testing.assert_array_max_ulp(got[numbers], expected[numbers], maxulp=2)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_float64_gelu_matches_torch_in_onnxruntime(approximate):
    torch = require("torch")
    x = np.concatenate([SPECIALS[~np.isnan(SPECIALS)], np.random.default_rng(6).standard_normal(2000) * 4])
    _, names, oracles = exported_sessions(_graph("gelu", "f64", lambda b, x: b.op("nn.gelu", x, approximate=approximate)))
    (got,) = oracles["onnxruntime"].run(None, {names[0]: x})
    expected = torch.nn.functional.gelu(torch.tensor(x), approximate=approximate).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-14)  # 1 + tanh cancels for x << 0, in torch's form too


def test_float32_keeps_the_native_nodes():
    types = set()
    for build in (lambda b, x: b.op("tensor.erf", x), lambda b, x: b.op("nn.gelu", x, approximate="none")):
        proto, _, _ = exported_sessions(_graph("f32", "f32", build))
        types |= {node.op_type for node in proto.graph.node}
    assert {"Erf", "Gelu"} <= types


def test_a_float64_gelu_training_step_runs_in_onnxruntime_as_in_numpy():
    require("onnxruntime")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 3)).double()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    rng = np.random.default_rng(7)
    batch = [rng.standard_normal((6, 5)), rng.integers(0, 3, 6)]
    assert kiln.parity(step, batch, backends=["onnxruntime"]).ok
