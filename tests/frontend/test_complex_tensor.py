"""Complex tensors (two real tensors, ``frontend/complex_tensor.py``) against torch 2.13 in float64: creation,
arithmetic, parts, complex functions, matmul/einsum, indexing, reductions, and gradients (torch's convention for
complex leaves, and real leaves through complex intermediates)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError
from oracles import require_torch

RNG = np.random.default_rng(7)
A = RNG.standard_normal((3, 4)) + 1j * RNG.standard_normal((3, 4))
B = RNG.standard_normal((3, 4)) + 1j * RNG.standard_normal((3, 4))
M = RNG.standard_normal((4, 2)) + 1j * RNG.standard_normal((4, 2))
R = RNG.standard_normal((3, 4))


def close(ours, theirs, tolerance=1e-12):
    theirs = theirs.detach().resolve_conj().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=tolerance, atol=tolerance)


def test_tensor_of_complex_data_has_torchs_dtype():
    torch = require_torch()
    for data in ([1 + 2j, 3.5], 1j, np.array([1 + 1j], np.complex64), np.array([2j])):
        ours, theirs = kiln.tensor(data), torch.tensor(data)
        assert str(ours.dtype).split(".")[1] == str(theirs.dtype).split(".")[1], data
        close(ours, theirs)
    assert kiln.tensor([1.0, 2.0], dtype=kiln.cdouble).dtype is kiln.complex128


def test_creation_with_a_complex_dtype():
    torch = require_torch()
    for name in ("zeros", "ones"):
        ours, theirs = getattr(kiln, name)(2, 3, dtype=kiln.cfloat), getattr(torch, name)(2, 3, dtype=torch.cfloat)
        assert ours.dtype is kiln.complex64 and tuple(ours.shape) == tuple(theirs.shape)
        close(ours, theirs)
    close(kiln.full((2,), 1 - 2j), torch.full((2,), 1 - 2j))
    assert kiln.full((2,), 1 - 2j).dtype is kiln.complex64
    ours, theirs = kiln.tensor(A), torch.tensor(A)
    for name in ("zeros_like", "ones_like"):
        close(getattr(kiln, name)(ours), getattr(torch, name)(theirs))
        close(getattr(kiln, name)(kiln.tensor(R), dtype=kiln.cfloat), getattr(torch, name)(torch.tensor(R), dtype=torch.cfloat))
    close(kiln.full_like(ours, 2 - 1j), torch.full_like(theirs, 2 - 1j))
    assert kiln.randn_like(ours).dtype is kiln.rand_like(ours).dtype is kiln.complex128
    assert kiln.zeros_like(kiln.tensor(R)).dtype is kiln.float64


def test_rand_and_randn_draw_both_parts_as_torch():
    """Uniform [0, 1) parts; normal parts of variance 1/2 each (E|z|^2 = 1), as torch's complex randn."""
    kiln.manual_seed(0)
    uniform, normal = kiln.rand(20000, dtype=kiln.cdouble), kiln.randn(20000, dtype=kiln.cdouble)
    assert uniform.dtype is normal.dtype is kiln.complex128
    for part in (uniform.real.numpy(), uniform.imag.numpy()):
        assert part.min() >= 0 and part.max() < 1 and abs(part.mean() - 0.5) < 0.01
    assert abs(normal.real.numpy().var() - 0.5) < 0.02 and abs(normal.imag.numpy().var() - 0.5) < 0.02
    assert abs(np.corrcoef(normal.real.numpy(), normal.imag.numpy())[0, 1]) < 0.03


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "rsub", "rdiv", "pow", "neg"])
def test_arithmetic_matches_torch(op):
    torch = require_torch()
    functions = {"add": lambda a, b, r: a + b + r + 2j, "sub": lambda a, b, r: a - b - r - 1.5,
                 "mul": lambda a, b, r: a * b * r * (1 - 1j), "div": lambda a, b, r: a / b / (r + 3) / (2 + 1j),
                 "rsub": lambda a, b, r: 1j - a, "rdiv": lambda a, b, r: (2 - 1j) / a + r / b,
                 "pow": lambda a, b, r: a ** 3, "neg": lambda a, b, r: -a}
    f = functions[op]
    close(f(kiln.tensor(A), kiln.tensor(B), kiln.tensor(R)), f(torch.tensor(A), torch.tensor(B), torch.tensor(R)))


