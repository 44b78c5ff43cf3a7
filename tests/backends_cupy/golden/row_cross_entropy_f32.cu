// row kernel kiln_cross_entropy_rows_f32: one block of 256 threads per row
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
extern "C" __global__ void kiln_cross_entropy_rows_f32(const float* x, const long long* labels, float* loss, long long cols, long long ignore_index, float smoothing) {
    __shared__ float scratch_top[256];
    __shared__ float scratch_total[256];
    const float* in = x + blockIdx.x * cols;
    const long long label = labels[blockIdx.x];
    const bool kept = label != ignore_index;
    float top = (-3.402823466e+38f), total = 0, sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = in[j];
        if (v > top) { total = total * exp(top - v) + 1; top = v; } else { total += exp(v - top); } sum += v;
    }
    kiln_block_logsumexp_float(&top, &total, scratch_top, scratch_total);
    const float row_sum = kiln_block_sum_float(sum, scratch_top);
    if (threadIdx.x == 0) {
        const float picked = (label >= 0 && label < cols) ? in[label] : __int_as_float(0x7fc00000);  // out of range: the deferred check raises
        const float spread = smoothing != 0 ? smoothing * row_sum / (float)cols : (float)0;  // -inf logits: no 0 * -inf
        loss[blockIdx.x] = kept ? top + log(total) - (1 - smoothing) * picked - spread : (float)0;
    }
}
