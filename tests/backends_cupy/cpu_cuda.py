"""Runs a CUDA ``RawKernel`` source on the CPU: g++ compiles it as C++ behind an emulation header, one std::thread a CUDA thread.

The NVRTC check (cuda_compiler.py) proves a row kernel is valid CUDA; this runs it. The source is the exact
``RawSource.code`` the backend generates, unmodified, with a header prepended: ``__global__``/``__device__`` are
nothing, ``__shared__`` is ``static`` (blocks run one after another, so a function-static array is the block's
shared memory), ``threadIdx`` is ``thread_local``, ``blockIdx`` is per thread too, ``__syncthreads()`` is a
``std::barrier`` of the block's threads, and ``max``/``min``/``exp``/``log``/``sqrt``/``tanh``/``erf``/``pow``/``fabs``
and ``sin``/``cos``/``floor``/``ceil``/``rint``/``atan``/``asin``/``acos`` get CUDA's float and double overloads (and
``__half``, ``__half2float`` and ``__float2half_rn`` are cuda_fp16.h's, on the compiler's ``_Float16``) (``max``/``min`` as
``fmaxf``/``fmax``, which drop a NaN operand, as on the GPU), ``max``/``min``/``abs`` its int and long long ones. Everything sits in ``namespace kiln_cuda``, so these names hide the C library's ``::exp``
(double only) instead of clashing with it; ``extern "C"`` keeps the kernel's symbol plain. Only what the row
kernels, the Philox draw and the elementwise expressions use is emulated (``__umul64hi`` too): 1-D launches, no warp intrinsics, atomics or
dynamic shared memory.

A generated ``launch_<name>(grid, block, <kernel params>)`` starts ``block`` threads once (not per block: starting
256 threads costs about as much as a row); each runs the kernel for every block in turn, with a barrier between
blocks (the shared storage is reused). The threads and the barrier live in a small runtime library compiled once
per session (``RUNTIME``), so a kernel's own translation unit includes no header and compiles in about 0.2 s.
Threads really run concurrently, so a missing ``__syncthreads()`` shows up as a wrong answer, as on the GPU; the
price is about 0.5 ms a barrier for 256 threads on two cores, so ~10 ms a row for these kernels.

```python
run_raw_kernel(softmax_source(DType.f32).code, "kiln_softmax_f32", (rows,), (256,), (x, y, np.int64(cols)))
```
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from typing import Any

import numpy as np
import pytest

RUNTIME = r"""#include <barrier>
#include <thread>
#include <vector>

namespace { std::barrier<>* block_barrier = nullptr; }

extern "C" void kiln_cuda_syncthreads() { block_barrier->arrive_and_wait(); }

// `block` threads, each running its part of every block in turn; the barrier between blocks frees the shared storage.
extern "C" void kiln_cuda_launch(unsigned grid, unsigned block, void (*body)(void*, unsigned, unsigned), void* kernel) {
    std::barrier<> sync(block);
    block_barrier = &sync;
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < block; ++t) {
        threads.emplace_back([=, &sync] {
            for (unsigned b = 0; b < grid; ++b) {
                body(kernel, t, b);
                sync.arrive_and_wait();
            }
        });
    }
}
"""
"""Threads and barriers, compiled once per session: the kernels' own translation units include no headers (fast to compile)."""

