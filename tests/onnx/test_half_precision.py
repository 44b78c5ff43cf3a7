"""float16 and bfloat16 on every ONNX path: the onnxruntime backend, deployment export and the importer.

Oracles: the NumPy backend (training steps: the same widening, so the same numbers), onnxruntime and
``onnx.reference.ReferenceEvaluator`` (exported and imported models), PyTorch in the same half dtype (exported
forwards), NumPy's and ml_dtypes' own rounding (casts).
"""

from __future__ import annotations

import io

import ml_dtypes
import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from half.half_compare import NUMPY_HALF, assert_half_close, from_torch, torch_dtype
from onnx_nodes import one_node_model, oracle_outputs
from oracles import require, torch_twins

ONNX_CODE = {"f16": 10, "bf16": 16}
"""``onnx.TensorProto.FLOAT16`` and ``BFLOAT16``."""


def mlp(lib=kiln):
    nn = lib.nn
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 10))


def cnn(lib=kiln):
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


MODELS = {"mlp": (mlp, (64,)), "cnn": (cnn, (1, 8, 8))}


def to_half(model, dtype: str):
    return model.half() if dtype == "f16" else model.bfloat16()


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable half values lie between ``a`` and ``b`` (same dtype; +0 and -0 are 0 apart)."""
    def ordered(x):
        bits = np.asarray(x).view(np.int16).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFF), bits)

    return np.abs(ordered(a) - ordered(b))


def run_onnxruntime(path_or_proto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs; bfloat16 arrays go in and out as OrtValues (its Python API has no bfloat16 NumPy type)."""
    ort = require("onnxruntime")
    from kiln.backends.onnx.half import bfloat16_ortvalue, ortvalue_to_numpy

    model = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    values = {name: bfloat16_ortvalue(a) if a.dtype == NUMPY_HALF["bf16"] else ort.OrtValue.ortvalue_from_numpy(a) for name, a in feeds.items()}
    return [ortvalue_to_numpy(value) for value in session.run_with_ort_values(None, values)]


def run_reference(proto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    require("onnx")
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(a) for a in ReferenceEvaluator(proto).run(None, feeds)]


# --- the onnxruntime backend: training steps -------------------------------------------------------------------


