// row kernel kiln_masked_softmax_f32: one block of 256 threads per row
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
extern "C" __global__ void kiln_masked_softmax_f32(const float* x, const bool* keep, float* y, long long cols, long long mask_rows) {
    __shared__ float scratch[256];
    const float* in = x + blockIdx.x * cols;
    float* out = y + blockIdx.x * cols;
    const bool* kept = keep + (blockIdx.x % mask_rows) * cols;
    const float masked = (float)-1000000000.0;
    float local = __int_as_float(0xff800000);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) local = max(local, (kept[j] ? in[j] : masked));
    const float row_max = kiln_block_max_float(local, scratch);
    float sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += exp((kept[j] ? in[j] : masked) - row_max);
    const float row_sum = kiln_block_sum_float(sum, scratch);
    const float inverse_sum = (float)1 / row_sum;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = exp((kept[j] ? in[j] : masked) - row_max) * inverse_sum;
}
