"""``torch.linalg``'s matrix functions beyond the factorizations: ``matrix_exp``, ``matrix_power``, ``multi_dot``
(and ``torch.chain_matmul``), ``householder_product``, ``vander``, ``tensorinv``, ``tensorsolve``, ``vecdot``,
``cross``, ``diagonal``, ``matmul``, and ``eig``/``eigvals`` (complex, eager only: ``frontend/complex_linalg.py``).

``matrix_exp`` is one IR op (``compiler/ops/linalg_factor.py``); the others are compositions, so autodiff goes
through them. Re-exported by ``frontend/linalg_factor.py``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from kiln.frontend import tensor_linalg as core
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts
from kiln.frontend.linalg_common import _apply, _eye, _square_size


def matrix_exp(A: Any) -> Any:
    """``exp(A) = sum_k A^k / k!`` of every square matrix (scaling and squaring, Pade 13)."""
    return _apply("linalg.matrix_exp", A)


def matrix_power(A: Any, n: int) -> Any:
    """``A^n`` by repeated squaring; ``n = 0`` the identity, a negative ``n`` a power of ``inv(A)``."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise located_error(f"linalg.matrix_power: n must be an int, got {n!r}")
    size = _square_size("linalg.matrix_power", A)
    if n == 0:
        return _eye(size, A.dtype).broadcast_to(A.shape)  # a fresh tensor, not a view
    base, power, result = core.inv(A) if n < 0 else A, abs(n), None
    while True:  # binary powers, least significant bit first (PyTorch's order of products)
        if power & 1:
            result = base if result is None else result @ base
        power >>= 1
        if not power:
            return result
        base = base @ base


def _chain_order(dims: Sequence[int]) -> list[list[int]]:
    """``split[i][j]``: where the cheapest product of matrices ``i..j`` splits (the textbook matrix-chain program)."""
    count = len(dims) - 1
    cost = [[0] * count for _ in range(count)]
    split = [[0] * count for _ in range(count)]
    for length in range(1, count):
        for i in range(count - length):
            j = i + length
            cost[i][j], split[i][j] = min((cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1], k) for k in range(i, j))
    return split


def _chain_product(matrices: Sequence[Any], split: list[list[int]], i: int, j: int) -> Any:
    if i == j:
        return matrices[i]
    k = split[i][j]
    return _chain_product(matrices, split, i, k) @ _chain_product(matrices, split, k + 1, j)


