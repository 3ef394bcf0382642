// @part the network's activations and row products, plain and dual (core)
// Activations (docs/model_bin.md) and their derivatives, in float as the network runs.
RAYTRACK_HD inline float activate(unsigned code, float x) {
  switch (code) {
    case kRelu: return x > 0.0f ? x : 0.0f;
    case kSilu: return x / (1.0f + expf(-x));
    case kGelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case kTanh: return tanhf(x);
    default: return x;
  }
}
RAYTRACK_HD inline float activate_slope(unsigned code, float x) {
  switch (code) {
    case kRelu: return x > 0.0f ? 1.0f : 0.0f;
    case kSilu: {
      const float s = 1.0f / (1.0f + expf(-x));
      return s * (1.0f + x * (1.0f - s));
    }
    case kGelu:  // Phi(x) + x phi(x)
      return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) +
             x * 0.39894228040143268f * expf(-0.5f * x * x);
    case kTanh: {
      const float t = tanhf(x);
      return 1.0f - t * t;
    }
    default: return 1.0f;
  }
}
RAYTRACK_HD inline Dual<float> activate(unsigned code, const Dual<float>& x) {
  Dual<float> r;
  r.v = activate(code, x.v);
  const float slope = activate_slope(code, x.v);
  for (int k = 0; k < kTangents; ++k) r.d[k] = slope * x.d[k];
  return r;
}

// acc += w a, in place: the network's inner loop (a dual's value and derivatives updated where
// they are, the same operations as acc + w * a without the temporaries).
RAYTRACK_HD inline void add_product(float& acc, float w, float a) { acc = acc + w * a; }
RAYTRACK_HD inline void add_product(Dual<float>& acc, float w, const Dual<float>& a) {
  acc.v = acc.v + w * a.v;
  for (int k = 0; k < kTangents; ++k) acc.d[k] = acc.d[k] + w * a.d[k];
}

// A layer's row times its input: bias + sum_i w[i] a[i], the sum in kLanes independent
// partial sums (lane k takes i = k, k + kLanes, ...) added at the end, so that a compiler may
// vectorise it for floats without reassociating anything (one running sum it may not). Duals
// sum in the same order, so predict_with_jacobian's values are predict's. The order differs
// from ONNX Runtime's, as every engine's does, within float rounding.
constexpr int kLanes = 8;
template <class Net>
RAYTRACK_HD inline Net row_product(float bias, const float* w, const Net* a, int n) {
  Net lane[kLanes];
  for (int k = 0; k < kLanes; ++k) lane[k] = Traits<Net>::constant(0.0f);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) add_product(lane[k], w[i + k], a[i + k]);
  }
  for (int k = 0; i + k < n; ++k) add_product(lane[k], w[i + k], a[i + k]);
  Net sum = Traits<Net>::constant(bias);
  for (int k = 0; k < kLanes; ++k) sum = sum + lane[k];
  return sum;
}
