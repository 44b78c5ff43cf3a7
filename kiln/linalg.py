"""``kiln.linalg``: PyTorch's ``torch.linalg`` core (``frontend/tensor_linalg.py``).

```python
import kiln
x = kiln.linalg.solve(A, b)                  # A (..., n, n), b (..., n) or (..., n, k)
sign, logabsdet = kiln.linalg.slogdet(A)
L = kiln.linalg.cholesky(A @ A.mT + eye)
Q, R = kiln.linalg.qr(A)                     # LU: lu_factor, lu_solve, lu; matrix_exp, ...
LD, pivots = kiln.linalg.ldl_factor(A)       # symmetric indefinite A; X = kiln.linalg.ldl_solve(LD, pivots, B)
U, S, Vh = kiln.linalg.svd(A, full_matrices=False)
```
"""

from kiln.backends.numpy.lowering_linalg import LinAlgError
from kiln.frontend.tensor_linalg import (SlogdetResult, cholesky, det, inv, matrix_norm, norm, slogdet, solve, solve_triangular,
                                         vector_norm)
from kiln.frontend.linalg_factor import (CholeskyExResult, InvExResult, LUFactorExResult, LUFactorResult, LUResult, QRResult,
                                         SolveExResult, cholesky_ex, cross, diagonal, eig, eigvals, householder_product, inv_ex,
                                         lu, lu_factor, lu_factor_ex, lu_solve, matmul, matrix_exp, matrix_power, multi_dot, qr,
                                         solve_ex, tensorinv, tensorsolve, vander, vecdot)
from kiln.frontend.linalg_ldl import LDLFactorExResult, LDLFactorResult, ldl_factor, ldl_factor_ex, ldl_solve
from kiln.frontend.linalg_spectral import (EighResult, LstsqResult, SVDResult, cond, eigh, eigvalsh, lstsq, matrix_rank, pinv, svd,
                                          svdvals)

__all__ = ["LinAlgError", "SlogdetResult", "cholesky", "det", "inv", "matrix_norm", "norm", "slogdet", "solve",
           "solve_triangular", "vector_norm"]
__all__ += ["CholeskyExResult", "InvExResult", "LUFactorExResult", "LUFactorResult", "LUResult", "QRResult", "SolveExResult",
            "cholesky_ex", "cross", "diagonal", "eig", "eigvals", "householder_product", "inv_ex", "lu", "lu_factor", "lu_factor_ex",
            "lu_solve", "matmul", "matrix_exp", "matrix_power", "multi_dot", "qr", "solve_ex", "tensorinv", "tensorsolve", "vander",
            "vecdot"]
__all__ += ["EighResult", "LstsqResult", "SVDResult", "cond", "eigh", "eigvalsh", "lstsq", "matrix_rank", "pinv", "svd", "svdvals"]
__all__ += ["LDLFactorExResult", "LDLFactorResult", "ldl_factor", "ldl_factor_ex", "ldl_solve"]
