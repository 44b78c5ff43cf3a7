"""The ``fft`` dialect (``compiler/ops/fft.py``): ``fft.c2c``, ``fft.r2c``, ``fft.c2r`` in the IR and on the NumPy backend.

Values against the DFT written as a matrix product in float64 (``X_k = s sum_j x_j e^{-+2 pi i jk/n}``, the
O(n^2) form ``kiln.fft`` used before these ops; ``np.fft``/``scipy.fft`` are the kernels, so they are not the
reference), for every ``norm``, both directions, cropping and padding, odd and even ``n``, each axis and a symbolic
batch dim. Gradients (each op's VJP, the cotangent's transforms) against central finite differences in float64,
first and second order; PyTorch's autograd is the oracle of ``tests/frontend/test_fft.py`` and
``test_fft_compiled.py``. Also: float32 stays float32, shape rules, print/parse, ONNX refusal.
"""

from __future__ import annotations

import numpy as np
import pytest

from autodiff.test_vjp_finite_differences import check_against_finite_differences
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import LoweringError, ShapeError
from kiln.compiler.ir import Builder, DType, Graph, TensorType
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph

NORMS = ("backward", "forward", "ortho")
CASES = [  # (shape, axis, n): n as the input's, cropping, padding, odd, another axis, a symbolic batch, one point
    ((2, 6, 5), 1, 6), ((2, 6, 5), 1, 4), ((2, 6, 5), 1, 9), ((2, 6, 5), 2, 5), ((2, 6, 5), 0, 3),
    (("N", 7), 1, 7), (("N", 4, 3), 1, 8), ((3, 1), 1, 1), ((8,), 0, 8)]
TOLERANCE = {"f64": {"rtol": 1e-12, "atol": 1e-12}, "f32": {"rtol": 2e-5, "atol": 2e-5}}


# The reference: the DFT as a matrix product in float64.


def _scale(n: int, inverse: bool, norm: str) -> float:
    if norm == "ortho":
        return n ** -0.5
    return 1.0 / n if (norm == "backward") == inverse else 1.0


