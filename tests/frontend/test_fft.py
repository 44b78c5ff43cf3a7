"""``kiln.fft`` against ``torch.fft`` 2.13 in float64: values and gradients of every transform under each ``norm``,
with ``n=``/``s=``/``dim=`` cropping and padding, for complex input (gradients to both real parts) and real input;
the frequency helpers and shifts; the errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

RNG = np.random.default_rng(3)
X, Y = RNG.standard_normal((3, 6, 5)), RNG.standard_normal((3, 6, 5))

COMPLEX_IN = {
    "fft": lambda F, z, norm: F.fft(z, norm=norm),
    "fft_cropped_dim1": lambda F, z, norm: F.fft(z, n=4, dim=1, norm=norm),
    "ifft_padded": lambda F, z, norm: F.ifft(z, n=7, dim=1, norm=norm),
    "irfft": lambda F, z, norm: F.irfft(z, norm=norm),
    "irfft_odd_n": lambda F, z, norm: F.irfft(z, n=9, dim=1, norm=norm),
    "irfft_even_n_cropped": lambda F, z, norm: F.irfft(z, n=4, norm=norm),
    "hfft": lambda F, z, norm: F.hfft(z, norm=norm),
    "fftn": lambda F, z, norm: F.fftn(z, norm=norm),
    "ifftn_s": lambda F, z, norm: F.ifftn(z, s=(5, 3), norm=norm),
    "fft2": lambda F, z, norm: F.fft2(z, norm=norm),
    "ifft2_dims": lambda F, z, norm: F.ifft2(z, dim=(0, 2), norm=norm),
    "irfftn_s": lambda F, z, norm: F.irfftn(z, s=(4, 6), norm=norm),
    "irfft2": lambda F, z, norm: F.irfft2(z, norm=norm),
    "hfftn": lambda F, z, norm: F.hfftn(z, norm=norm),
    "hfft2_s": lambda F, z, norm: F.hfft2(z, s=(3, 6), norm=norm),
    "shifted_fft2": lambda F, z, norm: F.ifftshift(F.fftshift(F.fft2(z, norm=norm), dim=(1, 2)), dim=1),
}
REAL_IN = {
    "fft_of_real": lambda F, x, norm: F.fft(x, norm=norm),
    "rfft": lambda F, x, norm: F.rfft(x, norm=norm),
    "rfft_padded": lambda F, x, norm: F.rfft(x, n=8, dim=1, norm=norm),
    "rfft_cropped": lambda F, x, norm: F.rfft(x, n=3, norm=norm),
    "ihfft": lambda F, x, norm: F.ihfft(x, norm=norm),
    "rfftn": lambda F, x, norm: F.rfftn(x, norm=norm),
    "rfft2_s": lambda F, x, norm: F.rfft2(x, s=(4, 7), norm=norm),
    "ihfftn": lambda F, x, norm: F.ihfftn(x, norm=norm),
    "ihfft2": lambda F, x, norm: F.ihfft2(x, norm=norm),
    "irfft_of_real": lambda F, x, norm: F.irfft(x, norm=norm),
}
NORMS = [None, "backward", "ortho", "forward"]


def _weighted_loss(lib, result, weights):
    """A real loss reading both parts of a complex result with different weights."""
    if result.is_complex():
        return (result.real * weights).sum() + (result.imag * weights * 0.5).sum()
    return (result * weights).sum()


def _run(lib, transform, norm, real_input):
    leaves = [lib.tensor(v, requires_grad=True) for v in (X, Y)]
    source = leaves[0] if real_input else lib.complex(*leaves)
    result = transform(lib.fft, source, norm)
    values = result.detach().resolve_conj().numpy() if lib is not kiln else np.asarray(result)
    weights = np.random.default_rng(values.size).standard_normal(values.shape)
    _weighted_loss(lib, result, lib.tensor(weights)).backward()
    grads = [np.asarray(leaf.grad) if leaf.grad is not None else None for leaf in leaves[:1 if real_input else 2]]
    return values, grads


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("name", "real_input"), [(n, False) for n in COMPLEX_IN] + [(n, True) for n in REAL_IN])
def test_transform_values_and_gradients_match_torch(name, real_input, norm):
    torch = require_torch()
    transform = (REAL_IN if real_input else COMPLEX_IN)[name]
    (ours, our_grads), (theirs, their_grads) = _run(kiln, transform, norm, real_input), _run(torch, transform, norm, real_input)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    for ours_grad, their_grad in zip(our_grads, their_grads):
        np.testing.assert_allclose(ours_grad, their_grad, rtol=1e-12, atol=1e-12)


def test_irfft_ignores_the_imaginary_parts_of_bin_zero_and_the_nyquist_bin_as_torch():
    """pocketfft's c2r: those parts change nothing, so their gradient is exactly zero (torch's Hermitian halving)."""
    torch = require_torch()
    spectrum = RNG.standard_normal((5,)) + 1j * RNG.standard_normal((5,))
    grads = []
    for lib in (kiln, torch):
        real, imag = (lib.tensor(v, requires_grad=True) for v in (spectrum.real, spectrum.imag))
        lib.fft.irfft(lib.complex(real, imag), n=8).pow(2).sum().backward()
        grads.append(np.asarray(imag.grad))
    assert grads[0][0] == 0.0 and grads[0][4] == 0.0
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-14)


def test_float32_transforms_stay_float32_and_match_torch():
    torch = require_torch()
    x = X.astype(np.float32)
    ours, theirs = kiln.fft.rfft(kiln.tensor(x)), torch.fft.rfft(torch.tensor(x))
    assert ours.dtype is kiln.complex64
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)
    back = kiln.fft.irfft(ours, n=5)
    assert back.dtype is kiln.float32
    np.testing.assert_allclose(back.numpy(), x, atol=1e-5)


def test_integer_input_transforms_in_the_default_float_dtype():
    torch = require_torch()
    ours, theirs = kiln.fft.fft(kiln.arange(6)), torch.fft.fft(torch.arange(6))
    assert ours.dtype is kiln.complex64
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)


@pytest.mark.parametrize("n", [1, 6, 7])
def test_frequency_helpers_and_shifts_match_torch(n):
    torch = require_torch()
    for name in ("fftfreq", "rfftfreq"):
        ours, theirs = getattr(kiln.fft, name)(n, d=0.5), getattr(torch.fft, name)(n, d=0.5)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch", "kiln")
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-7)
    grid = RNG.standard_normal((n, n + 1))
    for name in ("fftshift", "ifftshift"):
        np.testing.assert_array_equal(getattr(kiln.fft, name)(kiln.tensor(grid)).numpy(),
                                      getattr(torch.fft, name)(torch.tensor(grid)).numpy())
        np.testing.assert_array_equal(getattr(kiln.fft, name)(kiln.tensor(grid), dim=1).numpy(),
                                      getattr(torch.fft, name)(torch.tensor(grid), dim=1).numpy())


def test_errors_say_what_and_what_to_do():
    z = kiln.complex(kiln.tensor(X), kiln.tensor(Y))
    with pytest.raises(TraceError, match="invalid normalization mode 'unitary'; use one of 'backward', 'ortho', 'forward'"):
        kiln.fft.fft(z, norm="unitary")
    with pytest.raises(TraceError, match="rfft expects a real input tensor.*use fft.fft for complex input"):
        kiln.fft.rfft(z)
    with pytest.raises(TraceError, match=r"invalid number of data points \(0\).*give n >= 1"):
        kiln.fft.fft(z, n=0)
    with pytest.raises(TraceError, match=r"s \(4,\) and dim \(0, 1\) must have the same length"):
        kiln.fft.fftn(z, s=(4,), dim=(0, 1))