def train(backend: str, model_name: str, dtype: str, optimizer: str, steps: int = 5, dropout: bool = False):
    build, shape = MODELS[model_name]
    kiln.manual_seed(0)
    model = build()
    if dropout:
        model = nn.Sequential(model, nn.Dropout(0.25), nn.Linear(10, 10))
    model = to_half(model, dtype)
    make = {"sgd": lambda p: kiln.optim.SGD(p, lr=0.05, momentum=0.9), "adam": lambda p: kiln.optim.Adam(p, lr=1e-2, eps=1e-3)}
    step = kiln.compile_train_step(model, F.cross_entropy, make[optimizer](model.parameters()), backend=backend)
    rng = np.random.default_rng(0)
    losses = [step(rng.standard_normal((8,) + shape).astype(NUMPY_HALF[dtype]), rng.integers(0, 10, 8)) for _ in range(steps)]
    return np.array(losses, NUMPY_HALF[dtype]), {name: np.array(value) for name, value in model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("model_name, optimizer", [("mlp", "sgd"), ("mlp", "adam"), ("cnn", "sgd"), ("cnn", "adam")])
def test_half_training_steps_in_onnxruntime_equal_the_numpy_backends(dtype, model_name, optimizer):
    # Both backends widen the same way (Cast to float32, the op, Cast back) and round at the same points. Only float32
    # summation order differs (MLAS vs OpenBLAS), and a float32 product of two half values is exact, so the rounded
    # results agree: bit for bit in every run here. An element may differ by one ulp when a float32 sum lands within
    # float32 noise of a half rounding boundary; that is the bound asserted.
    require("onnxruntime")
    losses, params = train("numpy", model_name, dtype, optimizer)
    ort_losses, ort_params = train("onnxruntime", model_name, dtype, optimizer)
    assert ort_losses.dtype == NUMPY_HALF[dtype] and np.isfinite(losses.astype(np.float32)).all()
    assert ulp_distance(ort_losses, losses).max() <= 1, (ort_losses, losses)
    start = initial_parameters(model_name, dtype)
    for name, value in params.items():
        assert ort_params[name].dtype == NUMPY_HALF[dtype], name
        assert ulp_distance(ort_params[name], value).max() <= 1, name
        assert not np.array_equal(value, start[name]), f"{name} did not train"


def initial_parameters(model_name: str, dtype: str) -> dict[str, np.ndarray]:
    kiln.manual_seed(0)
    return {name: np.array(value) for name, value in to_half(MODELS[model_name][0](), dtype).state_dict().items()}


def tiny_gpt():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples"))
    from gpt_tiny import GPT

    kiln.manual_seed(0)
    return GPT(vocab_size=13, context=6, d_model=16, heads=2, layers=2)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_tiny_gpt_training_in_onnxruntime_matches_numpy(dtype):
    # Embedding, LayerNorm, GELU, attention: more float32 sums, and exp/erf from other libraries, so a float32 result
    # sometimes lands on the other side of a half rounding boundary (the first such op in float16 here is a forward
    # matmul: one subnormal ulp). Losses agree; a parameter may be an ulp or so off, at its tensor's scale.
    require("onnxruntime")

    def loss(logits, target):
        return F.cross_entropy(logits.transpose(1, 2), target)

    results = []
    for backend in ("numpy", "onnxruntime"):
        model = to_half(tiny_gpt(), dtype)
        step = kiln.compile_train_step(model, loss, kiln.optim.SGD(model.parameters(), lr=0.1), backend=backend)
        rng = np.random.default_rng(0)
        losses = [step(tokens[:, :-1], tokens[:, 1:]) for tokens in (rng.integers(0, 13, (4, 7)) for _ in range(3))]
        results.append((np.array(losses, NUMPY_HALF[dtype]), {k: np.array(v) for k, v in model.state_dict().items()}))
    (losses, params), (ort_losses, ort_params) = results
    assert ulp_distance(ort_losses, losses).max() <= 1
    for name, value in params.items():
        assert_half_close(ort_params[name], value.astype(np.float64), dtype, ulps=2, what=name)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_dropout_draws_in_onnxruntime_equal_the_numpy_backends(dtype):
    require("onnxruntime")
    losses, params = train("numpy", "mlp", dtype, "sgd", steps=3, dropout=True)
    ort_losses, ort_params = train("onnxruntime", "mlp", dtype, "sgd", steps=3, dropout=True)
    assert ulp_distance(ort_losses, losses).max() <= 1
    for name, value in params.items():
        assert ulp_distance(ort_params[name], value).max() <= 1, name


def test_bfloat16_bits_cross_the_onnxruntime_boundary_unchanged():
    # every bfloat16 bit pattern (NaNs, infinities, subnormals, -0) in and out through an Identity model
    onnx = require("onnx")
    from onnx import helper

    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    x = bits.view(NUMPY_HALF["bf16"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.BFLOAT16, [256, 256])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.BFLOAT16, [256, 256])])
    (y,) = run_onnxruntime(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9), {"x": x})
    assert y.dtype == NUMPY_HALF["bf16"] and y.shape == (256, 256)
    np.testing.assert_array_equal(y.view(np.uint16), bits)


# --- deployment export ---------------------------------------------------------------------------------------


