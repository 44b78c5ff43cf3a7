"""``kiln.istft`` against ``torch.istft`` (2.13, float64): the signal back from a spectrum, for the window, hop,
``win_length``, ``normalized``, ``onesided``, ``center`` and ``length`` settings audio code uses (a mask applied to
an ``stft``, then ``istft``: source separation, vocoders), its gradients with respect to the spectrum and the window,
under ``kiln.compile``, and torch's errors and warning."""

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()

CASES = [
    dict(n_fft=16, hop_length=4),
    dict(n_fft=16, hop_length=4, win_length=12),
    dict(n_fft=15, hop_length=5, normalized=True),
    dict(n_fft=16, hop_length=8, length=70),
    dict(n_fft=16, center=False, window="ones"),
    dict(n_fft=16, hop_length=4, onesided=False),
]


def _spectrum_parts(n_fft, onesided, frames=21, batch=2):
    rng = np.random.default_rng(n_fft)
    bins = n_fft if onesided is False else n_fft // 2 + 1
    return rng.normal(size=(batch, bins, frames)), rng.normal(size=(batch, bins, frames))


def _istft(lib, case, real, imag, compiled=False):
    case = dict(case)
    width = case.get("win_length", case["n_fft"])
    window_kind = case.pop("window", "hann")
    window = lib.ones(width, dtype=lib.float64) if window_kind == "ones" else lib.hann_window(width, dtype=lib.float64)
    window.requires_grad_()
    re, im = lib.tensor(real, requires_grad=True), lib.tensor(imag, requires_grad=True)

    def run(re, im, window):
        return lib.istft(lib.complex(re, im), window=window, **case)

    signal = (kiln.compile(run) if compiled else run)(re, im, window)
    weights = lib.tensor(np.cos(np.arange(signal.shape[-1])), dtype=lib.float64)
    (signal * weights).sum().backward()
    return [np.asarray(t.detach().numpy()) for t in (signal, re.grad, im.grad, window.grad)]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(f"{k}={v}" for k, v in case.items()))
@pytest.mark.parametrize("compiled", [False, True])
def test_istft_and_its_gradients_match_torch(case, compiled):
    real, imag = _spectrum_parts(case["n_fft"], case.get("onesided"))
    got = _istft(kiln, case, real, imag, compiled)
    expected = _istft(torch, case, real, imag)
    for name, a, b in zip(("signal", "d/d real", "d/d imag", "d/d window"), got, expected):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)


def test_stft_then_istft_gives_the_signal_back_and_the_methods_are_torchs():
    x = np.random.default_rng(3).normal(size=93)
    window = kiln.hann_window(32, dtype=kiln.float64)
    spectrum = kiln.tensor(x).stft(32, hop_length=8, window=window, return_complex=True)
    back = spectrum.istft(32, hop_length=8, window=window, length=93)
    assert back.shape == (93,)
    np.testing.assert_allclose(back.numpy(), x, atol=1e-12)
    expected = torch.tensor(x).stft(32, hop_length=8, window=torch.hann_window(32, dtype=torch.float64),
                                    return_complex=True)
    np.testing.assert_allclose(spectrum.real.numpy(), expected.real.numpy(), atol=1e-12)


def test_a_length_past_the_frames_pads_with_zeros_and_warns_as_torch():
    real, imag = _spectrum_parts(16, None, frames=5, batch=1)
    results = []
    for lib in (torch, kiln):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            signal = lib.istft(lib.complex(lib.tensor(real), lib.tensor(imag)), 16, hop_length=4,
                               window=lib.hann_window(16, dtype=lib.float64), length=40)
        assert any("padded with zeros" in str(w.message) for w in caught)
        results.append(np.asarray(signal.numpy()))
    np.testing.assert_allclose(results[1], results[0], atol=1e-12)
    assert results[1].shape == (1, 40) and not results[1][0, 32:].any()


@pytest.mark.parametrize("bad", ["real input", "nola", "bins", "window size"])
def test_bad_calls_raise_runtime_errors_as_torch(bad):
    real, imag = _spectrum_parts(16, None, frames=6, batch=1)
    for lib in (torch, kiln):
        spectrum = lib.complex(lib.tensor(real), lib.tensor(imag))
        window = lib.hann_window(16, dtype=lib.float64)
        call = {
            "real input": lambda: lib.istft(lib.tensor(real), 16, window=window),
            "nola": lambda: lib.istft(spectrum, 16, hop_length=4, window=window, center=False),
            "bins": lambda: lib.istft(spectrum, 20, window=lib.hann_window(20, dtype=lib.float64)),
            "window size": lambda: lib.istft(spectrum, 16, window=lib.hann_window(12, dtype=lib.float64)),
        }[bad]
        with pytest.raises(RuntimeError):
            call()
