// row kernel kiln_softmax_f16: one block of 256 threads per row
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
extern "C" __global__ void kiln_softmax_f16(const __half* x, __half* y, long long cols) {
    __shared__ float scratch[256];
    const __half* in = x + blockIdx.x * cols;
    __half* out = y + blockIdx.x * cols;
    float local = __int_as_float(0xff800000);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) local = max(local, __half2float(in[j]));
    const float row_max = kiln_block_max_float(local, scratch);
    float sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += exp(__half2float(in[j]) - row_max);
    const float row_sum = kiln_block_sum_float(sum, scratch);
    const float inverse_sum = (float)1 / row_sum;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = __float2half_rn(exp(__half2float(in[j]) - row_max) * inverse_sum);
}