def export_half(model_name: str, dtype: str, path: str):
    build, shape = MODELS[model_name]
    kiln.manual_seed(0)
    model = to_half(build(), dtype)
    return model, kiln.export_onnx(model, [kiln.TensorSpec(("N",) + shape, NUMPY_HALF[dtype].name)], path)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_exported_half_model_is_valid_half_typed_and_half_sized(tmp_path, dtype, model_name):
    onnx = require("onnx")
    _, proto = export_half(model_name, dtype, str(tmp_path / "half.onnx"))
    kiln.manual_seed(0)
    full = kiln.export_onnx(MODELS[model_name][0](), [kiln.TensorSpec(("N",) + MODELS[model_name][1], "float32")], str(tmp_path / "f32.onnx"))
    onnx.checker.check_model(onnx.load(str(tmp_path / "half.onnx")), full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == ONNX_CODE[dtype]
    assert proto.graph.output[0].type.tensor_type.elem_type == ONNX_CODE[dtype]
    assert {init.data_type for init in proto.graph.initializer} == {ONNX_CODE[dtype]}
    assert sum(len(i.raw_data) for i in proto.graph.initializer) * 2 == sum(len(i.raw_data) for i in full.graph.initializer)
    assert "Cast" in {node.op_type for node in proto.graph.node}  # widened: computed in float32, rounded per op


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_exported_half_model_runs_as_kilns_forward_in_onnxruntime_and_the_reference(tmp_path, dtype, model_name):
    path = str(tmp_path / "half.onnx")
    model, proto = export_half(model_name, dtype, path)
    forward = kiln.compile(model)
    for batch in (1, 6):
        x = np.random.default_rng(batch).standard_normal((batch,) + MODELS[model_name][1]).astype(NUMPY_HALF[dtype])
        expected = np.asarray(forward(x))
        for oracle, (got,) in (("onnxruntime", run_onnxruntime(path, {"input": x})), ("reference", run_reference(proto, {"input": x}))):
            assert got.dtype == NUMPY_HALF[dtype], oracle
            np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16), err_msg=oracle)  # the same casts


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_exported_half_model_matches_torch_in_the_same_dtype(tmp_path, dtype, model_name):
    build, shape = MODELS[model_name]
    torch, model, twin = torch_twins(build)
    model, twin = to_half(model, dtype), twin.to(torch_dtype(torch, dtype))
    path = str(tmp_path / "half.onnx")
    kiln.export_onnx(model, [kiln.TensorSpec(("N",) + shape, NUMPY_HALF[dtype].name)], path)
    x = np.random.default_rng(1).standard_normal((7,) + shape).astype(NUMPY_HALF[dtype])
    (got,) = run_onnxruntime(path, {"input": x})
    with torch.no_grad():
        expected = from_torch(twin(torch.tensor(x.astype(np.float32)).to(torch_dtype(torch, dtype))))
    # torch's Linear rounds x @ W.T + b once (addmm), kiln twice (matmul, then add); so a layer's output may be one
    # rounding apart, at its own scale: two ulps of the output's largest element (at most one seen over five seeds)
    assert_half_close(got, expected, dtype, ulps=2, what=f"{model_name} {dtype}")


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_exported_half_tiny_gpt_runs_as_kilns_forward(tmp_path, dtype):
    # LayerNormalization, Gelu, Softmax, Gather in float32 between Casts: onnxruntime gives kiln's logits (bit for bit
    # in every run here; one ulp allowed for a float32 result on a rounding boundary). The reference evaluator computes
    # those ops its own way in float32 (up to 5 ulps of a logit near 0 seen): two ulps at the logits' scale.
    path = str(tmp_path / "gpt.onnx")
    model = to_half(tiny_gpt(), dtype).eval()
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 6), "int64")], path)
    for batch in (1, 5):
        tokens = np.random.default_rng(batch).integers(0, 13, (batch, 6))
        expected = np.asarray(kiln.compile(model)(tokens))
        (got,) = run_onnxruntime(path, {"tokens": tokens})
        assert got.dtype == expected.dtype == NUMPY_HALF[dtype] and ulp_distance(got, expected).max() <= 1
        assert_half_close(run_reference(proto, {"tokens": tokens})[0], expected.astype(np.float64), dtype, ulps=2, what="reference")


def moves(x, y):
    """Where, Trilu, Pad, Expand: element-moving ops onnxruntime's CPU provider has no bfloat16 kernel for."""
    return F.pad(kiln.where(x > y, x, y).tril(), (1, 2)).unsqueeze(0).expand(2, -1, -1)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_exported_half_element_moves_run_in_onnxruntime(tmp_path, dtype):
    path = str(tmp_path / "moves.onnx")
    spec = kiln.TensorSpec((4, 4), NUMPY_HALF[dtype].name)
    proto = kiln.export_onnx(moves, [spec, spec], path)
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((4, 4)).astype(NUMPY_HALF[dtype]) for _ in range(2))
    expected = np.asarray(kiln.compile(moves)(x, y))
    assert expected.dtype == NUMPY_HALF[dtype] and expected.shape == (2, 4, 7)
    feeds = dict(zip([i.name for i in proto.graph.input], (x, y)))
    for oracle, (got,) in (("onnxruntime", run_onnxruntime(path, feeds)), ("reference", run_reference(proto, feeds))):
        np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16), err_msg=oracle)


