"""The CuPy backend's lowering of a graph, and the list of kernels its executable launches (no GPU needed).

```python
lowered = lower_for_cupy(step.graph)     # optimizer updates expanded, elementwise groups and epilogues fused
kernel_plan(lowered)                     # [KernelLaunch("gemm", "fused.matmul", "cublas_gemm"),
                                         #  KernelLaunch("elementwise", "fused.matmul", "kiln_epilogue_add_relu_..."), ...]
```

A library op (a CuPy function or a re-bound NumPy kernel) counts as one
launch; composite library kernels (a loss, layer norm) may launch a few.
Views (reshape, transpose, broadcast) and constants (uploaded at compile
time) launch nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.backends.cupy.codegen import ReductionSource, group_kernels
from kiln.backends.cupy.gemm import transpose_copies
from kiln.backends.cupy.half import (cast_per_reader, compute_half_in_float, fold_casts_into_reductions, narrow_half, refuse_bfloat16,
                                     split_heads_in_float, uses_half)
from kiln.backends.cupy.loss_kernels import cross_entropy_rows_apply
from kiln.backends.cupy.lowering import CUPY_OP_NAMES
from kiln.backends.cupy.row_kernels import masked_rows_apply, row_op_fuses
from kiln.compiler.ir.core import Graph, Op, clone_graph
from kiln.compiler.ops.registry import has_trait, lookup
from kiln.compiler.passes.chunk_causal_attention import split_long_causal_attention
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.manager import PassManager
from kiln.compiler.passes.schedule_updates import ScheduleUpdates

ROW_OPS = frozenset({"nn.softmax", "nn.log_softmax", "nn.softmax_grad", "nn.layer_norm", "nn.layer_norm_grad"})
"""Ops with a fused row kernel (``row_kernels.py``) where ``row_op_fuses`` says so."""

VIEW_OPS = frozenset({"tensor.reshape", "tensor.transpose", "tensor.broadcast_to", "tensor.expand_dims", "tensor.squeeze", "tensor.slice",
                      "tensor.check_index"})
"""Ops CuPy computes as views of their operand: no kernel (a transpose into split heads excepted: ``gemm.device_transpose``;
``tensor.check_index`` gives its operand back unchecked on a device, where reading the values would make the host wait)."""


@dataclass(frozen=True)
class KernelLaunch:
    kind: str
    """``gemm`` (cuBLAS), ``elementwise`` / ``reduction`` / ``row`` (generated), or ``library`` (a CuPy function)."""
    op: str
    """The graph op it belongs to."""
    name: str
    """The kernel's name: the generated kernel's, ``cublas_gemm``, or the op's."""


CUPY_PIPELINE = "canonicalize,conv-to-gemm,stack-summed-products,cse,rematerialize,dce,fold-batch-sum-matmul,canonicalize"
"""Run on the backend's copy after the optimizer updates expand; fusion (``FUSION``) follows."""
FUSION = "fuse-elementwise,fuse-epilogue"


def expands_for_cupy(op: Op) -> bool:
    """Optimizer updates, and the cross-entropy gradient and layer norm's where their row kernels do not apply (class
    weights, probability targets, more than two axes): elementwise arithmetic that
    fuses into the neighbouring kernels once expanded. (Unlike on NumPy, layer norm stays one row kernel and GELU
    one expression inside a fused kernel.)"""
    if op.name == "nn.cross_entropy_grad":
        return not cross_entropy_rows_apply(op.operands[0].type, op.operands[1].type, weighted=len(op.operands) > 3)
    if op.name == "nn.layer_norm_grad":
        return not row_op_fuses(op.name, None, op.operands[0].type.rank, op.operands[0].type.dtype)
    return op.name.startswith("optim.") and op.name.endswith("_update") and lookup(op.name).is_composite


