"""The generated CUDA source of representative fusion groups, pinned as text (tests/backends_cupy/golden/*.cu).

Regenerate after an intended change with ``KILN_REGENERATE_GOLDEN=1 pytest tests/backends_cupy``. Each generated
body is also compiled as a standalone CUDA translation unit (``cuda_compiler``: NVRTC, no GPU needed).
"""

from __future__ import annotations

import os
import pathlib

import pytest

from cuda_compiler import CudaCompileError, cuda_compiler, translation_unit
from cupy_groups import GROUPS, HALF_GROUPS, fused_ops
from kiln.backends.cupy.codegen import group_kernels
from kiln.backends.cupy.loss_kernels import cross_entropy_grad_source, cross_entropy_loss_source
from kiln.backends.cupy.philox import philox_uniform_source
from kiln.backends.cupy.row_kernels import layer_norm_grad_source, layer_norm_source, masked_softmax_source, softmax_grad_source, softmax_source
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.types import DType

GOLDEN = pathlib.Path(__file__).parent / "golden"


ROW_KERNELS = {
    "row_softmax_f32": lambda: softmax_source(DType.f32),
    "row_log_softmax_f64": lambda: softmax_source(DType.f64, log=True),
    "row_layer_norm_f32": lambda: layer_norm_source(DType.f32),
    "row_layer_norm_grad_f32": lambda: layer_norm_grad_source(DType.f32),
    "row_softmax_grad_f32": lambda: softmax_grad_source(DType.f32),
    "row_masked_softmax_f32": lambda: masked_softmax_source(DType.f32),
    "row_cross_entropy_f32": lambda: cross_entropy_loss_source(DType.f32),
    "row_cross_entropy_grad_f64": lambda: cross_entropy_grad_source(DType.f64),
    "row_softmax_f16": lambda: softmax_source(DType.f16),
    "row_layer_norm_f16": lambda: layer_norm_source(DType.f16),
    "row_softmax_grad_f16": lambda: softmax_grad_source(DType.f16),
    "row_layer_norm_grad_f16": lambda: layer_norm_grad_source(DType.f16),
    "row_cross_entropy_grad_f16": lambda: cross_entropy_grad_source(DType.f16),
    "philox_uniform_f32": lambda: philox_uniform_source(DType.f32),
    "philox_uniform_f64": lambda: philox_uniform_source(DType.f64),
}
"""Golden-file stem -> a hand-written raw kernel (softmax, log-softmax, softmax gradient, layer norm and its gradient,
cross-entropy rows; the Philox draw)."""


ALL_GROUPS = GROUPS | HALF_GROUPS


def rendered(stem: str) -> str:
    if stem in ROW_KERNELS:
        return ROW_KERNELS[stem]().text()
    sources = [source for op in fused_ops(ALL_GROUPS[stem]()) for source in group_kernels(op).sources()]
    return "\n".join(source.text() for source in sources)


@pytest.mark.parametrize("stem", sorted(ALL_GROUPS) + sorted(ROW_KERNELS))
def test_generated_source_matches_golden(stem: str):
    path = GOLDEN / f"{stem}.cu"
    text = rendered(stem)
    if os.environ.get("KILN_REGENERATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with KILN_REGENERATE_GOLDEN=1 to write it"
    assert text == path.read_text(), f"generated CUDA for {stem} changed; if intended, regenerate with KILN_REGENERATE_GOLDEN=1"


def test_each_group_is_one_fused_op_with_the_expected_kernels():
    kinds = {stem: [type(s).__name__ for op in fused_ops(make()) for s in group_kernels(op).sources()] for stem, make in ALL_GROUPS.items()}
    assert kinds == {
        "add_relu_broadcast": ["ElementwiseSource"],
        "sgd_update": ["ElementwiseSource"],
        "adam_update": ["ElementwiseSource"],  # new param, m and v: three outputs of one kernel
        "exp_sum_reduction": ["ReductionSource"],
        "matmul_epilogue": ["ElementwiseSource"],  # after the cuBLAS GEMM
        "add_relu_f16": ["ElementwiseSource"],  # widen-half's casts fused in: no extra kernel
        "tanh_mul_f16": ["ElementwiseSource"],
        "adam_update_f16": ["ElementwiseSource"],
        "sum_exp_f16": ["ReductionSource"],  # the cast to half after the sum in its post-map: no cast kernel
    }


def test_kernel_names_are_stable_per_structure_and_differ_across_structures():
    first, again = rendered("add_relu_broadcast"), rendered("add_relu_broadcast")
    assert first == again
    assert rendered("sgd_update").splitlines()[0] != first.splitlines()[0]


def test_unknown_elementwise_op_is_a_clear_error():
    from kiln.backends.cupy.expressions import c_expression
    from kiln.compiler.ir.types import DType

    with pytest.raises(LoweringError, match="no CUDA expression for elementwise op 'tensor.frobnicate'.*C_EXPRESSIONS"):
        c_expression("tensor.frobnicate", ["x0"], {}, DType.f32)


@pytest.mark.parametrize("stem", sorted(ALL_GROUPS))
def test_generated_source_compiles_as_cuda(stem: str):
    compile_cuda = cuda_compiler()
    for op in fused_ops(ALL_GROUPS[stem]()):
        for source in group_kernels(op).sources():
            compile_cuda(translation_unit(source), source.name)


@pytest.mark.parametrize("stem", sorted(ROW_KERNELS))
def test_row_kernels_compile_as_cuda(stem: str):
    source = ROW_KERNELS[stem]()
    cuda_compiler()(source.code, source.name)


def test_the_compiler_rejects_invalid_cuda():
    """The check above can fail: a body naming an undefined identifier is refused, with the compiler's log."""
    with pytest.raises(CudaCompileError, match="undefined_value"):
        cuda_compiler()('extern "C" __global__ void broken(float* y) { y[0] = undefined_value; }', "broken")
