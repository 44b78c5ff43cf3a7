"""NumPy kernels of the ``linalg`` factorizations (``compiler/ops/linalg_factor.py``), in the one ``NUMPY`` table.

- ``qr_q``/``qr_r``: ``np.linalg.qr`` (LAPACK's Householder QR, batched; the same signs as PyTorch's geqrf/orgqr, so
  none are fixed).
- ``lu_factor``/``lu_pivots``: NumPy has no LU, so ``partial_pivot_lu`` is LAPACK's getf2 written over the batch:
  the largest ``|a|`` of each column is the pivot (the first of equals, as ``idamax``), a zero pivot is left unscaled
  (the column below it is zero too) and ``info`` records it.
- ``matrix_exp``: Higham's scaling and squaring with the degree-13 Pade approximant (``expm``), the number of
  squarings chosen per matrix.
- ``cholesky_info``: the Cholesky recurrence over the batch, only to find the first leading minor that is not
  positive definite (LAPACK's ``potrf`` info; the factor itself is ``linalg.cholesky``'s).

The CuPy backend re-binds this module (``backends/cupy/lowering.py``), so there ``np`` is CuPy: ``np.linalg.qr`` is
cuSOLVER's, and the loops run on the device. Only fancy indexing is used to move rows, which CuPy mirrors.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY
from kiln.backends.numpy.lowering_linalg import LinAlgError

PADE_13 = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0, 129060195264000.0,
           10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0)
"""``b_0 .. b_13`` of the [13/13] Pade approximant of ``exp`` (Higham 2005, table 2.3)."""
THETA_13 = 5.371920351148152
"""The largest 1-norm for which the [13/13] approximant is exact to double precision (Higham 2005, table 2.3)."""


@NUMPY.register("linalg.qr_q")
def qr_q(a, *, mode: str):
    return np.linalg.qr(a, mode=mode)[0]


@NUMPY.register("linalg.qr_r")
def qr_r(a, *, mode: str):
    return np.linalg.qr(a, mode="r") if mode == "r" else np.linalg.qr(a, mode=mode)[1]


def partial_pivot_lu(a):
    """``(packed LU, 1-based int32 pivots)`` of every ``(m, n)`` matrix of ``a``: ``A[perm] = L U``."""
    *batch, m, n = a.shape
    lu = a.reshape(-1, m, n).copy()
    matrices = np.arange(lu.shape[0])
    pivots = np.empty((lu.shape[0], min(m, n)), np.int32)
    for j in range(min(m, n)):
        p = j + np.argmax(np.abs(lu[:, j:, j]), axis=-1)
        pivots[:, j] = p + 1
        lu[matrices, j], lu[matrices, p] = lu[matrices, p], lu[matrices, j]  # fancy indexing reads copies first
        pivot = lu[:, j, j]
        lu[:, j + 1 :, j] /= np.where(pivot == 0, 1, pivot)[:, None]
        lu[:, j + 1 :, j + 1 :] -= lu[:, j + 1 :, j : j + 1] * lu[:, j : j + 1, j + 1 :]
    return lu.reshape(a.shape), pivots.reshape(*batch, min(m, n))


@NUMPY.register("linalg.lu_factor")
def lu_factor(a):
    return partial_pivot_lu(a)[0]


@NUMPY.register("linalg.lu_pivots")
def lu_pivots(a):
    return partial_pivot_lu(a)[1]


@NUMPY.register("linalg.pivots_to_permutation")
def pivots_to_permutation(pivots, *, size: int):
    """Row ``i`` swapped with row ``pivots[i] - 1`` for each ``i`` in turn, applied to ``0 .. size-1``."""
    swaps = pivots.reshape(-1, pivots.shape[-1]).astype(np.int64) - 1
    if swaps.size and (int(swaps.min()) < 0 or int(swaps.max()) >= size):
        raise LinAlgError(f"linalg.lu_unpack: pivots must lie in [1, {size}] (LU pivots are 1-based row numbers), got "
                          f"values from {int(swaps.min()) + 1} to {int(swaps.max()) + 1}; pass the pivots lu_factor returned")
    perm = np.tile(np.arange(size, dtype=np.int64), (swaps.shape[0], 1))
    rows = np.arange(swaps.shape[0])
    for i in range(swaps.shape[1]):
        p = swaps[:, i]
        perm[rows, i], perm[rows, p] = perm[rows, p], perm[rows, i]
    return perm.reshape(pivots.shape[:-1] + (size,))


def _squarings(a):
    """Per matrix, how many times to halve ``A`` so its 1-norm is at most ``THETA_13`` (0 for NaN or inf)."""
    norm = np.abs(a).sum(axis=-2).max(axis=-1)
    ratio = np.where(np.isfinite(norm) & (norm > THETA_13), norm / THETA_13, 1.0)
    return np.ceil(np.log2(ratio)).astype(np.int64)


@NUMPY.register("linalg.matrix_exp")
def matrix_exp(a):
    squarings = _squarings(a)
    x = a * np.exp2(-squarings).astype(a.dtype)[..., None, None]
    b = [a.dtype.type(c) for c in PADE_13]
    identity = np.eye(a.shape[-1], dtype=a.dtype)
    x2 = x @ x
    x4 = x2 @ x2
    x6 = x4 @ x2
    u = x @ (x6 @ (b[13] * x6 + b[11] * x4 + b[9] * x2) + b[7] * x6 + b[5] * x4 + b[3] * x2 + b[1] * identity)
    v = x6 @ (b[12] * x6 + b[10] * x4 + b[8] * x2) + b[6] * x6 + b[4] * x4 + b[2] * x2 + b[0] * identity
    result = np.linalg.solve(v - u, v + u)
    for index in range(int(squarings.max()) if squarings.size else 0):  # CuPy's max takes no initial=
        result = np.where((squarings > index)[..., None, None], result @ result, result)
    return result


@NUMPY.register("linalg.cholesky_info")
def cholesky_info(a):
    symmetric = (a + np.swapaxes(a, -1, -2)) * a.dtype.type(0.5)
    lower = np.zeros_like(symmetric)
    info = np.zeros(a.shape[:-2], np.int32)
    for j in range(a.shape[-1]):
        diagonal = symmetric[..., j, j] - (lower[..., j, :j] ** 2).sum(axis=-1)
        failed = ~(diagonal > 0)  # NaN fails too, as in LAPACK
        info = np.where((info == 0) & failed, np.int32(j + 1), info)
        root = np.sqrt(np.where(failed, 1, diagonal))
        lower[..., j, j] = root
        below = symmetric[..., j + 1 :, j] - (lower[..., j + 1 :, :j] @ lower[..., j, :j, None])[..., 0]
        lower[..., j + 1 :, j] = below / root[..., None]
    return info


@NUMPY.register("linalg.checked")
def checked(x, info, *, function: str, failure: str):
    if bool((info != 0).any()):
        raise LinAlgError(_failure_message(info.reshape(-1).tolist(), info.shape, function, failure))
    return x


def _failure_message(flat: list[int], shape: tuple[int, ...], function: str, failure: str) -> str:
    """``function: failure`` for the first failed matrix, naming its batch index when there is a batch."""
    position = next(i for i, value in enumerate(flat) if value != 0)
    where = f" (the matrix at batch index {_unravel(position, shape)})" if shape else ""
    return f"{function}: {failure.format(info=flat[position])}{where}"


def _unravel(position: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        position, rest = divmod(position, size)
        index.append(rest)
    return tuple(reversed(index))

