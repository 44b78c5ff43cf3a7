"""The op registry and the op families; importing this registers every op."""

from kiln.compiler.ops import comm, conv, fused, linalg, movement, nn, optim, random, reduce_prod, scan, tensor, transformer  # noqa: F401  (registers the ops)
from kiln.compiler.ops import linalg_factor  # noqa: F401  (registers the QR, LU and matrix_exp ops)
from kiln.compiler.ops import linalg_spectral  # noqa: F401  (registers linalg.eigh and linalg.svd)
from kiln.compiler.ops import linalg_ldl  # noqa: F401  (registers the LDL^T ops)
from kiln.compiler.ops import custom  # noqa: F401  (registers custom.vjp, kiln.autograd.Function's op)
from kiln.compiler.ops import bitwise  # noqa: F401  (registers the integer bit ops)
from kiln.compiler.ops import fft  # noqa: F401  (registers the fft dialect: c2c, r2c, c2r)
from kiln.compiler.ops.registry import OPS, OpDef, has_trait, lookup, register_decomposition, register_op

__all__ = ["OPS", "OpDef", "has_trait", "lookup", "register_decomposition", "register_op"]
