"""fold-batch-sum-matmul: a batched matmul summed over its batch axes becomes one matmul over the stacked rows.

That is how a weight's gradient looks under a batch of sequences: ``dW = sum_n x[n]^T g[n]`` for ``(N, T, K)``
inputs. ``sum_n a[n] @ b[n] = [a[0] ... a[N-1]] @ [b[0]; ...; b[N-1]]``, so one GEMM with an ``N``-times longer inner
dimension computes it, instead of ``N`` GEMMs that each write a ``K x F`` partial and a reduction that adds them.

```
%p = "tensor.matmul"(%a, %b) : (tensor<Nx8x5xf32>, tensor<Nx5x3xf32>) -> tensor<Nx8x3xf32>
%s = "tensor.reduce_sum"(%p) {axes = [0], keepdims = false} : (tensor<Nx8x3xf32>) -> tensor<8x3xf32>
  ->  %t = "tensor.transpose"(%a) {perm = [1, 0, 2]}    : ... -> tensor<8xNx5xf32>
      %r = "tensor.reshape"(%t) {shape = [8, "5*N"]}   : ... -> tensor<8x5*Nxf32>
      %c = "tensor.reshape"(%b) {shape = ["5*N", 3]}   : ... -> tensor<5*Nx3xf32>
      %s = "tensor.matmul"(%r, %c)                      : ... -> tensor<8x3xf32>
```

Applies when the matmul's operands share their batch dims (no broadcasting) and only the sum reads its result.
When ``a`` is a transposed view (``x^T``), the transpose and reshape stay views on NumPy and CuPy.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import normalize_axes
from kiln.compiler.ops.tensor import resolve_reshape
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses


@register_pass
@dataclass(frozen=True)
class FoldBatchSumMatmul(Pass):
    name = "fold-batch-sum-matmul"

    def run(self, graph: Graph) -> bool:
        targets = [op for op in graph.ops if folds(graph, op)]
        for op in targets:
            product = op.operands[0].producer
            folded = stacked_matmul(Builder(graph, insert_before=op, location=op.location), *product.operands)
            folded.name_hint = op.result.name_hint
            replace_uses(graph, op.result, folded)
            graph.erase(op)
            graph.erase(product)
        return bool(targets)


def folds(graph: Graph, op: Op) -> bool:
    """``reduce_sum`` over exactly the batch axes of a batched matmul that nothing else reads."""
    if op.name != "tensor.reduce_sum" or op.attrs["keepdims"]:
        return False
    product = op.operands[0].producer
    if product is None or product.name != "tensor.matmul" or len(op.operands[0].uses) != 1 or op.operands[0] in graph.outputs:
        return False
    a, b = product.operands
    batch = a.type.rank - 2
    return (batch >= 1 and b.type.rank == a.type.rank and a.type.shape[:batch] == b.type.shape[:batch]
            and tuple(sorted(normalize_axes(op.attrs["axes"], a.type.rank))) == tuple(range(batch)))


def stacked_matmul(b: Builder, left: Value, right: Value) -> Value:
    """``sum_n left[n] @ right[n]`` as ``(K, n.., M) -> (K, n..*M)`` times ``(n..*M, F)``."""
    batch = left.type.rank - 2
    rows = b.transpose(left, perm=(batch,) + tuple(range(batch)) + (batch + 1,))
    rows = b.reshape(rows, shape=resolve_reshape(rows.type.shape, (left.type.shape[-2], -1)))
    columns = b.reshape(right, shape=resolve_reshape(right.type.shape, (-1, right.type.shape[-1])))
    return b.matmul(rows, columns)
