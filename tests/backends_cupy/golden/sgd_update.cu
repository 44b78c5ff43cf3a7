// elementwise kernel kiln_ew_mul_sub_f755e65875
// in:  float32 x0, float32 x1, float32 x2
// out: float32 y0
const float t3 = (x0 * x1);
const float t4 = (x2 - t3);
y0 = t4;
