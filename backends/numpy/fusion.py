"""The NumPy backend's own lowering pipeline: optimizer updates into primitives, then fusion.

The step graph a user prints keeps its ``optim.*`` ops (one per parameter);
the backend expands them on its copy so the update fuses with the gradient's
producer and writes the parameter in place (``out=`` into the donated array),
then groups elementwise ops and matmul epilogues. Other composites keep their
NumPy kernels: their decompositions are not faster here, and a kernel is
what their tests pin.

```
%w.new = "optim.sgd_update"(%w, %g, %lr)    ->    %w.new = "fused.matmul"(%a, %x, %lr, %w)
                                                      {ops = ["tensor.matmul", "tensor.mul", "tensor.sub"], ...}
```
"""

from __future__ import annotations

from kiln.compiler.ir.core import Graph, Op
from kiln.compiler.ops.registry import lookup
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.manager import PassManager

LOWERING_PIPELINE = "canonicalize,cse,dce,fuse-elementwise,fuse-epilogue"
"""Run after the expansion; ``plan-memory`` follows inside code generation."""


def expands_for_fusion(op: Op) -> bool:
    """Optimizer updates: elementwise arithmetic that fuses and updates in place once expanded."""
    return op.name.startswith("optim.") and op.name.endswith("_update") and lookup(op.name).is_composite


def lower_for_fusion(graph: Graph) -> None:
    decompose_where(graph, expands_for_fusion)
    PassManager(LOWERING_PIPELINE).run(graph)
