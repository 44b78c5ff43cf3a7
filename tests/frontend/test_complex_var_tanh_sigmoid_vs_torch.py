"""``var``/``std``, ``tanh`` and ``sigmoid`` of complex tensors, and ``.to(complex dtype)`` of a complex ``Parameter``,
as torch 2.13's (``frontend/complex_tensor.py``, ``frontend/complex_parameter.py``): Jamie Stirling's complex RetNet
normalises with ``X.var(dim=2, keepdim=True)`` (real: the mean of ``|z - mean|^2``), gates with a complex swish
``x * torch.sigmoid(x)``, runs a tanh-GELU on complex values and reads its complex weights as
``self.W_G.to(self.complex_type)``. Values and gradients in float64 to 1e-12, eagerly and compiled."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

RNG = np.random.default_rng(11)
Z = RNG.standard_normal((3, 4, 5)) + 1j * RNG.standard_normal((3, 4, 5))

VARIANCES = {
    "all": lambda lib, z: z.var(),
    "dim keepdim": lambda lib, z: z.var(dim=2, keepdim=True),
    "dims, correction=0": lambda lib, z: z.var(dim=(0, 2), correction=0),
    "unbiased=False": lambda lib, z: z.var(1, unbiased=False),
    "std": lambda lib, z: z.std(dim=-1),
    "function form": lambda lib, z: lib.var(z, 0) + lib.std(z, 0),
}


def _close(ours, theirs, tolerance=1e-12):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("form", VARIANCES)
def test_variance_of_complex_values_is_torchs_real_variance_with_its_gradient(form):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        z = lib.tensor(Z, requires_grad=True)
        variance = VARIANCES[form](lib, z)
        assert not variance.is_complex()
        (variance * lib.tensor(1.5)).sum().backward()
        results.append((variance, z.grad))
    (ours, our_grad), (theirs, their_grad) = results
    assert tuple(ours.shape) == tuple(theirs.shape) and ours.dtype is kiln.float64
    _close(ours, theirs)
    _close(our_grad, their_grad)


# tanh's real parts reach +-400 (cosh overflows there: the formula divides through by it) and the imaginary parts
# cross pi/2 away from the poles at (0, pi/2 + k pi)
TANH_INPUTS = np.concatenate([Z.ravel(), [400 + 0.3j, -400 - 2j, 30 + 1.5707j, 1e-9 + 1e-9j]])


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_tanh_and_sigmoid_of_complex_values_match_torch_with_gradients(name):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        z = lib.tensor(TANH_INPUTS, requires_grad=True)
        method, function = getattr(z, name)(), getattr(lib, name)(z)
        loss = (method * lib.tensor(0.5 - 0.25j)).real.sum() + function.imag.sum()
        loss.backward()
        results.append((method, function, z.grad))
    for ours, theirs in zip(*results):
        _close(ours, theirs)


def test_complex64_tanh_and_sigmoid_match_torch_at_float32s_level():
    torch = require_torch()
    values = Z.astype(np.complex64)
    for name in ("tanh", "sigmoid"):
        ours, theirs = getattr(kiln.tensor(values), name)(), getattr(torch.tensor(values), name)()
        assert ours.dtype is kiln.complex64
        _close(ours, theirs, 1e-6)


def test_complex_gelu_swish_and_variance_run_compiled_as_torch():
    """RetNet's ComplexFFN gelu, complex swish and ComplexGroupNorm variance in one ``kiln.compile(fullgraph=True)``
    training step (SGD on the real and imaginary parts, so the step holds the gradients) against torch's eager one."""
    torch = require_torch()

    def program(lib, x, y):
        z = lib.complex(x, y)
        gelu = 0.5 * z * (1 + lib.tanh(0.7978845608 * (z + 0.044715 * lib.pow(z, 3))))
        swish = gelu * lib.sigmoid(gelu)
        normed = (swish - swish.mean(dim=1, keepdim=True)) / lib.sqrt(swish.var(dim=1, keepdim=True) + 1e-5)
        return (normed.real * normed.imag).sum()

    results = []
    for lib in (kiln, torch):
        x, y = (lib.nn.Parameter(lib.tensor(part.copy())) for part in (Z.real, Z.imag))
        optimizer = lib.optim.SGD([x, y], lr=1.0)

        def step():
            optimizer.zero_grad()
            loss = program(lib, x, y)
            loss.backward()
            optimizer.step()
            return loss

        loss = (kiln.compile(step, fullgraph=True) if lib is kiln else step)()
        results.append((loss.item(), x.data - lib.tensor(Z.real), y.data - lib.tensor(Z.imag)))
    for ours, theirs in zip(*results):
        _close(ours, theirs)


def test_a_complex_parameter_to_a_complex_dtype_is_its_complex_tensor_as_torchs():
    """``W.to(torch.complex128)`` of a complex ``Parameter`` is the complex tensor of torch's shape (kiln stored the
    real pairs, so ``.to`` made them a complex tensor of shape ``(..., 2)`` before); a gradient through it reaches the
    parameter's pairs; ``.to`` a real dtype is refused as for any complex tensor."""
    torch = require_torch()
    weights = RNG.standard_normal((4, 3)) + 1j * RNG.standard_normal((4, 3))
    x = RNG.standard_normal((2, 4)) + 1j * RNG.standard_normal((2, 4))
    results = []
    for lib in (kiln, torch):
        parameter = lib.nn.Parameter(lib.tensor(weights))
        cast = parameter.to(lib.complex128)
        assert tuple(cast.shape) == (4, 3) and cast.is_complex()
        out = lib.tensor(x) @ parameter.to(lib.complex128)
        (out.abs().sum() + parameter.var()).backward()
        results.append((out, parameter.grad if lib is kiln else torch.view_as_real(parameter.grad)))
    for ours, theirs in zip(*results):
        _close(ours, theirs)
    with pytest.raises(TraceError, match="drops its imaginary part"):
        kiln.nn.Parameter(kiln.tensor(weights)).to(kiln.float64)
