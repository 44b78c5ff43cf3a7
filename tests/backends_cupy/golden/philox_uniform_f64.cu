// row kernel kiln_philox_uniform_f64: one block of 256 threads per row
extern "C" __global__ void kiln_philox_uniform_f64(const long long* seed, double* out, long long n, unsigned long long stream) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x) {
        const unsigned long long j = i;
        unsigned long long c0 = (j >> 2) + 1, c1 = 0, c2 = 0, c3 = 0;
        unsigned long long k0 = (unsigned long long)seed[0], k1 = stream;
        for (int round = 0; round < 10; ++round) {
            if (round > 0) { k0 += 0x9E3779B97F4A7C15ULL; k1 += 0xBB67AE8584CAA73BULL; }
            const unsigned long long hi0 = __umul64hi(0xD2E7470EE14C6C93ULL, c0), lo0 = 0xD2E7470EE14C6C93ULL * c0;
            const unsigned long long hi1 = __umul64hi(0xCA5A826395121157ULL, c2), lo1 = 0xCA5A826395121157ULL * c2;
            c0 = hi1 ^ c1 ^ k0; c1 = lo1; c2 = hi0 ^ c3 ^ k1; c3 = lo0;
        }
        const unsigned long long words[4] = {c0, c1, c2, c3};
        const unsigned long long word = words[j & 3];
        out[i] = (double)(word >> 11) * (1.0 / 9007199254740992.0);
    }
}
