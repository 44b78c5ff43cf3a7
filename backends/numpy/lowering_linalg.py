"""NumPy kernels of the ``linalg`` dialect (``compiler/ops/linalg.py``), in the one ``NUMPY`` table.

Each is one ``np.linalg`` call over the leading (batch) dims: LAPACK's LU for ``inv``, ``solve``, ``det`` and
``slogdet``, its Cholesky for ``cholesky``. The CuPy backend re-binds this module, so there ``np.linalg`` is
``cupy.linalg`` (cuSOLVER), which returns NaN where LAPACK raises. ``solve_triangular`` is substitution, as LAPACK's
``trtrs`` (``backends/numpy/triangular_substitution.py``; NumPy has no triangular solver, SciPy's is not batched).
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY
from kiln.backends.numpy.triangular_substitution import solve_by_substitution
from kiln.compiler.errors import KilnError

LAPACK_ERRORS = (np.linalg.LinAlgError,)
"""NumPy's own error class, bound at import (the CuPy re-binding replaces only the ``np`` the kernels call)."""


class LinAlgError(KilnError, ValueError, RuntimeError):
    """A matrix has no inverse (or no Cholesky factor) where the op needs one: ``kiln.linalg.LinAlgError``. A
    RuntimeError too, as ``torch.linalg.LinAlgError``: code written for torch catches it so (GPyTorch's
    ``psd_safe_cholesky`` of 1.x retries with jitter on ``except RuntimeError``)."""


def _lapack(op: str, what: str, function, *arrays):
    """``function(*arrays)``, LAPACK's error said as one kiln error that names the op."""
    try:
        return function(*arrays)
    except LAPACK_ERRORS as error:
        raise LinAlgError(f"{op}: {what} ({error}); PyTorch raises here too, check the input matrices") from None


@NUMPY.register("linalg.inv")
def inv(a):
    return _lapack("linalg.inv", "a matrix is singular", np.linalg.inv, a)


@NUMPY.register("linalg.solve")
def solve(a, b):
    return _lapack("linalg.solve", "a matrix is singular", np.linalg.solve, a, b)


@NUMPY.register("linalg.det")
def det(a):
    return np.asarray(np.linalg.det(a), dtype=a.dtype)  # a 0-d result comes back as a NumPy scalar


@NUMPY.register("linalg.logabsdet")
def logabsdet(a):
    return np.asarray(np.linalg.slogdet(a)[1], dtype=a.dtype)


@NUMPY.register("linalg.det_sign")
def det_sign(a):
    return np.asarray(np.linalg.slogdet(a)[0], dtype=a.dtype)


@NUMPY.register("linalg.cholesky")
def cholesky(a):
    # (A + A^T) / 2 equals A on the symmetric input the op is for, and makes the symmetric VJP the exact derivative
    symmetric = (a + np.swapaxes(a, -1, -2)) * a.dtype.type(0.5)
    return _lapack("linalg.cholesky", "a matrix is not positive definite", np.linalg.cholesky, symmetric)


@NUMPY.register("linalg.solve_triangular")
def solve_triangular(a, b, *, upper: bool, unitriangular: bool):
    return solve_by_substitution(a, b, upper=upper, unitriangular=unitriangular)
