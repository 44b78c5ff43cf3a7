"""Every CUDA expression rule (expressions.py) run as C on the CPU, against the NumPy backend's kernel of its op.

The fake CuPy evaluates generated kernel bodies by translating them into NumPy, so it inherits NumPy's meaning of
``max`` or a cast; here the C itself runs (cpu_cuda.py: g++ behind CUDA's overloads, ``max`` as ``fmaxf``, which drops
a NaN operand), so a rule whose CUDA meaning differs from the op's fails. Each rule runs as the one statement of an
elementwise kernel (``standalone_source``: one thread an element) over every pair of special values: NaN, +-inf,
+-0, +-1, halves, huge and tiny; integers small and extreme (no zero divisor and no negative integer power: undefined
in C, refused by NumPy). The reductions' combining expressions run as a fold over the same values.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from cpu_cuda import run_raw_kernel
from oracles import require_torch
from kiln.backends.cupy.codegen import ElementwiseSource, standalone_source
from kiln.backends.cupy.expressions import C_TYPES, CUPY_TYPES, REDUCTIONS, c_expression
from kiln.backends.numpy import NUMPY
from kiln.compiler.ir.types import DType

FLOAT_SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e30, -1e-30, 20.0, -100.0]
INT_SPECIALS = [-100, -3, -1, 0, 1, 2, 7, 1000]
FLOATS, INTS = (DType.f32, DType.f64), (DType.i32, DType.i64)
TOLERANCE = {DType.f32: {"rtol": 2e-6, "atol": 1e-7}, DType.f64: {"rtol": 1e-14, "atol": 1e-14}}
"""A few ulps (g++'s libm and NumPy round transcendentals differently), and results near 0 compared absolutely."""

UNARY = ["tensor.neg", "tensor.exp", "tensor.log", "tensor.tanh", "tensor.sqrt", "tensor.rsqrt", "tensor.erf", "tensor.abs",
         "tensor.relu", "tensor.sigmoid", "tensor.sin", "tensor.cos", "tensor.floor", "tensor.ceil", "tensor.round",
         "tensor.atan", "tensor.asin", "tensor.acos"]
BINARY = ["tensor.add", "tensor.sub", "tensor.mul", "tensor.div", "tensor.pow", "tensor.maximum", "tensor.minimum"]
COMPARISONS = ["tensor.equal", "tensor.not_equal", "tensor.less", "tensor.less_equal", "tensor.greater", "tensor.greater_equal"]
INTEGER_RULES = {"tensor.neg", "tensor.abs", "tensor.relu", "tensor.add", "tensor.sub", "tensor.mul", "tensor.maximum", "tensor.minimum"}
"""The arithmetic ops that take integers (the others are float-only in the IR)."""
ARITHMETIC = [(op, dtype) for op in UNARY + BINARY for dtype in FLOATS + INTS if dtype in FLOATS or op in INTEGER_RULES]


def run_expression(op_name: str, operands: list[np.ndarray], result: DType, attrs: dict | None = None) -> np.ndarray:
    """The C expression of ``op_name`` over ``operands`` (arrays of one length), run as CUDA on the CPU."""
    attrs = attrs or {}
    names = [f"x{i}" for i in range(len(operands))]
    in_params = ", ".join(f"{CUPY_TYPES[DType.of(a.dtype)]} {n}" for a, n in zip(operands, names))
    body = f"y0 = {c_expression(op_name, names, attrs, result)};"
    source = ElementwiseSource(f"kiln_rule_{op_name.split('.')[1]}_{result.value}", in_params, f"{CUPY_TYPES[result]} y0", body)
    out = np.empty(len(operands[0]), result.numpy)
    run_raw_kernel(standalone_source(source), source.name, (-(-len(out) // 32),), (32,), (*operands, out, np.int64(len(out))))
    return out


def specials(dtype: DType, arity: int) -> list[np.ndarray]:
    values = FLOAT_SPECIALS if dtype.is_float else INT_SPECIALS
    columns = zip(*itertools.product(values, repeat=arity))
    return [np.array(column, dtype.numpy) for column in columns]


def assert_same(actual: np.ndarray, expected: np.ndarray, dtype: DType, where: str) -> None:
    assert actual.dtype == expected.dtype, f"{where}: {actual.dtype} vs {expected.dtype}"
    tolerance = TOLERANCE.get(dtype, {"rtol": 0, "atol": 0})
    np.testing.assert_allclose(actual, expected, equal_nan=True, err_msg=where, **tolerance)


def numpy_kernel(op_name: str, *arrays: np.ndarray, **attrs) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(NUMPY.get(op_name)(*arrays, **attrs))


@pytest.mark.parametrize(("op_name", "dtype"), ARITHMETIC, ids=lambda v: str(v))
def test_arithmetic_rule_means_what_numpy_means(op_name: str, dtype: DType):
    operands = specials(dtype, 2 if op_name in BINARY else 1)
    assert_same(run_expression(op_name, operands, dtype), numpy_kernel(op_name, *operands), dtype, f"{op_name} {dtype}")


@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("op_name", COMPARISONS)
def test_comparison_rule_means_what_numpy_means(op_name: str, dtype: DType):
    operands = specials(dtype, 2)
    assert_same(run_expression(op_name, operands, DType.bool), numpy_kernel(op_name, *operands), DType.bool, op_name)


@pytest.mark.parametrize("dtype", FLOATS + INTS)
def test_where_rule_picks_as_numpy_does(dtype: DType):
    x, y = specials(dtype, 2)
    condition = np.arange(len(x)) % 3 == 0
    assert_same(run_expression("tensor.where", [condition, x, y], dtype), numpy_kernel("tensor.where", condition, x, y), dtype, "where")


@pytest.mark.parametrize("bounds", [(-1.0, 2.0), (None, 0.5), (0.0, None)], ids=["both", "max", "min"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_clip_rule_means_what_numpy_means(dtype: DType, bounds: tuple):
    (x,) = specials(dtype, 1)
    attrs = {"min": bounds[0], "max": bounds[1]}
    assert_same(run_expression("tensor.clip", [x], dtype, attrs), numpy_kernel("tensor.clip", x, **attrs), dtype, f"clip{bounds}")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_gelu_rule_means_what_numpy_means(dtype: DType, approximate: str):
    """-inf included: the tanh GELU's 0.5 x (1 + tanh(u)) is NaN there on CUDA, as NumPy's ``x / (1 + exp(-u))`` and
    PyTorch's; -1e30 and -100 give -0 in both (a cap on NumPy's ``-u`` once gave -1.8e-5 at -1e30)."""
    (x,) = specials(dtype, 1)
    assert_same(run_expression("nn.gelu", [x], dtype, {"approximate": approximate}),
                numpy_kernel("nn.gelu", x, approximate=approximate), dtype, f"gelu {approximate}")


EXTREMES = [np.inf, -np.inf, np.nan, 1e30, -1e30, 1e5, -1e5, 88.0, -88.0, 88.5, -88.5, 89.0, -89.0, 90.0, -90.0,
            1e-40, -1e-40, 1e-310, -1e-310, 0.0, -0.0]
"""As tests/ops/test_extreme_values.py's points: exp's overflow past 88 / 709, subnormals (1e-310 is 0 in float32)."""
TORCH_ACTIVATIONS = {
    "gelu_tanh": ("nn.gelu", {"approximate": "tanh"}, lambda torch, x: torch.nn.functional.gelu(x, approximate="tanh")),
    "gelu": ("nn.gelu", {"approximate": "none"}, lambda torch, x: torch.nn.functional.gelu(x)),
    "sigmoid": ("tensor.sigmoid", {}, lambda torch, x: torch.sigmoid(x)),
}
OWN_ANSWERS = {("gelu", DType.f32, np.inf): (np.inf, (np.inf, np.nan))}
"""``(activation, dtype, x)`` -> (kiln's answer, torch's answers across its CPU kernels). At +inf GELU's x Phi(x) is inf,
as torch's float64 and its float32 oneDNN AVX2 kernel give; oneDNN's AVX-512 kernel gives NaN (measured once,
torch 2.13.0, ONEDNN_MAX_CPU_ISA=AVX2 vs AVX512_CORE_AMX, as tests/ops/test_extreme_values.py's ``OWN_ANSWERS``)."""


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(TORCH_ACTIVATIONS))
def test_activation_rules_match_torch_at_extremes(name: str, dtype: DType):
    """NaN where PyTorch's is (the tanh GELU at -inf), infs of its sign, -0 far left, a few ulps elsewhere."""
    torch = require_torch()
    op_name, attrs, reference = TORCH_ACTIVATIONS[name]
    with np.errstate(under="ignore"):
        x = np.array(EXTREMES, dtype.numpy)
    expected = reference(torch, torch.tensor(x)).numpy()
    for (activation, of_dtype, point), (own, recorded) in OWN_ANSWERS.items():
        if (activation, of_dtype) == (name, dtype):
            answer = expected[x == point].item()
            assert any(answer == r or np.isnan(answer) and np.isnan(r) for r in recorded), (
                f"torch's {name} at {point} ({dtype}) is {answer}, not one of {recorded}: update OWN_ANSWERS")
            expected[x == point] = own
    info = np.finfo(dtype.numpy)
    np.testing.assert_allclose(run_expression(op_name, [x], dtype, attrs), expected, rtol=4 * info.eps,
                               atol=4 * info.smallest_subnormal, equal_nan=True, err_msg=f"{name} {dtype}")


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_rule_keeps_its_relative_accuracy_in_the_negative_tail(dtype: DType):
    """``1 / (1 + exp(-a))`` with ``-a`` clamped where exp stays finite: within a few ulps of a float64 (long double
    for float64) reference relative to the result, down to -87 (float32) / -700 (float64), where ``(tanh(a/2) + 1) / 2``
    had no correct digit below about -17 / -37."""
    low = -87.0 if dtype is DType.f32 else -700.0
    x = np.linspace(low, 30.0, 2001).astype(dtype.numpy)
    wide = x.astype(np.longdouble)
    expected = (1 / (1 + np.exp(-wide))).astype(np.float64)
    np.testing.assert_allclose(run_expression("tensor.sigmoid", [x], dtype), expected, rtol=4 * np.finfo(dtype.numpy).eps, atol=0)


@pytest.mark.parametrize(("source", "target"), [(s, t) for s in FLOATS + INTS + (DType.bool,) for t in FLOATS + INTS + (DType.bool,)],
                         ids=lambda d: str(d))
def test_cast_rule_converts_as_numpy_does(source: DType, target: DType):
    """Floats that do not fit the integer target (NaN, inf, 1e30) are left out: undefined in C, and NumPy's answer is
    its platform's."""
    if source is DType.bool:
        (x,) = [np.array([True, False, True])]
    else:
        (x,) = specials(source, 1)
        if source.is_float and target in INTS:
            x = x[np.isfinite(x) & (np.abs(x) < 1e9)]
    assert_same(run_expression("tensor.cast", [x], target, {"dtype": target}), numpy_kernel("tensor.cast", x, dtype=target),
                target, f"cast {source} -> {target}")


REDUCE_OPS = ["tensor.reduce_max", "tensor.reduce_min", "tensor.reduce_sum"]


def fold_source(reduce_expr: str, identity: str, t: str, name: str) -> str:
    """A one-thread kernel folding ``x`` with the reduction's combining expression, as CuPy's ReductionKernel combines
    partial results (``a`` the accumulator, ``b`` the next value)."""
    return f"""extern "C" __global__ void {name}(const {t}* x, {t}* y, long long n) {{
    {t} accumulator = {identity};
    for (long long i = 0; i < n; ++i) {{
        const {t} a = accumulator;
        const {t} b = x[i];
        accumulator = {reduce_expr};
    }}
    y[0] = accumulator;
}}
"""


@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("op_name", REDUCE_OPS)
def test_reduction_combines_as_numpy_reduces(op_name: str, dtype: DType):
    """Every value alone after the identity, every ordered pair, and the whole list (a NaN anywhere makes NumPy's
    max and min NaN)."""
    reduce_expr, identity, _ = REDUCTIONS[op_name]
    t = C_TYPES[dtype]
    name = f"kiln_fold_{op_name.split('.')[1]}_{dtype.value}"
    code = fold_source(reduce_expr, identity(t), t, name)
    (values,) = specials(dtype, 1)
    for run in [values[[i]] for i in range(len(values))] + list(zip(*specials(dtype, 2))) + [values]:
        x = np.ascontiguousarray(run, dtype.numpy)
        y = np.empty(1, dtype.numpy)
        run_raw_kernel(code, name, (1,), (1,), (x, y, np.int64(len(x))))
        expected = numpy_kernel(op_name, x, axes=(0,), keepdims=True)
        assert_same(y, expected, dtype, f"{op_name} of {x}")


@functools.lru_cache(maxsize=None)
def generated_sources() -> dict[str, ElementwiseSource]:
    """Every generated elementwise kernel of the op table's cases and of the three test models' training steps."""
    from cupy_models import MODELS, kernel_sources, op_table_kernel_sources, step_graph

    sources = op_table_kernel_sources()
    for name in sorted(MODELS):
        sources |= kernel_sources(step_graph(name))
    return {name: source for name, source in sorted(sources.items()) if isinstance(source, ElementwiseSource)}


def random_operand(rng: np.random.Generator, cupy_type: str, n: int) -> np.ndarray:
    dtype = np.dtype(cupy_type)
    if dtype.kind == "f":
        return (rng.standard_normal(n) * 2).astype(dtype)
    return rng.random(n) < 0.5 if dtype.kind == "b" else rng.integers(1, 5, n).astype(dtype)


@pytest.mark.parametrize("name", sorted(generated_sources()))
def test_generated_kernel_computes_what_the_fake_cupy_computes(name: str):
    """The whole generated body (temporaries, casts between types, every rule) as C, against the NumPy translation
    that the fake CuPy's parity tests run: the two readings of one source agree, so a passing fake test means the
    CUDA computes the same."""
    import fake_cupy

    source = generated_sources()[name]
    rng = np.random.default_rng(0)
    n = 50
    operands = [random_operand(rng, kind, n) for kind, _ in (p.split() for p in source.in_params.split(", ") if p)]
    outputs = [np.empty(n, np.dtype(kind)) for kind, _ in (p.split() for p in source.out_params.split(", "))]
    run_raw_kernel(standalone_source(source), source.name, (-(-n // 32),), (32,), (*operands, *outputs, np.int64(n)))
    with np.errstate(all="ignore"):
        expected = fake_cupy.ElementwiseKernel(source.in_params, source.out_params, source.body, source.name, source.preamble)(
            *(o.view(fake_cupy.DeviceArray) for o in operands))
    for actual, want in zip(outputs, expected if isinstance(expected, tuple) else (expected,)):
        dtype = DType.of(actual.dtype)
        np.testing.assert_allclose(actual, np.asarray(want), equal_nan=True, err_msg=name,
                                   **{DType.f32: {"rtol": 1e-5, "atol": 1e-6}, DType.f64: {"rtol": 1e-12, "atol": 1e-12}}.get(dtype, {}))
