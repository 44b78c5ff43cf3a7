// row kernel kiln_softmax_grad_f16: one block of 256 threads per row
#include <cuda_fp16.h>
__device__ float kiln_block_sum_float(float value, float* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const float a = scratch[threadIdx.x];
            const float b = scratch[threadIdx.x + stride];
            scratch[threadIdx.x] = a + b;
        }
        __syncthreads();
    }
    const float result = scratch[0];
    __syncthreads();
    return result;
}
__device__ float kiln_block_max_float(float value, float* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const float a = scratch[threadIdx.x];
            const float b = scratch[threadIdx.x + stride];
            scratch[threadIdx.x] = max(a, b);
        }
        __syncthreads();
    }
    const float result = scratch[0];
    __syncthreads();
    return result;
}
extern "C" __global__ void kiln_softmax_grad_f16(const __half* y, const __half* g, __half* dx, long long cols) {
    __shared__ float scratch[256];
    const long long offset = blockIdx.x * cols;
    float dot = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) dot += __half2float(g[offset + j]) * __half2float(y[offset + j]);
    const float row_dot = kiln_block_sum_float(dot, scratch);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) dx[offset + j] = __float2half_rn(__half2float(y[offset + j]) * (__half2float(g[offset + j]) - row_dot));
}
