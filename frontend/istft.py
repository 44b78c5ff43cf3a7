"""``kiln.istft``: ``torch.istft``, the inverse short-time Fourier transform, back to a real signal.

```python
spec = kiln.stft(audio, n_fft=512, hop_length=128, window=window, return_complex=True)
audio_again = kiln.istft(spec * mask, n_fft=512, hop_length=128, window=window, length=audio.shape[-1])
```

As torch's (ATen's ``istft``): each frame's bins go back to ``n_fft`` samples by ``kiln.fft.irfft`` (``norm="ortho"``
when ``normalized``; a two-sided spectrum, ``onesided=False``, gives its first ``n_fft // 2 + 1`` bins), are
multiplied by the window (zero-padded to ``n_fft`` on both sides when ``win_length`` is shorter) and overlap-added
``hop_length`` apart (``F.fold``: one scatter-add), then divided by the overlap-added squared window (the envelope).
``center`` cuts the ``n_fft // 2`` samples ``stft`` padded at each end; ``length`` trims or zero-pads the result. The
envelope must not vanish where the signal is kept (the NOLA condition): checked, as torch's, when the window's values
are known (computed eagerly; inside a trace it is not checked). Every step is a
differentiable kiln op, so gradients reach the spectrum and the window, eagerly and under ``kiln.compile``.

Difference: ``return_complex=True`` (a complex signal, from a two-sided spectrum) is refused.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from kiln.frontend import functional as F
from kiln.frontend.eager_values import eager_array
from kiln.frontend.fft import irfft
from kiln.frontend.stft import check_window
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_functions import ones
from kiln.frontend.trace import located_error


def istft(input: Any, n_fft: int, hop_length: int | None = None, win_length: int | None = None,  # noqa: A002
          window: Tensor | None = None, center: bool = True, normalized: bool = False, onesided: bool | None = None,
          length: int | None = None, return_complex: bool = False) -> Tensor:
    """``torch.istft``: the real signal ``(B, L)`` (``(L,)`` for a ``(bins, frames)`` input) whose ``stft`` is ``input``."""
    hop = n_fft // 4 if hop_length is None else hop_length
    width = n_fft if win_length is None else win_length
    spectrum = _checked_spectrum(input, n_fft, onesided, return_complex)
    frames_count = spectrum.shape[-1]
    _check_sizes(n_fft, hop, width, window, frames_count)
    frames = irfft(spectrum, n=n_fft, dim=-2, norm="ortho" if normalized else "backward")  # (B, n_fft, frames)
    window = _full_window(window, n_fft, width, spectrum.real.dtype)
    signal_length = n_fft + hop * (frames_count - 1)
    signal = _overlap_added(frames * window.unsqueeze(-1), signal_length, n_fft, hop)
    envelope = _overlap_added((window * window).unsqueeze(-1).expand(n_fft, frames_count).unsqueeze(0), signal_length,
                              n_fft, hop)
    start = n_fft // 2 if center else 0
    end = start + length if length is not None else (signal_length - n_fft // 2 if center else signal_length)
    kept = min(end, signal_length)
    signal, envelope = signal[:, start:kept], envelope[:, start:kept]
    _check_overlap_add(envelope)
    signal = signal / envelope
    if end > signal_length:  # a length past the frames: zeros, as torch's (warned)
        warnings.warn("The length of signal is shorter than the length parameter. Result is being padded with zeros in "
                      "the tail. Please check your center and hop_length settings.", UserWarning, stacklevel=2)
        signal = F.pad(signal, (0, end - signal_length))
    return signal.squeeze(0) if input.ndim == 2 else signal


def _checked_spectrum(input: Any, n_fft: int, onesided: bool | None, return_complex: bool) -> Any:
    """``input`` as a complex ``(B, bins, frames)`` spectrum of ``n_fft // 2 + 1`` bins (a two-sided one cut)."""
    if return_complex:
        raise located_error("istft: return_complex=True (a complex signal) is not supported by kiln; the spectrum of a "
                            "real signal gives it back with return_complex=False")
    if not isinstance(input, Tensor) or not input.is_complex():
        got = input.type if isinstance(input, Tensor) else type(input).__name__
        raise located_error(f"istft requires a complex-valued input tensor, got {got} (as torch's: pass stft's "
                            "return_complex=True result, or kiln.view_as_complex of its real form)")
    if input.ndim not in (2, 3):
        raise located_error(f"istft: expected a 2-D (bins, frames) or 3-D (B, bins, frames) spectrum, got {input.type}")
    spectrum = input if input.ndim == 3 else input.unsqueeze(0)
    bins = spectrum.shape[-2]
    two_sided = bins == n_fft if onesided is None else not onesided
    expected = n_fft if two_sided else n_fft // 2 + 1
    if bins != expected:
        raise located_error(f"istft: expected the frequency dim (-2) of size {expected} for n_fft={n_fft} "
                            f"({'two' if two_sided else 'one'}-sided), but got {bins}")
    return spectrum[:, : n_fft // 2 + 1] if two_sided else spectrum


def _check_sizes(n_fft: int, hop: int, width: int, window: Tensor | None, frames_count: Any) -> None:
    if not isinstance(frames_count, int) or frames_count < 1:
        raise located_error(f"istft: expected a static number of frames >= 1 (the last dim), got {frames_count!r}")
    if not 0 < hop <= width:
        raise located_error(f"istft: expected 0 < hop_length <= win_length ({width}), but got hop_length={hop}")
    check_window(n_fft, width, window, "istft")


def _full_window(window: Tensor | None, n_fft: int, width: int, dtype: Any) -> Tensor:
    """The window as ``n_fft`` samples: a rectangular one of ``width`` when None, zero-padded on both sides."""
    window = ones(width, dtype=dtype) if window is None else window
    left = (n_fft - width) // 2
    return F.pad(window, (left, n_fft - width - left)) if width < n_fft else window


def _overlap_added(columns: Tensor, signal_length: int, n_fft: int, hop: int) -> Tensor:
    """``(B, n_fft, frames)`` frames summed ``hop`` apart into ``(B, signal_length)``."""
    return F.fold(columns, (1, signal_length), (1, n_fft), stride=(1, hop))[:, 0, 0]


def _check_overlap_add(envelope: Tensor) -> None:
    """torch's NOLA check, where the envelope's values are known (an eager computation)."""
    values = eager_array(envelope)
    if values is not None and values.size and float(np.abs(values).min()) < 1e-11:
        raise located_error("istft(...): window overlap add min: the squared window, overlap-added, vanishes where the "
                            "signal is kept (the NOLA condition fails); use a window and hop_length whose frames overlap "
                            "(a Hann window with hop_length <= n_fft // 2), or center=True")


__all__ = ["istft"]
