"""Passes over the IR, one per file, and the manager that runs pipelines of them."""

from kiln.compiler.passes import (  # noqa: F401  (registers the passes)
    canonicalize,
    chunk_causal_attention,
    constant_fold,
    conv_to_gemm,
    cse,
    data_parallel,
    dce,
    decompose,
    fold_batch_sum_matmul,
    fuse_elementwise,
    fuse_epilogue,
    pipeline_split,
    plan_memory,
    rematerialize,
    schedule_updates,
    stack_summed_products,
    widen_half,
)
from kiln.compiler.passes.manager import PASSES, Pass, PassFailure, PassManager, parse_pipeline, register_pass

__all__ = ["PASSES", "Pass", "PassFailure", "PassManager", "parse_pipeline", "register_pass"]