def test_torch_style_export_of_a_bfloat16_model_keeps_its_options(tmp_path):
    require("onnx")
    kiln.manual_seed(0)
    model = mlp().bfloat16()
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(NUMPY_HALF["bf16"])
    buffer = io.BytesIO()
    proto = kiln.onnx.export(model, (kiln.tensor(x),), buffer, input_names=["features"], output_names=["logits"],
                             dynamic_axes={"features": {0: "batch"}}, opset_version=17)
    assert buffer.getvalue() == proto.SerializeToString()
    (features,), (logits,) = proto.graph.input, proto.graph.output
    assert (features.name, logits.name) == ("features", "logits")
    assert features.type.tensor_type.elem_type == logits.type.tensor_type.elem_type == ONNX_CODE["bf16"]
    assert features.type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (3, 5):
        y = np.random.default_rng(batch).standard_normal((batch, 64)).astype(NUMPY_HALF["bf16"])
        (got,) = run_onnxruntime(proto, {"features": y})
        np.testing.assert_array_equal(got.view(np.uint16), np.asarray(kiln.compile(model)(y)).view(np.uint16))


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_exported_half_training_step_resumes_exactly(tmp_path, dtype, backend):
    require("onnxruntime")
    kiln.manual_seed(0)
    model = to_half(mlp(), dtype)
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((8, 64)).astype(NUMPY_HALF[dtype]), rng.integers(0, 10, 8)) for _ in range(6)]
    for batch in data[:3]:
        step(*batch)
    path = str(tmp_path / "train.onnx")
    proto = kiln.export_onnx_train_step(step, path)
    assert {i.data_type for i in proto.graph.initializer if i.name.endswith("weight")} == {ONNX_CODE[dtype]}
    expected = np.array([step(*batch) for batch in data[3:]], NUMPY_HALF[dtype])
    resumed = kiln.load_onnx_train_step(path, backend=backend)  # imported: half initializers become half parameters
    got = np.array([resumed(*batch) for batch in data[3:]], NUMPY_HALF[dtype])
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))


# --- the importer ----------------------------------------------------------------------------------------------


