"""A CUDA compiler for checking generated kernels where no GPU is at hand.

In order: CuPy's NVRTC (a GPU machine), NVRTC from the ``nvidia-cuda-nvrtc-cu12`` wheel through ctypes (the
``test`` extra installs it: NVRTC compiles to PTX with no GPU and no driver), or ``nvcc``. Without any of them
the tests skip, unless ``KILN_REQUIRE_ORACLES=1`` (CI), where they fail.

```python
compile_cuda = cuda_compiler()
compile_cuda('extern "C" __global__ void k(float* y) { y[0] = 1.0f; }', "k")   # raises CudaCompileError with the log
```
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import shutil
import subprocess
from typing import Callable

import pytest

from kiln.backends.cupy.codegen import ElementwiseSource, ReductionSource, standalone_source

ARCHITECTURE = "compute_90"
"""The H200 the device check runs on; any architecture CUDA 12 knows would do for a validity check."""


class CudaCompileError(AssertionError):
    """The compiler rejected a generated kernel; the message is its log."""


def cuda_compiler(options: tuple[str, ...] = ()) -> Callable[[str, str], None]:
    """``compile(source, name)``, raising ``CudaCompileError`` with the compiler's log; skips (or fails) without one.

    ``options``: more compiler flags (``-I`` include directories, ``--std=c++17``). The directory holding
    ``cuda_fp16.h`` is added when one is found (``half_include_options``): NVRTC has no default include path, and
    float16 kernels include it; a source that does skips (or fails) without it.
    """
    for find in (_cupy_nvrtc, _wheel_nvrtc, _nvcc):
        compile_cuda = find(options + half_include_options())
        if compile_cuda is not None:
            return _needing_half_header(compile_cuda)
    _missing("no CUDA compiler here (CuPy's NVRTC, the nvidia-cuda-nvrtc-cu12 wheel, nvcc); pip install '.[test]'")


def _missing(message: str) -> None:
    if os.environ.get("KILN_REQUIRE_ORACLES") == "1":
        pytest.fail(f"{message} (KILN_REQUIRE_ORACLES=1)")
    pytest.skip(message)


HALF_HEADER = "cuda_fp16.h"


def half_header_directory() -> pathlib.Path | None:
    """A directory holding ``cuda_fp16.h`` (and the ``cuda_fp16.hpp`` it includes): the ``nvidia-cuda-runtime`` wheel's,
    ``$CUDA_PATH``'s or ``$CUDA_HOME``'s, or a CUDA toolkit under /usr/local; ``None`` when there is none."""
    candidates = []
    try:
        import nvidia

        candidates += [pathlib.Path(root, package, "include") for root in nvidia.__path__ for package in ("cuda_runtime", "cu13", "cu12")]
    except ImportError:
        pass
    candidates += [pathlib.Path(os.environ[name], "include") for name in ("CUDA_PATH", "CUDA_HOME") if name in os.environ]
    candidates += [pathlib.Path("/usr/local/cuda/include"), *sorted(pathlib.Path("/usr/local").glob("cuda-*/include"), reverse=True)]
    return next((path for path in candidates if (path / HALF_HEADER).is_file() and (path / "cuda_fp16.hpp").is_file()), None)


def half_include_options() -> tuple[str, ...]:
    directory = half_header_directory()
    return () if directory is None else (f"-I{directory}",)


def _needing_half_header(compile_cuda: Callable[[str, str], None]) -> Callable[[str, str], None]:
    def compile_source(source: str, name: str) -> None:
        if HALF_HEADER in source and half_header_directory() is None:
            _missing(f"{name} includes {HALF_HEADER}, which is nowhere here (nvidia-cuda-runtime wheel, $CUDA_PATH, /usr/local/cuda*)")
        compile_cuda(source, name)

    return compile_source


def translation_unit(source: ElementwiseSource | ReductionSource) -> str:
    """A generated kernel as a complete CUDA file (a reduction: its map expression, one element a thread)."""
    if isinstance(source, ReductionSource):
        source = ElementwiseSource(source.name, source.in_params, source.out_params, f"y0 = {source.map_expr};", source.preamble)
    return standalone_source(source)


CUPY_FLOAT16 = """struct float16 {  // what CuPy's ElementwiseKernel gives a float16 parameter (cupy/_core/include/cupy/float16.cuh)
    __half data_;
    __device__ float16() {}
    __device__ float16(float v) : data_(__float2half(v)) {}            // implicit from float
    explicit __device__ float16(const __half& v) : data_(v) {}         // explicit from __half
    __device__ operator float() const { return __half2float(data_); }  // implicit to float, and to nothing else
    float16& operator=(const float16&) = default;
    template <typename T> __device__ float16& operator=(const T& rhs) { *this = static_cast<float16>(rhs); return *this; }
};
"""


def cupy_float16_unit(source: ElementwiseSource) -> str:
    """``translation_unit(source)`` with its float16 parameters typed as CuPy types them (a class converting implicitly
    to and from float only, not ``__half``), so a body that compiles here compiles in CuPy's ElementwiseKernel too."""
    unit = translation_unit(source)
    for old, new in (("const __half* ", "const float16* "), ("__half* ", "float16* "), ("const __half ", "const float16 "), ("__half& ", "float16& ")):
        unit = unit.replace(old, new)
    return unit.replace("#include <cuda_fp16.h>\n", "#include <cuda_fp16.h>\n" + CUPY_FLOAT16, 1)


