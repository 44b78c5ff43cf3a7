// elementwise kernel kiln_ew_add_relu_a5cbb93635
// in:  float32 x0, float32 x1
// out: float32 y0
const float t2 = (x0 + x1);
const float t3 = (t2 < (float)0 ? (float)0 : t2);
y0 = t3;
