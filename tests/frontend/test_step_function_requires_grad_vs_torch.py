"""``sign`` and the ``p=0`` norms (a nonzero count: ``cdist(x, y, p=0)``, ``pdist``, ``pairwise_distance``,
``norm``, ``linalg.vector_norm``) of a tensor that requires grad: torch's result requires grad and ``backward()``
gives a zero ``.grad``; kiln's required none (its comparisons ended the gradient path), so ``backward()`` refused
and an optimizer saw a None gradient (``frontend/zero_gradient.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

SPECIAL = np.array([[1.5, -2.0, 0.0], [np.inf, -np.inf, -0.0], [np.nan, 3.0, -1e-30]])
"""Values for sign: 0 at NaN and at -0.0, as torch's."""
ROWS = np.array([[1.5, -2.0, 0.0], [4.0, -3.0, -0.0], [1.5, 3.0, -1e-30]])
"""Finite rows for the distances (torch's cdist of a NaN difference is NaN where kiln counts it nonzero)."""
ZERO_GRADIENTS = {
    "sign": lambda lib, x: lib.sign(x),
    "sgn": lambda lib, x: lib.sgn(x),
    "Tensor.sign": lambda lib, x: x.sign(),
    "cdist_p0": lambda lib, x: lib.cdist(x, lib.tensor(ROWS[[0, 2]] * 0.5, dtype=x.dtype), p=0),
    "pdist_p0": lambda lib, x: lib.nn.functional.pdist(x, p=0),
}
NO_GRADIENTS = {
    "pairwise_distance_p0": lambda lib, x: lib.nn.functional.pairwise_distance(x, x.flip(0), p=0),
    "norm_p0": lambda lib, x: lib.norm(x, p=0, dim=1),
    "vector_norm_0": lambda lib, x: lib.linalg.vector_norm(x, 0),
}
"""torch's result requires grad, and its backward leaves ``x.grad`` None (an undefined zero); kiln's gives zeros."""
FUNCTIONS = {**ZERO_GRADIENTS, **NO_GRADIENTS}


def _run(library: str, name: str, dtype: str):
    lib, _, _ = libraries(library)
    x = lib.tensor(SPECIAL if name.startswith(("sign", "sgn", "Tensor")) else ROWS, dtype=getattr(lib, dtype),
                   requires_grad=True)
    result = FUNCTIONS[name](lib, x)
    requires_grad = result.requires_grad
    result.sum().backward()
    grad = x.grad if x.grad is None or library == "kiln" else x.grad.numpy(force=True)  # sgn's is a ZeroTensor
    return np.asarray(result.detach()), requires_grad, None if grad is None else np.asarray(grad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_a_step_function_of_a_tensor_requiring_grad_requires_grad_with_a_zero_gradient_as_torchs(name, dtype):
    require_torch()
    (kiln_values, kiln_requires, kiln_grad), (torch_values, torch_requires, torch_grad) = (
        _run(library, name, dtype) for library in ("kiln", "torch"))
    np.testing.assert_array_equal(kiln_values, torch_values)
    assert kiln_requires is torch_requires is True
    assert kiln_grad is not None and not kiln_grad.any()
    if name in ZERO_GRADIENTS:
        np.testing.assert_array_equal(kiln_grad, torch_grad)


@pytest.mark.parametrize("name", ["sign", "cdist_p0"])
def test_without_grad_the_result_requires_none_as_torchs(name):
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        assert FUNCTIONS[name](lib, lib.tensor(ROWS, dtype=lib.float32)).requires_grad is False
        with lib.no_grad():
            assert FUNCTIONS[name](lib, lib.tensor(ROWS, dtype=lib.float32, requires_grad=True)).requires_grad is False


def test_an_optimizer_steps_a_parameter_reached_only_through_sign_as_torchs():
    """torch's zero gradient, not None: Adam counts the step (its state holds it) and weight decay moves the weight."""
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, nn, _ = libraries(library)
        weight = nn.Parameter(lib.tensor([0.5, -1.0, 2.0]))
        optimizer = lib.optim.Adam([weight], lr=0.1, weight_decay=0.5)
        lib.sign(weight).sum().backward()
        optimizer.step()
        results.append(np.asarray(weight.detach()))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    assert not np.array_equal(results[0], [0.5, -1.0, 2.0])
