"""Representative fusion groups for the CuPy backend's tests: each a tiny graph lowered as the backend lowers it."""

from __future__ import annotations

from typing import Callable

from kiln.backends.cupy.plan import lower_for_cupy
from kiln.compiler.ir import Builder, DType, Graph, TensorType
from kiln.compiler.ir.core import Op
from kiln.compiler.ops.registry import has_trait

F32 = DType.f32


def _graph(name: str, types: list[TensorType], body: Callable[..., list]) -> Graph:
    graph = Graph(name)
    inputs = [graph.add_input(t, f"x{i}") for i, t in enumerate(types)]
    graph.outputs = list(body(Builder(graph), *inputs))
    return graph


def add_relu_broadcast() -> Graph:
    # relu(x + bias), bias (128,) broadcast over (N, 128)
    return _graph("add_relu", [TensorType(("N", 128), F32), TensorType((128,), F32)], lambda b, x, bias: [b.op("tensor.relu", b.op("tensor.add", x, bias))])


def sgd_update() -> Graph:
    types = [TensorType((64, 10), F32), TensorType((64, 10), F32), TensorType((), F32)]
    return _graph("sgd", types, lambda b, w, g, lr: [b.op("optim.sgd_update", w, g, lr)])


def adam_update() -> Graph:
    types = [TensorType((64, 10), F32)] * 4 + [TensorType((), F32), TensorType((), DType.i64)]
    return _graph("adam", types, lambda b, w, g, m, v, lr, step: list(b.op("optim.adam_update", w, g, m, v, lr, step, decoupled=True, weight_decay=0.01)))


def exp_sum_reduction() -> Graph:
    # sum(exp(x - shift), axis=1): a group sunk by a reduction
    types = [TensorType(("N", 10), F32), TensorType(("N", 1), F32)]
    return _graph("exp_sum", types, lambda b, x, s: [b.op("tensor.reduce_sum", b.op("tensor.exp", b.op("tensor.sub", x, s)), axes=(1,), keepdims=True)])


def matmul_epilogue() -> Graph:
    # relu(x @ w + bias)
    types = [TensorType(("N", 784), F32), TensorType((784, 128), F32), TensorType((128,), F32)]
    return _graph("dense", types, lambda b, x, w, bias: [b.op("tensor.relu", b.op("tensor.add", b.op("tensor.matmul", x, w), bias))])


F16 = DType.f16


def add_relu_f16() -> Graph:
    # relu(x + bias) in float16: each op computed in float and rounded to half (widen-half's casts, fused)
    return _graph("add_relu_f16", [TensorType(("N", 128), F16), TensorType((128,), F16)],
                  lambda b, x, bias: [b.op("tensor.relu", b.op("tensor.add", x, bias))])


def adam_update_f16() -> Graph:
    # AdamW on float16 parameter, gradient and moments; lr a float64 scalar (compiler/ops/optim.hyper_dtype: a Python
    # float in PyTorch); widen-half writes it out as PyTorch's op sequence, whose ops the group's kernel fuses.
    types = [TensorType((64, 10), F16)] * 4 + [TensorType((), DType.f64), TensorType((), DType.i64)]
    return _graph("adam_f16", types, lambda b, w, g, m, v, lr, step: list(b.op("optim.adam_update", w, g, m, v, lr, step, decoupled=True, weight_decay=0.01)))


def tanh_mul_f16() -> Graph:
    # tanh(x) * y in float16: tanh's result is rounded to half before the product (PyTorch's per-op rounding)
    types = [TensorType(("N", 32), F16), TensorType(("N", 32), F16)]
    return _graph("tanh_mul_f16", types, lambda b, x, y: [b.op("tensor.mul", b.op("tensor.tanh", x), y)])


def sum_exp_f16() -> Graph:
    # sum(exp(x), axis=0) in float16 (a bias gradient's shape): summed in float, the cast to half in the post-map
    return _graph("sum_exp_f16", [TensorType(("N", 16), F16)], lambda b, x: [b.op("tensor.reduce_sum", b.op("tensor.exp", x), axes=(0,), keepdims=False)])