def multi_dot(tensors: Sequence[Any]) -> Any:
    """The product of 2-D matrices in the cheapest order; the first may be a 1-D row, the last a 1-D column."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise located_error(f"linalg.multi_dot needs at least 2 tensors, got {len(tensors)}")
    first, last = tensors[0].ndim == 1, tensors[-1].ndim == 1
    matrices = [tensors[0].unsqueeze(0) if first else tensors[0], *tensors[1:-1], tensors[-1].unsqueeze(-1) if last else tensors[-1]]
    for index, matrix in enumerate(matrices):
        if matrix.ndim != 2:
            raise located_error(f"linalg.multi_dot: tensor {index} must be 2-D (the first and last may be 1-D), got {tensors[index].type}")
    product = _chain_product(matrices, _chain_order([m.shape[0] for m in matrices] + [matrices[-1].shape[1]]), 0, len(matrices) - 1)
    if first:
        product = product.squeeze(0)
    return product.squeeze(-1) if last else product


def chain_matmul(*matrices: Any) -> Any:
    """``torch.chain_matmul``: the product of 2-D matrices (``linalg.multi_dot``)."""
    for index, matrix in enumerate(matrices):
        if matrix.ndim != 2:
            raise located_error(f"chain_matmul: matrix {index} must be 2-D, got {matrix.type}")
    return matrices[0].clone() if len(matrices) == 1 else multi_dot(matrices)


@autocasts("linalg_householder_product")
def householder_product(A: Any, tau: Any) -> Any:
    """The first ``n`` columns of ``H_1 ... H_k``, ``H_i = I - tau_i v_i v_i^T`` with ``v_i`` column ``i`` of ``A``
    below the diagonal and 1 on it (LAPACK's orgqr); ``A`` is ``(..., m, n)``, ``tau`` ``(..., k)``, ``k <= n <= m``."""
    if A.ndim < 2 or tau.ndim != A.ndim - 1 or not tau.shape[-1] <= A.shape[-1] <= A.shape[-2]:
        raise located_error(f"linalg.householder_product needs A (..., m, n) and tau (..., k) with k <= n <= m, "
                            f"got {A.type} and {tau.type}")
    m, n = A.shape[-2:]
    below = A.tril(-1) + _eye(m, A.dtype, n)  # column i: the reflector v_i
    result = _eye(m, A.dtype, n)
    for i in reversed(range(tau.shape[-1])):  # H_1 (H_2 (... (H_k I)))
        v = below[..., :, i : i + 1]
        result = result - tau[..., i : i + 1].unsqueeze(-1) * (v @ (v.mT @ result))
    return result


def vander(x: Any, *, N: int | None = None) -> Any:
    """``x[..., i] ** j`` for ``j < N`` (``N`` defaults to ``x.shape[-1]``), built by products (exact gradients at 0)."""
    from kiln.frontend.torch_functions import ones_like, stack

    columns = x.shape[-1] if N is None else N
    if columns <= 1:
        raise located_error(f"linalg.vander: N must be greater than 1, got {columns}")
    powers = [ones_like(x), x]
    while len(powers) < columns:
        powers.append(powers[-1] * x)
    return stack(powers, -1)


@autocasts("linalg_tensorinv")
def tensorinv(A: Any, ind: int = 2) -> Any:
    """The inverse of ``A`` as a linear map from its last dims to its first ``ind``: ``A.shape[ind:] + A.shape[:ind]``."""
    rows, columns = tuple(A.shape[:ind]), tuple(A.shape[ind:])
    if ind <= 0 or math.prod(rows) != math.prod(columns):
        raise located_error(f"linalg.tensorinv: the product of the first ind={ind} dims of {A.type} must equal that of "
                            "the rest (ind > 0)")
    return core.inv(A.reshape(math.prod(rows), math.prod(columns))).reshape(*columns, *rows)


@autocasts("linalg_tensorsolve")
def tensorsolve(A: Any, B: Any, dims: Sequence[int] | None = None) -> Any:
    """``X`` with ``tensordot(A, X, X.ndim) = B``; ``dims`` of ``A`` move to the end first."""
    if dims is not None:
        dims = [d % A.ndim for d in dims]
        A = A.permute(*[d for d in range(A.ndim) if d not in dims], *dims)
    result_shape = tuple(A.shape[B.ndim :])
    if tuple(A.shape[: B.ndim]) != tuple(B.shape) or math.prod(result_shape) != math.prod(B.shape):
        raise located_error(f"linalg.tensorsolve: A {A.type} must start with B's shape {tuple(B.shape)} and its other "
                            "dims must have as many elements")
    size = math.prod(B.shape)
    return core.solve(A.reshape(size, size), B.reshape(size)).reshape(*result_shape)


@autocasts("linalg_vecdot")
def vecdot(x: Any, y: Any, *, dim: int = -1) -> Any:
    """``sum(x * y)`` along ``dim`` (real tensors: no conjugate)."""
    return (x * y).sum(dim)


def cross(input: Any, other: Any, *, dim: int = -1) -> Any:
    """The cross product of 3-vectors along ``dim`` (``-1`` by default, unlike ``Tensor.cross``)."""
    return input.cross(other, dim=dim)


def diagonal(A: Any, *, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Any:
    return A.diagonal(offset, dim1, dim2)


def matmul(input: Any, other: Any) -> Any:
    return input @ other


@autocasts("linalg_eig")
def eig(A: Any) -> Any:
    """Complex eigenvalues and eigenvectors, eagerly (``frontend/complex_linalg.py``)."""
    from kiln.frontend.complex_linalg import eig as complex_eig  # lazily: complex tensors build on the frontend

    return complex_eig(A)


@autocasts("linalg_eigvals")
def eigvals(A: Any) -> Any:
    from kiln.frontend.complex_linalg import eigvals as complex_eigvals

    return complex_eigvals(A)
