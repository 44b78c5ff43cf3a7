// row kernel kiln_layer_norm_grad_f16: one block of 256 threads per row
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
extern "C" __global__ void kiln_layer_norm_grad_f16(const __half* x, const __half* weight, const __half* g, __half* dx, float* partial_weight, float* partial_bias,
                                  long long rows, long long cols, long long rows_per_block, float eps) {
    __shared__ float scratch[256];
    float* d_weight = partial_weight + blockIdx.x * cols;
    float* d_bias = partial_bias + blockIdx.x * cols;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) { d_weight[j] = 0; d_bias[j] = 0; }
    const long long first = blockIdx.x * rows_per_block;
    const long long end = first + rows_per_block < rows ? first + rows_per_block : rows;
    for (long long row = first; row < end; ++row) {
        const __half* in = x + row * cols;
        const __half* grad = g + row * cols;
        __half* out = dx + row * cols;
        float sum = 0;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += __half2float(in[j]);
        const float mean = kiln_block_sum_float(sum, scratch) / (float)cols;
        float squares = 0;
        float dot = 0;
        float centered_dot = 0;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            const float centered = __half2float(in[j]) - mean;
            const float d_normalized = __half2float(grad[j]) * __half2float(weight[j]);
            squares += centered * centered;
            dot += d_normalized;
            centered_dot += d_normalized * centered;
        }
        const float inverse_std = (float)1 / sqrt(kiln_block_sum_float(squares, scratch) / (float)cols + eps);
        const float mean_d = kiln_block_sum_float(dot, scratch) / (float)cols;
        const float mean_dx = kiln_block_sum_float(centered_dot, scratch) / (float)cols * inverse_std;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            const float normalized = (__half2float(in[j]) - mean) * inverse_std;
            out[j] = __float2half_rn(inverse_std * (__half2float(grad[j]) * __half2float(weight[j]) - mean_d - normalized * mean_dx));
            d_weight[j] += __half2float(grad[j]) * normalized;
            d_bias[j] += __half2float(grad[j]);
        }
    }
}
