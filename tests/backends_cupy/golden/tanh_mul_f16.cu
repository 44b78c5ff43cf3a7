// elementwise kernel kiln_ew_cast_tanh_cast_d9c900790e
// in:  float16 x0, float16 x1
// out: float16 y0
#include <cuda_fp16.h>
const float h0 = (float)(x0);
const float h1 = (float)(x1);
const float t2 = (float)(h0);
const float t3 = tanh(t2);
const float t4 = __half2float(__float2half_rn((float)(t3)));
const float t5 = (float)(t4);
const float t6 = (float)(h1);
const float t7 = (t5 * t6);
const float t8 = __half2float(__float2half_rn((float)(t7)));
y0 = __float2half_rn(t8);
