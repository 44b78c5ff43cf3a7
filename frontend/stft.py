"""``kiln.stft``: ``torch.stft``, the short-time Fourier transform of a real signal.

```python
spec = kiln.stft(audio, n_fft=400, hop_length=160, window=kiln.hann_window(400), return_complex=True)
power = spec.abs() ** 2                      # (batch, n_fft // 2 + 1, frames), as torchaudio's Spectrogram
```

The signal ``(L,)`` or ``(B, L)`` is padded by ``n_fft // 2`` on each side (``center``, with ``pad_mode``), cut into
frames of ``n_fft`` samples ``hop_length`` apart (``Tensor.unfold``: one gather), multiplied by the window (zero-padded
to ``n_fft`` on both sides when ``win_length`` is shorter, as torch's) and transformed by ``kiln.fft.rfft`` (all
``n_fft`` bins by ``fft`` with ``onesided=False``), ``norm="ortho"`` when ``normalized``. The result is
``(B, bins, frames)``, complex (``return_complex=True``) or its real and imaginary parts stacked last
(``return_complex=False``, torch's deprecated ``view_as_real`` form). Every step is a differentiable kiln op, so the
transform runs eagerly and under ``kiln.compile`` and gradients flow to the signal and the window.

As torch's, a missing ``window`` (a rectangular one) and ``return_complex=False`` warn. Difference: a complex input
signal is refused (torch transforms it with ``fft``).
"""

from __future__ import annotations

import warnings
from typing import Any

from kiln.frontend import functional as F
from kiln.frontend.fft import fft, rfft
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


def stft(input: Tensor, n_fft: int, hop_length: int | None = None, win_length: int | None = None,  # noqa: A002
         window: Tensor | None = None, center: bool = True, pad_mode: str = "reflect", normalized: bool = False,
         onesided: bool | None = None, return_complex: bool | None = None) -> Any:
    """``torch.stft``: the DFT of each windowed frame of ``input``, ``(B, bins, frames)`` (no ``B`` for a 1-D input)."""
    hop = n_fft // 4 if hop_length is None else hop_length
    width = n_fft if win_length is None else win_length
    signal = _checked_signal(input, return_complex)
    if center:
        signal = F.pad(signal.unsqueeze(1), (n_fft // 2, n_fft // 2), mode=pad_mode).squeeze(1)
    _check_sizes(signal.shape[-1], n_fft, hop, width, window)
    frames = signal.unfold(-1, n_fft, hop)  # (B, frames, n_fft)
    _warn_as_torch(window, return_complex)
    if window is not None:
        left = (n_fft - width) // 2
        frames = frames * (F.pad(window, (left, n_fft - width - left)) if width < n_fft else window)
    norm = "ortho" if normalized else None
    spectrum = (rfft if onesided is None or onesided else fft)(frames, dim=-1, norm=norm).transpose(-1, -2)
    if input.ndim == 1:
        spectrum = spectrum.squeeze(0)
    return spectrum if return_complex else F.stack([spectrum.real, spectrum.imag], dim=-1)


def _checked_signal(input: Any, return_complex: bool | None) -> Tensor:
    """``input`` as a real ``(B, L)`` tensor; torch's refusal of a missing ``return_complex``."""
    if return_complex is None:
        raise located_error("stft requires the return_complex parameter be given for real inputs, and will further "
                            "require that return_complex=True in a future PyTorch release (as torch.stft: pass "
                            "return_complex=True and take .abs() or .real/.imag of the result)")
    if not isinstance(input, Tensor) or getattr(input, "is_complex", lambda: False)() or input.ndim not in (1, 2):
        got = input.type if isinstance(input, Tensor) else type(input).__name__
        raise located_error(f"stft: expected a real 1-D (L) or 2-D (B, L) signal, got {got} (kiln transforms real signals only)")
    if not input.dtype.is_float:
        raise located_error(f"stft: expected a floating signal, got {input.type}; cast it first (x.float())")
    return input if input.ndim == 2 else input.unsqueeze(0)


def _warn_as_torch(window: Tensor | None, return_complex: bool) -> None:
    if window is None:
        warnings.warn("A window was not provided. A rectangular window will be applied, which is known to cause spectral "
                      "leakage. Other windows such as kiln.hann_window or kiln.hamming_window are recommended to reduce "
                      "spectral leakage. To suppress this warning and use a rectangular window, explicitly set "
                      "`window=kiln.ones(n_fft)`.", UserWarning, stacklevel=3)
    if not return_complex:
        warnings.warn("stft with return_complex=False is deprecated. In a future pytorch release, stft will return complex "
                      "tensors for all inputs, and return_complex=False will raise an error. Note: you can still call "
                      "kiln.view_as_real on the complex output to recover the old return format.", UserWarning, stacklevel=3)


def _check_sizes(length: Any, n_fft: int, hop: int, width: int, window: Tensor | None) -> None:
    """torch's checks of ``n_fft``, ``hop_length``, ``win_length`` and the window against the (padded) signal."""
    if not isinstance(length, int):
        raise located_error(f"stft: the signal's length must be static (frames are cut at trace time), got {length!r}")
    if not 0 < n_fft <= length:
        raise located_error(f"stft: expected 0 < n_fft < {length}, but got n_fft={n_fft} (n_fft may equal the padded "
                            "signal's length, as torch's)")
    if hop <= 0:
        raise located_error(f"stft: expected hop_length > 0, but got hop_length={hop}")
    check_window(n_fft, width, window, "stft")


def check_window(n_fft: int, width: int, window: Tensor | None, what: str) -> None:
    """torch's checks of ``win_length`` and the window against ``n_fft`` (``stft`` and ``istft``)."""
    if not 0 < width <= n_fft:
        raise located_error(f"{what}: expected 0 < win_length <= n_fft ({n_fft}), but got win_length={width}")
    if window is not None and (window.ndim != 1 or window.shape[0] != width):
        raise located_error(f"{what}: expected a 1-D window of size equal to win_length={width}, but got window with "
                            f"size {tuple(window.shape)}")


__all__ = ["check_window", "stft"]
