// row kernel kiln_cross_entropy_grad_rows_f64: one block of 256 threads per row
__device__ void kiln_block_logsumexp_double(double* top, double* total, double* scratch_top, double* scratch_total) {
    scratch_top[threadIdx.x] = *top;
    scratch_total[threadIdx.x] = *total;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const double a = scratch_top[threadIdx.x];
            const double b = scratch_top[threadIdx.x + stride];
            const double m = max(a, b);
            scratch_total[threadIdx.x] = scratch_total[threadIdx.x] * exp(a - m) + scratch_total[threadIdx.x + stride] * exp(b - m);
            scratch_top[threadIdx.x] = m;
        }
        __syncthreads();
    }
    *top = scratch_top[0];
    *total = scratch_total[0];
    __syncthreads();
}
extern "C" __global__ void kiln_cross_entropy_grad_rows_f64(const double* x, const long long* labels, const double* scale, long long scale_stride, double* dx,
                                  long long cols, long long ignore_index, double smoothing) {
    __shared__ double scratch_top[256];
    __shared__ double scratch_total[256];
    const double* in = x + blockIdx.x * cols;
    const long long label = labels[blockIdx.x];
    const bool kept = label != ignore_index;
    double top = (-1.7976931348623157e+308), total = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        const double v = in[j];
        if (v > top) { total = total * exp(top - v) + 1; top = v; } else { total += exp(v - top); }
    }
    kiln_block_logsumexp_double(&top, &total, scratch_top, scratch_total);
    double* out = dx + blockIdx.x * cols;
    const double factor = kept ? scale[blockIdx.x * scale_stride] : (double)0;
    const double inverse_total = (double)1 / total;
    const double spread = smoothing / (double)cols;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        const double target = (j == label ? 1 - smoothing : (double)0) + spread;
        out[j] = (exp(in[j] - top) * inverse_total - target) * factor;
    }
}
