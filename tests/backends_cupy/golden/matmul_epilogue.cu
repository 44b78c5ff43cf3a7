// elementwise kernel kiln_epilogue_add_relu_231753b3e2
// in:  float32 x0, float32 x1
// out: float32 y0
const float t4 = (x0 + x1);
const float t5 = (t4 < (float)0 ? (float)0 : t4);
y0 = t5;
