"""float16 steps on the CuPy backend launch about as many kernels as float32 steps (no GPU): the casts widen-half
leaves around weight-gradient matmuls, reductions and attention's heads go into neighbouring kernels. Counts are
pinned, not timings; values on the stand-in (fake CuPy, generated bodies evaluated) against the NumPy backend.

Before this, a tiny GPT's float16 step launched 196 kernels against 151 in float32 (24 standalone casts).
"""

from __future__ import annotations

import collections
from functools import lru_cache

import pytest

import kiln
from cuda_compiler import cuda_compiler, cupy_float16_unit, translation_unit
from cupy_groups import HALF_TOLERANCE, assert_graph_matches_numpy
from cupy_models import step_graph
from kiln.backends.cupy import kernel_plan, lower_for_cupy
from kiln.backends.cupy.codegen import ElementwiseSource, ReductionSource, group_kernels
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir import Builder, DType, Graph, TensorType

F16, F32 = DType.f16, DType.f32

LAUNCHES = {("mlp", "f32"): 26, ("mlp", "f16"): 26, ("gpt", "f32"): 151, ("gpt", "f16"): 153}
"""Kernels one training step launches (``kernel_plan``). The GPT's two extra float16 launches are the casts of the
attention output's gradient, split into heads, to float32 (once a layer): a cuBLAS GEMM makes that gradient in
float16, and no kernel of the GEMM's can widen it on the way."""


@lru_cache(maxsize=None)
def _lowered(name: str, dtype: str) -> Graph:
    return lower_for_cupy(step_graph(name, dtype=kiln.float16 if dtype == "f16" else None))


def _graph(types: list[TensorType], body) -> Graph:
    graph = Graph("half_launches")
    inputs = [graph.add_input(t, f"x{i}") for i, t in enumerate(types)]
    graph.outputs = list(body(Builder(graph), *inputs))
    return graph


@pytest.mark.parametrize("name, dtype", sorted(LAUNCHES))
def test_a_training_step_launches_the_pinned_number_of_kernels(name, dtype):
    plan = kernel_plan(_lowered(name, dtype))
    assert len(plan) == LAUNCHES[name, dtype], collections.Counter(launch.kind for launch in plan)


@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_a_float16_step_runs_the_gemms_of_the_float32_step(name):
    count = {dtype: sum(launch.kind == "gemm" for launch in kernel_plan(_lowered(name, dtype))) for dtype in ("f16", "f32")}
    assert count["f16"] == count["f32"]


def test_the_float16_gpt_casts_only_the_attention_gradients_heads():
    casts = [op for op in _lowered("gpt", "f16").ops if op.name == "tensor.cast"]
    assert len(casts) == 2, [str(op.operands[0].type) for op in casts]
    for cast in casts:
        heads = cast.operands[0].producer
        gradient = heads.operands[0].producer.operands[0]  # transposed out of a reshape of the GEMM's product
        assert heads.name == "tensor.transpose" and gradient.producer.name == "tensor.matmul" and gradient.type.dtype is F16


def test_float16_weight_gradients_are_float16_gemms_with_no_cast_kernels():
    """fold-batch-sum-matmul makes each weight gradient one matmul of float32 operands cast from float16; those are
    narrowed again after it: cuBLAS reads the float16 operands (summing in float32) and writes float16."""
    products = [op for op in _lowered("gpt", "f16").ops if op.name in ("tensor.matmul", "fused.matmul") and op.results[0].type.rank == 2]
    assert len(products) == 13  # each weight's gradient (the tied head's as well): 2 x 6 and the head
    assert all(v.type.dtype is F16 for op in products for v in op.operands[:2] + op.results[:1])
    assert not [op for op in products if op.name == "fused.matmul"], "no epilogue kernel rounds a float32 product"


def _weight_gradient(dtype: DType) -> Graph:
    """``sum_n x[n]^T dy[n]`` in float32 of float16 operands, rounded once: how autodiff writes a weight gradient."""
    def body(b, x, dy):
        x32, dy32 = (b.cast(v, dtype=F32) if dtype is F16 else v for v in (x, dy))
        total = b.op("tensor.reduce_sum", b.op("tensor.matmul", b.op("tensor.transpose", x32, perm=(0, 2, 1)), dy32), axes=(0,), keepdims=False)
        return [b.cast(total, dtype=F16) if dtype is F16 else total]

    return _graph([TensorType(("N", 8, 16), dtype), TensorType(("N", 8, 4), dtype)], body)


def test_a_folded_weight_gradient_is_one_float16_gemm():
    for dtype in (F32, F16):
        lowered = lower_for_cupy(_weight_gradient(dtype))
        assert [(launch.kind, launch.op) for launch in kernel_plan(lowered)] == [("gemm", "tensor.matmul")]
        (matmul,) = [op for op in lowered.ops if op.name == "tensor.matmul"]
        assert [v.type.dtype for v in matmul.operands + matmul.results] == [dtype] * 3


def test_a_folded_weight_gradient_on_the_stand_in_matches_numpy(fake):
    assert_graph_matches_numpy(_weight_gradient(F16), **HALF_TOLERANCE)


