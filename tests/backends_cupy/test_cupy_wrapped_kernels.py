"""Every generated kernel of the MLP, CNN and GPT steps as CuPy itself wraps it, compiled with CuPy's headers.

``test_cupy_kernel_plan.py`` compiles each kernel body in a translation unit of our own. On a GPU, CuPy
puts the body inside its own kernel: ``CArray``/``CIndexer`` parameters, references bound per element,
its reduction loop with ``REDUCE``/``POST_MAP`` macros, and its headers (``cupy/carray.cuh``,
``cupy/complex.cuh``, ...) before it. Here CuPy's own code generators render each kernel for strided
3-D operands (the general indexing path), and NVRTC compiles the result with CuPy's headers and
compiler options: what CuPy would compile at the first launch, without a GPU. The generators are CuPy
internals (``cupy._core._kernel``, ``cupy._core._reduction``); without CuPy (it comes with the ``cuda12``
and ``cuda13`` extras) the tests skip with one line.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_compiler import CudaCompileError, cuda_compiler
from cupy_models import kernel_sources, op_table_kernel_sources, step_graph
from kiln.backends.cupy.codegen import ElementwiseSource, ReductionSource
from kiln.backends.cupy.loss_kernels import cross_entropy_grad_source, cross_entropy_loss_source
from kiln.backends.cupy.philox import philox_uniform_source
from kiln.backends.cupy.row_kernels import layer_norm_grad_source, layer_norm_source, masked_softmax_source, softmax_grad_source, softmax_source
from kiln.compiler.ir.types import DType

INTERNALS = ("_kernel._get_elementwise_kernel_code", "_kernel._ArgInfo", "_kernel._TypeMap",
             "_reduction._ReductionKernel_get_cached_function_code", "core._cupy_header_list", "core.assemble_cupy_compiler_options")
"""The CuPy internals used here (CuPy 14); another CuPy may lack them."""

try:
    import cupy
    from cupy._core import _kernel, _reduction, core
except Exception as error:  # noqa: BLE001  (a missing CUDA library fails with other errors than ImportError)
    pytestmark = pytest.mark.skip(reason=f"CuPy is not importable ({type(error).__name__}): pip install '.[cuda12]' to render kernels as CuPy does")
else:
    _missing = [name for name in INTERNALS if not hasattr({"_kernel": _kernel, "_reduction": _reduction, "core": core}[name.split(".")[0]], name.split(".")[1])]
    if _missing:
        pytestmark = pytest.mark.skip(reason=f"CuPy {cupy.__version__} lacks the code-generator internals {_missing} this check uses")

NDARRAY, INDEXER, SCALAR = 1, 2, 3
"""CuPy's argument kinds (``_ArgInfo.arg_kind``)."""


def _operand(dtype: np.dtype, ndim: int) -> "_kernel._ArgInfo":
    return _kernel._ArgInfo(NDARRAY, cupy.ndarray, np.dtype(dtype), ndim, False, False)  # strided: the general path


def _indexer(ndim: int) -> "_kernel._ArgInfo":
    return _kernel._ArgInfo(INDEXER, object, None, ndim, True, False)


def elementwise_code(source: ElementwiseSource, ndim: int = 3) -> str:
    kernel = cupy.ElementwiseKernel(source.in_params, source.out_params, source.body, source.name, preamble=source.preamble)
    infos = tuple(_operand(p.dtype, ndim) for p in kernel.params[:-1]) + (_indexer(ndim),)
    return _kernel._get_elementwise_kernel_code(infos, _kernel._TypeMap(()), kernel.params, kernel.operation, kernel.name, kernel.preamble)


def reduction_code(source: ReductionSource, in_ndim: int = 3, out_ndim: int = 2) -> str:
    kernel = cupy.ReductionKernel(source.in_params, source.out_params, source.map_expr, source.reduce_expr, source.post_map_expr,
                                  source.identity, source.name, reduce_type=source.reduce_type, preamble=source.preamble)
    params, nin, nout = kernel._params, kernel.nin, kernel.nout
    infos = tuple(_operand(p.dtype, in_ndim) for p in params[:nin]) + tuple(_operand(p.dtype, out_ndim) for p in params[nin : nin + nout])
    infos += (_indexer(in_ndim), _indexer(out_ndim), _kernel._ArgInfo(SCALAR, np.int32, np.dtype(np.int32), 0, True, False))
    index_type = _kernel._TypeMap((("IndexT", "int32"),))  # CuPy's choice below 2**31 elements per output
    return _reduction._ReductionKernel_get_cached_function_code(
        nin, nout, params, infos, index_type, source.name, 256, source.reduce_type, source.identity,
        source.map_expr, source.reduce_expr, source.post_map_expr, source.preamble, ())


