"""cse: common-subexpression elimination. Pure ops with equal names, operands and attrs merge.

```
%a = "tensor.exp"(%x) ...
%b = "tensor.exp"(%x) ...      ->   %a = "tensor.exp"(%x) ...
%c = "tensor.add"(%a, %b) ...       %c = "tensor.add"(%a, %a) ...
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from kiln.compiler.ir.core import Graph, Op
from kiln.compiler.ir.types import DType
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class CSE(Pass):
    name = "cse"

    def run(self, graph: Graph) -> bool:
        seen: dict[Hashable, Op] = {}
        changed = False
        for op in list(graph.ops):
            if not has_trait(op.name, "pure"):
                continue
            key = op_key(op)
            twin = seen.setdefault(key, op)
            if twin is not op:
                for old, new in zip(op.results, twin.results):
                    graph.replace_all_uses(old, new)
                graph.erase(op)
                changed = True
        return changed


def op_key(op: Op) -> Hashable:
    """What makes two pure ops compute the same thing."""
    return (op.name, tuple(map(id, op.operands)), tuple((k, hashable_attr(v)) for k, v in op.attrs.items()))


def hashable_attr(value: Any) -> Hashable:
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, tuple):
        return tuple(hashable_attr(item) for item in value)
    if isinstance(value, float):
        return ("float", value)  # keeps 1 and 1.0 apart
    if isinstance(value, DType):
        return ("dtype", value.value)
    return value
