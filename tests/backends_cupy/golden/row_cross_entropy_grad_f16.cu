// row kernel kiln_cross_entropy_grad_rows_f16: one block of 256 threads per row
#include <cuda_fp16.h>
__device__ void kiln_block_logsumexp_float(float* top, float* total, float* scratch_top, float* scratch_total) {
    scratch_top[threadIdx.x] = *top;
    scratch_total[threadIdx.x] = *total;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const float a = scratch_top[threadIdx.x];
            const float b = scratch_top[threadIdx.x + stride];
            const float m = max(a, b);
            scratch_total[threadIdx.x] = scratch_total[threadIdx.x] * exp(a - m) + scratch_total[threadIdx.x + stride] * exp(b - m);
            scratch_top[threadIdx.x] = m;
        }
        __syncthreads();
    }
    *top = scratch_top[0];
    *total = scratch_total[0];
    __syncthreads();
}
extern "C" __global__ void kiln_cross_entropy_grad_rows_f16(const __half* x, const long long* labels, const float* scale, long long scale_stride, __half* dx,
                                  long long cols, long long ignore_index, float smoothing) {
    __shared__ float scratch_top[256];
    __shared__ float scratch_total[256];
    const __half* in = x + blockIdx.x * cols;
    const long long label = labels[blockIdx.x];
    const bool kept = label != ignore_index;
    float top = (-3.402823466e+38f), total = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = __half2float(in[j]);
        if (v > top) { total = total * exp(top - v) + 1; top = v; } else { total += exp(v - top); }
    }
    kiln_block_logsumexp_float(&top, &total, scratch_top, scratch_total);
    __half* out = dx + blockIdx.x * cols;
    const float factor = kept ? scale[blockIdx.x * scale_stride] : (float)0;
    const float inverse_total = (float)1 / total;
    const float spread = smoothing / (float)cols;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        const float target = (j == label ? 1 - smoothing : (float)0) + spread;
        out[j] = __float2half_rn((exp(__half2float(in[j]) - top) * inverse_total - target) * factor);
    }
}
