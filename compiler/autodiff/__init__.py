"""Autodiff as a compiler pass: the VJP table and the reverse-mode walk."""

from kiln.compiler.autodiff.differentiate import Autodiff, AutodiffError, differentiate, unbroadcast
from kiln.compiler.autodiff.rules import VJP_RULES, vjp_rule

__all__ = ["Autodiff", "AutodiffError", "VJP_RULES", "differentiate", "unbroadcast", "vjp_rule"]
