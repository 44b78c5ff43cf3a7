"""The op table: one row per op, driving forward tests, gradient checks and oracles.

A row names the op, a NumPy reference ``reference(*arrays, **attrs)``, its
cases (operand shapes and attributes), an input generator and whether the op
is differentiable. A shape may hold the symbol ``"N"``; such a case is built
once with the symbolic type and run with several batch sizes, and ``"N"`` in
an attribute (``reshape`` to ``("N", -1)``) is replaced by the bound size
before the reference sees it.

Rows cover every op in ``OPS`` but ``tensor.constant`` and ``optim.*``, which
have their own tests. ``test_forward.py`` checks the table against ``OPS``.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import DType, TensorType, dim_factors, dim_value

Shape = tuple[Any, ...]
"""Dims are ints or the symbol ``"N"``."""
Generator = Callable[[np.random.Generator, Sequence[tuple[int, ...]], Sequence[np.dtype], Mapping[str, Any]], list[np.ndarray]]

FLOATS = ("f32", "f64")
FLOATS_AND_INTS = ("f32", "f64", "i32", "i64")
BATCH_SIZES = (2, 5)
"""The sizes ``"N"`` takes in forward tests: one executable serves both."""


@dataclass(frozen=True)
class Case:
    shapes: tuple[Shape, ...]
    """One shape per operand."""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    grad: bool = True
    """False for a case of a differentiable op that has no gradient to check (a cast to an integer)."""
    operand_dtypes: tuple[str | None, ...] | None = None
    """Overrides the row's ``operand_dtypes`` for this case."""

    @property
    def symbolic(self) -> bool:
        return any(isinstance(dim, str) for shape in self.shapes for dim in shape)

    @property
    def id(self) -> str:
        shapes = "+".join("x".join(map(str, shape)) or "scalar" for shape in self.shapes)
        attrs = ",".join(f"{key}={_attr_id(value)}" for key, value in self.attrs.items())
        dtypes = "" if self.operand_dtypes is None else "[" + ",".join(d or "-" for d in self.operand_dtypes) + "]"
        return shapes + (f"[{attrs}]" if attrs else "") + dtypes


@dataclass(frozen=True)
class OpRow:
    name: str
    reference: Callable[..., np.ndarray]
    cases: tuple[Case, ...]
    inputs: Generator
    differentiable: bool = True
    dtypes: tuple[str, ...] = FLOATS
    """The dtypes forward tests run the row in; gradient checks run in f64."""
    operand_dtypes: tuple[str | None, ...] | None = None
    """Fixed dtypes of some operands (a bool condition, integer labels); ``None`` entries take the dtype under test."""

    def dtypes_of(self, case: Case, dtype: str) -> list[DType]:
        fixed = case.operand_dtypes or self.operand_dtypes or (None,) * len(case.shapes)
        return [DType.of(d or dtype) for d in fixed]