HEADER = r"""extern "C" void kiln_cuda_launch(unsigned grid, unsigned block, void (*body)(void*, unsigned, unsigned), void* kernel);
extern "C" void kiln_cuda_syncthreads();

namespace kiln_cuda {
struct dim3 { unsigned x, y, z; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

inline void __syncthreads() { kiln_cuda_syncthreads(); }
inline float __int_as_float(int bits) { return __builtin_bit_cast(float, bits); }
inline double __longlong_as_double(long long bits) { return __builtin_bit_cast(double, bits); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
struct __half { unsigned short bits; };  // cuda_fp16.h's float16, through the compiler's _Float16 (IEEE binary16)
inline float __half2float(__half h) { return (float)__builtin_bit_cast(_Float16, h.bits); }
inline __half __float2half_rn(float v) { return {__builtin_bit_cast(unsigned short, (_Float16)v)}; }  // to nearest even
inline float max(float a, float b) { return __builtin_fmaxf(a, b); }
inline double max(double a, double b) { return __builtin_fmax(a, b); }
inline float min(float a, float b) { return __builtin_fminf(a, b); }
inline double min(double a, double b) { return __builtin_fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline int abs(int x) { return x < 0 ? -x : x; }
inline long long abs(long long x) { return x < 0 ? -x : x; }
inline float fabs(float x) { return __builtin_fabsf(x); }
inline double fabs(double x) { return __builtin_fabs(x); }
inline float tanh(float x) { return __builtin_tanhf(x); }
inline double tanh(double x) { return __builtin_tanh(x); }
inline float erf(float x) { return __builtin_erff(x); }
inline double erf(double x) { return __builtin_erf(x); }
inline float pow(float a, float b) { return __builtin_powf(a, b); }
inline double pow(double a, double b) { return __builtin_pow(a, b); }
inline float exp(float x) { return __builtin_expf(x); }
inline double exp(double x) { return __builtin_exp(x); }
inline float log(float x) { return __builtin_logf(x); }
inline double log(double x) { return __builtin_log(x); }
inline float sqrt(float x) { return __builtin_sqrtf(x); }
inline double sqrt(double x) { return __builtin_sqrt(x); }
inline float sin(float x) { return __builtin_sinf(x); }
inline double sin(double x) { return __builtin_sin(x); }
inline float cos(float x) { return __builtin_cosf(x); }
inline double cos(double x) { return __builtin_cos(x); }
inline float floor(float x) { return __builtin_floorf(x); }
inline double floor(double x) { return __builtin_floor(x); }
inline float ceil(float x) { return __builtin_ceilf(x); }
inline double ceil(double x) { return __builtin_ceil(x); }
inline float rint(float x) { return __builtin_rintf(x); }
inline double rint(double x) { return __builtin_rint(x); }
inline float atan(float x) { return __builtin_atanf(x); }
inline double atan(double x) { return __builtin_atan(x); }
inline float asin(float x) { return __builtin_asinf(x); }
inline double asin(double x) { return __builtin_asin(x); }
inline float acos(float x) { return __builtin_acosf(x); }
inline double acos(double x) { return __builtin_acos(x); }

template <class Kernel>
void launch(unsigned grid, unsigned block, Kernel kernel) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    kiln_cuda_launch(grid, block, [](void* k, unsigned thread, unsigned b) {
        threadIdx = {thread, 0, 0};
        blockIdx = {b, 0, 0};
        (*static_cast<Kernel*>(k))();
    }, &kernel);
}
}  // namespace kiln_cuda

#define __global__
#define __device__
#define __shared__ static
namespace kiln_cuda {
"""
"""Prepended to the kernel source: CUDA's names for C++, inside ``kiln_cuda`` (the source is compiled in that namespace)."""

C_TYPES = {"float": (np.float32, ctypes.c_float), "double": (np.float64, ctypes.c_double),
           "long long": (np.int64, ctypes.c_longlong), "unsigned long long": (np.uint64, ctypes.c_ulonglong),
           "int": (np.int32, ctypes.c_int), "bool": (np.bool_, ctypes.c_bool), "__half": (np.float16, ctypes.c_uint16),
           "unsigned char": (np.uint8, ctypes.c_ubyte), "signed char": (np.int8, ctypes.c_byte), "short": (np.int16, ctypes.c_short)}
"""A kernel parameter's C type (``const`` and ``*`` aside) -> the NumPy dtype it must be given as, and its ctypes type."""

FLAGS = ("-O1", "-std=c++20", "-shared", "-fPIC", "-pthread")

_LIBRARIES: dict[str, ctypes.CDLL] = {}
"""sha256 of the translation unit -> the loaded library (one compile per source per process)."""

_CACHE: list[pathlib.Path] = []
"""The session's directory of compiled libraries, made on first use and removed at exit."""


class CpuCompileError(AssertionError):
    """g++ rejected an emulated kernel; the message is its log and the translation unit."""


