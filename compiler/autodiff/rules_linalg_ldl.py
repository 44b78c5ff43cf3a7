"""VJP rules of the LDL^T ops (``compiler/ops/linalg_ldl.py``): refusals, as PyTorch's.

PyTorch defines no derivative of ``linalg_ldl_factor_ex`` or ``linalg_ldl_solve`` ("derivative for
aten::linalg_ldl_factor_ex is not implemented"), so differentiating through either raises here too, at compile
time, naming the op and the user's line. ``ldl_pivots`` is ``non_differentiable`` (integers) and needs no rule.
"""

from __future__ import annotations

from kiln.compiler.autodiff.differentiate import AutodiffError
from kiln.compiler.autodiff.rules import Cotangents, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value

WORKAROUND = {
    "linalg.ldl_factor": "to differentiate a symmetric solve use kiln.linalg.solve (or cholesky for a positive-definite "
                         "matrix), or detach() the factorization's input",
    "linalg.ldl_solve": "to differentiate the solve use kiln.linalg.solve(A, B), or detach() LD and B",
}


@vjp_rule("linalg.ldl_factor", "linalg.ldl_solve")
def ldl_refused_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    where = f" (from {op.location})" if op.location else ""
    raise AutodiffError(f"{op.name}{where} has no derivative, as PyTorch's (its linalg.{op.name.split('.')[1]} is not "
                        f"differentiable either); {WORKAROUND[op.name]}")
