"""``kiln.fft``: PyTorch's ``torch.fft`` (``frontend/fft.py``).

```python
import kiln
y = kiln.fft.fft(kiln.fft.fft(x, dim=-1), dim=-2).real    # FNet
x_ft = kiln.fft.rfft(x); x = kiln.fft.irfft(out_ft, n=x.size(-1))   # a Fourier Neural Operator layer
```
"""

from kiln.frontend.fft import (fft, fft2, fftfreq, fftn, fftshift, hfft, hfft2, hfftn, ifft, ifft2, ifftn, ifftshift, ihfft,
                               ihfft2, ihfftn, irfft, irfft2, irfftn, rfft, rfft2, rfftfreq, rfftn)

__all__ = ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "hfftn", "ihfftn", "hfft2", "ihfft2", "fftn", "ifftn", "rfftn",
           "irfftn", "fft2", "ifft2", "rfft2", "irfft2", "fftfreq", "rfftfreq", "fftshift", "ifftshift"]
