"""``kiln.linalg.LinAlgError`` is a RuntimeError, as ``torch.linalg.LinAlgError``: PyTorch code catches a failed
factorisation with ``except RuntimeError`` (GPyTorch 1.x's ``psd_safe_cholesky`` adds jitter there); kiln's error
escaped it."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

NOT_POSITIVE_DEFINITE = np.diag([1.0, 2.0, -1.0, 3.0])


def psd_safe_cholesky(torch, A, jitter=1e-6, max_tries=3):
    """GPyTorch 1.x's: retry with growing jitter on the diagonal while cholesky raises."""
    try:
        return torch.linalg.cholesky(A), 0.0
    except RuntimeError:
        eye = torch.eye(A.shape[-1], dtype=A.dtype)
        for i in range(max_tries):
            try:
                return torch.linalg.cholesky(A + jitter * 10 ** (i + 6) * eye), jitter * 10 ** (i + 6)
            except RuntimeError:
                continue
        raise


@pytest.mark.parametrize("op", ["cholesky", "inv"])
def test_a_failed_factorisation_is_caught_as_a_runtime_error(op):
    torch = require_torch()
    singular = np.zeros((3, 3)) if op == "inv" else NOT_POSITIVE_DEFINITE
    for lib in (kiln, torch):
        with pytest.raises(RuntimeError):
            getattr(lib.linalg, op)(lib.tensor(singular))
        assert issubclass(lib.linalg.LinAlgError, RuntimeError)


def test_jitter_retry_written_for_torch_gives_torchs_factor():
    torch = require_torch()
    ours, theirs = (psd_safe_cholesky(lib, lib.tensor(NOT_POSITIVE_DEFINITE)) for lib in (kiln, torch))
    assert ours[1] == theirs[1] == 10.0  # 1.0 leaves a zero pivot: both retry once more
    np.testing.assert_allclose(np.asarray(ours[0]), theirs[0].numpy(), rtol=1e-12, atol=1e-12)