def as_cupy_compiles(code: str) -> str:
    return "".join(f"#include <{header}>\n" for header in core._cupy_header_list) + code


def _cupy_options() -> tuple[str, ...]:
    return tuple(option for option in core.assemble_cupy_compiler_options(()) if not option.startswith("-I/usr/local/cuda"))


@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt", "op_table", "mlp-f16", "gpt-f16"])
def test_every_kernel_compiles_as_cupy_wraps_it(name: str):
    """The kernels of the three benchmark models' steps, and of every op-table case (as the GPU tests launch them);
    ``-f16``: the step of the model in float16 (CuPy's ``float16`` parameters, ``__half`` conversions)."""
    import kiln

    compile_cuda = cuda_compiler(_cupy_options())
    model, dtype = name.removesuffix("-f16"), kiln.float16 if name.endswith("-f16") else None
    sources = op_table_kernel_sources() if name == "op_table" else kernel_sources(step_graph(model, dtype=dtype))
    kinds = {type(source) for source in sources.values()}
    assert ElementwiseSource in kinds and (ReductionSource in kinds or name == "op_table")  # the op table's reductions are CuPy's
    for source in sources.values():
        code = elementwise_code(source) if isinstance(source, ElementwiseSource) else reduction_code(source)
        assert f"void {source.name}(" in code and "CIndexer" in code
        compile_cuda(as_cupy_compiles(code), source.name)


@pytest.mark.parametrize("dtype", [DType.f16, DType.f32, DType.f64])
def test_raw_kernels_compile_with_cupys_headers(dtype: DType):
    """float16: the row kernels that read and write half (the Philox draw runs in float32)."""
    compile_cuda = cuda_compiler(_cupy_options())
    draw = (philox_uniform_source(dtype),) if dtype is not DType.f16 else ()
    for source in (softmax_source(dtype), softmax_source(dtype, log=True), softmax_grad_source(dtype), masked_softmax_source(dtype),
                   layer_norm_source(dtype), layer_norm_grad_source(dtype), cross_entropy_loss_source(dtype), cross_entropy_grad_source(dtype), *draw):
        compile_cuda(as_cupy_compiles(source.code), source.name)


def test_a_body_that_is_not_valid_in_cupys_wrapper_is_rejected():
    bad = ElementwiseSource("kiln_bad", "float32 x0", "float32 y0", "const float t0 = undefined_function(x0);\ny0 = t0;", "")
    with pytest.raises(CudaCompileError, match="undefined_function"):
        cuda_compiler(_cupy_options())(as_cupy_compiles(elementwise_code(bad)), bad.name)


def test_the_compiler_helper_calls_cupys_nvrtc_with_arguments_it_takes():
    """On a GPU machine ``cuda_compiler`` compiles through CuPy's NVRTC; its keywords must fit CuPy's signature."""
    import inspect

    from cupy.cuda import compiler

    from cuda_compiler import cupy_nvrtc_arguments

    inspect.signature(compiler.compile_using_nvrtc).bind("source", **cupy_nvrtc_arguments("kernel", ("--std=c++17",)))


def test_the_cublas_stand_in_has_cupys_signature_and_constants():
    """gemm.py calls ``gemmStridedBatchedEx`` positionally: the stand-in (fake_cublas.py) and CuPy's binding must agree on
    the parameter list and on the enum values (needs CuPy's cuBLAS library)."""
    import inspect

    import fake_cublas

    try:
        from cupy_backends.cuda.libs import cublas
    except ImportError as error:
        pytest.skip(f"CuPy's cuBLAS binding does not load here ({error}); pip install nvidia-cublas-cu12")
    real = cublas.gemmStridedBatchedEx.__doc__.split("(", 1)[1].split(")", 1)[0].split(", ")
    assert [p.split()[-1] for p in real] == list(inspect.signature(fake_cublas.gemmStridedBatchedEx).parameters)
    for name in ("CUBLAS_COMPUTE_32F", "CUBLAS_COMPUTE_32F_FAST_TF32", "CUBLAS_COMPUTE_64F", "CUBLAS_GEMM_DEFAULT"):
        assert getattr(cublas, name) == getattr(fake_cublas, name), name
