"""``kiln.fft``: torch.fft's discrete Fourier transforms on complex tensors (``frontend/complex_tensor.py``).

```python
y = kiln.fft.fft(kiln.fft.fft(x, dim=-1), dim=-2).real     # FNet's token mixing
x_ft = kiln.fft.rfft(x)                                     # a Fourier Neural Operator's spectral convolution...
x = kiln.fft.irfft(out_ft, n=x.size(-1))                    # ...and back
kiln.fft.fftn(x, s=(8, 8), dim=(-2, -1), norm="ortho"); kiln.fft.fftfreq(8); kiln.fft.fftshift(y)
```

Each 1-D transform along a dim is one op of the ``fft`` dialect (``compiler/ops/fft.py``) on the complex tensor's
real and imaginary parts: ``fft.c2c`` (``fft``/``ifft``), ``fft.r2c`` (``rfft``) and ``fft.c2r`` (``irfft``), which the
NumPy backend runs as one ``np.fft`` call each (pocketfft, O(n log n), as torch's on the CPU), eagerly and inside
``kiln.compile`` alike. A length ``n`` other than the input's crops it or pads it with zeros. ``irfft`` reads bins 0 to
``n//2`` and, as torch's (pocketfft's c2r), ignores the imaginary parts of bin 0 and of bin ``n/2`` (even ``n``), so
its gradient is torch's (zero there, the other bins' doubled). The ops' VJPs (``compiler/autodiff/rules_fft.py``) are
transforms again, so gradients match torch's and differentiate twice. The n-D forms are 1-D transforms in turn.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import DType, normalize_axis
from kiln.frontend.complex_tensor import ComplexTensor, split
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error

_NORMS = ("backward", "ortho", "forward")


def fft(input: Any, n: int | None = None, dim: int = -1, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    """``torch.fft.fft``: the 1-D DFT along ``dim`` (``n`` points: cropped or zero-padded)."""
    return _complex_transform(input, n, dim, norm, inverse=False)


def ifft(input: Any, n: int | None = None, dim: int = -1, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    return _complex_transform(input, n, dim, norm, inverse=True)


def rfft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    """``torch.fft.rfft``: the DFT of a real signal, bins 0 to ``n//2``."""
    real, _ = _parts(input, "rfft", real_only=True)
    axis, length = _axis_and_length(real, n, dim, "rfft")
    return ComplexTensor(*apply("fft.r2c", real, axis=axis, n=length, norm=_norm(norm)))


