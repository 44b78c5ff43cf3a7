"""The CuPy backend's kernel plan, without a GPU: how many kernels a step launches, and that every group generates CUDA."""

from __future__ import annotations

import collections

import pytest

import kiln
from cuda_compiler import cuda_compiler, translation_unit
from cupy_models import GPT_SHAPE, op_table_kernel_sources, step_graph
from kiln.backends.cupy import kernel_plan, lower_for_cupy
from kiln.compiler.passes import chunk_causal_attention
from kiln.backends.cupy.codegen import group_kernels
from kiln.compiler.ops.registry import has_trait

LAYERS = 3
KERNELS_PER_LAYER = 10
"""W1's budget: per dense layer its forward GEMM + epilogue, two backward GEMMs, the relu/bias-gradient kernels and the
update kernels (the loss's few kernels are shared out over the layers)."""


def plan_counts(graph: kiln.Graph) -> collections.Counter:
    return collections.Counter(launch.kind for launch in kernel_plan(lower_for_cupy(graph)))


def test_w1_step_launches_a_small_fixed_number_of_kernels_per_layer():
    plan = kernel_plan(lower_for_cupy(step_graph("mlp")))
    counts = collections.Counter(launch.kind for launch in plan)
    assert len(plan) <= KERNELS_PER_LAYER * LAYERS, [(l.kind, l.op, l.name) for l in plan]
    assert counts["gemm"] == 3 * LAYERS - 1, counts  # forward, weight gradient, input gradient (none for the first layer)
    library = sorted(l.op for l in plan if l.kind == "library")
    assert not [name for name in library if name.startswith("optim.") or has_trait(name, "elementwise")], library
    assert counts["elementwise"] + counts["reduction"] >= 12, "the epilogues, relu backward, bias gradients and updates are generated"


def test_w1_with_adam_keeps_every_update_in_generated_kernels():
    plan = kernel_plan(lower_for_cupy(step_graph("mlp", optimizer=lambda params: kiln.optim.Adam(params, lr=1e-3))))
    assert not [l for l in plan if l.op.startswith("optim.") or (l.kind == "library" and has_trait(l.op, "elementwise"))]
    assert len(plan) <= 14 * LAYERS, [(l.kind, l.op, l.name) for l in plan]


def test_a_sequence_models_weight_gradients_are_one_gemm_each():
    """``sum_n x[n]^T g[n]`` over a batch of sequences is one GEMM over the stacked rows, not N GEMMs and a sum."""
    lowered = lower_for_cupy(step_graph("gpt"))
    summed_products = [op for op in lowered.ops if op.name == "tensor.reduce_sum" and op.operands[0].producer.name == "tensor.matmul"
                       and op.attrs["axes"] == (0,)]
    assert not summed_products
    weights = [op for op in lowered.ops if op.name in ("tensor.matmul", "fused.matmul") and op.results[0].type.rank == 2]
    assert len(weights) >= 4 * GPT_SHAPE["layers"] + 1  # each block's projections and MLP, and the head


def test_each_layer_norms_backward_is_one_row_kernel_and_one_sum():
    """The GPT's layer norms (two a block, one final) each run backward as ``kiln_layer_norm_grad`` and the sum of its
    blocks' partial weight and bias gradients."""
    plan = kernel_plan(lower_for_cupy(step_graph("gpt")))
    norms = 2 * GPT_SHAPE["layers"] + 1
    backward = [(l.kind, l.name) for l in plan if l.op == "nn.layer_norm_grad"]
    assert backward == [("row", "kiln_layer_norm_grad"), ("library", "reduction")] * norms
    assert sum(l.name == "kiln_layer_norm" for l in plan) == norms


def test_a_float16_layer_norms_backward_is_one_float16_row_kernel():
    """The backward row kernel reads and writes float16 (float partial sums, ``half.py``), as in f32: no casts around it."""
    from kiln.compiler.ir import Builder, DType, Graph, TensorType

    for dtype in (DType.f32, DType.f16):
        graph = Graph("layer_norm_grad")
        x, weight, g = (graph.add_input(TensorType(shape, dtype)) for shape in (("N", 8), (8,), ("N", 8)))
        graph.outputs = list(Builder(graph).op("nn.layer_norm_grad", x, weight, g, eps=1e-5))
        (op,) = lower_for_cupy(graph).ops
        assert op.name == "nn.layer_norm_grad" and {v.type.dtype for v in op.operands + op.results} == {dtype}


MODEL_LOWERINGS = [("mlp", None), ("cnn", None), ("gpt", None), ("gpt", 3)]
"""Model and causal-attention chunk: the tiny GPT lowered whole and in chunks of 3 of its 8 positions."""


def _model_sources(name: str, chunk: int | None, monkeypatch: pytest.MonkeyPatch) -> list:
    if chunk is not None:
        monkeypatch.setattr(chunk_causal_attention, "CAUSAL_CHUNK", chunk)
    graph = lower_for_cupy(step_graph(name))
    return [source for op in graph.ops if has_trait(op.name, "fused") for source in group_kernels(op).sources()]


def test_every_generated_kernel_of_the_op_table_compiles_as_cuda():
    """Each op of the op set, in each of its dtypes (integer and boolean groups too), as the GPU tests launch them."""
    compile_cuda, sources = cuda_compiler(), op_table_kernel_sources()
    assert len(sources) >= 5  # not vacuous: most ops are library calls or row kernels; expanded composites generate these
    for source in sources.values():
        compile_cuda(translation_unit(source), source.name)


@pytest.mark.parametrize(("name", "chunk"), MODEL_LOWERINGS)
def test_every_fusion_group_of_a_model_generates_cuda(name: str, chunk: int | None, monkeypatch):
    sources = _model_sources(name, chunk, monkeypatch)
    assert sources, f"{name}: no fused kernels"
    assert len({s.name for s in sources}) == len({s for s in sources}), "one name per distinct kernel source"


@pytest.mark.parametrize(("name", "chunk"), MODEL_LOWERINGS)
def test_every_generated_kernel_of_a_model_compiles_as_cuda(name: str, chunk: int | None, monkeypatch):
    compile_cuda, seen = cuda_compiler(), set()
    for source in _model_sources(name, chunk, monkeypatch):
        if source.name in seen:
            continue
        seen.add(source.name)
        compile_cuda(translation_unit(source), source.name)
    assert seen
