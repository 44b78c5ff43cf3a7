"""PyTorch's shape checks of ``matmul`` (``@``), ``mm``, ``bmm`` and ``mv``, with its words, before kiln emits
``tensor.matmul`` (whose shape rule would name kiln's op and NumPy's contraction):

```python
x @ w          # (3, 4) @ (5, 6): mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)
A @ v          # (3, 4) @ (5,):   size mismatch, got input (3), mat (3x4), vec (5)
u @ v          # (4,) @ (5,):     inconsistent tensor size, expected tensor [4] and src [5] to have the same number ...
u.dot(v)       # f64 and f32:     dot : expected both vectors to have same dtype, but found Double and Float
a @ b          # (2, 3, 4) @ (2, 5, 6): Expected size for first two dimensions of batch2 tensor to be: [2, 4] but ...
```

Each is a ``RuntimeError`` naming the user's line. ``matmul`` folds the batch dims as PyTorch does: an N-D left operand
times a matrix is one ``mm`` of its rows, batched operands one ``bmm`` over the product of the broadcast batch dims.
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import BroadcastError, TraceError
from kiln.compiler.ir.types import broadcast_shapes, dim_product
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor_bitwise import TORCH_NAMES


class MatmulShapeError(TraceError, RuntimeError):
    """Operands of a matrix product whose shapes do not fit (torch's ``RuntimeError``)."""


def check_matmul_shapes(a: Any, b: Any) -> None:
    """``torch.matmul(a, b)``'s checks: both at least 1-D, the contracted dims equal, the batch dims broadcast."""
    a_shape, b_shape = a.value.type.shape, b.value.type.shape  # the IR's tuples: cheaper than torch.Size, every call
    if not a_shape or not b_shape:
        _refuse(f"both arguments to matmul need to be at least 1D, but they are {len(a_shape)}D and {len(b_shape)}D")
    inner = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if a_shape[-1] == inner and len(b_shape) <= 2:
        return
    if len(b_shape) == 1:
        if len(a_shape) == 1:
            _refuse_dot(a_shape[0], b_shape[0])
        _refuse_mv(dim_product(tuple(a_shape[:-1])), a_shape[-1], b_shape[0])
    if len(b_shape) == 2:
        _refuse_mm(dim_product(tuple(a_shape[:-1])), a_shape[-1], b_shape)
    _check_batched(a_shape, b_shape)


def check_mm_shapes(a: Any, b: Any) -> None:
    """``torch.mm``'s checks: two matrices whose inner dims agree."""
    if len(a.shape) != 2:
        _refuse("self must be a matrix")
    if len(b.shape) != 2:
        _refuse("mat2 must be a matrix")
    if a.shape[1] != b.shape[0]:
        _refuse_mm(a.shape[0], a.shape[1], b.shape)


def check_bmm_shapes(a: Any, b: Any) -> None:
    """``torch.bmm``'s checks: two 3-D tensors of one batch size whose inner dims agree."""
    for name, shape in (("batch1", a.shape), ("batch2", b.shape)):
        if len(shape) != 3:
            _refuse(f"{name} must be a 3D tensor")
    if (a.shape[0], a.shape[2]) != (b.shape[0], b.shape[1]):
        _refuse_bmm(a.shape[0], a.shape[2], b.shape[0], b.shape[1])


def check_mv_shapes(a: Any, b: Any) -> None:
    """``torch.mv``'s checks: a matrix and a vector of its columns' length."""
    if len(a.shape) != 2 or len(b.shape) != 1:
        _refuse(f"vector + matrix @ vector expected, got 1, {len(a.shape)}, {len(b.shape)}")
    if a.shape[1] != b.shape[0]:
        _refuse_mv(a.shape[0], a.shape[1], b.shape[0])


def check_dot_operands(a: Any, b: Any) -> None:
    """``torch.dot``'s checks, in its order: two vectors (kiln's product would broadcast a column silently), of one
    dtype (kiln's product would promote: bermanmaxim's Lovasz loss dots float64 errors with a float32 gradient, which
    torch refuses), of one length."""
    if len(a.shape) != 1 or len(b.shape) != 1:
        _refuse(f"1D tensors expected, but got {len(a.shape)}D and {len(b.shape)}D tensors")
    if a.dtype != b.dtype:
        _refuse(f"dot : expected both vectors to have same dtype, but found {TORCH_NAMES.get(a.dtype, a.dtype)} and "
                f"{TORCH_NAMES.get(b.dtype, b.dtype)}; cast one of them with .to(other.dtype)")
    if a.shape[0] != b.shape[0]:
        _refuse_dot(a.shape[0], b.shape[0])


def check_inner_shapes(a: Any, b: Any) -> None:
    """``torch.inner``'s check: the last dims agree (neither operand 0-D)."""
    if len(a.shape) and len(b.shape) and a.shape[-1] != b.shape[-1]:
        _refuse(f"inner() the last dimension must match on both input tensors but got shapes {_listed(a.shape)} and "
                f"{_listed(b.shape)}")


def _check_batched(a_shape: tuple, b_shape: tuple) -> None:
    """A batched product (``b`` at least 3-D): the batch dims broadcast first, then the folded ``bmm``'s check."""
    try:
        batch = broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
    except BroadcastError as error:
        _refuse(str(error))
    if a_shape[-1] != b_shape[-2]:
        size = dim_product(batch)
        _refuse_bmm(size, a_shape[-1], size, b_shape[-2])


def _refuse_mm(rows: Any, inner: Any, b_shape: tuple) -> None:
    _refuse(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{inner} and {b_shape[0]}x{b_shape[1]})")


def _refuse_dot(size: Any, other: Any) -> None:
    _refuse(f"inconsistent tensor size, expected tensor [{size}] and src [{other}] to have the same number of "
            f"elements, but got {size} and {other} elements respectively")


def _listed(shape: Any) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _refuse_mv(rows: Any, inner: Any, vector: Any) -> None:
    _refuse(f"size mismatch, got input ({rows}), mat ({rows}x{inner}), vec ({vector})")


def _refuse_bmm(batch: Any, inner: Any, got_batch: Any, got_inner: Any) -> None:
    _refuse(f"Expected size for first two dimensions of batch2 tensor to be: [{batch}, {inner}] but got: "
            f"[{got_batch}, {got_inner}].")


def _refuse(message: str) -> None:
    raise located(MatmulShapeError, message)
