"""``Tensor.stft`` and ``Tensor.istft``, the method forms of ``kiln.stft``/``kiln.istft`` (``frontend/stft.py``,
``frontend/istft.py``), against torch 2.13's methods with positional and keyword arguments."""

import numpy as np

import kiln
from oracles import require_torch

torch = require_torch()


def _round_trip(lib):
    signal = lib.tensor(np.sin(np.arange(64.0) / 3) + np.cos(np.arange(64.0) / 7))
    window = lib.hann_window(16, dtype=lib.float64)
    spectrum = signal.stft(16, 4, window=window, return_complex=True)
    back = spectrum.istft(16, 4, window=window, length=64)
    return spectrum.real.numpy(), spectrum.imag.numpy(), back.numpy()


def test_the_stft_and_istft_methods_are_torchs():
    for got, expected in zip(_round_trip(kiln), _round_trip(torch)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