def test_parts_and_complex_functions_match_torch():
    torch = require_torch()
    ours, theirs = kiln.tensor(A), torch.tensor(A)
    for name in ("real", "imag"):
        close(getattr(ours, name), getattr(theirs, name))
    for name in ("conj", "abs", "angle", "exp"):
        close(getattr(ours, name)(), getattr(theirs, name)())
    close(kiln.abs(ours), torch.abs(theirs))
    close(kiln.real(ours), torch.real(theirs))
    assert ours.is_complex() and kiln.is_complex(ours) and not kiln.is_complex(kiln.tensor(R))


def test_real_and_imag_are_views_as_torchs():
    """An in-place write to ``z.real`` or ``z.imag`` changes ``z``."""
    torch = require_torch()
    ours, theirs = kiln.tensor(A), torch.tensor(A)
    ours.real.mul_(2.0), theirs.real.mul_(2.0)
    ours.imag[0] = 5.0
    theirs.imag[0] = 5.0
    close(ours, theirs)


def test_complex_polar_and_views_as_real_and_complex():
    torch = require_torch()
    x, y = RNG.standard_normal(5), RNG.standard_normal(5)
    close(kiln.complex(kiln.tensor(x), kiln.tensor(y)), torch.complex(torch.tensor(x), torch.tensor(y)))
    close(kiln.polar(kiln.tensor(np.abs(x)), kiln.tensor(y)), torch.polar(torch.tensor(np.abs(x)), torch.tensor(y)))
    close(kiln.view_as_real(kiln.tensor(A)), torch.view_as_real(torch.tensor(A)))
    pairs = RNG.standard_normal((3, 2))
    close(kiln.view_as_complex(kiln.tensor(pairs)), torch.view_as_complex(torch.tensor(pairs)))


def test_complex_and_view_as_complex_refuse_bad_input_saying_what_to_do():
    with pytest.raises(TraceError, match="both float32 or both float64.*cast them"):
        kiln.complex(kiln.tensor([1.0]), kiln.tensor([1.0], dtype=kiln.float64))
    with pytest.raises(TraceError, match="Tensor must have a last dimension of size 2"):  # torch's words
        kiln.view_as_complex(kiln.tensor(R))


def test_matmul_and_einsum_match_torch():
    torch = require_torch()
    close(kiln.tensor(A) @ kiln.tensor(M), torch.tensor(A) @ torch.tensor(M))
    close(kiln.tensor(R) @ kiln.tensor(M), torch.tensor(R).to(torch.complex128) @ torch.tensor(M))
    close(kiln.einsum("ij,jk->ik", kiln.tensor(A), kiln.tensor(M)), torch.einsum("ij,jk->ik", torch.tensor(A), torch.tensor(M)))
    three = ("ij,ij,jk->ik", A, B, M)  # three complex operands: i^k signs of all eight part products
    close(kiln.einsum(three[0], *map(kiln.tensor, three[1:])), torch.einsum(three[0], *map(torch.tensor, three[1:])))
    close(kiln.einsum("ij,ij->i", kiln.tensor(A), kiln.tensor(R)),
          torch.einsum("ij,ij->i", torch.tensor(A), torch.tensor(R).to(torch.complex128)))


def test_indexing_slice_assignment_and_reductions_match_torch():
    torch = require_torch()
    ours, theirs = kiln.zeros(3, 4, dtype=kiln.cdouble), torch.zeros(3, 4, dtype=torch.cdouble)
    ours[:, 1:3] = kiln.tensor(A)[:, :2] * 2
    theirs[:, 1:3] = torch.tensor(A)[:, :2] * 2
    ours[0] = kiln.tensor(R)[0]  # a real value: zero imaginary part
    theirs[0] = torch.tensor(R)[0].to(torch.cdouble)
    close(ours, theirs)
    close(ours.sum(), theirs.sum())
    close(ours.mean(dim=0), theirs.mean(dim=0))
    close(ours.reshape(4, 3).transpose(0, 1).flip(0), theirs.reshape(4, 3).transpose(0, 1).flip(0))
    close(ours.permute(1, 0).unsqueeze(0).squeeze(0), theirs.permute(1, 0).unsqueeze(0).squeeze(0))
    close(kiln.cat([ours, kiln.tensor(R)], dim=1), torch.cat([theirs, torch.tensor(R)], dim=1))
    close(kiln.stack([ours, ours.conj()]), torch.stack([theirs, theirs.conj()]))


def _loss(lib, z, r):
    w = z * z.conj() * 0.5 + (z @ lib.tensor(M)).sum(-1, keepdim=True) * r - z / (r + 4.0)
    return w.real.sum() + (w.imag * 0.3).sum() + w.abs().sum() + w.angle().sum()


