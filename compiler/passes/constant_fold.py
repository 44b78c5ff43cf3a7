"""constant-fold: evaluate pure ops whose operands are all constants, at compile time.

```
%a = "tensor.constant"() {value = dense<2.0>} : () -> tensor<f32>
%b = "tensor.constant"() {value = dense<3.0>} : () -> tensor<f32>
%c = "tensor.mul"(%a, %b) ...                  ->   %c = "tensor.constant"() {value = dense<6.0>} ...
%d = "tensor.add"(%x, %c) ...                       %d = "tensor.add"(%x, %c) ...
```

Values are computed with the NumPy backend's kernels (the CPU reference), so
folding agrees with execution bit for bit. Results larger than
``max_elements`` stay as ops: a folded constant is stored in the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.dce import DCE
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses


@register_pass
@dataclass(frozen=True)
class ConstantFold(Pass):
    name = "constant-fold"
    max_elements: int = 4096
    """The largest result folded into a constant."""

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in list(graph.ops):
            if self.foldable(op):
                changed |= fold(graph, op)
        if changed:
            DCE().run(graph)
        return changed

    def foldable(self, op: Op) -> bool:
        if op.name == "tensor.constant" or not op.operands or not has_trait(op.name, "pure"):
            return False
        if any(v.producer is None or v.producer.name != "tensor.constant" for v in op.operands):
            return False
        return all(r.type.is_static and math.prod(r.type.shape) <= self.max_elements for r in op.results)


def fold(graph: Graph, op: Op) -> bool:
    """Replace ``op`` by constants of its evaluated results; False when no kernel can evaluate it."""
    values = evaluate(op)
    if values is None:
        return False
    builder = Builder(graph, insert_before=op, location=op.location)
    for result, value in zip(op.results, values):
        replace_uses(graph, result, builder.constant(value, result.type.dtype, name_hint=result.name_hint))
    return True


def evaluate(op: Op) -> list[np.ndarray] | None:
    from kiln.backends.numpy.lowering import NUMPY  # the reference kernels; imported late: backends build on the compiler

    kernel = NUMPY.get(op.name)
    if kernel is None:
        return None
    arguments = [v.producer.attrs["value"] for v in op.operands]
    with np.errstate(all="ignore"):  # log(0), a cast of -inf: the value the step would compute, silently as it would
        outputs: Any = kernel(*arguments, **{k: v for k, v in op.attrs.items()})
    outputs = outputs if len(op.results) > 1 else (outputs,)
    arrays = [np.asarray(value, dtype=result.type.dtype.numpy) for value, result in zip(outputs, op.results)]
    return arrays if all(a.shape == r.type.shape for a, r in zip(arrays, op.results)) else None
