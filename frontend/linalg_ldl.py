"""``torch.linalg``'s LDL^T factorization of real symmetric matrices: ``ldl_factor``, ``ldl_factor_ex`` and
``ldl_solve``, PyTorch's names, signatures and named tuples.

```python
import kiln
LD, pivots = kiln.linalg.ldl_factor(A)             # A symmetric (only its lower triangle is read), (..., n, n)
X = kiln.linalg.ldl_solve(LD, pivots, B)           # A X = B, B (..., n, k)
LD, pivots, info = kiln.linalg.ldl_factor_ex(A)    # info: 0, or the first zero of D's diagonal (1-based)
```

``LD`` and ``pivots`` are LAPACK's ``sytrf`` (lower) exactly as PyTorch returns them: Bunch-Kaufman pivoting, ``D``'s
1x1 and 2x2 blocks on the diagonal, ``L`` below, zeros above, 1-based int32 pivots negative for a 2x2 block (the IR
ops and kernels: ``compiler/ops/linalg_ldl.py``, ``backends/numpy/lowering_linalg_ldl.py``). ``hermitian`` is
accepted and changes nothing: kiln's matrices are real, where Hermitian is symmetric. ``info`` is read off ``LD``
and the pivots: ``sytrf`` sets it where a column is zero (or its diagonal NaN) and leaves that 1x1 block as it is,
the only way a 1x1 block of ``D`` ends up zero or NaN. As PyTorch, neither op has a derivative: differentiating
through one raises at compile time naming it (PyTorch raises in ``backward``). ONNX export refuses them by name.
float16 and bfloat16 factor in float32 and round once, as kiln's other factorizations (PyTorch's CPU kernel refuses
half dtypes).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kiln.frontend.linalg_factor import _apply, _checked
from kiln.frontend.trace import located_error

LDL_FACTOR_FAILURE = ("D[{info},{info}] is zero (1-based): the matrix is singular, so ldl_solve would divide by zero; "
                      "to factor it anyway call linalg.ldl_factor_ex (it returns info instead of raising)")


class LDLFactorResult(NamedTuple):
    LD: Any
    pivots: Any


class LDLFactorExResult(NamedTuple):
    LD: Any
    pivots: Any
    info: Any


def _check_matrices(function: str, A: Any) -> None:
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise located_error(f"{function}: A must be batches of square matrices, got {A.type}")
    if not A.dtype.is_float:
        raise located_error(f"{function}: A must be floating point, got {A.type}; cast it with .double() or .float()")


def ldl_info(LD: Any, pivots: Any) -> Any:
    """``sytrf``'s ``info``: the 1-based index of the first 1x1 block of ``D`` that is zero or NaN, else 0."""
    diagonal = LD.diagonal(0, -2, -1)
    if diagonal.shape[-1] == 0:  # 0 x 0 matrices: nothing failed (and no argmax over nothing)
        return diagonal.sum(-1).int()
    failed = (pivots > 0) & ((diagonal == 0) | (diagonal != diagonal))
    return _apply("tensor.where", failed.any(-1), failed.int().argmax(-1) + 1, 0).int()


def ldl_factor_ex(A: Any, *, hermitian: bool = False, check_errors: bool = False) -> LDLFactorExResult:
    """``(LD, pivots, info)`` of ``P A P^T = L D L^T``; ``check_errors=True`` raises ``kiln.linalg.LinAlgError``
    when run if some ``info`` is nonzero."""
    _check_matrices("linalg.ldl_factor_ex", A)
    LD, pivots = _apply("linalg.ldl_factor", A), _apply("linalg.ldl_pivots", A)
    info = ldl_info(LD, pivots)
    if check_errors:
        LD = _checked(LD, info, "linalg.ldl_factor_ex", LDL_FACTOR_FAILURE)
    return LDLFactorExResult(LD, pivots, info)


def ldl_factor(A: Any, *, hermitian: bool = False) -> LDLFactorResult:
    """``(LD, pivots)``; a singular ``D`` raises ``kiln.linalg.LinAlgError`` when run (PyTorch 2.13 trips an internal
    assert there instead)."""
    _check_matrices("linalg.ldl_factor", A)
    LD, pivots, info = ldl_factor_ex(A, hermitian=hermitian)
    return LDLFactorResult(_checked(LD, info, "linalg.ldl_factor", LDL_FACTOR_FAILURE), pivots)


def ldl_solve(LD: Any, pivots: Any, B: Any, *, hermitian: bool = False) -> Any:
    """``X`` with ``A X = B`` from ``ldl_factor``'s ``(LD, pivots)``; the leading dims of ``LD`` and ``B`` broadcast."""
    _check_matrices("linalg.ldl_solve", LD)
    if tuple(pivots.shape) != tuple(LD.shape[:-1]):
        raise located_error(f"linalg.ldl_solve: expected LD.shape[:-1] and pivots.shape to be the same, got pivots "
                            f"{pivots.type} for LD {LD.type}")
    if not pivots.dtype.is_int:
        raise located_error(f"linalg.ldl_solve: expected integer pivots (ldl_factor's int32), got {pivots.type}")
    if B.ndim < 2 or B.shape[-2] != LD.shape[-1] or B.dtype != LD.dtype:
        raise located_error(f"linalg.ldl_solve: expected B (..., {LD.shape[-1]}, k) of LD's dtype, got {B.type} for LD "
                            f"{LD.type}")
    return _apply("linalg.ldl_solve", LD, pivots.int(), B)


__all__ = ["LDLFactorExResult", "LDLFactorResult", "ldl_factor", "ldl_factor_ex", "ldl_solve"]
