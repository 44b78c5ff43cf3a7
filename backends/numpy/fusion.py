"""The NumPy backend's own lowering pipeline: rewrites that suit NumPy, optimizer updates into primitives, then fusion.

The step graph a user prints keeps its ``optim.*`` ops (one per parameter);
the backend expands them on its copy so the update fuses with the gradient's
producer and writes the parameter in place (``out=`` into the donated array),
then groups elementwise ops and matmul epilogues. LayerNorm and the tanh
GELU expand too: their gradients recompute the forward's mean, variance and
tanh from the same expressions, which CSE then computes once (W4: -3% step
time). Other composites keep their NumPy kernels: their decompositions are not
faster here, and a kernel is what their tests pin.

```
%w.new = "optim.sgd_update"(%w, %g, %lr)    ->    %w.new = "fused.matmul"(%a, %x, %lr, %w)
                                                      {ops = ["tensor.matmul", "tensor.mul", "tensor.sub"], ...}
```

``where(c, x, 0)`` (ReLU's backward, a mask) is not rewritten: the code
generator writes it as ``x``'s bits AND a mask of all-ones where ``c``
(``_PlannedEmitter.selects_or_zero`` in ``codegen.py``), exact where a multiply by the mask would
turn an inf or NaN in the dropped branch into NaN, at ~1.6x a multiply's cost
(W1 step +1-2% against the multiply, in one process).
"""

from __future__ import annotations

from kiln.compiler.ir.core import Graph, Op
from kiln.compiler.ops.registry import lookup
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.manager import PassManager
from kiln.compiler.passes.schedule_updates import ScheduleUpdates

LOWERING_PIPELINE = "canonicalize,conv-to-gemm,stack-summed-products,cse,rematerialize,dce,fuse-elementwise,fuse-epilogue"
"""Run after the expansion; ``plan-memory`` follows inside code generation."""


def expands_for_fusion(op: Op) -> bool:
    """Optimizer updates: elementwise arithmetic that fuses and updates in place once expanded. LayerNorm and
    the tanh GELU: their gradients recompute the forward's statistics and tanh, which CSE then shares."""
    if op.name == "nn.layer_norm" or (op.name == "nn.gelu" and op.attrs["approximate"] == "tanh"):
        return True
    return op.name.startswith("optim.") and op.name.endswith("_update") and lookup(op.name).is_composite


def lower_for_fusion(graph: Graph) -> None:
    ScheduleUpdates().run(graph)  # before the updates expand: each then fuses where its gradient is ready
    decompose_where(graph, expands_for_fusion)
    PassManager(LOWERING_PIPELINE).run(graph)
