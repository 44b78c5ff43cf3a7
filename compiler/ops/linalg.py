"""The ``linalg`` dialect: torch.linalg's core on square matrices, batched over leading dims.

```
%y = "linalg.inv"(%a) : (tensor<Nx3x3xf64>) -> tensor<Nx3x3xf64>
%x = "linalg.solve"(%a, %b) : (tensor<Nx3x3xf64>, tensor<3x2xf64>) -> tensor<Nx3x2xf64>
%d = "linalg.det"(%a) : (tensor<Nx3x3xf64>) -> tensor<Nxf64>
%l = "linalg.logabsdet"(%a) : (tensor<Nx3x3xf64>) -> tensor<Nxf64>
%s = "linalg.det_sign"(%a) : (tensor<Nx3x3xf64>) -> tensor<Nxf64>
%c = "linalg.cholesky"(%a) : (tensor<Nx3x3xf64>) -> tensor<Nx3x3xf64>
%t = "linalg.solve_triangular"(%a, %b) {upper = false, unitriangular = false} : (...) -> tensor<Nx3x2xf64>
```

Every op takes float matrices ``(..., n, n)`` with a static ``n`` (the VJPs build ``n x n`` masks) and any leading
dims, symbolic ones too; ``solve``'s and ``solve_triangular``'s right-hand sides are ``(..., n, k)`` and the batch
dims broadcast as in ``tensor.matmul``. ``cholesky`` gives the lower factor ``L`` (``A = L L^T``; it reads only
the lower triangle). ``solve_triangular`` solves ``T X = B`` with ``T`` the lower (or ``upper``) triangle of ``A``,
its diagonal read as ones with ``unitriangular``; a right-sided solve is a transposed left one (``kiln/linalg.py``).
``slogdet`` is two ops, ``det_sign`` (no gradient, as PyTorch's sign) and ``logabsdet``, so each has one result.
The VJPs are in ``compiler/autodiff/rules_linalg.py``.
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.registry import register_op
from kiln.compiler.ops.tensor import _broadcast


def _square(op: str, a: TensorType) -> int:
    """``n`` of a float ``(..., n, n)`` operand; a ShapeError naming what to do otherwise."""
    if not a.dtype.is_float:
        raise ShapeError(f"{op} needs a float matrix, got {a}; cast it to float32 or float64")
    if a.rank < 2 or a.shape[-1] != a.shape[-2]:
        hint = ("; a symbolic dim among the last two is a batch dim (kiln.compile makes dim 0 one): pass batch_dim=None "
                "for a single matrix" if a.rank >= 2 and not all(isinstance(d, int) for d in a.shape[-2:]) else "")
        raise ShapeError(f"{op} needs square matrices (..., n, n), got {a}{hint}")
    if not isinstance(a.shape[-1], int):
        raise ShapeError(f"{op} needs a static matrix size n, got {a}; only the leading (batch) dims may be symbolic")
    return a.shape[-1]


def _right_hand_side(op: str, a: TensorType, b: TensorType) -> TensorType:
    """``(batch, n, k)`` of ``A X = B``: ``B`` is ``(..., n, k)``, ``A``'s and ``B``'s batch dims broadcast."""
    n = _square(op, a)
    if b.dtype is not a.dtype:
        raise ShapeError(f"{op} needs operands of one dtype, got {a} and {b}; cast one of them")
    if b.rank < 2 or b.shape[-2] != n:
        raise ShapeError(f"{op}: the right-hand side must be (..., {n}, k) for {a}, got {b}")
    batch = _broadcast(op, TensorType(a.shape[:-2], a.dtype), TensorType(b.shape[:-2], b.dtype))
    return TensorType(batch + b.shape[-2:], a.dtype)


@register_op("linalg.inv")
def inv_shape(a: TensorType) -> TensorType:
    """``A^-1``, same type as ``A``."""
    _square("linalg.inv", a)
    return a


@register_op("linalg.solve")
def solve_shape(a: TensorType, b: TensorType) -> TensorType:
    """``X = A^-1 B``."""
    return _right_hand_side("linalg.solve", a, b)


def _determinant_shape(op: str):
    def shape(a: TensorType) -> TensorType:
        """One number per matrix: ``(..., n, n) -> (...)``."""
        _square(op, a)
        return a.with_shape(a.shape[:-2])

    return shape


det_shape = register_op("linalg.det")(_determinant_shape("linalg.det"))
logabsdet_shape = register_op("linalg.logabsdet")(_determinant_shape("linalg.logabsdet"))
det_sign_shape = register_op("linalg.det_sign", traits={"non_differentiable"})(_determinant_shape("linalg.det_sign"))


@register_op("linalg.cholesky")
def cholesky_shape(a: TensorType) -> TensorType:
    """The lower factor ``L`` of ``A = L L^T``, same type as ``A``."""
    _square("linalg.cholesky", a)
    return a


@register_op("linalg.solve_triangular", upper=False, unitriangular=False)
def solve_triangular_shape(a: TensorType, b: TensorType, *, upper: bool, unitriangular: bool) -> TensorType:
    """``X = T^-1 B``, ``T`` the lower (``upper``: upper) triangle of ``A`` (unit diagonal with ``unitriangular``)."""
    return _right_hand_side("linalg.solve_triangular", a, b)
