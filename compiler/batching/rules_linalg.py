"""Batching rules of the ``linalg`` dialect: its ops act on the trailing matrix (or vector) axes and batch over every
leading axis, so a vmapped batch axis is one more leading axis.

```python
kiln.vmap(kiln.linalg.det)(matrices)        # one linalg.det over (B, n, n)
kiln.vmap(kiln.linalg.solve, in_axes=(None, 0))(a, bs)   # a broadcast against each b
```

One operand: the op as it is. Several (``solve``, ``solve_triangular``, ``checked``): every operand gets the batch axis
(an unbatched one broadcast along it); a matrix operand with fewer per-example leading axes than another gets size-1
axes after the batch axis, so the leading axes broadcast as they do per example.
"""

from __future__ import annotations

from kiln.compiler.batching.rules import Batched, aligned, batching_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value

ONE_OPERAND = ("linalg.inv", "linalg.det", "linalg.logabsdet", "linalg.det_sign", "linalg.cholesky", "linalg.cholesky_info",
               "linalg.eigh", "linalg.svd", "linalg.qr_q", "linalg.qr_r", "linalg.lu_factor", "linalg.lu_pivots",
               "linalg.matrix_exp", "linalg.pivots_to_permutation", "linalg.ldl_factor", "linalg.ldl_pivots")


@batching_rule(*ONE_OPERAND)
def matrix_batch(b: Builder, op: Op, x: Batched) -> Value | tuple[Value, ...]:
    return b.op(op.name, x.values[0], **op.attrs)


@batching_rule("linalg.solve", "linalg.solve_triangular")
def right_hand_side_batch(b: Builder, op: Op, x: Batched) -> Value | tuple[Value, ...]:
    rank = max(x.rank(0), x.rank(1))
    return b.op(op.name, *(aligned(b, x.materialized(b, i), x.rank(i), rank) for i in range(2)), **op.attrs)


@batching_rule("linalg.checked")
def checked_batch(b: Builder, op: Op, x: Batched) -> Value | tuple[Value, ...]:
    # the value and its per-matrix info share their leading axes: both get the batch axis, nothing more
    return b.op(op.name, *(x.materialized(b, i) for i in range(2)), **op.attrs)


@batching_rule("linalg.ldl_solve")
def ldl_solve_batch(b: Builder, op: Op, x: Batched) -> Value | tuple[Value, ...]:
    # LD and its pivots keep equal leading axes (the op requires it): both get the batch axis if either has it; B
    # broadcasts against them as a right-hand side does
    rank = max(x.rank(0), x.rank(2))
    factors = [x.values[i] for i in range(2)]
    if any(x.batched[:2]):
        factors = [aligned(b, x.materialized(b, i), x.rank(i), rank - i) for i in range(2)]
    return b.op(op.name, *factors, x.aligned(b, 2, rank), **op.attrs)
