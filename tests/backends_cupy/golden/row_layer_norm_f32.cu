// row kernel kiln_layer_norm_f32: one block of 256 threads per row
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
extern "C" __global__ void kiln_layer_norm_f32(const float* x, const float* weight, const float* bias, float* y, long long cols, float eps) {
    __shared__ float scratch[256];
    const float* in = x + blockIdx.x * cols;
    float* out = y + blockIdx.x * cols;
    float sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += in[j];
    const float mean = kiln_block_sum_float(sum, scratch) / (float)cols;
    float squares = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) squares += (in[j] - mean) * (in[j] - mean);
    const float variance = kiln_block_sum_float(squares, scratch) / (float)cols;
    const float scale = (float)1 / sqrt(variance + eps);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = (in[j] - mean) * scale * weight[j] + bias[j];
}
