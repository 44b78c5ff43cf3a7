"""The values of a traced tensor that depends on no input: built from constants only (``torch.eye(n)``,
``torch.arange(n)``, a list), so they are known while tracing.

A trace refuses ops whose result's shape depends on values (``x[mask]``); where the mask is such a known tensor, its
count of true elements is known too, and the op traces as a gather of fixed positions (sthalles/SimCLR's
``similarity_matrix[~torch.eye(2 * n, dtype=torch.bool)].view(2 * n, -1)``).

```python
mask = ~torch.eye(4, dtype=torch.bool)        # traced: constant -> tensor.logical_not
known_value(mask)                             # array([[False, True, ...]]): evaluated now
known_value(x > 0)                            # None: x is an input of the trace
```

The ops are evaluated with the NumPy backend's kernels (the CPU reference), as ``constant-fold`` evaluates them, so the
values are the ones the compiled graph computes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.compiler.ops.registry import has_trait

MAX_OPS = 64
"""The most ops evaluated for one value: a mask is a few ops from its constants; a longer chain is not worth it."""
MAX_ELEMENTS = 1 << 20
"""The largest intermediate result evaluated."""
VALUE_PRESERVING = frozenset({"tensor.stop_gradient"})
"""Ops whose result is their operand's values (no NumPy kernel: passes remove them): ``lengths.data``,
``lengths.detach()``."""


def known_value(tensor: Any) -> np.ndarray | None:
    """The values of ``tensor`` (a traced Tensor) if it is computed from constants only, else None."""
    return _evaluate(tensor.value, {}, [MAX_OPS])


def _evaluate(value: Value, memo: dict[Value, np.ndarray | None], budget: list[int]) -> np.ndarray | None:
    if value in memo:
        return memo[value]
    memo[value] = None
    op = value.producer
    if op is None or not value.type.is_static or math.prod(value.type.shape) > MAX_ELEMENTS:
        return None
    if op.name == "tensor.constant":
        memo[value] = np.asarray(op.attrs["value"])
        return memo[value]
    budget[0] -= 1
    if budget[0] < 0 or not has_trait(op.name, "pure"):
        return None
    operands = [_evaluate(operand, memo, budget) for operand in op.operands]
    if any(operand is None for operand in operands):
        return None
    memo[value] = operands[0] if op.name in VALUE_PRESERVING else _run(op, operands, value)
    return memo[value]


def _run(op: Any, operands: list[np.ndarray], value: Value) -> np.ndarray | None:
    """``value`` (one of ``op``'s results) by the NumPy reference kernel, or None without one."""
    result = run_reference(op.name, op.attrs, operands, (op.results.index(value), len(op.results)), value.type.dtype.numpy)
    return result if result is not None and result.shape == value.type.shape else None


def run_reference(name: str, attrs: dict[str, Any], operands: list[np.ndarray], result: tuple[int, int],
                  dtype: Any) -> np.ndarray | None:
    """Result ``result[0]`` (of ``result[1]``) of op ``name`` on ``operands`` by the NumPy backend's kernel (the CPU
    reference, the values the compiled graph computes), in ``dtype``; None where the op has no kernel."""
    from kiln.backends.numpy.lowering import NUMPY  # the reference kernels; imported late: backends build on the frontend

    kernel = NUMPY.get(name)
    if kernel is None:
        return None
    outputs: Any = kernel(*operands, **attrs)
    index, count = result
    return np.asarray(outputs[index] if count > 1 else outputs, dtype=dtype)


__all__ = ["known_value", "run_reference"]
