"""The text form: print -> parse -> print is the identity, and parse errors point at the right column."""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kiln.compiler.errors import ParseError, ShapeError
from kiln.compiler.ir import Builder, DType, Graph, TensorType, Value, parse, parse_file, print_graph, verify
from kiln.compiler.ops.registry import OPS, OpDef
from kiln.compiler.ops.tensor import BINARY_ELEMENTWISE, COMPARISONS, UNARY_ELEMENTWISE

# ----- Random well-typed graphs -----

SYMBOLS = ("N", "B", "seq")
INPUT_DTYPES = (DType.f32, DType.f64, DType.i64, DType.bool)
CONSTANT_DTYPES = (DType.f16, DType.f32, DType.f64, DType.i32, DType.i64, DType.bool)
NAME_HINTS = st.sampled_from([None, None, None, "x", "h", "h", "x_1", "0", "3", "a.b", "weird name!", "N"])
Draw = Callable[[st.SearchStrategy[Any]], Any]


def _float_elements(dtype: DType) -> st.SearchStrategy[float]:
    """Any float of the dtype's width, nan and infinities included, plus its tiniest subnormals and normals."""
    info = np.finfo(dtype.numpy)
    tiny = [float(info.smallest_subnormal), -float(info.smallest_subnormal), float(info.tiny), -float(info.tiny), -0.0]
    width = {DType.f16: 16, DType.f32: 32, DType.f64: 64}[dtype]
    return st.floats(width=width) | st.sampled_from(tiny)


def _elements(dtype: DType) -> st.SearchStrategy[Any]:
    if dtype.is_float:
        return _float_elements(dtype)
    if dtype is DType.bool:
        return st.booleans()
    bits = 32 if dtype is DType.i32 else 64
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


class NoCandidate(Exception):
    """No value of the graph fits the step: skip it."""


def _pick(draw: Draw, graph: Graph, accept: Callable[[TensorType], bool] = lambda t: True) -> Value:
    candidates = [v for v in graph.values() if accept(v.type)]
    if not candidates:
        raise NoCandidate
    return draw(st.sampled_from(candidates))


def _add_unary(draw: Draw, b: Builder) -> None:
    name = draw(st.sampled_from(UNARY_ELEMENTWISE))
    x = _pick(draw, b.graph, lambda t: name == "neg" or t.dtype.is_float)
    b.op(f"tensor.{name}", x, name_hint=draw(NAME_HINTS))


def _add_binary(draw: Draw, b: Builder) -> None:
    """A binary op of ``x`` and a value of its dtype; broadcasting may fail, which skips the step."""
    name = draw(st.sampled_from(BINARY_ELEMENTWISE + COMPARISONS))
    x = _pick(draw, b.graph)
    y = _pick(draw, b.graph, lambda t: t.dtype == x.type.dtype)
    b.op(f"tensor.{name}", *draw(st.permutations([x, y])), name_hint=draw(NAME_HINTS))


def _add_where(draw: Draw, b: Builder) -> None:
    condition = _pick(draw, b.graph, lambda t: t.dtype is DType.bool)
    x = _pick(draw, b.graph)
    y = _pick(draw, b.graph, lambda t: t.dtype == x.type.dtype)
    b.op("tensor.where", condition, x, y, name_hint=draw(NAME_HINTS))


def _add_reduction(draw: Draw, b: Builder) -> None:
    x = _pick(draw, b.graph)
    axis = st.integers(-x.type.rank, x.type.rank - 1) if x.type.rank else st.nothing()
    axes = draw(st.none() | st.lists(axis, max_size=x.type.rank))
    name = draw(st.sampled_from(["tensor.reduce_sum", "tensor.reduce_mean", "tensor.reduce_max"]))
    b.op(name, x, axes=axes, keepdims=draw(st.booleans()), name_hint=draw(NAME_HINTS))


