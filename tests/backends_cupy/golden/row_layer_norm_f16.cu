// row kernel kiln_layer_norm_f16: one block of 256 threads per row
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
extern "C" __global__ void kiln_layer_norm_f16(const __half* x, const __half* weight, const __half* bias, __half* y, long long cols, float eps) {
    __shared__ float scratch[256];
    const __half* in = x + blockIdx.x * cols;
    __half* out = y + blockIdx.x * cols;
    float sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += __half2float(in[j]);
    const float mean = kiln_block_sum_float(sum, scratch) / (float)cols;
    float squares = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) squares += (__half2float(in[j]) - mean) * (__half2float(in[j]) - mean);
    const float variance = kiln_block_sum_float(squares, scratch) / (float)cols;
    const float scale = (float)1 / sqrt(variance + eps);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = __float2half_rn((__half2float(in[j]) - mean) * scale * __half2float(weight[j]) + __half2float(bias[j]));
}