def half_mlp_model(dtype: str, keep_io_types: bool):
    """An MLP built with onnx.helper: half weights; with ``keep_io_types`` float32 inputs and outputs joined to the half
    graph by Casts (onnxconverter-common's ``convert_float_to_float16(keep_io_types=True)`` pattern)."""
    onnx = require("onnx")
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(3)
    half = NUMPY_HALF[dtype]
    weights = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(half), n) for n, s in (("w1", (16, 8)), ("b1", (8,)), ("w2", (8, 4)))]
    code, edge = ONNX_CODE[dtype], onnx.TensorProto.FLOAT if keep_io_types else ONNX_CODE[dtype]
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=code)] if keep_io_types else []
    nodes += [helper.make_node("MatMul", ["xh" if keep_io_types else "x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
              helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["yh" if keep_io_types else "y"])]
    nodes += [helper.make_node("Cast", ["yh"], ["y"], to=onnx.TensorProto.FLOAT)] if keep_io_types else []
    graph = helper.make_graph(nodes, "half_mlp", [helper.make_tensor_value_info("x", edge, ["N", 16])],
                              [helper.make_tensor_value_info("y", edge, ["N", 4])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("keep_io_types", [False, True])
def test_imported_half_model_matches_the_reference_and_onnxruntime(dtype, keep_io_types):
    from kiln.backends.onnx.backend import KilnBackend

    model = half_mlp_model(dtype, keep_io_types)
    imported = kiln.import_onnx(model)
    assert [v.type.dtype.value for v in imported.graph.inputs] == ["f32" if keep_io_types else dtype] + [dtype] * 3
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32 if keep_io_types else NUMPY_HALF[dtype])
    (got,) = KilnBackend.run_model(model, [x])
    oracles = {"reference": run_reference(model, {"x": x})[0]}
    if dtype == "f16":  # onnxruntime's CPU kernels have float16 MatMul, Add, Relu; no bfloat16 ones
        oracles["onnxruntime"] = run_onnxruntime(model, {"x": x})[0]
    for name, expected in oracles.items():
        assert got.dtype == expected.dtype, name
        # each op computes in float32 and rounds once, as in the oracles; they sum in other orders: one ulp
        half_result = got if not keep_io_types else got.astype(NUMPY_HALF[dtype])
        assert_half_close(half_result, expected.astype(np.float64), dtype, ulps=1, what=name)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_imported_half_initializers_are_trainable_half_parameters(dtype):
    module = kiln.import_onnx(half_mlp_model(dtype, keep_io_types=False)).module()
    parameters = list(module.parameters())
    assert len(parameters) == 3 and {np.asarray(p.data).dtype for p in parameters} == {NUMPY_HALF[dtype]}
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(NUMPY_HALF[dtype])
    step = kiln.compile_train_step(module, lambda y, t: ((y.float() - t) ** 2).mean(), kiln.optim.SGD(module.parameters(), lr=0.1))
    before = np.array(parameters[0].data)
    losses = [float(step(x, np.zeros((5, 4), np.float32))) for _ in range(3)]
    assert losses[2] < losses[0] and not np.array_equal(before, np.array(parameters[0].data))


CASTS = [("f32", "f16"), ("f32", "bf16"), ("f64", "f16"), ("f16", "f32"), ("bf16", "f32"), ("f16", "bf16"), ("bf16", "f64")]
ELEMENT = {**ONNX_CODE, "f32": 1, "f64": 11}
WIDE = {"f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}


@pytest.mark.parametrize("source, target", CASTS)
def test_imported_cast_to_and_from_half_rounds_as_the_reference(source, target):
    # round to nearest even; NaN, inf, overflow, subnormals. float64 -> float16 rounds through float32 in kiln, as in
    # onnxruntime and torch (c10's Half is built from a float): there onnxruntime is the oracle, since the reference's
    # NumPy cast rounds in one step and differs on values just off a float16 tie
    from kiln.backends.onnx.backend import KilnBackend

    rng = np.random.default_rng(0)
    lower = rng.standard_normal(500).astype(np.float16).astype(np.float64)
    midpoints = (lower + np.nextafter(lower.astype(np.float16), np.float16(np.inf)).astype(np.float64)) / 2
    near_ties = np.concatenate([midpoints * (1 + 2.0**-40), midpoints * (1 - 2.0**-40)])  # float32 rounds them onto the tie
    wide = np.concatenate([rng.standard_normal(4000) * np.exp2(rng.integers(-30, 20, 4000)), near_ties,
                           [np.nan, np.inf, -np.inf, 0.0, -0.0, 7e4, 2.0**-24, 3e38]])
    with np.errstate(over="ignore", invalid="ignore"):
        x = wide.astype({**WIDE, **NUMPY_HALF}[source])
    model = one_node_model("Cast", {"x": x}, {"y": ELEMENT[target]}, to=ELEMENT[target])
    (got,) = KilnBackend.run_model(model, [x])
    with np.errstate(over="ignore", invalid="ignore"):  # the reference casts with NumPy, which warns on overflow
        (expected,) = oracle_outputs(model, {"x": x})
    if (source, target) == ("f64", "f16"):
        reference = expected
        (expected,) = run_onnxruntime(model, {"x": x})
        assert not np.array_equal(reference, expected, equal_nan=True)  # the near-ties tell the two roundings apart
    assert got.dtype == expected.dtype == {**WIDE, **NUMPY_HALF}[target]
    np.testing.assert_array_equal(got.astype(np.float64), expected.astype(np.float64))  # NaN where the reference has NaN
    number = ~np.isnan(expected.astype(np.float64))
    assert (got[number].tobytes() == expected[number].tobytes()), "-0.0 or a last bit differs"


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_kilns_half_export_imports_back_bit_for_bit(tmp_path, dtype):
    path = str(tmp_path / "half.onnx")
    model, _ = export_half("cnn", dtype, path)
    imported = kiln.import_onnx(path, trainable_initializers=False)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(NUMPY_HALF[dtype])
    from kiln.backends import get_backend

    (got,) = get_backend("numpy").compile(imported.graph)(x)
    np.testing.assert_array_equal(np.asarray(got).view(np.uint16), np.asarray(kiln.compile(model)(x)).view(np.uint16))


def test_imported_bfloat16_padded_max_pool_and_max_scatter_match_the_reference():
    # both fill with the dtype's lowest value: -inf for bfloat16, whose NumPy kind is "V", not "f"
    from kiln.backends.onnx.backend import KilnBackend

    x = (-1.0 - np.random.default_rng(0).random((1, 2, 5, 6))).astype(NUMPY_HALF["bf16"])  # all negative: a 0 fill would show
    pool = one_node_model("MaxPool", {"x": x}, {"y": ONNX_CODE["bf16"]}, kernel_shape=[3, 3], pads=[1, 1, 1, 1], dilations=[2, 1])
    np.testing.assert_array_equal(KilnBackend.run_model(pool, [x])[0], oracle_outputs(pool, {"x": x})[0])
    data = np.zeros((3, 4), NUMPY_HALF["bf16"])
    indices, updates = np.array([[1, 0, 2, 1]]), np.array([[-5.0, -6.0, -7.0, -8.0]], NUMPY_HALF["bf16"])
    scatter = one_node_model("ScatterElements", {"data": data, "indices": indices, "updates": updates}, {"y": ONNX_CODE["bf16"]}, reduction="max")
    expected = oracle_outputs(scatter, {"data": data, "indices": indices, "updates": updates})[0]
    np.testing.assert_array_equal(KilnBackend.run_model(scatter, [data, indices, updates])[0], expected)


def test_half_models_are_compatible_with_the_onnx_backend():
    from kiln.backends.onnx.backend import KilnBackend

    assert KilnBackend.is_compatible(half_mlp_model("f16", False)) and KilnBackend.is_compatible(half_mlp_model("bf16", True))