def _attr_id(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(map(str, value)) + ")"
    return str(getattr(value, "value", value))


# Instantiating a case: types, graphs, arrays.


def concrete(value: Any, sizes: Mapping[str, int]) -> Any:
    """Replace symbols by their sizes in a shape or an attribute, products of them too (``16*N``)."""
    if isinstance(value, tuple):
        return tuple(concrete(item, sizes) for item in value)
    if isinstance(value, str) and all(symbol in sizes for symbol in dim_factors(value)[1]):
        return dim_value(value, dict(sizes))
    return value


def concrete_attrs(attrs: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
    return {key: concrete(value, sizes) for key, value in attrs.items()}


def input_types(row: OpRow, case: Case, dtype: str) -> list[TensorType]:
    return [TensorType(shape, d) for shape, d in zip(case.shapes, row.dtypes_of(case, dtype))]


def apply(builder: Builder, row: OpRow, case: Case, operands: Sequence[Value]) -> Value:
    return builder.op(row.name, *operands, **case.attrs)


def op_graph(row: OpRow, case: Case, dtype: str) -> tuple[Graph, list[Value], Value]:
    """``@name(inputs) -> op(inputs)``: the graph, its inputs and the op's result (also the graph's output)."""
    graph = Graph(row.name.replace(".", "_"))
    inputs = [graph.add_input(t, f"x{i}") for i, t in enumerate(input_types(row, case, dtype))]
    result = apply(Builder(graph), row, case, inputs)
    graph.outputs = [result]
    return graph, inputs, result


def make_inputs(row: OpRow, case: Case, dtype: str, sizes: Mapping[str, int] = {}, salt: str = "") -> list[np.ndarray]:
    """Deterministic inputs for ``case``: the seed depends only on the row, the case, the dtype and the sizes."""
    key = f"{row.name}|{case.id}|{dtype}|{sorted(sizes.items())}|{salt}"
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    shapes = [concrete(shape, sizes) for shape in case.shapes]
    dtypes = [d.numpy for d in row.dtypes_of(case, dtype)]
    arrays = row.inputs(rng, shapes, dtypes, concrete_attrs(case.attrs, sizes))
    return [np.asarray(a, dtype=d) for a, d in zip(arrays, dtypes)]


def reference(row: OpRow, case: Case, arrays: Sequence[np.ndarray], sizes: Mapping[str, int] = {}) -> np.ndarray:
    return np.asarray(row.reference(*arrays, **concrete_attrs(case.attrs, sizes)))


def weighted_sum(graph: Graph, value: Value, name: str) -> Value:
    """``sum(value * w)`` with ``w`` a new graph input of ``value``'s type: every element counts with its own weight."""
    b = Builder(graph)
    return b.reduce_sum(b.mul(value, graph.add_input(value.type, name)))


def gradient_graph(row: OpRow, case: Case, dtype: str) -> tuple[Graph, list[int]]:
    """Outputs ``(op(x), d sum(op(x) * w)/dx for each float input x)``, and the indices of those inputs."""
    graph, inputs, result = op_graph(row, case, dtype)
    wrt = [i for i, v in enumerate(inputs) if v.type.dtype.is_float]
    grads = differentiate(graph, weighted_sum(graph, result, "w"), [inputs[i] for i in wrt])
    graph.outputs = [graph.outputs[0], *grads]  # op(x) as autodiff left it (a composite without a rule is expanded)
    return graph, wrt


def extra_inputs(graph: Graph, given: Sequence[np.ndarray], sizes: Mapping[str, int], seed: str) -> list[np.ndarray]:
    """Random normal arrays for the graph inputs after the ``given`` ones (the weights), seeded by ``seed``."""
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    later = graph.inputs[len(given) :]
    return [rng.standard_normal(concrete(v.type.shape, sizes)).astype(v.type.dtype.numpy) for v in later]


def size_bindings(case: Case) -> list[dict[str, int]]:
    """The symbol bindings a forward test runs ``case`` with: one empty binding for a static case."""
    return [{"N": n} for n in BATCH_SIZES] if case.symbolic else [{}]


# Input generators.


def _fill(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, floats: Callable[[tuple[int, ...]], np.ndarray]) -> np.ndarray:
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-5, 6, size=shape)
    return floats(shape)


def each(floats: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]) -> Generator:
    """Operands drawn independently: ``floats`` for float operands, small ints and random bools otherwise."""
    return lambda rng, shapes, dtypes, attrs: [_fill(rng, s, d, lambda shape: floats(rng, shape)) for s, d in zip(shapes, dtypes)]


normal = each(lambda rng, shape: rng.standard_normal(shape))
positive = each(lambda rng, shape: rng.uniform(0.5, 2.0, shape))
away_from_zero = each(lambda rng, shape: rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape))
"""For ``relu``, whose kink at 0 a finite difference must not straddle."""
coarse = each(lambda rng, shape: rng.integers(-2, 3, shape).astype(float))
"""Few distinct values, so comparisons see ties."""