def _resized(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` cropped or zero-padded to ``length`` along its last axis."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.concatenate([x, np.zeros(x.shape[:-1] + (length - x.shape[-1],))], axis=-1)


def _dft(x: np.ndarray, axis: int, n: int, inverse: bool, norm: str) -> np.ndarray:
    moved = _resized(np.moveaxis(np.asarray(x, np.complex128), axis, -1), n)
    turns = np.outer(np.arange(n), np.arange(n))
    matrix = np.exp((1 if inverse else -1) * 2j * np.pi * turns / n)
    return np.moveaxis(moved @ matrix * _scale(n, inverse, norm), -1, axis)


def _rdft(x: np.ndarray, axis: int, n: int, norm: str) -> np.ndarray:
    return np.take(_dft(x, axis, n, False, norm), np.arange(n // 2 + 1), axis=axis)


def _irdft(spectrum: np.ndarray, axis: int, n: int, norm: str) -> np.ndarray:
    """The full Hermitian spectrum from bins ``0 .. n//2`` (Im of bins 0 and n/2 dropped), inverted, real part."""
    half = _resized(np.moveaxis(spectrum, axis, -1), n // 2 + 1).copy()
    half[..., 0] = half[..., 0].real
    if n % 2 == 0:
        half[..., -1] = half[..., -1].real
    mirror = np.conj(half[..., 1:(n + 1) // 2][..., ::-1])
    full = np.concatenate([half, mirror], axis=-1)
    return np.moveaxis(_dft(full, -1, n, True, norm).real, -1, axis)


# Graphs.


def _concrete(shape, batch: int = 2) -> tuple[int, ...]:
    return tuple(batch if isinstance(d, str) else d for d in shape)


def _graph(name: str, shape, dtype: str, **attrs) -> tuple[Graph, tuple[Value, ...]]:
    graph = Graph("g")
    parts = 1 if name == "fft.r2c" else 2
    inputs = [graph.add_input(TensorType(shape, DType.of(dtype)), f"x{i}") for i in range(parts)]
    results = Builder(graph).op(name, *inputs, **attrs)
    results = results if isinstance(results, tuple) else (results,)
    graph.outputs = list(results)
    return graph, results


def _reference(name: str, arrays: list[np.ndarray], axis: int, n: int, norm: str, inverse: bool = False) -> list[np.ndarray]:
    if name == "fft.r2c":
        y = _rdft(arrays[0], axis, n, norm)
    elif name == "fft.c2r":
        return [_irdft(arrays[0] + 1j * arrays[1], axis, n, norm)]
    else:
        y = _dft(arrays[0] + 1j * arrays[1], axis, n, inverse, norm)
    return [y.real, y.imag]


OP_CASES = [("fft.c2c", {"inverse": False}), ("fft.c2c", {"inverse": True}), ("fft.r2c", {}), ("fft.c2r", {})]


def _c2r_shape(shape, axis: int, n: int):
    """``fft.c2r``'s input: the case's shape with the bins along ``axis`` (``n//2 + 1``, or the case's own length)."""
    return shape if shape[axis] != n else shape[:axis] + (n // 2 + 1,) + shape[axis + 1:]


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("name", "attrs"), OP_CASES, ids=lambda v: v if isinstance(v, str) else str(v))
@pytest.mark.parametrize(("shape", "axis", "n"), CASES, ids=str)
def test_values_match_the_dft_matrix(shape, axis, n, name, attrs, norm, dtype):
    shape = _c2r_shape(shape, axis, n) if name == "fft.c2r" else shape
    graph, results = _graph(name, shape, dtype, axis=axis, n=n, norm=norm, **attrs)
    bins = n // 2 + 1 if name == "fft.r2c" else n
    assert all(r.type == TensorType(shape[:axis] + (bins,) + shape[axis + 1:], DType.of(dtype)) for r in results)
    rng = np.random.default_rng(n)
    arrays = [rng.standard_normal(_concrete(shape)).astype(DType.of(dtype).numpy) for _ in graph.inputs]
    expected = _reference(name, [a.astype(np.float64) for a in arrays], axis, n, norm, attrs.get("inverse", False))
    for planned in (True, False):
        backend = NumpyBackend()
        backend.plan_memory = planned
        got = backend.compile(graph)(*arrays)
        for ours, theirs in zip(got if isinstance(got, (list, tuple)) else [got], expected):
            assert ours.dtype == DType.of(dtype).numpy and ours.shape == theirs.shape
            np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])


def test_c2r_ignores_the_imaginary_parts_of_bin_zero_and_bin_n_over_2():
    graph, _ = _graph("fft.c2r", (3, 5), "f64", axis=1, n=8, norm="backward")
    run = NumpyBackend().compile(graph)
    real, imag = np.random.default_rng(0).standard_normal((2, 3, 5))
    moved = imag.copy()
    moved[:, [0, 4]] += 7.0
    np.testing.assert_array_equal(run(real, imag), run(real, moved))


# Gradients: central differences in float64, first and second order.


def _loss(b: Builder, results, seed: int) -> Value:
    """``sum_i <results_i, W_i>``, fixed random weights (one per element; shared along a symbolic dim)."""
    total = None
    for i, value in enumerate(results if isinstance(results, tuple) else (results,)):
        weights = np.random.default_rng(seed + i).standard_normal(_concrete(value.type.shape, 1))
        term = b.reduce_sum(b.mul(value, b.constant(weights)))
        total = term if total is None else b.add(total, term)
    return total


def _gradient_graph(name: str, shape, **attrs) -> Graph:
    graph = Graph("loss")
    inputs = [graph.add_input(TensorType(shape, DType.f64), f"x{i}") for i in range(1 if name == "fft.r2c" else 2)]
    b = Builder(graph)
    loss = _loss(b, b.op(name, *inputs, **attrs), 1)
    graph.outputs = [loss, *differentiate(graph, loss, inputs)]
    return graph


def _second_order_graph(name: str, shape, **attrs) -> Graph:
    graph = _gradient_graph(name, shape, **attrs)
    b = Builder(graph)
    inner = _loss(b, tuple(graph.outputs[1:]), 20)
    graph.outputs = [inner, *differentiate(graph, inner, list(graph.inputs))]
    return graph


def _check(graph: Graph, shape) -> None:
    arrays = [np.random.default_rng(4 + i).standard_normal(_concrete(shape)) for i in range(len(graph.inputs))]
    check_against_finite_differences(graph, list(range(len(arrays))), arrays, lambda outputs, inputs: outputs[0])


GRADIENT_CASES = [((2, 6, 5), 1, 6), ((2, 6, 5), 1, 4), ((2, 6, 5), 1, 9), ((2, 6, 5), 2, 5), (("N", 4, 3), 1, 7),
                  ((3, 1), 1, 1)]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("name", "attrs"), OP_CASES, ids=lambda v: v if isinstance(v, str) else str(v))
@pytest.mark.parametrize(("shape", "axis", "n"), GRADIENT_CASES, ids=str)
def test_gradients_match_finite_differences(shape, axis, n, name, attrs, norm):
    shape = _c2r_shape(shape, axis, n) if name == "fft.c2r" else shape
    _check(_gradient_graph(name, shape, axis=axis, n=n, norm=norm, **attrs), shape)


@pytest.mark.parametrize(("name", "attrs"), OP_CASES, ids=lambda v: v if isinstance(v, str) else str(v))
@pytest.mark.parametrize(("shape", "axis", "n", "norm"), [((2, 6), 1, 8, "ortho"), (("N", 5, 3), 1, 5, "backward")], ids=str)
def test_second_order_matches_finite_differences(shape, axis, n, norm, name, attrs):
    shape = _c2r_shape(shape, axis, n) if name == "fft.c2r" else shape
    _check(_second_order_graph(name, shape, axis=axis, n=n, norm=norm, **attrs), shape)


def test_an_unused_part_gets_a_zero_cotangent():
    """A loss of ``Re fft(x)`` alone: the imaginary part's cotangent is None and the rule fills in zeros."""
    graph = Graph("loss")
    xr, xi = (graph.add_input(TensorType((2, 6), DType.f64), name) for name in ("xr", "xi"))
    b = Builder(graph)
    real, _ = b.op("fft.c2c", xr, xi, axis=1, n=6, inverse=False, norm="backward")
    loss = _loss(b, real, 3)
    graph.outputs = [loss, *differentiate(graph, loss, [xr, xi])]
    _check(graph, (2, 6))


# Shape rules, text form, export.


F64 = TensorType((3, 4), DType.f64)


@pytest.mark.parametrize(("name", "types", "attrs", "message"), [
    ("fft.c2c", (F64, TensorType((3, 5), DType.f64)), {"n": 4}, "real and imaginary parts must have one shape and dtype"),
    ("fft.c2r", (F64, TensorType((3, 4), DType.f32)), {"n": 4}, "real and imaginary parts must have one shape and dtype"),
    ("fft.r2c", (TensorType((3, 4), DType.f16),), {"n": 4}, "takes float32 or float64 parts.*cast the input to float32"),
    ("fft.r2c", (TensorType((3, 4), DType.i64),), {"n": 4}, "takes float32 or float64 parts"),
    ("fft.c2c", (F64, F64), {"n": 4, "norm": "unitary"}, "norm must be one of 'backward', 'forward', 'ortho'"),
    ("fft.r2c", (F64,), {"n": 0}, r"n \(the number of points\) must be an int >= 1, got 0"),
    ("fft.r2c", (F64,), {"n": "N"}, r"must be an int >= 1, got 'N'"),
    ("fft.r2c", (F64,), {"n": 4, "axis": 2}, "Dimension out of range"),
])
def test_shape_rules_refuse_with_a_message(name, types, attrs, message):
    graph = Graph("g")
    inputs = [graph.add_input(t, f"x{i}") for i, t in enumerate(types)]
    with pytest.raises(ShapeError, match=message):
        Builder(graph).op(name, *inputs, **attrs)


def test_print_parse_round_trip():
    graph = Graph("g")
    xr, xi = (graph.add_input(TensorType(("N", 6), DType.f32), name) for name in ("xr", "xi"))
    b = Builder(graph)
    yr, yi = b.op("fft.c2c", xr, xi, axis=1, n=8, inverse=True, norm="ortho")
    zr, zi = b.op("fft.r2c", xr, axis=1, n=5, norm="forward")
    graph.outputs = [yr, yi, zr, zi, b.op("fft.c2r", yr, yi, axis=1, n=9, norm="backward")]
    text = print_graph(graph)
    assert '"fft.c2r"' in text and 'inverse = true' in text
    assert print_graph(parse(text)) == text


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("name", "attrs"), OP_CASES, ids=lambda v: v if isinstance(v, str) else str(v))
@pytest.mark.parametrize(("shape", "axis", "n"), CASES + [((2, 3, 6), 2, 4)], ids=str)
def test_onnx_export_runs_in_onnxruntime_as_the_dft_matrix(shape, axis, n, name, attrs, norm, dtype):
    """Exported as MatMuls by DFT matrices (backends/onnx/lowering_fft.py; ONNX export refused every ``fft.*`` op):
    cropping, padding, odd lengths, other axes, a symbolic batch, and ``c2r`` given more bins than ``n//2 + 1``
    (``(2, 3, 6)`` at ``n = 4``: cropped, where onnxruntime's DFT returns wrong values)."""
    from kiln.backends.onnx.export import graph_to_onnx

    onnxruntime = pytest.importorskip("onnxruntime")
    shape = _c2r_shape(shape, axis, n) if name == "fft.c2r" else shape
    graph, _ = _graph(name, shape, dtype, axis=axis, n=n, norm=norm, **attrs)
    rng = np.random.default_rng(n)
    arrays = [rng.standard_normal(_concrete(shape, batch=3)).astype(DType.of(dtype).numpy) for _ in graph.inputs]
    expected = _reference(name, [a.astype(np.float64) for a in arrays], axis, n, norm, attrs.get("inverse", False))
    session = onnxruntime.InferenceSession(graph_to_onnx(graph).SerializeToString())
    got = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.dtype == DType.of(dtype).numpy and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])


def test_onnx_export_of_c2r_ignores_the_imaginary_parts_of_bin_zero_and_bin_n_over_2():
    from kiln.backends.onnx.export import graph_to_onnx

    onnxruntime = pytest.importorskip("onnxruntime")
    graph, _ = _graph("fft.c2r", (3, 5), "f64", axis=1, n=8, norm="backward")
    session = onnxruntime.InferenceSession(graph_to_onnx(graph).SerializeToString())
    real, imag = np.random.default_rng(0).standard_normal((2, 3, 5))
    moved = imag.copy()
    moved[:, [0, 4]] += 7.0
    names = [i.name for i in session.get_inputs()]
    np.testing.assert_array_equal(session.run(None, dict(zip(names, (real, imag))))[0],
                                  session.run(None, dict(zip(names, (real, moved))))[0])


@pytest.mark.parametrize(("name", "attrs"), OP_CASES, ids=lambda v: v if isinstance(v, str) else str(v))
def test_onnx_export_refuses_a_transform_too_long_for_matrices_naming_the_op(name, attrs):
    from kiln.backends.onnx.export import graph_to_onnx
    from kiln.backends.onnx.lowering_fft import MAX_POINTS

    graph, _ = _graph(name, (3, 4), "f32", axis=1, n=MAX_POINTS + 1, **attrs)
    with pytest.raises(LoweringError, match=f"ONNX export: {name}.*{MAX_POINTS + 1} points.*NumPy or CuPy backend"):
        graph_to_onnx(graph)
