"""``kiln.angle`` (``frontend/complex_functions.py``) as ``torch.angle``: a complex tensor's phase (with its gradient
through the parts), a real tensor's pi where negative, 0 elsewhere, NaN kept. An STFT enhancer writes
``magnitude, phase = spec.abs(), torch.angle(spec)``; ``kiln.angle`` was missing."""

import numpy as np

import kiln
from oracles import require_torch

REAL = np.array([1.5, -2.0, 0.0, np.nan, -0.25])
PARTS = np.array([[1.0, 1.0], [-1.0, 0.5], [0.3, -2.0], [-0.7, -0.1]])


def test_angle_of_a_real_tensor_is_torchs():
    torch = require_torch()
    np.testing.assert_array_equal(kiln.angle(kiln.tensor(REAL)).numpy(), torch.angle(torch.tensor(REAL)).numpy())
    integers = kiln.angle(kiln.tensor([3, -1]))
    assert str(integers.dtype) == str(torch.angle(torch.tensor([3, -1])).dtype).replace("torch", "kiln")


def test_angle_of_a_complex_tensor_and_its_gradient_are_torchs():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        pairs = lib.tensor(PARTS, requires_grad=True)
        phase = lib.angle(lib.view_as_complex(pairs))
        (phase * lib.tensor([1.0, 2.0, 3.0, 4.0], dtype=lib.float64)).sum().backward()
        results.append((phase.detach().numpy(), pairs.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_the_angle_method_of_a_real_tensor_is_torchs():
    torch = require_torch()
    np.testing.assert_array_equal(kiln.tensor(REAL).angle().numpy(), torch.tensor(REAL).angle().numpy())