def _compile_with_post_map(source: ReductionSource) -> None:
    """The map (``translation_unit``) and the post-map, whose casts now store the value: the post-map as a body
    reading ``a`` in the reduction's type and writing the outputs as CuPy types them (its ``float16`` class)."""
    compile_cuda = cuda_compiler()
    compile_cuda(translation_unit(source), source.name)
    reduced = {"float": "float32", "double": "float64"}[source.reduce_type]
    post = ElementwiseSource(f"{source.name}_post", f"{reduced} a", source.out_params, source.post_map_expr + ";", source.preamble.split("\n")[0])
    compile_cuda(cupy_float16_unit(post), post.name)


def _summed_exp(dtype: DType) -> Graph:
    """A bias gradient's shape: a float16 sum over the batch (widen-half: summed in float32, then rounded)."""
    return _graph([TensorType(("N", 16), dtype)], lambda b, x: [b.op("tensor.reduce_sum", b.op("tensor.exp", x), axes=(0,), keepdims=False)])


def test_a_float16_sum_is_stored_as_half_by_its_reduction_kernel():
    lowered = lower_for_cupy(_summed_exp(F16))
    assert [launch.kind for launch in kernel_plan(lowered)] == ["reduction"]  # no cast kernel after it
    (source,) = group_kernels(lowered.ops[0]).sources()
    assert isinstance(source, ReductionSource) and source.reduce_type == "float"
    assert (source.out_params, source.post_map_expr) == ("float16 y0", "y0 = __float2half_rn(__half2float(__float2half_rn((float)(a))))")
    _compile_with_post_map(source)


def test_a_float16_sum_on_the_stand_in_is_numpys(fake):
    assert_graph_matches_numpy(_summed_exp(F16), rtol=0, atol=0)


def _rounded_sum() -> Graph:
    """A float32 sum rounded to float16 and widened again (an embedding gradient rounded before its float32 update)."""
    def body(b, x):
        total = b.op("tensor.reduce_sum", b.op("tensor.exp", x), axes=(0,), keepdims=False)
        return [b.cast(b.cast(total, dtype=F16), dtype=F32)]

    return _graph([TensorType(("N", 16), F32)], body)


def test_casts_after_a_reduction_become_its_post_map():
    lowered = lower_for_cupy(_rounded_sum())
    assert [launch.kind for launch in kernel_plan(lowered)] == ["reduction"]
    (source,) = group_kernels(lowered.ops[0]).sources()
    assert source.out_params == "float32 y0" and "__float2half_rn" in source.post_map_expr
    assert source.preamble.startswith("#include <cuda_fp16.h>")
    _compile_with_post_map(source)


def test_rounded_sum_on_the_stand_in_is_numpys(fake):
    """The round to float16 happens in the post-map (a fake that skipped it would keep float32's extra digits)."""
    assert_graph_matches_numpy(_rounded_sum(), rtol=0, atol=0)


def test_a_cast_after_a_reduction_that_touches_no_float16_keeps_its_kernel():
    """The fold is for float16's casts: a float32 graph's launches stay as they were."""
    graph = _graph([TensorType(("N", 16), F32)],
                   lambda b, x: [b.cast(b.op("tensor.reduce_sum", b.op("tensor.exp", x), axes=(0,), keepdims=False), dtype=DType.f64)])
    assert [launch.kind for launch in kernel_plan(lower_for_cupy(graph))] == ["reduction", "library"]


def test_a_group_yielding_a_value_between_its_reduction_and_casts_is_refused():
    graph = Graph("bad")
    x = graph.add_input(TensorType((4, 3), F32), "x")
    attrs = {"ops": ("tensor.reduce_sum", "tensor.cast"), "args": ((0,), (1,)),
             "params": (("axes", (0,), "keepdims", False), ("dtype", F16)), "yields": (1, 2)}
    op = Builder(graph).create("fused.elementwise", [x], attrs)
    with pytest.raises(LoweringError, match="yields a value between its reduction and the casts after it"):
        group_kernels(op)


def _attention_heads(dtype: DType) -> Graph:
    """A projection's epilogue (a bias add), split into heads (a copying transpose), read by causal attention."""
    def body(b, x, bias):
        heads = b.op("tensor.transpose", b.op("tensor.reshape", b.op("tensor.add", x, bias), shape=("N", 8, 2, 8)), perm=(0, 2, 1, 3))
        return [b.op("nn.scaled_dot_product_attention", heads, heads, heads, causal=True)]

    return _graph([TensorType(("N", 8, 16), dtype), TensorType((16,), dtype)], body)


def test_heads_are_split_in_float32_after_the_epilogue_widens_them():
    """The float16 heads' cast to float32 (attention computes in float32) moves before the transpose that copies them
    into heads, into the bias add's kernel: one copy, no cast kernel, as many launches as in float32."""
    lowered = {dtype: lower_for_cupy(_attention_heads(dtype)) for dtype in (F32, F16)}
    assert len(kernel_plan(lowered[F16])) == len(kernel_plan(lowered[F32])) == 7
    assert not [op for op in lowered[F16].ops if op.name == "tensor.cast"]
    copies = [launch for launch in kernel_plan(lowered[F16]) if launch.name == "copy"]
    (transpose,) = [op for op in lowered[F16].ops if op.name == "tensor.transpose" and op.attrs["perm"] == (0, 2, 1, 3)]
    assert len(copies) == 1 and transpose.operands[0].type.dtype is F32


def test_heads_split_in_float32_on_the_stand_in_match_numpy(fake):
    assert_graph_matches_numpy(_attention_heads(F16), **HALF_TOLERANCE)
