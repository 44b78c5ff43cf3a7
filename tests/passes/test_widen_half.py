"""widen-half in numbers: a half op on the NumPy backend is its float32 twin rounded once, as PyTorch's CPU kernels.

The golden files in tests/passes/widen-half/ check the rewrite's text; these check what it computes: bit for bit
against the float32 computation rounded by NumPy/ml_dtypes, and against torch 2.13 computing in the same dtype.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from oracles import require_torch

import kiln
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.passes.widen_half import WidenHalf, needs_widening

HALF = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}


def _operands(name: str, shapes: list[tuple[int, ...]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32).astype(HALF[name]) for shape in shapes]


@pytest.mark.parametrize("name", HALF)
def test_a_half_matmul_is_the_float32_matmul_rounded_once(name):
    a, b = _operands(name, [(64, 300), (300, 32)])
    got = kiln.compile(lambda x, y: x @ y, batch_dim=None)(a, b)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(HALF[name])
    assert got.dtype == HALF[name]
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("name", HALF)
def test_a_chain_rounds_after_every_op(name):
    """``v * (1 + eps) - v``: the product is rounded to half before the subtraction reads it (PyTorch's eager order),
    which leaves whole half ulps of ``v``; computed in float32 throughout it would be ``0.001 * v``."""
    (x,) = _operands(name, [(8, 50)])
    half = HALF[name]
    factor = 1 + _eps(name)  # exact in the dtype; v * factor needs more bits than v has
    got = kiln.compile(lambda v: v * factor - v, batch_dim=None)(x)
    x32 = x.astype(np.float32)
    want = ((x32 * np.float32(factor)).astype(half).astype(np.float32) - x32).astype(half)
    fused = (x32 * np.float32(factor) - x32).astype(half)
    assert not np.array_equal(want.view(np.uint16), fused.view(np.uint16)), "the data must tell the two orders apart"
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("name", HALF)
def test_a_half_mlp_is_as_accurate_as_torch_in_the_same_dtype(name):
    """Forward values and gradients (kiln's autodiff, eager backward) of a half MLP, each measured against float64
    from the same half inputs: kiln's error is torch 2.13's, give or take a quarter (elementwise comparison with
    torch's half result would be ill-conditioned: a matmul that cancels turns one ulp of difference upstream into
    many, in either library)."""
    torch = require_torch()
    torch_dtype = {"f16": torch.float16, "bf16": torch.bfloat16}[name]
    x, w1, w2 = _operands(name, [(16, 40), (40, 30), (30, 10)], seed=1)

    def forward(lib, x, w1, w2):
        h = lib.nn.functional.gelu(x @ w1)
        return lib.nn.functional.log_softmax(h @ w2, dim=1)

    def run_torch(dtype):
        tensors = [torch.tensor(v.astype(np.float32)).to(dtype).requires_grad_() for v in (x, w1, w2)]
        out = forward(torch, *tensors)
        out.sum().backward()
        return [out.detach().double().numpy()] + [t.grad.double().numpy() for t in tensors]

    tensors = [kiln.tensor(v, requires_grad=True) for v in (x, w1, w2)]
    out = forward(kiln, *tensors)
    out.sum().backward()
    ours = [out.numpy()] + [np.asarray(t.grad) for t in tensors]
    assert all(v.dtype == HALF[name] for v in ours)
    for got, theirs, exact in zip(ours, run_torch(torch_dtype), run_torch(torch.float64)):
        scale = np.abs(exact).max()
        our_error = np.abs(got.astype(np.float64) - exact).max() / scale
        their_error = np.abs(theirs - exact).max() / scale
        assert our_error <= 1.25 * their_error + _eps(name) / 8, (our_error, their_error)
        assert our_error < 4 * _eps(name)


def _eps(name: str) -> float:
    return float(ml_dtypes.finfo(HALF[name]).eps)


def test_ops_with_a_nested_graph_and_element_moving_ops_stay_half():
    graph = Graph("g")
    x = graph.add_input(TensorType((3, 4), DType.f16))
    build = Builder(graph)
    moved = build.transpose(build.reshape(x, shape=(4, 3)), perm=(1, 0))
    graph.outputs = [moved]
    assert not any(needs_widening(op) for op in graph.ops)
    assert WidenHalf().run(graph) is False
    assert [op.name for op in graph.ops] == ["tensor.reshape", "tensor.transpose"]


def test_a_float32_graph_is_left_as_it_is():
    graph = Graph("g")
    x = graph.add_input(TensorType((3,), DType.f32))
    graph.outputs = [Builder(graph).exp(x)]
    before = str(graph)
    assert WidenHalf().run(graph) is False
    assert str(graph) == before


@pytest.mark.parametrize("name", HALF)
def test_a_half_vjp_computes_in_float32_and_rounds_once(name):
    """log_softmax's VJP ``g - softmax(x) * sum(g)`` cancels: rounding softmax and the product to half first leaves
    errors of many ulps. kiln runs the rule in float32 (compiler/autodiff/half_vjp.py), so each gradient element is
    the float64 gradient to within one rounding. (torch 2.13's half kernel reads the rounded log_softmax output and is
    off by up to 8% in float16 here; float64 is the oracle, not torch.)"""
    torch = require_torch()
    (x,) = _operands(name, [(16, 10)])
    tensor = kiln.tensor(x, requires_grad=True)
    kiln.nn.functional.log_softmax(tensor, dim=1).sum().backward()
    exact_input = torch.tensor(x.astype(np.float64), requires_grad=True)
    torch.log_softmax(exact_input, 1).sum().backward()
    exact = exact_input.grad.numpy()
    relative = np.abs(np.asarray(tensor.grad).astype(np.float64) - exact) / np.abs(exact)
    assert relative.max() <= _eps(name) / 2 * 1.01


class _Cube(kiln.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x / 3.0

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x * x


@pytest.mark.parametrize("name", HALF)
def test_a_custom_function_differentiates_through_its_own_half_backward(name):
    """custom.vjp carries the user's backward as a nested graph typed in the half dtype: its VJP is not widened
    (widening its operands would no longer fit the body), and its ops round per op like any other half op."""
    x = np.linspace(-1, 1, 8).astype(HALF[name])
    want = (x.astype(np.float32) * x.astype(np.float32)).astype(HALF[name])  # g = 1: g * x is exact, * x rounds once
    tensor = kiln.tensor(x, requires_grad=True)
    _Cube.apply(tensor).sum().backward()
    compiled = kiln.compile(lambda v: kiln.grad(lambda z: _Cube.apply(z).sum())(v), batch_dim=None)(x)
    for got in (np.asarray(tensor.grad), compiled):
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
