"""kiln's compiler: the IR, the op registry, autodiff and the passes."""