def run_raw_kernel(code: str, name: str, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
    """``cupy.RawKernel(code, name)(grid, block, args)`` on the CPU: arrays are passed by pointer, NumPy scalars by value."""
    assert len(grid) == 1 and len(block) == 1, f"{name}: only 1-D launches are emulated, got {grid}, {block}"
    params = kernel_params(code, name)
    values = checked_arguments(name, params, args)
    launch = getattr(_library(translation_unit(code, name, params)), f"launch_{name}")
    launch.restype = None
    launch.argtypes = [ctypes.c_uint, ctypes.c_uint] + [_ctype(t) for t, _ in params]
    launch(grid[0], block[0], *values)


def kernel_params(code: str, name: str) -> list[tuple[str, str]]:
    """``[(c_type, name), ...]`` of the ``extern "C" __global__`` kernel ``name``, e.g. ``("const float*", "x")``."""
    match = re.search(rf'extern "C" __global__ void {re.escape(name)}\(([^)]*)\)', code)
    assert match, f'{name}: no extern "C" __global__ kernel of that name in the source'
    params = [p.strip() for p in match.group(1).split(",") if p.strip()]
    return [(re.sub(r"\s+\*", "*", p[: -len(n)].strip()), n) for p in params for n in re.findall(r"\w+$", p)]


def checked_arguments(name: str, params: list[tuple[str, str]], args: tuple[Any, ...]) -> list[Any]:
    """``args`` as ctypes values, asserting each fits its parameter as CuPy would need it to."""
    assert len(params) == len(args), f"{name}: {len(args)} arguments for {len(params)} parameters"
    return [_argument(f"{name}({n})", t, a) for (t, n), a in zip(params, args)]


def translation_unit(code: str, name: str, params: list[tuple[str, str]]) -> str:
    """Header, the kernel source untouched, and the C launcher ``launch_<name>(grid, block, params...)``."""
    declared = "".join(f", {t} {n}" for t, n in params)
    names = ", ".join(n for _, n in params)
    return f"""{HEADER}#line 1 "{name}.cu"
{code}
}}  // namespace kiln_cuda
using kiln_cuda::__half;

extern "C" void launch_{name}(unsigned grid, unsigned block{declared}) {{
    kiln_cuda::launch(grid, block, [=] {{ kiln_cuda::{name}({names}); }});
}}
"""


def _ctype(c_type: str) -> Any:
    return ctypes.c_void_p if c_type.endswith("*") else C_TYPES[_base(c_type)][1]


def _argument(where: str, c_type: str, value: Any) -> Any:
    """A pointer parameter takes a contiguous array of its element type; a value parameter a NumPy scalar of its type
    (CuPy passes a scalar by its own dtype, so a float64 given for a ``float`` would be garbage on the GPU)."""
    dtype = np.dtype(C_TYPES[_base(c_type)][0])
    if c_type.endswith("*"):
        assert isinstance(value, np.ndarray) and value.flags.c_contiguous, f"{where}: {c_type} needs a contiguous array, got {type(value)}"
        assert value.dtype == dtype, f"{where}: {c_type} given a {value.dtype} array"
        return value.ctypes.data
    assert isinstance(value, np.generic) and value.dtype == dtype, f"{where}: {c_type} needs a NumPy {dtype} scalar, got {value!r}"
    return value.item()


def _base(c_type: str) -> str:
    return re.sub(r"\bconst\b|\*", "", c_type).strip()


def _library(source: str) -> ctypes.CDLL:
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in _LIBRARIES:
        runtime = _cache() / "libkiln_cuda_runtime.so"
        if not runtime.exists():
            _compile(RUNTIME, runtime)
        _LIBRARIES[key] = ctypes.CDLL(str(_compile(source, _cache() / f"{key[:24]}.so", runtime)))
    return _LIBRARIES[key]


def _compile(source: str, library: pathlib.Path, *link: pathlib.Path) -> pathlib.Path:
    rpath = [f"-Wl,-rpath,{_cache()}"] if link else []
    command = [_gxx(), *FLAGS, f"-I{_headers()}", "-x", "c++", "-", "-x", "none", *map(str, link), *rpath, "-o", str(library)]
    result = subprocess.run(command, input=source, text=True, capture_output=True)
    if result.returncode:
        raise CpuCompileError(f"g++ rejected the emulated kernel:\n{result.stderr[-4000:]}\n--- translation unit ---\n{source}")
    return library


def _gxx() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        message = "no g++ here to run CUDA row kernels on the CPU"
        if os.environ.get("KILN_REQUIRE_ORACLES") == "1":
            pytest.fail(f"{message} (KILN_REQUIRE_ORACLES=1)")
        pytest.skip(message)
    return gxx


def _headers() -> pathlib.Path:
    """An include directory whose ``cuda_fp16.h`` is empty: a float16 kernel includes it, and HEADER emulates it."""
    directory = _cache() / "include"
    if not directory.exists():
        directory.mkdir()
        (directory / "cuda_fp16.h").write_text("// emulated by cpu_cuda.HEADER (__half, __half2float, __float2half_rn)\n")
    return directory


def _cache() -> pathlib.Path:
    if not _CACHE:
        _CACHE.append(pathlib.Path(tempfile.mkdtemp(prefix="kiln-cpu-cuda-")))
        atexit.register(shutil.rmtree, _CACHE[0], True)
    return _CACHE[0]
