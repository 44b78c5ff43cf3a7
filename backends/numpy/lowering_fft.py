"""NumPy kernels of the ``fft`` dialect (``compiler/ops/fft.py``), in the one ``NUMPY`` table.

Each builds one complex array from the (real, imaginary) parts, makes one ``np.fft`` call (pocketfft, the library
PyTorch calls on the CPU; float32 parts transform in complex64) and returns the result's parts. The CuPy backend
re-binds this module, so there ``np.fft`` is ``cupy.fft`` (cuFFT), which takes the same arguments.

```python
yr, yi = NUMPY.get("fft.c2c")(xr, xi, axis=1, n=64, inverse=False, norm="backward")
x = NUMPY.get("fft.c2r")(yr, yi, axis=1, n=64, norm="backward")
```
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY


def _complex(real, imag):
    """One complex array of ``real + i imag`` (complex64 from float32 parts, complex128 from float64)."""
    joined = np.empty(real.shape, np.result_type(real.dtype, np.complex64))
    joined.real, joined.imag = real, imag
    return joined


def _parts(joined, dtype):
    """The parts of a complex result, contiguous, in the operands' float ``dtype``."""
    return np.ascontiguousarray(joined.real, dtype), np.ascontiguousarray(joined.imag, dtype)


@NUMPY.register("fft.c2c")
def c2c(real, imag, *, axis: int, n: int, inverse: bool, norm: str):
    transform = np.fft.ifft if inverse else np.fft.fft
    return _parts(transform(_complex(real, imag), n=n, axis=axis, norm=norm), real.dtype)


@NUMPY.register("fft.r2c")
def r2c(x, *, axis: int, n: int, norm: str):
    return _parts(np.fft.rfft(x, n=n, axis=axis, norm=norm), x.dtype)


@NUMPY.register("fft.c2r")
def c2r(real, imag, *, axis: int, n: int, norm: str):
    return np.ascontiguousarray(np.fft.irfft(_complex(real, imag), n=n, axis=axis, norm=norm), real.dtype)
