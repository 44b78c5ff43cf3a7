"""NumPy kernels of the running scans without a NumPy function of their own: ``tensor.logcumsumexp`` and its VJP's
``tensor.decayed_cumsum``, ``tensor.cumargmax`` and ``tensor.cumargmin`` (``compiler/ops/scan.py``), in the one
``NUMPY`` table.

Each is one linear pass of a ufunc's ``accumulate`` (``np.logaddexp``, ``np.maximum``, ``np.minimum``) through
``running``; the CuPy table swaps ``running`` for a log-depth scan on the device (``backends/cupy/running_scans.py``),
as CuPy's ufuncs accumulate only sums and products.

>>> cumargmax(np.array([1.0, 3.0, 3.0, 2.0, np.nan, 5.0]), axis=0)
array([0, 1, 2, 2, 4, 4])
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY


def running(ufunc: np.ufunc, x, axis: int, reverse: bool = False):
    """``ufunc`` accumulated along ``axis`` (from the back with ``reverse``), in ``x``'s dtype."""
    if reverse:
        return np.flip(ufunc.accumulate(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
    return ufunc.accumulate(x, axis=axis, dtype=x.dtype)


@NUMPY.register("tensor.logcumsumexp")
def logcumsumexp(x, *, axis: int, reverse: bool):
    # logaddexp is max + log1p(exp(-|a - b|)): no overflow, equal infinities give that infinity
    return running(np.logaddexp, x, axis, reverse)


@NUMPY.register("tensor.decayed_cumsum")
def decayed_cumsum(g, y, *, axis: int, reverse: bool):
    """``t_i = sum_{j <= i} g_j exp(y_j - y_i)`` (``j >= i`` with ``reverse``) in one pass per sign of ``g``, in logs so
    no weight overflows: ``log t_i = logcumsumexp(log g + y)_i - y_i``."""
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf is what a zero g means here
        magnitude = np.log(np.abs(g))

        def part(selected):
            return np.exp(running(np.logaddexp, np.where(selected, magnitude + y, -np.inf), axis, reverse) - y)

        return part(g > 0) - part(g < 0)


def _running_index(extreme: np.ufunc):
    def kernel(x, *, axis: int):
        """Where the running extreme was taken: an element equal to it (a new extreme, or a tie: the latest wins) or
        a NaN (the extreme is NaN from there on) takes over; the running maximum of those positions is the index."""
        axis = axis % x.ndim
        taken = np.equal(x, running(extreme, x, axis))
        if x.dtype.kind == "f":
            taken |= np.isnan(x)
        positions = np.arange(x.shape[axis], dtype=np.int64).reshape((-1,) + (1,) * (x.ndim - axis - 1))
        return running(np.maximum, np.where(taken, positions, np.int64(0)), axis)

    return kernel


NUMPY.register("tensor.cumargmax")(cumargmax := _running_index(np.maximum))
NUMPY.register("tensor.cumargmin")(cumargmin := _running_index(np.minimum))