def distinct(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    """Every element of every operand distinct, at least 0.05 apart: no ties for max/min, in value or under finite differences."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    pool = rng.permutation(np.arange(sum(sizes)) - sum(sizes) // 2) * 0.05 + rng.uniform(-0.01, 0.01)
    arrays, start = [], 0
    for shape, size, dtype in zip(shapes, sizes, dtypes):
        chunk = pool[start : start + size].reshape(shape)
        arrays.append(chunk if np.issubdtype(dtype, np.floating) else rng.permutation(np.arange(size) - size // 2).reshape(shape))
        start += size
    return arrays


def divisor(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    numerator, denominator = away_from_zero(rng, shapes, dtypes, attrs)
    return [numerator, np.where(np.abs(denominator) < 0.5, np.sign(denominator) * 0.5, denominator)]


def power(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    return [rng.uniform(0.5, 2.0, shapes[0]), rng.uniform(-2.0, 2.0, shapes[1])]


def condition_first(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    return [rng.random(shapes[0]) < 0.5] + normal(rng, shapes[1:], dtypes[1:], attrs)


def labels_for_logits(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    """Logits, labels in range, then a cotangent of the loss if the op takes one (``nn.cross_entropy_grad``)."""
    logits_shape, labels_shape, *cotangent_shape = shapes
    return [rng.standard_normal(logits_shape) * 2, rng.integers(0, logits_shape[1], labels_shape)] + \
        [rng.uniform(0.5, 2.0, shape) for shape in cotangent_shape]


def softmax_and_cotangent(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    """A softmax along the case's axis (positive, summing to one) and a cotangent for it."""
    logits = rng.standard_normal(shapes[0]) * 2
    e = np.exp(logits - logits.max(axis=attrs["axis"], keepdims=True))
    return [e / e.sum(axis=attrs["axis"], keepdims=True), rng.standard_normal(shapes[1])]


def class_labels(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    return [rng.integers(0, attrs["num_classes"], shapes[0])]


def indices_below_size(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    return [rng.integers(0, attrs["size"], shapes[0])]


def scaled(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    """Values with a fractional part, so casts to integers truncate."""
    return each(lambda rng, shape: rng.standard_normal(shape) * 3)(rng, shapes, dtypes, attrs)


# NumPy references, written from the math rather than copied from the kernels.


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x, *, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, *, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _loss_reduction(per_sample, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](per_sample)


def _cross_entropy(logits, labels, *, reduction):
    rows = np.arange(logits.shape[0])
    return _loss_reduction(-_log_softmax(logits, axis=1)[rows, labels], reduction)


def _cross_entropy_grad(logits, labels, cotangent, *, reduction):
    # d/dx mean_i (logsumexp(x_i) - x_i[y_i]) = (softmax(x_i) - onehot(y_i)) / n, times the cotangent
    scale = {"mean": cotangent / labels.size, "sum": cotangent, "none": cotangent[:, None] if cotangent.ndim else cotangent}[reduction]
    return (_softmax(logits, axis=1) - np.eye(logits.shape[1])[labels]) * scale


def _softmax_grad(y, g, *, axis):
    # the Jacobian of softmax is diag(y) - y y^T along the axis; dx = J^T g
    moved_y, moved_g = np.moveaxis(y, axis, -1), np.moveaxis(g, axis, -1)
    jacobian = moved_y[..., :, None] * np.eye(moved_y.shape[-1]) - moved_y[..., :, None] * moved_y[..., None, :]
    return np.moveaxis(np.einsum("...ij,...i->...j", jacobian, moved_g), -1, axis)


def _mse(prediction, target, *, reduction):
    return _loss_reduction((prediction - target) ** 2, reduction)


def _one_hot(labels, *, num_classes, dtype):
    return np.eye(num_classes, dtype=DType.of(dtype).numpy)[labels]


def _numel(x, *, axes, dtype):
    axes = range(x.ndim) if axes is None else (axes,) if isinstance(axes, int) else axes
    return np.array(np.prod([x.shape[a] for a in axes], dtype=np.int64), dtype=DType.of(dtype).numpy)


def _reduction(function):
    return lambda x, *, axes, keepdims: function(x, axis=axes, keepdims=keepdims)


# The cases.

UNARY_CASES = (Case(((),)), Case(((5,),)), Case(((3, 4),)), Case(((2, 3, 4),)), Case((("N", 3),)))

BINARY_CASES = (
    Case(((3, 4), (3, 4))),
    Case(((3, 1), (1, 4))),
    Case(((2, 3, 4), (4,))),
    Case(((2, 1, 4), (3, 1))),
    Case(((), (3, 4))),
    Case(((3, 4), ())),
    Case(((), ())),
    Case((("N", 3), (3,))),
    Case((("N", 1), (1, 4))),
)

COMPARISON_CASES = BINARY_CASES[:3] + BINARY_CASES[4:5] + BINARY_CASES[7:8]

WHERE_CASES = (
    Case(((3, 4), (3, 4), (3, 4))),
    Case(((3, 1), (1, 4), ())),
    Case(((), (2, 3), (2, 3))),
    Case(((4,), (2, 3, 4), (3, 1))),
    Case((("N", 1), ("N", 4), (4,))),
)

MATMUL_CASES = (
    Case(((3, 4), (4, 5))),
    Case(((2, 3, 4), (4, 5))),
    Case(((2, 3, 4), (2, 4, 5))),
    Case(((1, 3, 4), (5, 4, 6))),
    Case(((2, 1, 3, 4), (5, 4, 2))),
    Case(((4,), (4, 5))),
    Case(((3, 4), (4,))),
    Case(((4,), (4,))),
    Case(((4,), (2, 4, 5))),
    Case(((2, 3, 4), (4,))),
    Case((("N", 4), (4, 3))),
    Case((("N", 3, 4), (4, 2))),
)


def reduction_cases() -> tuple[Case, ...]:
    static = [
        Case(((2, 3, 4),), {"axes": axes, "keepdims": keepdims})
        for axes in (None, 1, -1, (0, 2), (-1, -3), ())
        for keepdims in (False, True)
    ]
    return tuple(
        static
        + [
            Case(((),), {"axes": None, "keepdims": False}),
            Case(((5,),), {"axes": 0, "keepdims": True}),
            Case((("N", 3),), {"axes": None, "keepdims": False}),
            Case((("N", 3),), {"axes": 0, "keepdims": True}),
            Case((("N", 3),), {"axes": (1,), "keepdims": False}),
        ]
    )


SOFTMAX_GRAD_CASES = (
    Case(((3, 5), (3, 5)), {"axis": -1}),
    Case(((2, 3, 4), (2, 3, 4)), {"axis": 1}),
    Case(((5,), (5,)), {"axis": 0}),
    Case((("N", 4), ("N", 4)), {"axis": -1}),
    Case((("N", 4), ("N", 4)), {"axis": 0}),
)
SOFTMAX_CASES = (
    Case(((3, 5),), {"axis": -1}),
    Case(((3, 5),), {"axis": 0}),
    Case(((2, 3, 4),), {"axis": 1}),
    Case(((2, 3, 4),), {"axis": -3}),
    Case(((5,),), {"axis": 0}),
    Case((("N", 4),), {"axis": -1}),
    Case((("N", 4),), {"axis": 0}),
)

CAST_CASES = tuple(
    Case((shape,), {"dtype": target}, grad=target == "f64")
    for shape in ((3, 4), (), ("N", 2))
    for target in ("f32", "f64", "i32", "i64", "bool")
)

RESHAPE_CASES = (
    Case(((2, 3, 4),), {"shape": (6, 4)}),
    Case(((2, 3, 4),), {"shape": (-1,)}),
    Case(((2, 3, 4),), {"shape": (4, -1, 2)}),
    Case(((12,),), {"shape": (3, 4)}),
    Case(((),), {"shape": (1, 1)}),
    Case(((1,),), {"shape": ()}),
    Case((("N", 3, 4),), {"shape": ("N", -1)}),
    Case((("N", 12),), {"shape": ("N", 3, 4)}),
    Case((("N", 3),), {"shape": (-1, 3)}),
)

TRANSPOSE_CASES = (
    Case(((3, 4),), {"perm": None}),
    Case(((2, 3, 4),), {"perm": None}),
    Case(((2, 3, 4),), {"perm": (2, 0, 1)}),
    Case(((2, 3, 4),), {"perm": (1, 0, 2)}),
    Case(((2, 3, 4),), {"perm": (0, 1, 2)}),
    Case(((),), {"perm": None}),
    Case(((5,),), {"perm": (0,)}),
    Case((("N", 3, 4),), {"perm": (1, 2, 0)}),
)

BROADCAST_TO_CASES = (
    Case(((4,),), {"shape": (3, 4)}),
    Case(((3, 1),), {"shape": (3, 4)}),
    Case(((),), {"shape": (2, 3)}),
    Case(((1, 4),), {"shape": (2, 3, 4)}),
    Case(((3, 4),), {"shape": (3, 4)}),
    Case((("N", 1),), {"shape": ("N", 4)}),
)

ONE_HOT_CASES = tuple(
    Case((shape,), {"num_classes": 4, "dtype": target}) for shape in ((5,), (2, 3), (), ("N",)) for target in ("f32", "f64", "i64")
)

CHECK_INDEX_CASES = tuple(Case((shape,), {"size": 4, "message": "index {value} at {position}"}) for shape in ((5,), (2, 3), (), ("N",)))

NUMEL_CASES = (
    Case(((2, 3, 4),), {"axes": None, "dtype": "f32"}),
    Case(((2, 3, 4),), {"axes": 1, "dtype": "i64"}),
    Case(((2, 3, 4),), {"axes": (0, 2), "dtype": "f64"}),
    Case(((2, 3, 4),), {"axes": -1, "dtype": "i32"}),
    Case(((2, 3, 4),), {"axes": (), "dtype": "f32"}),
    Case(((),), {"axes": None, "dtype": "f32"}),
    Case((("N", 3),), {"axes": None, "dtype": "f32"}),
    Case((("N", 3),), {"axes": (0,), "dtype": "i64"}),
)

CROSS_ENTROPY_CASES = tuple(
    Case(shapes, {"reduction": reduction}, operand_dtypes=(None, labels))
    for shapes, labels in ((((4, 5), (4,)), "i64"), (((1, 3), (1,)), "i32"), ((("N", 5), ("N",)), "i64"))
    for reduction in ("mean", "sum", "none")
)

CROSS_ENTROPY_GRAD_CASES = tuple(
    Case(((n, 5), (n,), (n,) if reduction == "none" else ()), {"reduction": reduction}, operand_dtypes=(None, "i64", None))
    for n in (4, "N")
    for reduction in ("mean", "sum", "none")
)

MSE_CASES = tuple(
    Case((shape, shape), {"reduction": reduction}) for shape in ((3, 4), (5,), (), ("N", 3)) for reduction in ("mean", "sum", "none")
)


def _rows() -> list[OpRow]:
    unary = {
        "neg": (np.negative, normal, FLOATS_AND_INTS),
        "exp": (np.exp, normal, FLOATS),
        "log": (np.log, positive, FLOATS),
        "tanh": (np.tanh, normal, FLOATS),
        "sigmoid": (_sigmoid, normal, FLOATS),
        "relu": (lambda x: np.where(x > 0, x, 0).astype(x.dtype), away_from_zero, FLOATS),
        "sqrt": (np.sqrt, positive, FLOATS),
    }
    binary = {
        "add": (np.add, normal, FLOATS_AND_INTS),
        "sub": (np.subtract, normal, FLOATS_AND_INTS),
        "mul": (np.multiply, normal, FLOATS_AND_INTS),
        "div": (np.divide, divisor, FLOATS),
        "pow": (np.power, power, FLOATS),
        "maximum": (np.maximum, distinct, FLOATS_AND_INTS),
        "minimum": (np.minimum, distinct, FLOATS_AND_INTS),
    }
    comparisons = {
        "equal": np.equal,
        "not_equal": np.not_equal,
        "less": np.less,
        "less_equal": np.less_equal,
        "greater": np.greater,
        "greater_equal": np.greater_equal,
    }
    reductions = {
        "reduce_sum": (np.sum, normal, FLOATS_AND_INTS),
        "reduce_mean": (np.mean, normal, FLOATS),
        "reduce_max": (np.max, distinct, FLOATS_AND_INTS),
    }
    rows = [OpRow(f"tensor.{n}", f, UNARY_CASES, g, dtypes=d) for n, (f, g, d) in unary.items()]
    rows += [OpRow(f"tensor.{n}", f, BINARY_CASES, g, dtypes=d) for n, (f, g, d) in binary.items()]
    rows += [OpRow(f"tensor.{n}", f, COMPARISON_CASES, coarse, False, ("f32", "f64", "i64")) for n, f in comparisons.items()]
    rows += [OpRow(f"tensor.{n}", _reduction(f), reduction_cases(), g, dtypes=d) for n, (f, g, d) in reductions.items()]
    return rows + [
        OpRow("tensor.where", np.where, WHERE_CASES, condition_first, dtypes=("f32", "f64", "i64"), operand_dtypes=("bool", None, None)),
        OpRow("tensor.cast", lambda x, *, dtype: x.astype(DType.of(dtype).numpy), CAST_CASES, scaled, dtypes=("f32", "f64", "i64", "bool")),
        OpRow("tensor.matmul", np.matmul, MATMUL_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.reshape", lambda x, *, shape: np.reshape(x, shape), RESHAPE_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.transpose", lambda x, *, perm: np.transpose(x, perm), TRANSPOSE_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.broadcast_to", lambda x, *, shape: np.broadcast_to(x, shape), BROADCAST_TO_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.one_hot", _one_hot, ONE_HOT_CASES, class_labels, False, ("i32", "i64")),
        OpRow("tensor.check_index", lambda index, *, size, message: index, CHECK_INDEX_CASES, indices_below_size, False,
              ("i32", "i64")),
        OpRow("tensor.numel", _numel, NUMEL_CASES, normal, False, ("f32", "i64")),
        OpRow("tensor.stop_gradient", lambda x: x, UNARY_CASES, normal, False),
        OpRow("nn.softmax", _softmax, SOFTMAX_CASES, normal),
        OpRow("nn.log_softmax", _log_softmax, SOFTMAX_CASES, normal),
        OpRow("nn.softmax_grad", _softmax_grad, SOFTMAX_GRAD_CASES, softmax_and_cotangent),
        OpRow("nn.cross_entropy", _cross_entropy, CROSS_ENTROPY_CASES, labels_for_logits),
        OpRow("nn.cross_entropy_grad", _cross_entropy_grad, CROSS_ENTROPY_GRAD_CASES, labels_for_logits),
        OpRow("nn.mse", _mse, MSE_CASES, normal),
    ]


# Losses beyond cross-entropy and MSE (PyTorch's definitions).


def _l1(prediction, target, *, reduction):
    return _loss_reduction(np.abs(prediction - target), reduction)


def _smooth_l1(prediction, target, *, reduction, beta):
    z = np.abs(prediction - target)
    return _loss_reduction(np.where(z < beta, 0.5 * z * z / beta, z - 0.5 * beta), reduction)


def _huber(prediction, target, *, reduction, delta):
    z = np.abs(prediction - target)
    return _loss_reduction(np.where(z < delta, 0.5 * z * z, delta * (z - 0.5 * delta)), reduction)


def _nll(log_probs, labels, *, reduction, ignore_index):
    kept = labels != ignore_index
    picked = -log_probs[np.arange(len(labels)), np.where(kept, labels, 0)] * kept
    return picked.sum() / kept.sum() if reduction == "mean" else _loss_reduction(picked, reduction)


def _bce_with_logits(logits, target, *, reduction):
    # max(x, 0) - x t + log(1 + exp(-|x|))
    return _loss_reduction(np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits))), reduction)


def logits_and_probabilities(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    return [rng.standard_normal(shapes[0]) * 2, rng.uniform(0, 1, shapes[1])]


def log_probs_and_labels(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    scores, labels = shapes
    return [rng.standard_normal(scores) - 2, rng.integers(0, scores[1], labels)]


LOSS_REDUCTIONS = ("mean", "sum", "none")
LOSS_PAIRS = (((3, 4), (3, 4)), ((5,), (5,)), (("N", 3), ("N", 3)))


def _pair_cases(**options: tuple[Any, ...]) -> tuple[Case, ...]:
    """Every prediction/target shape pair, reduction and combination of ``options``."""
    names, values = list(options), list(itertools.product(*options.values()))
    return tuple(Case(shapes, {"reduction": r, **dict(zip(names, v))}) for shapes in LOSS_PAIRS for r in LOSS_REDUCTIONS for v in values)


NLL_CASES = tuple(
    Case(shapes, {"reduction": r, "ignore_index": ignore}, operand_dtypes=(None, "i64"))
    for shapes in (((6, 4), (6,)), (("N", 3), ("N",))) for r in LOSS_REDUCTIONS for ignore in (-100, 1)
)


def _loss_rows() -> list[OpRow]:
    return [
        OpRow("nn.l1", _l1, _pair_cases(), normal),
        OpRow("nn.smooth_l1", _smooth_l1, _pair_cases(beta=(1.0, 0.5)), normal),
        OpRow("nn.huber", _huber, _pair_cases(delta=(1.0, 2.0)), normal),
        OpRow("nn.nll", _nll, NLL_CASES, log_probs_and_labels),
        OpRow("nn.bce_with_logits", _bce_with_logits, _pair_cases(), logits_and_probabilities),
    ]


OP_TABLE: list[OpRow] = _rows() + _loss_rows()

from ops3.op_rows_extra import EXTRA_ROWS  # noqa: E402  (movement, conv and transformer rows; they import this module's helpers)

OP_TABLE += EXTRA_ROWS
from ops.op_rows_bitwise import BITWISE_ROWS  # noqa: E402  (the integer bit ops' rows)

OP_TABLE += BITWISE_ROWS
ROWS: dict[str, OpRow] = {row.name: row for row in OP_TABLE}


def cases(rows: Sequence[OpRow] = OP_TABLE, *, dtypes: Sequence[str] | None = None, grad: bool = False) -> list[Any]:
    """``pytest.param(row, case, dtype)`` for every case of ``rows`` in each of the row's dtypes (those in ``dtypes`` if given).

    With ``grad``, only differentiable rows and cases, in f64.
    """
    import pytest

    params = []
    for row in rows:
        if grad and not row.differentiable:
            continue
        for case in row.cases:
            if grad and not case.grad:
                continue
            for dtype in ("f64",) if grad else [d for d in row.dtypes if dtypes is None or d in dtypes]:
                params.append(pytest.param(row, case, dtype, id=f"{row.name}-{case.id}-{dtype}"))
    return params