def _cupy_nvrtc(options: tuple[str, ...]) -> Callable[[str, str], None] | None:
    from kiln.backends.cupy import device_problem

    if device_problem() is not None:  # CuPy's NVRTC asks the driver for the architecture
        return None
    from cupy.cuda import compiler

    def compile_cuda(source: str, name: str) -> None:
        try:
            compiler.compile_using_nvrtc(source, **cupy_nvrtc_arguments(name, options))
        except compiler.CompileException as error:
            raise CudaCompileError(f"{name} is not valid CUDA:\n{error}\n{source}") from None

    return compile_cuda


def cupy_nvrtc_arguments(name: str, options: tuple[str, ...]) -> dict[str, object]:
    """The keywords of ``cupy.cuda.compiler.compile_using_nvrtc(source, ...)`` (the architecture: the device's)."""
    return {"options": options, "filename": f"{name}.cu"}


def _wheel_nvrtc(options: tuple[str, ...]) -> Callable[[str, str], None] | None:
    try:
        import nvidia.cuda_nvrtc
    except ImportError:
        return None
    libraries = sorted(pathlib.Path(list(nvidia.cuda_nvrtc.__path__)[0], "lib").glob("libnvrtc.so.*"))
    return _ctypes_nvrtc(ctypes.CDLL(str(libraries[0])), options) if libraries else None


def _ctypes_nvrtc(library: ctypes.CDLL, extra: tuple[str, ...]) -> Callable[[str, str], None]:
    def compile_cuda(source: str, name: str) -> None:
        program = ctypes.c_void_p()
        if library.nvrtcCreateProgram(ctypes.byref(program), source.encode(), f"{name}.cu".encode(), 0, None, None):
            raise CudaCompileError(f"{name}: nvrtcCreateProgram failed")
        try:
            flags = [f"--gpu-architecture={ARCHITECTURE}", *extra]
            options = (ctypes.c_char_p * len(flags))(*[flag.encode() for flag in flags])
            if library.nvrtcCompileProgram(program, len(flags), options):
                raise CudaCompileError(f"{name} is not valid CUDA:\n{_log(library, program)}\n{source}")
        finally:
            library.nvrtcDestroyProgram(ctypes.byref(program))

    return compile_cuda


def _log(library: ctypes.CDLL, program: ctypes.c_void_p) -> str:
    size = ctypes.c_size_t()
    library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    library.nvrtcGetProgramLog(program, log)
    return log.value.decode(errors="replace")


def _nvcc(options: tuple[str, ...]) -> Callable[[str, str], None] | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None

    def compile_cuda(source: str, name: str) -> None:
        command = [nvcc, "-x", "cu", *options, "-c", "-", "-o", os.devnull]
        result = subprocess.run(command, input=source, text=True, capture_output=True)
        if result.returncode:
            raise CudaCompileError(f"{name} is not valid CUDA:\n{result.stderr[-3000:]}")

    return compile_cuda
