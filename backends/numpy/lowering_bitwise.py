"""NumPy kernels of the integer bit ops (``compiler/ops/bitwise.py``), in the one ``NUMPY`` table.

The shifts spell out PyTorch's meaning of a count outside ``[0, bits)`` (left: 0; right: the sign fill, 0 for uint8) instead of
leaving it to ``np.left_shift``: NumPy's own ufuncs agree, but these kernels are re-bound to CuPy too, whose shift
ufuncs are C's ``<<`` and ``>>``, undefined for such counts.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY

NUMPY.register("tensor.bitwise_and")(np.bitwise_and)
NUMPY.register("tensor.bitwise_or")(np.bitwise_or)
NUMPY.register("tensor.bitwise_xor")(np.bitwise_xor)
NUMPY.register("tensor.bitwise_not")(np.invert)


def _counts_in_range(x, shift):
    """Where ``0 <= shift < bits of x``."""
    return (shift >= 0) & (shift < 8 * x.dtype.itemsize)


@NUMPY.register("tensor.left_shift")
def left_shift(x, shift):
    # a << s for 0 <= s < bits, else 0 (every bit shifted out)
    inside = _counts_in_range(x, shift)
    return np.where(inside, np.left_shift(x, np.where(inside, shift, 0)), x.dtype.type(0))


@NUMPY.register("tensor.right_shift")
def right_shift(x, shift):
    # a >> s (arithmetic) for 0 <= s < bits, else a >> (bits - 1): 0 or -1, the sign; 0 for uint8 (no sign bit)
    inside = _counts_in_range(x, shift)
    shifted = np.right_shift(x, np.where(inside, shift, 8 * x.dtype.itemsize - 1))
    return shifted if x.dtype.kind != "u" else np.where(inside, shifted, x.dtype.type(0))
