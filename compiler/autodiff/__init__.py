"""Autodiff as a compiler pass: the VJP table and the reverse-mode walk."""

from kiln.compiler.autodiff import rules_movement, rules_nn_layers  # noqa: F401  (register their rules into VJP_RULES)
from kiln.compiler.autodiff import rules_losses  # noqa: F401  (registers the loss rules into VJP_RULES)
from kiln.compiler.autodiff import rules_comm  # noqa: F401  (registers the comm rules into VJP_RULES)
from kiln.compiler.autodiff import rules_reduce_prod  # noqa: F401  (registers its rule into VJP_RULES)
from kiln.compiler.autodiff import rules_linalg  # noqa: F401  (registers the linalg rules into VJP_RULES)
from kiln.compiler.autodiff import rules_linalg_factor  # noqa: F401  (registers the QR, LU and matrix_exp rules)
from kiln.compiler.autodiff import rules_linalg_ldl  # noqa: F401  (refuses the LDL^T ops' derivatives, as PyTorch)
from kiln.compiler.autodiff import rules_linalg_spectral  # noqa: F401  (registers eigh's and svd's rules into VJP_RULES)
from kiln.compiler.autodiff import rules_scan  # noqa: F401  (registers the running scans' rules into VJP_RULES)
from kiln.compiler.autodiff import rules_custom  # noqa: F401  (registers custom.vjp's rule: the user's backward, inlined)
from kiln.compiler.autodiff import rules_fft  # noqa: F401  (registers the fft dialect's rules into VJP_RULES)
from kiln.compiler.autodiff.differentiate import Autodiff, AutodiffError, differentiate, differentiate_outputs, unbroadcast
from kiln.compiler.autodiff.rules import VJP_RULES, vjp_rule

__all__ = ["Autodiff", "AutodiffError", "VJP_RULES", "differentiate", "differentiate_outputs", "unbroadcast", "vjp_rule"]