def _add_transpose(draw: Draw, b: Builder) -> None:
    x = _pick(draw, b.graph)
    perm = draw(st.none() | st.permutations(range(x.type.rank)))
    b.op("tensor.transpose", x, perm=perm, name_hint=draw(NAME_HINTS))


def _add_reshape(draw: Draw, b: Builder) -> None:
    """Reshape to a permutation of the dims, with maybe one of them written as -1."""
    x = _pick(draw, b.graph)
    target = list(draw(st.permutations(x.type.shape)))
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    b.op("tensor.reshape", x, shape=target, name_hint=draw(NAME_HINTS))


def _add_cast(draw: Draw, b: Builder) -> None:
    b.op("tensor.cast", _pick(draw, b.graph), dtype=draw(st.sampled_from(CONSTANT_DTYPES)), name_hint=draw(NAME_HINTS))


def _add_constant(draw: Draw, b: Builder) -> None:
    b.constant(draw(constant_arrays()), name_hint=draw(NAME_HINTS))


@st.composite
def constant_arrays(draw: Draw) -> np.ndarray:
    """A splat or an arbitrary array of any constant dtype, empty ones included."""
    dtype = draw(st.sampled_from(CONSTANT_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    elements = _elements(dtype)
    if dtype.is_float and draw(st.booleans()):
        elements = st.sampled_from([0.0, -0.0, 1.0])  # signed zeros: 0.0 == -0.0, yet a splat must not merge them
    if draw(st.booleans()):
        return np.full(shape, draw(elements), dtype=dtype.numpy)
    return draw(hnp.arrays(dtype.numpy, shape, elements=elements))


def _add_softmax(draw: Draw, b: Builder) -> None:
    x = _pick(draw, b.graph, lambda t: t.dtype.is_float and t.rank > 0)
    name = draw(st.sampled_from(["nn.softmax", "nn.log_softmax"]))
    b.op(name, x, axis=draw(st.integers(-x.type.rank, x.type.rank - 1)), name_hint=draw(NAME_HINTS))


def _add_matmul(draw: Draw, b: Builder) -> None:
    x = _pick(draw, b.graph, lambda t: t.rank > 0)
    y = _pick(draw, b.graph, lambda t: t.dtype == x.type.dtype and t.rank > 0)
    b.op("tensor.matmul", x, y, name_hint=draw(NAME_HINTS))


STEPS = (_add_unary, _add_binary, _add_where, _add_reduction, _add_transpose, _add_reshape, _add_cast, _add_constant, _add_softmax, _add_matmul)


@st.composite
def graphs(draw: Draw) -> Graph:
    """Random inputs, then random ops built through the Builder (ill-typed choices are skipped), random outputs."""
    graph = Graph(draw(st.sampled_from(["main", "train_step", "f.1"])))
    for _ in range(draw(st.integers(1, 3))):
        shape = draw(st.lists(st.integers(0, 4) | st.sampled_from(SYMBOLS), max_size=3))
        graph.add_input(TensorType(tuple(shape), draw(st.sampled_from(INPUT_DTYPES))), draw(NAME_HINTS))
    builder = Builder(graph)
    for _ in range(draw(st.integers(0, 12))):
        try:
            draw(st.sampled_from(STEPS))(draw, builder)
        except (ShapeError, NoCandidate):
            pass
    graph.outputs = draw(st.lists(st.sampled_from(list(graph.values())), max_size=4))
    return graph


# ----- Structural equality -----


def assert_same_attr(expected: Any, actual: Any) -> None:
    assert type(actual) is type(expected), (expected, actual)
    if isinstance(expected, np.ndarray):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
        assert np.array_equal(actual, expected, equal_nan=expected.dtype.kind == "f")
        if expected.dtype.kind == "f":
            assert np.array_equal(np.signbit(actual), np.signbit(expected) & ~np.isnan(expected))
    elif isinstance(expected, tuple):
        assert len(actual) == len(expected)
        for e, a in zip(expected, actual):
            assert_same_attr(e, a)
    else:
        assert actual == expected


def assert_same_graph(expected: Graph, actual: Graph) -> None:
    """Same name, input types, ops (names, attrs, result types, which values they read) and outputs."""
    assert actual.name == expected.name
    assert [v.type for v in actual.inputs] == [v.type for v in expected.inputs]
    assert [op.name for op in actual.ops] == [op.name for op in expected.ops]
    mapping = dict(zip(expected.values(), actual.values()))
    for e, a in zip(expected.ops, actual.ops):
        assert [mapping[v] for v in e.operands] == a.operands
        assert [r.type for r in a.results] == [r.type for r in e.results]
        assert list(a.attrs) == list(e.attrs)
        for key in e.attrs:
            assert_same_attr(e.attrs[key], a.attrs[key])
    assert [mapping[v] for v in expected.outputs] == actual.outputs


# ----- Round trips -----


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_print_parse_print_is_identity(graph):
    verify(graph)
    text = print_graph(graph)
    parsed = parse(text)
    assert print_graph(parsed) == text
    assert_same_graph(graph, parsed)
    verify(parsed)


@settings(max_examples=200, deadline=None)
@given(constant_arrays())
def test_constants_round_trip_exactly(value):
    graph = Graph("constants")
    graph.outputs = [Builder(graph).constant(value)]
    text = print_graph(graph)
    parsed = parse(text)
    assert print_graph(parsed) == text
    assert_same_attr(value, parsed.ops[0].attrs["value"])


MLP = """\
// A two-layer perceptron.
func @mlp(%x: tensor<Nx784xf32>, %w1: tensor<784x128xf32>, %w2: tensor<128x10xf32>) {
  %h = "tensor.matmul"(%x, %w1) : (tensor<Nx784xf32>, tensor<784x128xf32>) -> tensor<Nx128xf32>
  %a = "tensor.relu"(%h) : (tensor<Nx128xf32>) -> tensor<Nx128xf32>  // activation
  %logits = "tensor.matmul"(%a, %w2) : (tensor<Nx128xf32>, tensor<128x10xf32>) -> tensor<Nx10xf32>
  %p = "nn.softmax"(%logits) : (tensor<Nx10xf32>) -> tensor<Nx10xf32>
  %s = "tensor.reduce_sum"(%p) {keepdims = true} : (tensor<Nx10xf32>) -> tensor<1x1xf32>
  return %p, %s : tensor<Nx10xf32>, tensor<1x1xf32>
}
"""


def build_mlp() -> Graph:
    graph = Graph("mlp")
    x = graph.add_input(TensorType(("N", 784), DType.f32), "x")
    w1 = graph.add_input(TensorType((784, 128), DType.f32), "w1")
    w2 = graph.add_input(TensorType((128, 10), DType.f32), "w2")
    b = Builder(graph)
    logits = b.matmul(b.relu(b.matmul(x, w1, name_hint="h"), name_hint="a"), w2, name_hint="logits")
    p = b.softmax(logits, name_hint="p")
    graph.outputs = [p, b.reduce_sum(p, keepdims=True, name_hint="s")]
    return graph


def test_parse_matches_the_builder_and_fills_default_attrs():
    graph = parse(MLP)
    assert_same_graph(build_mlp(), graph)
    assert graph.ops[3].attrs == {"axis": -1}
    assert graph.ops[4].attrs == {"axes": None, "keepdims": True}
    assert [v.name_hint for v in graph.inputs] == ["x", "w1", "w2"]
    assert graph.ops[0].location == "<ir>:3:8"


def test_parse_keeps_use_lists_exact():
    graph = parse(MLP)
    x, w1, _ = graph.inputs
    h = graph.ops[0].result
    assert x.uses == [(graph.ops[0], 0)] and w1.uses == [(graph.ops[0], 1)]
    assert h.uses == [(graph.ops[1], 0)]
    verify(graph)


def test_print_after_parse_is_canonical():
    text = parse(MLP).__str__()
    assert text == print_graph(build_mlp())
    assert "// " not in text and '{axis = -1}' in text


@pytest.mark.parametrize(
    ("dtype", "literal", "expected"),
    [
        ("2x2xf32", "dense<[[1, 2.5], [-0.0, -1e-45]]>", np.array([[1, 2.5], [-0.0, -1e-45]], np.float32)),
        ("2x3xi64", "dense<-7>", np.full((2, 3), -7, np.int64)),
        ("bool", "dense<true>", np.array(True)),
        ("3xf64", "dense<[inf, -inf, nan]>", np.array([np.inf, -np.inf, np.nan])),
        ("0x3xf16", "dense<[]>", np.zeros((0, 3), np.float16)),
        ("2x0xi32", "dense<[[], []]>", np.zeros((2, 0), np.int32)),
        ("f64", "dense<5e-324>", np.array(5e-324)),
    ],
)
def test_dense_literals(dtype, literal, expected):
    text = f'func @f() {{\n  %c = "tensor.constant"() {{value = {literal}}} : () -> tensor<{dtype}>\n  return %c : tensor<{dtype}>\n}}\n'
    value = parse(text).ops[0].attrs["value"]
    assert_same_attr(expected, value)


def test_bare_return_and_no_inputs():
    text = "func @empty() {\n  return\n}\n"
    graph = parse(text)
    assert (graph.inputs, graph.ops, graph.outputs) == ([], [], [])
    assert print_graph(graph) == text


def test_string_and_dtype_attributes():
    text = (
        "func @f(%x: tensor<3xf32>, %y: tensor<3xf32>, %l: tensor<3xi64>) {\n"
        '  %m = "nn.mse"(%x, %y) {reduction = "sum"} : (tensor<3xf32>, tensor<3xf32>) -> tensor<f32>\n'
        '  %o = "tensor.one_hot"(%l) {num_classes = 4, dtype = f64} : (tensor<3xi64>) -> tensor<3x4xf64>\n'
        "  return %m, %o : tensor<f32>, tensor<3x4xf64>\n}\n"
    )
    graph = parse(text)
    assert graph.ops[0].attrs == {"reduction": "sum"}
    assert graph.ops[1].attrs == {"num_classes": 4, "dtype": DType.f64}
    assert print_graph(graph) == text


def test_attribute_lists_parse_to_nested_tuples():
    text = (
        "func @f(%x: tensor<Nx3xf32>) {\n"
        '  %r = "tensor.reshape"(%x) {shape = [-1, "N"]} : (tensor<Nx3xf32>) -> tensor<3xNxf32>\n'
        "  return %r : tensor<3xNxf32>\n}\n"
    )
    assert parse(text).ops[0].attrs == {"shape": (-1, "N")}


@pytest.fixture
def split_and_sink_ops(monkeypatch):
    """Test-only ops with two results and with none (no registered op has either), removed afterwards."""
    split = OpDef("test.split", lambda x, *, parts: (x, x), defaults={"parts": 2})
    sink = OpDef("test.sink", lambda x: ())
    monkeypatch.setitem(OPS, "test.split", split)
    monkeypatch.setitem(OPS, "test.sink", sink)


def test_multi_result_and_zero_result_ops(split_and_sink_ops):
    graph = Graph("g")
    x = graph.add_input(TensorType((3,), DType.f32), "x")
    b = Builder(graph)
    first, second = b.op("test.split", x, name_hint="part")
    b.op("test.sink", second)
    graph.outputs = [second, first]
    text = print_graph(graph)
    assert '%part, %part_1 = "test.split"(%x) {parts = 2} : (tensor<3xf32>) -> (tensor<3xf32>, tensor<3xf32>)' in text
    assert '  "test.sink"(%part_1) : (tensor<3xf32>) -> ()\n' in text
    parsed = parse(text)
    assert print_graph(parsed) == text
    assert_same_graph(graph, parsed)


def test_parse_file_names_the_file_in_errors(tmp_path):
    path = tmp_path / "model.ir"
    path.write_text(MLP)
    assert_same_graph(build_mlp(), parse_file(path))
    path.write_text(MLP.replace("%a, %w2", "%b, %w2"))
    with pytest.raises(ParseError, match=rf"^{re.escape(str(path))}:5:29: error: use of undefined value %b;"):
        parse_file(path)


# ----- Parse errors: file:line:col, the source line, a caret under the column -----


def parse_error(text: str) -> tuple[str, str, str]:
    with pytest.raises(ParseError) as info:
        parse(text, "model.ir")
    header, line, caret = str(info.value).split("\n")
    return header, line, caret


def assert_error_at(text: str, marker: str, message: str) -> None:
    """The error is at the first ``marker`` in ``text`` (at its ``^``, if it has one) and shows that line and a caret."""
    before, has_caret, after = marker.partition("^")
    offset = text.index(before + after) + (len(before) if has_caret else 0)
    line_number = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    header, line, caret = parse_error(text)
    assert header.startswith(f"model.ir:{line_number}:{column}: error: "), header
    assert message in header, header
    assert line == text.splitlines()[line_number - 1]
    assert caret == "".join("\t" if char == "\t" else " " for char in line[: column - 1]) + "^"


@pytest.mark.parametrize(
    ("old", "new", "marker", "message"),
    [
        ('"tensor.relu"', '"tensor.rleu"', '"tensor.rleu"', 'unknown op "tensor.rleu"; did you mean "tensor.relu"'),
        ('"tensor.relu"', '"frob.nicate"', '"frob.nicate"', "registered ops: "),
        ("relu\"(%h)", "relu\"(%g)", "%g", "use of undefined value %g"),
        ("%a = ", "%h = ", "%h = \"tensor.relu", "redefinition of %h, first defined at line 3 column 3"),
        ("(%h) : (tensor<Nx128xf32>)", "(%h) : (tensor<Nx128xf64>)", "tensor<Nx128xf64>", "%h has type tensor<Nx128xf32>, but the signature of tensor.relu declares tensor<Nx128xf64>"),
        (") -> tensor<Nx10xf32>\n  %p", ") -> tensor<Nx11xf32>\n  %p", "tensor<Nx11xf32>", "result type tensor<Nx11xf32> does not match tensor<Nx10xf32>"),
        ("{keepdims = true}", "{keepdims = true, axes = [0]}", "tensor<1x1xf32>", "does not match tensor<1x10xf32>, which tensor.reduce_sum infers"),
        ("{keepdims = true}", "{keepdim = true}", "keepdim", "tensor.reduce_sum has no attribute 'keepdim'; it takes: axes, keepdims"),
        ("{keepdims = true}", "{keepdims = true, keepdims = false}", "keepdims = false", "attribute 'keepdims' is given twice"),
        ("{keepdims = true}", "{keepdims = yes}", "yes", "expected an attribute value"),
        ("{keepdims = true}", "{keepdims = true,}", ",^}", "expected an attribute name, found '}'"),
        ("%a = \"tensor.relu\"(%h)", "%a \"tensor.relu\"(%h)", '"tensor.relu"', "expected '=' after the result names"),
        ("(%x, %w1) :", "(%x, %w1 :", "%w1 ^:", "expected ')' or ','"),
        ("%w1: tensor<784x128xf32>", "%w1: tensor<784x128xf31>", "f31>", "unknown dtype 'f31'"),
        ("%w1: tensor<784x128xf32>", "%w1: tensor<784xN-1xf32>", "N-1", "bad dim 'N-1'"),
        ("%w1: tensor<784x128xf32>", "%w1: tensor[784]", "tensor[", "expected a tensor type like tensor<Nx784xf32>, found 'tensor'"),
        ("  return", "  $return", "$", "unexpected character '$'"),
        ("return %p, %s : tensor<Nx10xf32>, tensor<1x1xf32>", "return %p, %s : tensor<Nx10xf32>", "return", "return lists 2 values but 1 types"),
        ("func @mlp", "fun @mlp", "fun", "expected 'func' to start the function"),
    ],
)
def test_parse_errors_point_at_the_column(old, new, marker, message):
    assert old in MLP
    text = MLP.replace(old, new, 1)
    assert_error_at(text, marker, message)


def test_error_at_end_of_input_points_after_the_last_token():
    text = MLP[: MLP.rindex("}")]
    assert_error_at(text, "tensor<Nx10xf32>, tensor<1x1xf32>^\n", "expected '}' to close the function body, found the end of the input")


def test_trailing_garbage_is_an_error():
    text = MLP + "extra\n"
    assert_error_at(text, "extra", "expected the end of the input after the function's closing '}'")


def test_shape_rule_rejection_points_at_the_op():
    text = MLP.replace('"tensor.matmul"(%a, %w2) : (tensor<Nx128xf32>, tensor<128x10xf32>)', '"tensor.matmul"(%w2, %a) : (tensor<128x10xf32>, tensor<Nx128xf32>)')
    assert_error_at(text, '"tensor.matmul"(%w2', "tensor.matmul rejects these operands or attributes: tensor.matmul: contraction dims differ")


@pytest.mark.parametrize(
    ("literal", "marker", "message"),
    [
        ("dense<[1.0, 2.0]>", "dense<", "dense<...> does not match the result shape [2, 2]"),
        ("dense<[[1.0, 2.0], [3.0]]>", "dense<", "does not match the result shape [2, 2]"),
        ("dense<true>", "dense<", "dense<...> elements must be numbers for dtype f32"),
        ("[dense<1.0>]", "dense<", "dense<...> must be a whole attribute value"),
        ("dense<[[1.0, 2.0], [3.0, x]]>", "x]", "expected a number, true or false or a [list] in dense<...>, found 'x'"),
        ("dense<[1.0, 2.0", "dense<[1.0, 2.0^}", "expected ']' or ','"),
    ],
)
def test_dense_errors(literal, marker, message):
    text = f'func @f() {{\n  %c = "tensor.constant"() {{value = {literal}}} : () -> tensor<2x2xf32>\n  return\n}}\n'
    assert_error_at(text, marker, message)


def test_dense_integers_must_fit_their_dtype():
    text = 'func @f() {\n  %c = "tensor.constant"() {value = dense<[1, 9999999999]>} : () -> tensor<2xi32>\n  return\n}\n'
    assert_error_at(text, "dense<", "dense<...> does not fit i32")
    assert_error_at(text.replace("9999999999", "2.5"), "dense<", "dense<...> elements must be integers for dtype i32")


def test_dense_needs_a_static_result_type():
    text = 'func @f() {\n  %c = "tensor.constant"() {value = dense<1.0>} : () -> tensor<Nxf32>\n  return\n}\n'
    assert_error_at(text, "dense<", "dense<...> takes its shape from the op's single static result type")


def test_comments_are_skipped_and_lines_still_count():
    text = "// header\n// more\n" + MLP.replace('"tensor.relu"', '"tensor.rleu"')
    assert_error_at(text, '"tensor.rleu"', "unknown op")
    assert parse("// only a comment\n" + MLP.replace("\n", "  // trailing\n")).name == "mlp"


def test_caret_keeps_tabs_so_it_lines_up():
    text = MLP.replace('  %a = "tensor.relu"(%h)', '\t%a = "tensor.relu"(%g)')
    assert_error_at(text, "%g", "use of undefined value %g")
    _, line, caret = parse_error(text)
    assert line.startswith("\t%a") and caret == "\t" + " " * 19 + "^"
