"""The ``linalg`` dialect's LDL^T factorization of real symmetric matrices (Bunch-Kaufman, LAPACK's ``sytrf`` with
the lower triangle), and its solve, batched over leading dims.

```
%ld = "linalg.ldl_factor"(%a) : (tensor<Nx4x4xf64>) -> tensor<Nx4x4xf64>
%p = "linalg.ldl_pivots"(%a) : (tensor<Nx4x4xf64>) -> tensor<Nx4xi32>
%x = "linalg.ldl_solve"(%ld, %p, %b) : (tensor<Nx4x4xf64>, tensor<Nx4xi32>, tensor<Nx4x2xf64>) -> tensor<Nx4x2xf64>
```

``ldl_factor`` is ``sytrf``'s packed ``LD`` as PyTorch returns it: ``D``'s 1x1 and 2x2 diagonal blocks on the
diagonal (and the first subdiagonal, for a 2x2 block), the unit-lower ``L`` strictly below, zeros above (only ``A``'s
lower triangle is read). ``ldl_pivots`` is ``sytrf``'s ``ipiv``, 1-based int32: ``p[k] > 0`` a 1x1 block at ``k``
after rows and columns ``k`` and ``p[k] - 1`` were swapped; ``p[k] = p[k + 1] < 0`` a 2x2 block at ``k, k + 1`` after
``k + 1`` and ``-p[k] - 1`` were swapped. ``ldl_solve`` is ``sytrs``: ``X`` with ``A X = B``, the leading dims of
``LD`` (with its pivots) and ``B`` broadcast. PyTorch has no derivative of either (``compiler/autodiff/
rules_linalg_ldl.py`` refuses, naming the op); the kernels are ``backends/numpy/lowering_linalg_ldl.py`` (float16
and bfloat16 run in float32 there, by ``widen-half``, as the other factorizations).
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.linalg import _right_hand_side
from kiln.compiler.ops.registry import register_op

def _square_float(op: str, a: TensorType) -> int:
    """``n`` of a float ``(..., n, n)`` operand with a static ``n``; a ShapeError saying what to do."""
    if not a.dtype.is_float:
        raise ShapeError(f"{op} needs float matrices, got {a}; cast to float32 or float64")
    if a.rank < 2 or a.shape[-1] != a.shape[-2] or not isinstance(a.shape[-1], int):
        raise ShapeError(f"{op} needs square matrices (..., n, n) with a static n, got {a}")
    return a.shape[-1]


@register_op("linalg.ldl_factor")
def ldl_factor_shape(a: TensorType) -> TensorType:
    """``L`` and ``D`` of ``P A P^T = L D L^T`` packed in one ``(..., n, n)`` matrix, as ``sytrf`` (lower)."""
    _square_float("linalg.ldl_factor", a)
    return a


@register_op("linalg.ldl_pivots", traits={"non_differentiable"})
def ldl_pivots_shape(a: TensorType) -> TensorType:
    """``sytrf``'s interchanges and block sizes: ``(..., n)`` int32, 1-based, negative for a 2x2 block."""
    n = _square_float("linalg.ldl_pivots", a)
    return TensorType(a.shape[:-2] + (n,), DType.i32)


@register_op("linalg.ldl_solve")
def ldl_solve_shape(ld: TensorType, pivots: TensorType, b: TensorType) -> TensorType:
    """``X`` with ``A X = B`` from ``A``'s ``ldl_factor`` and ``ldl_pivots``: ``B``'s ``(n, k)`` after the
    broadcast leading dims."""
    n = _square_float("linalg.ldl_solve", ld)
    if pivots.dtype is not DType.i32 or pivots.shape[-1:] != (n,) or pivots.shape[:-1] != ld.shape[:-2]:
        raise ShapeError(f"linalg.ldl_solve needs int32 pivots (..., {n}) with LD's leading dims, got {pivots} for LD {ld}")
    return _right_hand_side("linalg.ldl_solve", ld, b)
