// reduction kernel kiln_red_sub_exp_reduce_sum_767dce98dd over axes (1,), keepdims=True
// in:  float32 x0, float32 x1
// out: float32 y0
__device__ float kiln_red_sub_exp_reduce_sum_767dce98dd_map(float x0, float x1) {
    const float t2 = (x0 - x1);
    const float t3 = exp(t2);
    return t3;
}
// map:    kiln_red_sub_exp_reduce_sum_767dce98dd_map(x0, x1)
// reduce: a + b (identity (float)0, in float)
// post:   y0 = a
