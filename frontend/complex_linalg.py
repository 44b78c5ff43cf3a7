"""``torch.linalg.eig``/``eigvals`` of a general real matrix: complex eigenvalues and eigenvectors, as torch's.

```python
values, vectors = kiln.linalg.eig(A)     # complex128 for a float64 A (complex64 for float32), LAPACK's geev as torch's
kiln.linalg.eigvals(A)                   # the eigenvalues alone
```

Computed eagerly from the matrix's values (LAPACK's ``geev`` through NumPy, which torch calls too: the same order,
eigenvectors of unit norm with their largest component real). kiln gives no gradient through them: a matrix that
requires one is refused (``A.detach()`` says that none is wanted), and inside ``kiln.compile``/``kiln.trace`` the
values do not exist yet (a compiled function falls back to eager with its warning). For a symmetric matrix,
``eigh``/``eigvalsh`` are real, traced and differentiable.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from kiln.frontend.complex_tensor import ComplexTensor
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext, located_error


class EigResult(NamedTuple):
    """``torch.return_types.linalg_eig``: ``(eigenvalues, eigenvectors)``."""

    eigenvalues: ComplexTensor
    eigenvectors: ComplexTensor


def eig(A: Any) -> EigResult:
    values, vectors = np.linalg.eig(_matrix_values("eig", A))
    return EigResult(_complex_tensor(values, A), _complex_tensor(vectors, A))


def eigvals(A: Any) -> ComplexTensor:
    return _complex_tensor(np.linalg.eigvals(_matrix_values("eigvals", A)), A)


def _matrix_values(function: str, A: Any) -> np.ndarray:
    """``A``'s array: an eager float32/float64 tensor of square matrices that needs no gradient."""
    if TraceContext.active() or not isinstance(A, Tensor):  # (what is no tensor has no dtype to check either)
        raise located_error(f"linalg.{function} of a traced tensor: kiln computes it eagerly, from the matrix's values, "
                            f"which a trace does not have; call it outside kiln.trace/kiln.compile (a compiled function "
                            f"runs eagerly for it), or use kiln.linalg.eigh for a symmetric matrix")
    array = np.asarray(A)
    if A.dtype.name not in ("f32", "f64") or array.ndim < 2 or array.shape[-1] != array.shape[-2]:
        raise located_error(f"linalg.{function} takes float32 or float64 square matrices (..., n, n), got "
                            f"{A.dtype} of shape {tuple(array.shape)}")
    if A.requires_grad:
        raise located_error(f"linalg.{function}: kiln gives no gradient through a general eigendecomposition; pass "
                            f"A.detach() if none is needed, or use kiln.linalg.eigh for a symmetric matrix")
    return array


def _complex_tensor(array: np.ndarray, like: Any) -> ComplexTensor:
    from kiln.frontend.torch_functions import tensor

    dtype = like.dtype
    return ComplexTensor(tensor(np.ascontiguousarray(array.real), dtype=dtype),
                         tensor(np.ascontiguousarray(array.imag), dtype=dtype))
