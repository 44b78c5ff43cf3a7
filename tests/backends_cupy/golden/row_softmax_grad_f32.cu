// row kernel kiln_softmax_grad_f32: one block of 256 threads per row
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
extern "C" __global__ void kiln_softmax_grad_f32(const float* y, const float* g, float* dx, long long cols) {
    __shared__ float scratch[256];
    const long long offset = blockIdx.x * cols;
    float dot = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) dot += g[offset + j] * y[offset + j];
    const float row_dot = kiln_block_sum_float(dot, scratch);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) dx[offset + j] = y[offset + j] * (g[offset + j] - row_dot);
}
