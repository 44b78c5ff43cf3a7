"""Passes over the IR, one per file, and the manager that runs pipelines of them."""

from kiln.compiler.passes import cse, dce, decompose  # noqa: F401  (registers the passes)
from kiln.compiler.passes.manager import PASSES, Pass, PassFailure, PassManager, parse_pipeline, register_pass

__all__ = ["PASSES", "Pass", "PassFailure", "PassManager", "parse_pipeline", "register_pass"]