def irfft(input: Any, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:  # noqa: A002
    """``torch.fft.irfft``: the real signal of ``n`` points (default ``2 * (bins - 1)``) whose ``rfft`` is ``input``."""
    real, imag = _parts(input, "irfft")
    axis = normalize_axis(dim, real.ndim)
    bins = real.shape[axis]
    length = 2 * (bins - 1) if n is None else n
    if length < 1:
        raise located_error(f"irfft: invalid number of data points ({length}) specified; give n >= 1 (an input of "
                            f"{bins} bins along dim {dim} gives {2 * (bins - 1)} by default)")
    imag = _zeros_like(real) if imag is None else imag
    return apply("fft.c2r", real, imag, axis=axis, n=length, norm=_norm(norm))


def hfft(input: Any, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:  # noqa: A002
    """``torch.fft.hfft``: the real spectrum of a Hermitian-symmetric signal given by its first half: ``irfft`` of
    the conjugate, under the dual normalization."""
    return irfft(_conj(input), n, dim, _dual(norm))


def ihfft(input: Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    """``torch.fft.ihfft``: the inverse of ``hfft``, the conjugate ``rfft`` under the dual normalization."""
    return rfft(input, n, dim, _dual(norm)).conj()


def hfftn(input: Any, s: Sequence[int] | None = None, dim: Any = None, norm: str | None = None) -> Tensor:  # noqa: A002
    """``torch.fft.hfftn``: ``irfftn`` of the conjugate under the dual normalization (as ``hfft`` in 1-D)."""
    return irfftn(_conj(input), s, dim, _dual(norm))


def ihfftn(input: Tensor, s: Sequence[int] | None = None, dim: Any = None, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    """``torch.fft.ihfftn``: the conjugate ``rfftn`` under the dual normalization."""
    return rfftn(input, s, dim, _dual(norm)).conj()


def hfft2(input: Any, s: Sequence[int] | None = None, dim: Any = (-2, -1), norm: str | None = None) -> Tensor:  # noqa: A002
    return hfftn(input, s, dim, norm)


def ihfft2(input: Tensor, s: Sequence[int] | None = None, dim: Any = (-2, -1), norm: str | None = None) -> ComplexTensor:  # noqa: A002
    return ihfftn(input, s, dim, norm)


def fftn(input: Any, s: Sequence[int] | None = None, dim: Any = None, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    """``torch.fft.fftn``: 1-D DFTs along each of ``dim`` (default: the last ``len(s)`` dims, or every dim)."""
    result = input
    for axis, length in _axes_and_lengths(input, s, dim):
        result = fft(result, length, axis, norm)
    return result


def ifftn(input: Any, s: Sequence[int] | None = None, dim: Any = None, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    result = input
    for axis, length in _axes_and_lengths(input, s, dim):
        result = ifft(result, length, axis, norm)
    return result


def rfftn(input: Tensor, s: Sequence[int] | None = None, dim: Any = None, norm: str | None = None) -> ComplexTensor:  # noqa: A002
    """``torch.fft.rfftn``: ``rfft`` along the last of ``dim``, then ``fft`` along the others."""
    pairs = _axes_and_lengths(input, s, dim)
    result = rfft(input, pairs[-1][1], pairs[-1][0], norm)
    for axis, length in pairs[:-1]:
        result = fft(result, length, axis, norm)
    return result


def irfftn(input: Any, s: Sequence[int] | None = None, dim: Any = None, norm: str | None = None) -> Tensor:  # noqa: A002
    """``torch.fft.irfftn``: ``ifft`` along all of ``dim`` but the last, then ``irfft`` along it (``s[-1]`` points,
    by default ``2 * (bins - 1)``)."""
    pairs = _axes_and_lengths(input, s, dim, last_from_bins=s is None)
    result = input
    for axis, length in pairs[:-1]:
        result = ifft(result, length, axis, norm)
    return irfft(result, pairs[-1][1], pairs[-1][0], norm)


def fft2(input: Any, s: Sequence[int] | None = None, dim: Any = (-2, -1), norm: str | None = None) -> ComplexTensor:  # noqa: A002
    return fftn(input, s, dim, norm)


def ifft2(input: Any, s: Sequence[int] | None = None, dim: Any = (-2, -1), norm: str | None = None) -> ComplexTensor:  # noqa: A002
    return ifftn(input, s, dim, norm)


def rfft2(input: Tensor, s: Sequence[int] | None = None, dim: Any = (-2, -1), norm: str | None = None) -> ComplexTensor:  # noqa: A002
    return rfftn(input, s, dim, norm)


def irfft2(input: Any, s: Sequence[int] | None = None, dim: Any = (-2, -1), norm: str | None = None) -> Tensor:  # noqa: A002
    return irfftn(input, s, dim, norm)


def fftfreq(n: int, d: float = 1.0, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """``torch.fft.fftfreq``: the sample frequencies ``[0, 1, ..., -1] / (d n)`` (default float dtype)."""
    from kiln.frontend.torch_functions import tensor

    return tensor(np.fft.fftfreq(n, d), dtype=_real_dtype(dtype), requires_grad=requires_grad)


def rfftfreq(n: int, d: float = 1.0, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """``torch.fft.rfftfreq``: the sample frequencies of ``rfft``'s bins, ``[0, ..., n // 2] / (d n)``."""
    from kiln.frontend.torch_functions import tensor

    return tensor(np.fft.rfftfreq(n, d), dtype=_real_dtype(dtype), requires_grad=requires_grad)


def fftshift(input: Any, dim: Any = None) -> Any:  # noqa: A002
    """``torch.fft.fftshift``: the zero frequency moved to the middle (a roll by ``n // 2`` along each dim)."""
    dims = _dims(input, dim)
    return input.roll([input.shape[axis] // 2 for axis in dims], dims)


def ifftshift(input: Any, dim: Any = None) -> Any:  # noqa: A002
    dims = _dims(input, dim)
    return input.roll([-(input.shape[axis] // 2) for axis in dims], dims)


# --- the ops -------------------------------------------------------------------------------------------------------


def _complex_transform(input: Any, n: int | None, dim: int, norm: str | None, inverse: bool) -> ComplexTensor:
    function = "ifft" if inverse else "fft"
    real, imag = _parts(input, function)
    axis, length = _axis_and_length(real, n, dim, function)
    imag = _zeros_like(real) if imag is None else imag
    return ComplexTensor(*apply("fft.c2c", real, imag, axis=axis, n=length, inverse=inverse, norm=_norm(norm)))


def _zeros_like(part: Tensor) -> Tensor:
    from kiln.frontend.torch_functions import zeros_like

    return zeros_like(part)


def _norm(norm: str | None) -> str:
    norm = "backward" if norm is None else norm
    if norm not in _NORMS:
        raise located_error(f"fft: invalid normalization mode {norm!r}; use one of {', '.join(map(repr, _NORMS))}")
    return norm


def _dual(norm: str | None) -> str:
    return {"backward": "forward", "forward": "backward", "ortho": "ortho"}[norm or "backward"]


# --- arguments -----------------------------------------------------------------------------------------------------


def _parts(input: Any, function: str, real_only: bool = False) -> tuple[Tensor, Tensor | None]:
    """The input's real and imaginary (None: zero) parts, a float dtype (integers and bool: the default float)."""
    if not isinstance(input, Tensor):
        raise located_error(f"fft.{function} takes a tensor, got {type(input).__name__}")
    real, imag = split(input)
    if real_only and imag is not None:
        raise located_error(f"fft.{function} expects a real input tensor, but got a {input.dtype} one; use fft.fft for "
                            "complex input")
    if not real.dtype.is_float or real.dtype.is_half:
        from kiln.frontend.torch_dtypes import get_default_dtype

        real = real.to(DType.f32 if real.dtype.is_half else get_default_dtype())
    return real, imag


def _axis_and_length(part: Tensor, n: int | None, dim: int, function: str) -> tuple[int, int]:
    axis = normalize_axis(dim, part.ndim)
    length = part.shape[axis] if n is None else n
    if not isinstance(length, int) or length < 1:
        raise located_error(f"fft.{function}: invalid number of data points ({length}) along dim {dim}; give n >= 1 "
                            "(a symbolic dim needs n= given as an int)")
    return axis, length


def _axes_and_lengths(input: Any, s: Sequence[int] | None, dim: Any, last_from_bins: bool = False) -> list[tuple[int, int | None]]:
    """``(axis, length)`` per transformed dim: ``dim`` (default every dim, or the last ``len(s)``) with ``s``'s
    lengths (default the input's; ``irfftn``'s last is None: ``irfft``'s default)."""
    rank = input.ndim
    if dim is None:
        dim = tuple(range(rank)) if s is None else tuple(range(rank - len(s), rank))
    dims = [normalize_axis(axis, rank) for axis in ((dim,) if isinstance(dim, int) else dim)]
    if s is not None and len(s) != len(dims):
        raise located_error(f"fft: s {tuple(s)} and dim {tuple(dims)} must have the same length")
    if len(set(dims)) != len(dims) or not dims:
        raise located_error(f"fft: dim {tuple(dims)} must name distinct dims, at least one")
    lengths: list[int | None] = list(s) if s is not None else [input.shape[axis] for axis in dims]
    if last_from_bins:
        lengths[-1] = None
    return [(axis, None if length == -1 else length) for axis, length in zip(dims, lengths)]


def _dims(input: Any, dim: Any) -> list[int]:
    if dim is None:
        return list(range(input.ndim))
    return [normalize_axis(axis, input.ndim) for axis in ((dim,) if isinstance(dim, int) else dim)]


def _conj(input: Any) -> Any:
    return input.conj() if isinstance(input, ComplexTensor) or hasattr(input, "complex_view") else input


def _real_dtype(dtype: Any) -> DType:
    from kiln.frontend.torch_dtypes import get_default_dtype

    return get_default_dtype() if dtype is None else DType.of(dtype)


__all__ = ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "hfftn", "ihfftn", "hfft2", "ihfft2", "fftn", "ifftn", "rfftn",
           "irfftn", "fft2", "ifft2", "rfft2", "irfft2", "fftfreq", "rfftfreq", "fftshift", "ifftshift"]
