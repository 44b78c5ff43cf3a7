// elementwise kernel kiln_ew_cast_mul_sub_c402e73911
// in:  float32 x0, float64 x1, float64 x2, float32 x3, float32 x4, float32 x5, float32 x6, float32 x7, float32 x8, float32 x9, int64 x10, float64 x11, float64 x12, float32 x13
// out: float32 y0, float32 y1, float32 y2
const double t14 = (double)(x0);
const double t15 = (t14 * x1);
const double t16 = (x2 - t15);
const float t17 = (float)(t16);
const float t18 = (x3 * t17);
const float t19 = (x4 - x5);
const float t20 = (x6 * t19);
const float t21 = (t20 + x5);
const float t22 = (x7 * x8);
const float t23 = (x9 * x4);
const float t24 = (t23 * x4);
const float t25 = (t24 + t22);
const double t26 = (double)(x10);
const double t27 = pow(x11, t26);
const double t28 = (x2 - t27);
const double t29 = (t14 / t28);
const double t30 = pow(x12, t26);
const double t31 = (x2 - t30);
const double t32 = sqrt(t31);
const float t33 = (float)(t32);
const float t34 = sqrt(t25);
const float t35 = (t34 / t33);
const float t36 = (t35 + x13);
const double t37 = (-t29);
const float t38 = (float)(t37);
const float t39 = (t38 * t21);
const float t40 = (t39 / t36);
const float t41 = (t18 + t40);
y0 = t21;
y1 = t25;
y2 = t41;
