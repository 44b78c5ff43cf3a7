"""kiln's compiler: the IR, the op registry, autodiff and the passes."""

from kiln.compiler import ops  # noqa: F401  (registers every op before any graph is built)
