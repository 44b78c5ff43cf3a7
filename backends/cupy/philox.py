"""``tensor.random_uniform`` on the device: NumPy's own Philox-4x64 stream, so a seed draws the same numbers here.

The NumPy backend draws with ``np.random.Generator(np.random.Philox(key=(seed, stream))).random(shape)``.
That generator is counter-based: its ``j``-th 64-bit word is word ``j % 4`` of the Philox-4x64-10 block of
counter ``(j // 4 + 1, 0, 0, 0)`` under the key (NumPy increments the counter before each block). ``random``
turns words into floats as ``(w >> 11) * 2**-53`` (float64) or, taking the low then the high 32 bits of each
word, ``(u >> 8) * 2**-24`` (float32). Each element is thus a pure function of its flat index, so one thread
computes it with no state: one kernel launch, with the seed read on the device (no host round trip).

```
philox_uniform_source(DType.f32)  ->  RawSource("kiln_philox_uniform_f32", 'extern "C" __global__ void ...(const long long* seed, float* out, long long n, unsigned long long stream)')
```
"""

from __future__ import annotations

from kiln.backends.cupy.expressions import c_type
from kiln.backends.cupy.row_kernels import RawSource
from kiln.compiler.ir.types import DType

MULTIPLIERS = (0xD2E7470EE14C6C93, 0xCA5A826395121157)
"""Philox-4x64's round multipliers (Random123)."""
KEY_BUMPS = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)
"""Added to the two key words between rounds (the golden ratio and sqrt(3) - 1, as 64-bit fractions)."""
ROUNDS = 10


def philox_uniform_source(dtype: DType) -> RawSource:
    """U[0, 1) in ``dtype`` (f32 or f64) for flat indices ``0..n-1``, a grid-stride loop over them."""
    t = c_type(dtype)
    name = f"kiln_philox_uniform_{dtype.value}"
    word_index, convert = ("i >> 1", "(float)(((i & 1) ? (word >> 32) : (word & 0xffffffffULL)) >> 8) * (1.0f / 16777216.0f)") \
        if dtype is DType.f32 else ("i", "(double)(word >> 11) * (1.0 / 9007199254740992.0)")
    m0, m1 = (f"0x{m:X}ULL" for m in MULTIPLIERS)
    b0, b1 = (f"0x{b:X}ULL" for b in KEY_BUMPS)
    code = f"""extern "C" __global__ void {name}(const long long* seed, {t}* out, long long n, unsigned long long stream) {{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x) {{
        const unsigned long long j = {word_index};
        unsigned long long c0 = (j >> 2) + 1, c1 = 0, c2 = 0, c3 = 0;
        unsigned long long k0 = (unsigned long long)seed[0], k1 = stream;
        for (int round = 0; round < {ROUNDS}; ++round) {{
            if (round > 0) {{ k0 += {b0}; k1 += {b1}; }}
            const unsigned long long hi0 = __umul64hi({m0}, c0), lo0 = {m0} * c0;
            const unsigned long long hi1 = __umul64hi({m1}, c2), lo1 = {m1} * c2;
            c0 = hi1 ^ c1 ^ k0; c1 = lo1; c2 = hi0 ^ c3 ^ k1; c3 = lo0;
        }}
        const unsigned long long words[4] = {{c0, c1, c2, c3}};
        const unsigned long long word = words[j & 3];
        out[i] = {convert};
    }}
}}
"""
    return RawSource(name, code)


def launch_shape(n: int, threads: int) -> tuple[tuple[int], tuple[int]]:
    """``((blocks,), (threads,))``: enough blocks to cover ``n`` up to a cap; the grid-stride loop does the rest."""
    return (max(1, min(-(-n // threads), 8192)),), (threads,)
