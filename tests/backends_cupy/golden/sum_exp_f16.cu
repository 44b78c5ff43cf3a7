// reduction kernel kiln_red_cast_exp_cast_39b108b6dd over axes (0,), keepdims=False
// in:  float16 x0
// out: float16 y0
#include <cuda_fp16.h>
__device__ float kiln_red_cast_exp_cast_39b108b6dd_map(float x0) {
    const float t1 = (float)(x0);
    const float t2 = exp(t1);
    const float t3 = __half2float(__float2half_rn((float)(t2)));
    const float t4 = (float)(t3);
    return t4;
}
// map:    kiln_red_cast_exp_cast_39b108b6dd_map(x0)
// reduce: a + b (identity (float)0, in float)
// post:   y0 = __float2half_rn(__half2float(__float2half_rn((float)(a))))
