"""``kiln.linalg.eig``/``eigvals`` of general real matrices: complex results as torch 2.13's (eager, no gradient)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

MATRICES = np.random.default_rng(5).standard_normal((2, 3, 5, 5))  # a batch with complex-conjugate pairs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_eig_and_eigvals_match_torch(dtype):
    torch = require_torch()
    a = MATRICES.astype(dtype)
    values, vectors = kiln.linalg.eig(kiln.tensor(a))
    their_values, their_vectors = torch.linalg.eig(torch.tensor(a))
    assert str(values.dtype) == str(their_values.dtype).replace("torch.", "kiln.") and tuple(vectors.shape) == (2, 3, 5, 5)
    tolerance = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(values.numpy(), their_values.numpy(), atol=tolerance)
    np.testing.assert_allclose(_phase_fixed(vectors.numpy()), _phase_fixed(their_vectors.numpy()), atol=tolerance)
    np.testing.assert_allclose(kiln.linalg.eigvals(kiln.tensor(a)).numpy(), their_values.numpy(), atol=tolerance)


def _phase_fixed(vectors):
    """Eigenvectors (columns) each turned so its largest component is real and positive: LAPACK builds differ by a
    sign (torch's and NumPy's float32 geev do), which is no difference in the eigenvectors."""
    largest = np.take_along_axis(vectors, np.abs(vectors).argmax(axis=-2)[..., None, :], axis=-2)
    return vectors * (np.abs(largest) / largest)


def test_eig_satisfies_a_v_equals_v_lambda():
    values, vectors = kiln.linalg.eig(kiln.tensor(MATRICES[0, 0]))
    a = kiln.tensor(MATRICES[0, 0])
    np.testing.assert_allclose((a @ vectors).numpy(), (vectors * values.unsqueeze(0)).numpy(), atol=1e-12)


def test_eig_refuses_what_it_cannot_give_saying_what_to_do():
    with pytest.raises(TraceError, match="no gradient through a general eigendecomposition; pass A.detach\\(\\)"):
        kiln.linalg.eig(kiln.tensor(MATRICES[0, 0], requires_grad=True))
    with pytest.raises(TraceError, match="float32 or float64 square matrices.*shape \\(5, 4\\)"):
        kiln.linalg.eigvals(kiln.tensor(MATRICES[0, 0, :, :4]))
    with pytest.raises(TraceError, match="eig of a traced tensor: kiln computes it eagerly"):
        kiln.trace(lambda a: kiln.linalg.eig(a).eigenvalues.real, kiln.TensorSpec((3, 3), "float64"))
