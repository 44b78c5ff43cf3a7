"""``kiln.stft`` (``frontend/stft.py``) against ``torch.stft`` 2.13 in float64: values over its options (1-D and batched
signals, ``center`` with each pad mode, a window shorter than ``n_fft``, ``normalized``, ``onesided=False``,
``return_complex=False``), gradients to the signal and the window, a ``kiln.compile``d spectrogram, float32, torch's
warnings, and its refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

SIGNAL = np.random.default_rng(0).standard_normal((3, 61))

OPTIONS = {
    "defaults": dict(n_fft=16),
    "hop-win-hann": dict(n_fft=16, hop_length=5, win_length=11, window="hann"),
    "no-center-normalized": dict(n_fft=12, center=False, normalized=True, window="hann"),
    "two-sided": dict(n_fft=10, hop_length=3, onesided=False, window="hamming"),
    "constant-pad-odd": dict(n_fft=15, pad_mode="constant", window="hann"),
    "replicate-pad": dict(n_fft=8, hop_length=8, pad_mode="replicate", window="hann"),
}


def _stft(lib, signal, options, return_complex=True):
    kwargs = dict(options)
    if isinstance(kwargs.get("window"), str):
        maker = getattr(lib, f"{kwargs['window']}_window")
        kwargs["window"] = maker(kwargs.get("win_length", kwargs["n_fft"]), dtype=signal.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lib.stft(signal, return_complex=return_complex, **kwargs)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "1-D"])
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_stft_matches_torch(name, batched):
    torch = require_torch()
    signal = SIGNAL if batched else SIGNAL[0]
    ours, theirs = _stft(kiln, kiln.tensor(signal), OPTIONS[name]), _stft(torch, torch.tensor(signal), OPTIONS[name])
    assert ours.dtype is kiln.complex128 and tuple(ours.shape) == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-12)


def test_return_complex_false_stacks_the_parts_as_torch():
    torch = require_torch()
    ours = _stft(kiln, kiln.tensor(SIGNAL), OPTIONS["hop-win-hann"], return_complex=False)
    theirs = _stft(torch, torch.tensor(SIGNAL), OPTIONS["hop-win-hann"], return_complex=False)
    assert ours.dtype is kiln.float64 and tuple(ours.shape) == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-12)


def _log_power_and_gradients(lib, options):
    signal = lib.tensor(SIGNAL, requires_grad=True)
    window = lib.hann_window(options.get("win_length", options["n_fft"]), dtype=lib.float64).requires_grad_()
    spec = lib.stft(signal, window=window, return_complex=True, **options)
    weights = lib.tensor(np.linspace(0.5, 1.5, spec.shape[-1]))
    loss = (lib.log1p(spec.abs() ** 2) * weights).sum() + (spec.real * spec.imag).mean()
    loss.backward()
    return loss.detach().numpy(), signal.grad.numpy(), window.grad.numpy()


@pytest.mark.parametrize("options", [dict(n_fft=16, hop_length=4), dict(n_fft=12, hop_length=5, win_length=9, center=False)])
def test_gradients_to_the_signal_and_window_match_torch(options):
    torch = require_torch()
    for ours, theirs in zip(_log_power_and_gradients(kiln, options), _log_power_and_gradients(torch, options)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_a_compiled_log_spectrogram_matches_torch_in_float32():
    torch = require_torch()

    def log_spectrogram(lib, audio):
        spec = lib.stft(audio, n_fft=32, hop_length=16, window=lib.hann_window(32), return_complex=True)
        return lib.log1p(spec.abs().pow(2))

    audio = SIGNAL.astype(np.float32)
    ours = kiln.compile(lambda a: log_spectrogram(kiln, a), fullgraph=True)(kiln.tensor(audio))
    theirs = log_spectrogram(torch, torch.tensor(audio))
    assert ours.dtype is kiln.float32
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("window, words", [(None, "A window was not provided"), ("hann", "return_complex=False is deprecated")])
def test_warns_as_torch(window, words):
    """torch's words (its warnings are emitted once per process, so not compared call by call)."""
    with pytest.warns(UserWarning, match=words):
        kiln.stft(kiln.tensor(SIGNAL), 16, window=None if window is None else kiln.hann_window(16, dtype=kiln.float64),
                  return_complex=window is None)


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_fft=16), "requires the return_complex parameter"),
    (dict(n_fft=16, win_length=20, return_complex=True), "win_length <= n_fft"),
    (dict(n_fft=80, center=False, return_complex=True), "expected 0 < n_fft < 61, but got n_fft=80"),
    (dict(n_fft=16, hop_length=0, return_complex=True), "hop_length > 0"),
])
def test_refuses_what_torch_refuses(kwargs, words):
    torch = require_torch()
    with pytest.raises(RuntimeError, match=words):
        torch.stft(torch.tensor(SIGNAL), window=torch.ones(kwargs.get("win_length", 16), dtype=torch.float64), **kwargs)
    with pytest.raises(TraceError, match=words):
        kiln.stft(kiln.tensor(SIGNAL), window=kiln.ones(kwargs.get("win_length", 16), dtype=kiln.float64), **kwargs)