def lower_for_cupy(graph: Graph) -> Graph:
    """A lowered copy: bfloat16 refused, float16 ops computed in float32 (``half.py``), long causal attentions split
    into chunks, composites without a kernel expand, optimizer updates expand, then fusion. float16 graphs also get
    their folded weight gradients narrowed, float32 heads split after the epilogue widens them, and casts after a
    reduction stored by it (``half.py``): launch for launch close to the float32 step."""
    refuse_bfloat16(graph)
    graph = clone_graph(graph)
    compute_half_in_float(graph)
    split_long_causal_attention(graph)
    ScheduleUpdates().run(graph)  # before the updates expand: each then fuses where its gradient is ready
    decompose_where(graph, lambda op: (op.name not in CUPY_OP_NAMES and lookup(op.name).is_composite) or expands_for_cupy(op))
    PassManager(CUPY_PIPELINE).run(graph)
    if uses_half(graph):
        narrow_half(graph)  # the weight gradients' matmuls that fold-batch-sum-matmul made
        split_heads_in_float(graph)
        PassManager("dce").run(graph)
    cast_per_reader(graph)  # float16 loads fuse into each reader's kernel
    PassManager(FUSION).run(graph)
    fold_casts_into_reductions(graph)  # a float16 bias gradient stored by its reduction, no cast kernel after it
    return graph


def kernel_plan(graph: Graph) -> list[KernelLaunch]:
    """Every kernel one call of the executable for ``graph`` (already lowered) launches, in order."""
    launches: list[KernelLaunch] = []
    for op in graph.ops:
        launches += op_launches(op)
    return launches


def op_launches(op: Op) -> list[KernelLaunch]:
    if op.name == "tensor.transpose" and transpose_copies(op.operands[0].type.shape, op.attrs["perm"]):
        return [KernelLaunch("library", op.name, "copy")]  # made contiguous once for the matmuls (gemm.device_transpose)
    if op.name == "tensor.constant" or op.name in VIEW_OPS:
        return []
    if op.name == "tensor.matmul":
        return [KernelLaunch("gemm", op.name, "cublas_gemm")]
    if op.name in ("nn.cross_entropy", "nn.cross_entropy_grad") and cross_entropy_rows_apply(
            op.operands[0].type, op.operands[1].type, weighted=len(op.operands) > (3 if op.name.endswith("grad") else 2)):
        reduced = op.attrs["reduction"] == "mean" or (op.attrs["reduction"] == "sum" and op.name == "nn.cross_entropy")
        return [KernelLaunch("row", op.name, op.name.replace("nn.", "kiln_") + "_rows")] + \
            [KernelLaunch("library", op.name, "reduction")] * reduced  # the rows' sum, or the mean's kept count
    if op.name == "nn.masked_softmax":
        fits = masked_rows_apply(op.operands[0].type, op.operands[1].type)
        return [KernelLaunch("row", op.name, "kiln_masked_softmax")] if fits else [KernelLaunch("library", "tensor.where", "where"),
                                                                                    KernelLaunch("row", op.name, "kiln_softmax")]
    if op.name in ROW_OPS and row_op_fuses(op.name, op.attrs.get("axis"), op.operands[0].type.rank, op.operands[0].type.dtype):
        partial_sums = [KernelLaunch("library", op.name, "reduction")] if op.name == "nn.layer_norm_grad" else []
        return [KernelLaunch("row", op.name, op.name.replace("nn.", "kiln_"))] + partial_sums
    if not has_trait(op.name, "fused"):
        return [KernelLaunch("library", op.name, op.name)]
    gemm = [KernelLaunch("gemm", op.name, "cublas_gemm")] if op.name == "fused.matmul" else []
    return gemm + [KernelLaunch(_kind(source), op.name, source.name) for source in group_kernels(op).sources()]


def _kind(source: object) -> str:
    return "reduction" if isinstance(source, ReductionSource) else "elementwise"


def kernel_counts(plan: list[KernelLaunch]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for launch in plan:
        counts[launch.kind] = counts.get(launch.kind, 0) + 1
    return counts


__all__ = ["KernelLaunch", "kernel_counts", "kernel_plan", "lower_for_cupy", "op_launches"]
