// row kernel kiln_log_softmax_f64: one block of 256 threads per row
__device__ double kiln_block_sum_double(double value, double* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const double a = scratch[threadIdx.x];
            const double b = scratch[threadIdx.x + stride];
            scratch[threadIdx.x] = a + b;
        }
        __syncthreads();
    }
    const double result = scratch[0];
    __syncthreads();
    return result;
}
__device__ double kiln_block_max_double(double value, double* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const double a = scratch[threadIdx.x];
            const double b = scratch[threadIdx.x + stride];
            scratch[threadIdx.x] = max(a, b);
        }
        __syncthreads();
    }
    const double result = scratch[0];
    __syncthreads();
    return result;
}
extern "C" __global__ void kiln_log_softmax_f64(const double* x, double* y, long long cols) {
    __shared__ double scratch[256];
    const double* in = x + blockIdx.x * cols;
    double* out = y + blockIdx.x * cols;
    double local = __longlong_as_double(0xfff0000000000000ULL);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) local = max(local, in[j]);
    const double row_max = kiln_block_max_double(local, scratch);
    double sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += exp(in[j] - row_max);
    const double row_sum = kiln_block_sum_double(sum, scratch);
    const double log_sum = log(row_sum);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = in[j] - row_max - log_sum;
}
