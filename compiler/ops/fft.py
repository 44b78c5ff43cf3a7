"""The ``fft`` dialect: 1-D discrete Fourier transforms along one axis, on complex values held as (real, imaginary) pairs.

```
%yr, %yi = "fft.c2c"(%xr, %xi) {axis = 2, n = 128, inverse = false, norm = "backward"} : (tensor<Nx64x128xf32>, tensor<Nx64x128xf32>) -> (tensor<Nx64x128xf32>, tensor<Nx64x128xf32>)
%yr, %yi = "fft.r2c"(%x) {axis = 2, n = 128, norm = "backward"} : (tensor<Nx64x128xf32>) -> (tensor<Nx64x65xf32>, tensor<Nx64x65xf32>)
%x = "fft.c2r"(%yr, %yi) {axis = 2, n = 128, norm = "backward"} : (tensor<Nx64x65xf32>, tensor<Nx64x65xf32>) -> tensor<Nx64x128xf32>
```

The IR holds no complex type: a complex tensor is its real and imaginary parts, two float tensors of one shape and
dtype (``frontend/complex_tensor.py``), and each op takes and returns those pairs. With ``X_k = s sum_j x_j
e^{-+2 pi i jk/n}`` (``-`` forward, ``+`` inverse) they are NumPy's and PyTorch's transforms:

- ``fft.c2c``: ``np.fft.fft`` (``ifft`` with ``inverse``): ``n`` points out, the input cropped or zero-padded to ``n``
  along ``axis`` first.
- ``fft.r2c``: ``np.fft.rfft`` of a real tensor: bins ``0 .. n//2`` of the ``n``-point transform.
- ``fft.c2r``: ``np.fft.irfft``: the real ``n``-point signal whose ``rfft`` is the input's first ``n//2 + 1`` bins
  (fewer are zero-padded); as pocketfft's c2r it ignores the imaginary parts of bin 0 and of bin ``n/2`` (even ``n``).

``norm`` is NumPy's and PyTorch's: ``"backward"`` scales the inverse by ``1/n``, ``"forward"`` the forward one,
``"ortho"`` both by ``1/sqrt(n)``. The transformed axis has a static length (``n`` is an int); the other dims may be
symbolic. The NumPy kernels are in ``backends/numpy/lowering_fft.py``, the VJPs in ``compiler/autodiff/rules_fft.py``.
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType, normalize_axis
from kiln.compiler.ops.registry import register_op

NORMS = ("backward", "forward", "ortho")
"""``norm``'s values, as NumPy's and PyTorch's: which direction is scaled by ``1/n`` (``ortho``: both by ``1/sqrt(n)``)."""


def dual_norm(norm: str) -> str:
    """The normalization of the adjoint (and of ``hfft``'s conjugate trick): the scale moves to the other direction."""
    return {"backward": "forward", "forward": "backward", "ortho": "ortho"}[norm]


def _checked(op: str, x: TensorType, axis: int, n: int, norm: str) -> int:
    """``axis`` normalized, after checking the attributes and that ``x`` is a float tensor."""
    if not x.dtype.is_float or x.dtype.is_half:
        raise ShapeError(f"{op} takes float32 or float64 parts, got {x}; cast the input to float32 first")
    if norm not in NORMS:
        raise ShapeError(f"{op}: norm must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ShapeError(f"{op}: n (the number of points) must be an int >= 1, got {n!r}")
    return normalize_axis(axis, x.rank)


def _pair(op: str, real: TensorType, imag: TensorType) -> None:
    if real != imag:
        raise ShapeError(f"{op}: the real and imaginary parts must have one shape and dtype, got {real} and {imag}")


def _resized(x: TensorType, axis: int, length: int) -> TensorType:
    return x.with_shape(x.shape[:axis] + (length,) + x.shape[axis + 1:])


@register_op("fft.c2c", axis=-1, n=1, inverse=False, norm="backward")
def c2c_shape(real: TensorType, imag: TensorType, *, axis: int, n: int, inverse: bool, norm: str) -> tuple[TensorType, TensorType]:
    """``(Re X, Im X)``: the ``n``-point transform along ``axis``."""
    _pair("fft.c2c", real, imag)
    result = _resized(real, _checked("fft.c2c", real, axis, n, norm), n)
    return result, result


@register_op("fft.r2c", axis=-1, n=1, norm="backward")
def r2c_shape(x: TensorType, *, axis: int, n: int, norm: str) -> tuple[TensorType, TensorType]:
    """``(Re X, Im X)`` at bins ``0 .. n//2`` of a real signal's ``n``-point transform."""
    result = _resized(x, _checked("fft.r2c", x, axis, n, norm), n // 2 + 1)
    return result, result


@register_op("fft.c2r", axis=-1, n=1, norm="backward")
def c2r_shape(real: TensorType, imag: TensorType, *, axis: int, n: int, norm: str) -> TensorType:
    """The real ``n``-point signal of a Hermitian spectrum given by its first bins."""
    _pair("fft.c2r", real, imag)
    return _resized(real, _checked("fft.c2r", real, axis, n, norm), n)
