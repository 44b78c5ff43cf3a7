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

One rewrite comes first (measured on the W1 benchmark step):

```
%d = "tensor.where"(%c, %g, 0.0)    ->    %d = "tensor.mul"(%g, "tensor.cast"(%c))   (ReLU's backward)
```

NumPy's ``where`` costs 4-10x a multiply by the mask (it branches per
element), and the results are equal except where ``%c`` is false and ``%g``
is inf or NaN: ``where`` gives 0, the product NaN. (PyTorch's ReLU backward
gives 0; the hand-written NumPy step multiplies, as here.) The same rewrite
of the causal-attention mask (``where(m, x, -1e9)`` as ``x * m + b``) measured
no faster on W4, so it is not done.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import DType
from kiln.compiler.ops.registry import lookup
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.manager import PassManager
from kiln.compiler.passes.rewrite import replace_uses

LOWERING_PIPELINE = "canonicalize,conv-to-gemm,stack-summed-products,cse,dce,fuse-elementwise,fuse-epilogue"
"""Run after the expansion; ``plan-memory`` follows inside code generation."""


def expands_for_fusion(op: Op) -> bool:
    """Optimizer updates: elementwise arithmetic that fuses and updates in place once expanded. LayerNorm and
    the tanh GELU: their gradients recompute the forward's statistics and tanh, which CSE then shares."""
    if op.name == "nn.layer_norm" or (op.name == "nn.gelu" and op.attrs["approximate"] == "tanh"):
        return True
    return op.name.startswith("optim.") and op.name.endswith("_update") and lookup(op.name).is_composite


def lower_for_fusion(graph: Graph) -> None:
    mask_where_zero(graph)
    decompose_where(graph, expands_for_fusion)
    PassManager(LOWERING_PIPELINE).run(graph)


def mask_where_zero(graph: Graph) -> None:
    """``where(c, g, 0) -> g * cast(c)`` where ``g`` has the result's type (see the module docstring)."""
    for op in list(graph.ops):
        if op.name == "tensor.where" and op.operands[1].type == op.result.type and _is_zero_scalar(op.operands[2]):
            condition, value = op.operands[0], op.operands[1]
            _rewrite(graph, op, lambda b: b.mul(value, b.cast(condition, dtype=value.type.dtype)))


def _rewrite(graph: Graph, op: Op, build: Callable[[Builder], Value]) -> None:
    """Replace ``op``'s one result by what ``build`` emits right before it."""
    replacement = build(Builder(graph, insert_before=op, location=op.location))
    replacement.name_hint = op.result.name_hint
    replace_uses(graph, op.result, replacement)
    graph.erase(op)


def _is_constant(value: Value) -> bool:
    return value.producer is not None and value.producer.name == "tensor.constant"


def _is_zero_scalar(value: Value) -> bool:
    return _is_constant(value) and value.type.rank == 0 and not np.any(value.producer.attrs["value"]) \
        and value.type.dtype is not DType.bool
