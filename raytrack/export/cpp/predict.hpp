// @part one track: evaluate, predict and predict_with_jacobian (core)
// One track (docs/model_bin.md, "Forward pass"): the formulation in Value<R> from the state s
// and the leg z0 -> z1, the network in float (a, b: scratch of the widest layer's size), the
// decoding in Value<R>. With S = Dual<Value<R>, R> every output carries its derivatives along
// the seeded tangents.
template <class R, class S>
RAYTRACK_HD void evaluate(const Model<R>& m, const S s[5], R z0, R z1, S out[4],
                          typename Traits<S>::Net* a, typename Traits<S>::Net* b) {
  using T = Traits<S>;
  using Net = typename T::Net;
  using V = Value<R>;
  S base_end[kOutputs];
  base_prediction(m, s, z0, z1, base_end);

  S features[kMaxFeatures];
  for (int j = 0; j < 5; ++j) features[j] = s[j];
  features[5] = T::constant(z0);
  features[6] = T::constant(z1);
  if (m.inputs == kPhysics) {
    const V dz = V(z1) - z0;
    V i1, i2;
    integrals(m.axis.at(z0), m.axis.at(z1), dz, i1, i2);
    S straight[kOutputs];
    line(s, dz, straight);
    features[7] = T::constant(dz);
    features[8] = T::constant(i1);
    features[9] = T::constant(i2);
    for (int j = 0; j < kOutputs; ++j) features[10 + j] = base_end[j] - straight[j];
  }

  // The network in float, as torch runs it: features rounded to float, then standardised.
  const int nf = m.n_features();
  for (int i = 0; i < nf; ++i) {
    a[i] = (T::narrow(features[i]) - m.input_mean[i]) / m.input_std[i];
  }
  for (int k = 0; k < m.n_layers; ++k) {
    const Layer& l = m.layers[k];
    const bool last = k + 1 == m.n_layers;
    for (int o = 0; o < l.rows; ++o) {
      const Net acc = row_product(l.bias[o], l.weight + o * l.cols, a, l.cols);  // row o of W
      b[o] = last ? acc : activate(m.activation, acc);
    }
    Net* swap = a;
    a = b;
    b = swap;
  }

  // Target scale: 1, or qop, times max(|dz| / 1000, min_leg_m)^(leg_power, leg_power - 1).
  S scale[kOutputs];
  for (int j = 0; j < kOutputs; ++j) {
    scale[j] = m.target == kResidualQop ? s[4] : T::constant(R(1));
  }
  if (m.target != kRaw && m.leg_power != R(0)) {
    const R leg = max_(fabs_(z1 - z0) / R(1000), m.min_leg_m);
    const R pos = pow_(leg, m.leg_power), slope = pow_(leg, m.leg_power - R(1));
    scale[0] = scale[0] * pos;
    scale[1] = scale[1] * pos;
    scale[2] = scale[2] * slope;
    scale[3] = scale[3] * slope;
  }
  for (int j = 0; j < kOutputs; ++j) {
    const S enc =
        T::widen(a[j]) * static_cast<R>(m.target_std[j]) + static_cast<R>(m.target_mean[j]);
    out[j] = m.target == kRaw ? enc : base_end[j] + scale[j] * enc;
  }
}

// in[7] = x, y, tx, ty, qop, z_start, z_end -> out[4] = x, y, tx, ty at z_end (rounded to float).
template <class R>
RAYTRACK_HD void predict(const Model<R>& m, const float in[7], float out[4], float* a, float* b) {
  using V = Value<R>;
  V s[5];
  for (int j = 0; j < 5; ++j) s[j] = V(static_cast<R>(in[j]));
  V end[kOutputs];
  evaluate(m, s, static_cast<R>(in[5]), static_cast<R>(in[6]), end, a, b);
  for (int j = 0; j < kOutputs; ++j) out[j] = to_float(end[j]);
}

// predict, plus jac[5 * a + b] = d out[a] / d in[b] for b < 5 (row-major 4 x 5), exact up to
// rounding (forward-mode derivatives of the same arithmetic). out is predict's.
template <class R>
RAYTRACK_HD void predict_with_jacobian(const Model<R>& m, const float in[7], float out[4],
                                       float jac[20], Dual<float>* a, Dual<float>* b) {
  using D = Dual<Value<R>, R>;
  D s[5];
  for (int j = 0; j < 5; ++j) {
    s[j] = D::constant(Value<R>(static_cast<R>(in[j])));
    s[j].d[j] = R(1);
  }
  D end[kOutputs];
  evaluate(m, s, static_cast<R>(in[5]), static_cast<R>(in[6]), end, a, b);
  for (int j = 0; j < kOutputs; ++j) {
    out[j] = to_float(end[j].v);
    for (int k = 0; k < kTangents; ++k) jac[kTangents * j + k] = static_cast<float>(end[j].d[k]);
  }
}