HALF_GROUPS = {
    "add_relu_f16": add_relu_f16,
    "tanh_mul_f16": tanh_mul_f16,
    "adam_update_f16": adam_update_f16,
    "sum_exp_f16": sum_exp_f16,
}
"""Golden-file stem -> a float16 graph: loads of ``__half``, float arithmetic, ``__float2half_rn`` stores."""
HALF_TOLERANCE = {"rtol": 2.0 ** -9, "atol": 2.0 ** -14}
"""float16 results against the NumPy backend's: both compute each op in float32 and round it, so a value differs only
where a float32 result (a CUDA ``expf``/``sqrtf``/division against NumPy's) lands on the other side of a float16
rounding boundary: one float16 ulp, 2**-10 relative, either way (rtol 2**-9); atol is float16's smallest normal."""


GROUPS = {
    "add_relu_broadcast": add_relu_broadcast,
    "sgd_update": sgd_update,
    "adam_update": adam_update,
    "exp_sum_reduction": exp_sum_reduction,
    "matmul_epilogue": matmul_epilogue,
}
"""Golden-file stem -> the graph whose fused ops it pins."""


def fused_ops(graph: Graph) -> list[Op]:
    """The fused ops of ``graph`` after the CuPy backend's lowering."""
    return [op for op in lower_for_cupy(graph).ops if has_trait(op.name, "fused")]


def random_inputs(graph: Graph, seed: int = 0) -> list:
    """Positive floats (safe for log and division) and small positive integers; symbolic dims become 8."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = []
    for value in graph.inputs:
        shape = tuple(8 if isinstance(d, str) else d for d in value.type.shape)
        data = rng.integers(1, 5, shape) if value.type.dtype.is_int else rng.random(shape) + 0.5
        arrays.append(np.asarray(data, dtype=value.type.dtype.numpy))
    return arrays


def assert_group_matches_numpy(stem: str, rtol: float, atol: float) -> None:
    """The fused group ``stem`` on the CuPy backend equals the NumPy backend on the same inputs."""
    assert_graph_matches_numpy(GROUPS[stem](), rtol, atol)


def assert_graph_matches_numpy(graph: Graph, rtol: float, atol: float) -> None:
    """``graph`` on the CuPy backend equals the NumPy backend on the same ``random_inputs``."""
    import numpy as np

    from kiln.backends.cupy import CupyBackend
    from kiln.backends.numpy import NumpyBackend

    arrays = random_inputs(graph)
    for got, want in zip(CupyBackend().compile(graph)(*arrays), NumpyBackend().compile(graph)(*arrays)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


LAYER_NORM_GRAD_CASES = [((1500, 6), (6,)), ((2, 700, 3, 4), (3, 4)), ((0, 5), (5,))]
"""(x, weight) shapes of ``nn.layer_norm_grad``: past 1024 rows a block of its row kernel sums two rows' weight and
bias gradients; a two-axis weight; no rows at all (the expanded fallback)."""
LAYER_NORM_GRAD_TOLERANCE = {DType.f32: 1e-4, DType.f64: 1e-10}
"""rtol and atol: f32 dx loses ~100 ulp of its terms to cancellation in 6-wide rows of values in [0.5, 1.5] (the two sides
sum in different orders)."""


def layer_norm_grad(x_shape: tuple, weight_shape: tuple, dtype: DType) -> Graph:
    types = [TensorType(x_shape, dtype), TensorType(weight_shape, dtype), TensorType(x_shape, dtype)]
    return _graph("layer_norm_grad", types, lambda b, x, weight, g: list(b.op("nn.layer_norm_grad", x, weight, g, eps=1e-5)))


def half_rows(name: str) -> Graph:
    """One float16 row op as its row kernel runs it (loaded as half, computed in float, stored as half)."""
    x, w = TensorType(("N", 50), F16), TensorType((50,), F16)
    if name in ("nn.softmax", "nn.log_softmax"):
        return _graph(name, [x], lambda b, v: [b.op(name, v, axis=-1)])
    if name == "nn.softmax_grad":
        return _graph(name, [x, x], lambda b, y, g: [b.op(name, y, g, axis=-1)])
    if name == "nn.layer_norm":
        return _graph(name, [x, w, w], lambda b, v, weight, bias: [b.op(name, v, weight, bias, eps=1e-5)])
    labels = TensorType(("N",), DType.i64)
    return _graph(name, [x, labels], lambda b, logits, y: [b.op("nn.cross_entropy", logits, y, reduction="mean")])


HALF_ROW_OPS = ("nn.softmax", "nn.log_softmax", "nn.softmax_grad", "nn.layer_norm", "nn.cross_entropy")