def test_gradient_of_a_complex_leaf_is_torchs():
    """torch's ``.grad`` of a complex leaf under a real loss: dL/dRe + i dL/dIm."""
    torch = require_torch()
    ours, theirs = kiln.tensor(A, requires_grad=True), torch.tensor(A, requires_grad=True)
    _loss(kiln, ours, kiln.tensor(R)).backward()
    _loss(torch, theirs, torch.tensor(R)).backward()
    assert ours.grad.dtype == np.complex128
    close(ours.grad, theirs.grad)


def test_gradient_of_real_leaves_through_complex_intermediates_is_torchs():
    torch = require_torch()
    grads = []
    for lib in (kiln, torch):
        x, y, r = (lib.tensor(v, requires_grad=True) for v in (A.real, A.imag, R))
        _loss(lib, lib.complex(x, y) * (1 + 2j), r).backward()
        grads.append([np.asarray(v.grad) for v in (x, y, r)])
    for ours, theirs in zip(*grads):
        close(ours, theirs)


def test_a_complex_parameter_trains_with_adam_as_torchs():
    torch = require_torch()
    records = []
    for lib in (kiln, torch):
        weights = lib.nn.Parameter(lib.tensor(M))
        optimizer = lib.optim.Adam([weights], lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            loss = (lib.tensor(A) @ weights).abs().sum()
            loss.backward()
            optimizer.step()
        records.append(np.array(weights.data) if lib is kiln else torch.view_as_real(weights.data).numpy())
    close(*records)


def test_backward_of_a_complex_tensor_refuses_as_torch():
    with pytest.raises(TraceError, match="only for a real scalar output"):
        kiln.tensor(A, requires_grad=True).sum().backward()


def test_an_op_not_written_for_complex_tensors_refuses_naming_the_way_out():
    with pytest.raises(TraceError, match="complex128 tensor of shape \\(3, 4\\) went where kiln needs one real tensor.*z.real"):
        kiln.nn.functional.relu(kiln.tensor(A))
    with pytest.raises(TraceError, match="an op not written for complex tensors.*apply the op to z.real and z.imag"):
        kiln.tensor(A).log1p()  # (log is written for complex tensors)


def test_a_compiled_function_with_complex_intermediates_runs_compiled():
    """Complex values are real IR pairs: the traced graph is real, and runs compiled (no eager fallback warning)."""
    torch = require_torch()
    compiled = kiln.compile(lambda x, y: (kiln.complex(x, y) * kiln.complex(y, x)).abs() + kiln.fft.fft(x).real)
    x, y = RNG.standard_normal((2, 5)), RNG.standard_normal((2, 5))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compiled(kiln.tensor(x), kiln.tensor(y))
    expected = (torch.complex(torch.tensor(x), torch.tensor(y)) * torch.complex(torch.tensor(y), torch.tensor(x))).abs() \
        + torch.fft.fft(torch.tensor(x)).real
    close(result, expected)


def test_a_compiled_function_returning_a_complex_tensor_falls_back_to_eager_with_the_warning():
    compiled = kiln.compile(lambda x: kiln.fft.rfft(x))
    with pytest.warns(UserWarning, match="runs eagerly.*went where kiln needs one real tensor"):
        result = compiled(kiln.tensor(R))
    np.testing.assert_allclose(result.numpy(), np.fft.rfft(R), atol=1e-12)


def test_nn_parameter_of_complex_values_is_a_complex_parameter():
    weights = nn.Parameter(kiln.tensor(M))
    assert weights.is_complex() and tuple(weights.shape) == (4, 2, 2)
    np.testing.assert_array_equal(np.asarray(weights.complex_view()), M)
    np.testing.assert_array_equal(kiln.view_as_real(weights).numpy(), np.stack([M.real, M.imag], -1))


def test_abs_gradient_at_zero_and_function_forms_match_torch():
    """``|z|``'s gradient at 0 is 0 as torch's; ``torch.add(z, w, alpha=)``, ``torch.mul``, ``matmul``, ``mH``."""
    torch = require_torch()
    grads = []
    for lib in (kiln, torch):
        x, y = lib.tensor([0.0, 3.0], requires_grad=True), lib.tensor([0.0, 4.0], requires_grad=True)
        z = lib.complex(x.double(), y.double())
        (z.abs().sum() + lib.add(z, z, alpha=2).real.sum() + lib.mul(z, z).imag.sum()).backward()
        grads.append((np.asarray(x.grad), np.asarray(y.grad)))
    for ours, theirs in zip(*grads):
        close(ours, theirs)
    close(kiln.tensor(A).reshape(4, 3).mH, torch.tensor(A).reshape(4, 3).mH)
    close(kiln.tensor(A).matmul(kiln.tensor(M)), torch.tensor(A).matmul(torch.tensor(M)))
