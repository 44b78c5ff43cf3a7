"""NumPy kernels of ``linalg.eigh`` and ``linalg.svd`` (``compiler/ops/linalg_spectral.py``), in the one ``NUMPY`` table.

Each is one ``np.linalg`` call over the leading (batch) dims: LAPACK's ``syevd`` for ``eigh`` (reading the ``UPLO``
triangle, eigenvalues ascending) and ``gesdd`` for ``svd`` (singular values descending), the same drivers PyTorch
calls on the CPU. The CuPy backend re-binds this module, so there ``np.linalg`` is ``cupy.linalg`` (cuSOLVER's
``syevj``/``gesvdj``). A run that does not converge raises ``kiln.linalg.LinAlgError`` naming the op.

```python
w, v = NUMPY.get("linalg.eigh")(a, UPLO="L")
u, s, vh = NUMPY.get("linalg.svd")(a, full_matrices=False)
```
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY
from kiln.backends.numpy.lowering_linalg import _lapack


NOT_CONVERGED = "the iteration did not converge (a NaN or inf in a matrix?)"


@NUMPY.register("linalg.eigh")
def eigh(a, *, UPLO: str):
    w, v = _lapack("linalg.eigh", NOT_CONVERGED, lambda x: np.linalg.eigh(x, UPLO=UPLO), a)
    return w, v


@NUMPY.register("linalg.svd")
def svd(a, *, full_matrices: bool):
    u, s, vh = _lapack("linalg.svd", NOT_CONVERGED, lambda x: np.linalg.svd(x, full_matrices=full_matrices), a)
    return u, s, vh
