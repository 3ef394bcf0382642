// @part Layer, Model and the five bases: line, kick, axial, expansion, path (core)
struct Layer {
  int rows, cols;       // out_features, in_features
  const float* weight;  // rows * cols, row-major: W[o][i] at o * cols + i
  const float* bias;    // rows
};

// Everything a prediction reads, as plain numbers and pointers (R: the formulation's type).
template <class R>
struct Model {
  unsigned activation, target, base, inputs;
  R leg_power, kappa, min_uz_squared, min_leg_m;
  R kappa_lo;  // kappa - R(kappa) (0 in double)
  Axis<R> axis;
  int n_quad;
  const R* nodes;       // Gauss-Legendre on [0, 1]
  const R* weights;     // their weights
  const R* nodes_lo;    // may be null: their rounding errors, as the tables'
  const R* weights_lo;
  int passes;              // path base: passes along the path
  const R* integration;    // path base: (n_quad, n_quad) row-major S, int_0^t_k = sum_j S_kj
  const float* input_mean;
  const float* input_std;
  const float* target_mean;
  const float* target_std;
  int n_layers;
  const Layer* layers;

  RAYTRACK_HD int n_features() const { return inputs == kPhysics ? 14 : 7; }
  RAYTRACK_HD Value<R> kappa_value() const { return join(kappa, kappa_lo); }
  RAYTRACK_HD Value<R> node(int k) const { return join(nodes[k], nodes_lo ? nodes_lo[k] : R(0)); }
  RAYTRACK_HD Value<R> weight(int k) const {
    return join(weights[k], weights_lo ? weights_lo[k] : R(0));
  }
};

// The state s = (x, y, tx, ty, qop) as S (plain or dual); z0, z1 plain, dz a value. (step 2)
template <class D, class S>
RAYTRACK_HD void line(const S s[5], const D& dz, S out[4]) {
  out[0] = s[0] + s[2] * dz;
  out[1] = s[1] + s[3] * dz;
  out[2] = s[2];
  out[3] = s[3];
}

// I1 = int By dz (T mm), I2 = int (z1 - z) By dz (T mm^2) between the two table points.
template <class R>
RAYTRACK_HD void integrals(const Point<R>& s, const Point<R>& e, const Value<R>& dz,
                           Value<R>& i1, Value<R>& i2) {
  i1 = e.f - s.f;
  i2 = e.h - s.h - s.f * dz;
}

// First-order kick: slopes and the factor kappa qop N taken at the start.
template <class R, class S>
RAYTRACK_HD void kick(const Model<R>& m, const S s[5], R z0, R z1, S out[4]) {
  using V = Value<R>;
  const S &x = s[0], &y = s[1], &tx = s[2], &ty = s[3], &qop = s[4];
  const V dz = V(z1) - z0;
  V i1, i2;
  integrals(m.axis.at(z0), m.axis.at(z1), dz, i1, i2);
  const S k = m.kappa_value() * qop * sqrt_(R(1) + tx * tx + ty * ty);
  const S bend_x = -k * (R(1) + tx * tx), bend_y = -k * tx * ty;
  out[0] = x + tx * dz + bend_x * i2;
  out[1] = y + ty * dz + bend_y * i2;
  out[2] = tx + bend_x * i1;
  out[3] = ty + bend_y * i1;
}

template <class R, class S>
RAYTRACK_HD S inverse_uz(const Model<R>& m, const S& ux, const S& uy) {
  return R(1) / sqrt_(max_(R(1) - ux * ux - uy * uy, m.min_uz_squared));
}

template <class R, class S>
RAYTRACK_HD void slopes(const Model<R>& m, const S& ux, const S& uy, S& tx, S& ty) {
  const S inv_uz = inverse_uz(m, ux, uy);
  tx = ux * inv_uz;
  ty = uy * inv_uz;
}

// Exact motion in B = (0, By(z), 0): ux = tx / N changes by -kappa qop (F(z) - F(z0)), uy is
// constant; the positions are the quadrature of the slopes over the leg.
template <class R, class S>
RAYTRACK_HD void axial(const Model<R>& m, const S s[5], R z0, R z1, S out[4]) {
  using V = Value<R>;
  const S &x = s[0], &y = s[1], &tx = s[2], &ty = s[3], &qop = s[4];
  const S inv_n = R(1) / sqrt_(R(1) + tx * tx + ty * ty);
  const S ux0 = tx * inv_n, uy = ty * inv_n, kq = m.kappa_value() * qop;
  const S free = R(1) - uy * uy;  // 1 - uy^2, the same at every node
  const V f0 = m.axis.at(z0).f, dz = V(z1) - z0;
  S sum_x = Traits<S>::constant(R(0)), sum_y = Traits<S>::constant(R(0));
  for (int k = 0; k < m.n_quad; ++k) {
    const S ux = ux0 - kq * (m.axis.at(dz * m.node(k) + z0).f - f0);
    const S inv_uz = R(1) / sqrt_(max_(free - ux * ux, m.min_uz_squared));
    sum_x = sum_x + ux * inv_uz * m.weight(k);
    sum_y = sum_y + uy * inv_uz * m.weight(k);
  }
  S tx1, ty1;
  slopes(m, ux0 - kq * (m.axis.at(z1).f - f0), uy, tx1, ty1);
  out[0] = x + dz * sum_x;
  out[1] = y + dz * sum_y;
  out[2] = tx1;
  out[3] = ty1;
}

// The axial transport plus the field off the symmetry plane (By = f - y^2/2 f'', Bz = y f',
// f = By on the axis) evaluated at the quadrature nodes of the on-axis trajectory (its slopes,
// and y with the kick's bending in y) and integrated to first order: d slope = int g dz,
// d position = int (z1 - z) g dz (raytrack.physics.transports.expansion_transport).
template <class R, class S>
RAYTRACK_HD void expansion(const Model<R>& m, const S s[5], R z0, R z1, S out[4]) {
  using V = Value<R>;
  const S &x = s[0], &y = s[1], &tx = s[2], &ty = s[3], &qop = s[4];
  const S norm = sqrt_(R(1) + tx * tx + ty * ty);
  const S ux0 = tx / norm, uy = ty / norm, kq = m.kappa_value() * qop;
  const S free = R(1) - uy * uy;  // 1 - uy^2, the same at every node
  const V dz = V(z1) - z0;
  const Point<R> st = m.axis.at(z0);
  const S bend_y = kq * norm * tx * ty;  // the kick's factor of the y bending
  const S zero = Traits<S>::constant(R(0));
  S sum_tx = zero, sum_ty = zero, sum_dtx = zero, sum_dty = zero;
  S lever_dtx = zero, lever_dty = zero;
  for (int k = 0; k < m.n_quad; ++k) {
    const V c = m.node(k), w = m.weight(k), step = dz * c;  // step = zk - z0
    const Point<R> p = m.axis.at(step + z0);
    const S ux = ux0 - kq * (p.f - st.f);
    const S inv_uz = R(1) / sqrt_(max_(free - ux * ux, m.min_uz_squared));
    const S txk = ux * inv_uz, tyk = uy * inv_uz;
    const V lever = p.h - st.h - st.f * step;  // int_z0^zk (zk - z) By dz
    const S yk = y + ty * step - bend_y * lever;
    // d tx / dz = kk (tyk Bz - (1 + txk^2) By_off), d ty / dz = -kk (txk tyk By_off + txk Bz)
    // with By_off = -yk^2/2 d2By, Bz = yk dBy and kk = kappa qop N along the path (N = 1 / uz),
    // factored to fewer operations.
    const S g = kq * inv_uz * yk, half = yk * (R(0.5) * p.d2by);
    const S dtx = g * (tyk * p.dby + (R(1) + txk * txk) * half);
    const S dty = -(g * txk) * (p.dby - tyk * half);
    const V lw = w * (R(1) - c);
    sum_tx = sum_tx + txk * w;
    sum_ty = sum_ty + tyk * w;
    sum_dtx = sum_dtx + dtx * w;
    sum_dty = sum_dty + dty * w;
    lever_dtx = lever_dtx + dtx * lw;
    lever_dty = lever_dty + dty * lw;
  }
  S tx1, ty1;
  slopes(m, ux0 - kq * (m.axis.at(z1).f - st.f), uy, tx1, ty1);
  out[0] = x + dz * sum_tx + dz * dz * lever_dtx;
  out[1] = y + dz * sum_ty + dz * dz * lever_dty;
  out[2] = tx1 + dz * sum_dtx;
  out[3] = ty1 + dz * sum_dty;
}

// sum_j row[j] v[j] over n terms, in order (a row of the path's integration matrix times the
// values at the nodes).
template <class R, class S>
RAYTRACK_HD inline S dot_row(const R* row, const S* v, int n) {
  S sum = Traits<S>::constant(R(0));
  for (int j = 0; j < n; ++j) sum = sum + row[j] * v[j];
  return sum;
}
// In two floats: Ogita, Rump and Oishi's Dot2, the products' and the sums' rounding errors
// gathered in one float (as accurate as the plain two-float sum, at half its operations).
template <class T>
RAYTRACK_HD inline Wide<T> dot2(const T* row, const Wide<T>* v, int n) {
  T sum = T(0), error = T(0);
  for (int j = 0; j < n; ++j) {
    const Wide<T> product = two_prod(row[j], v[j].hi);
    const Wide<T> total = two_sum(sum, product.hi);
    sum = total.hi;
    error = error + ((product.lo + total.lo) + row[j] * v[j].lo);
  }
  return fast_two_sum(sum, error);
}
template <class T>
RAYTRACK_HD inline Wide<T> dot_row(const T* row, const Wide<T>* v, int n) {
  return dot2(row, v, n);
}
// Dual numbers of two floats: the value as dot2 (predict's), the derivatives in order.
template <class T>
RAYTRACK_HD inline Dual<Wide<T>, T> dot_row(const T* row, const Dual<Wide<T>, T>* v, int n) {
  Dual<Wide<T>, T> r;
  T sum = T(0), error = T(0);
  for (int k = 0; k < kTangents; ++k) r.d[k] = T(0);
  for (int j = 0; j < n; ++j) {
    const Wide<T> product = two_prod(row[j], v[j].v.hi);
    const Wide<T> total = two_sum(sum, product.hi);
    sum = total.hi;
    error = error + ((product.lo + total.lo) + row[j] * v[j].v.lo);
    for (int k = 0; k < kTangents; ++k) r.d[k] = r.d[k] + row[j] * v[j].d[k];
  }
  r.v = fast_two_sum(sum, error);
  return r;
}

// The midplane's x dependence d = b(x, z) - b(0, z) at the table point p (inside the tables)
// and x: d, dd/dx, d2d/dx2 + d2d/dz2 and dd/dz (T, T/mm, T/mm^2, T/mm). The coefficients are
// linear in z between nodes, their first and second dz derivatives too (version 4: the second
// the slopes of the first, constant on each interval); d is their polynomial in
// v = clamp(x / x_scale, -1, 1) (Horner's rule).
template <class R, class L>
RAYTRACK_HD void midplane(const Axis<R>& a, const Point<R>& p, const L& x, L& d, L& d_dx,
                          L& laplacian, L& d_dz) {
  const int degree = a.x_degree, n = a.n, i = p.i;
  const R w = p.u, rest = R(1) - w;
  const L v = min_(max_(x / a.x_scale, R(-1)), R(1));
  L value = Traits<L>::constant(R(0)), slope = value, curve = value, du = value, du2 = value;
  for (int q = degree; q >= 1; --q) {  // the coefficient of v^q and its dz derivative
    const R* c = a.x + (q - 1) * n;
    const R* g = a.x + (degree + q - 1) * n;
    const R cq = c[i] * rest + c[i + 1] * w;
    const R cz = a.continuous_x_curvature  // the coefficient's second dz derivative
                     ? a.x_node_curvature(q, i) * rest + a.x_node_curvature(q, i + 1) * w
                     : a.x_slope_rise(q, i, i + 1) / a.spacing;
    value = value * v + cq;
    slope = slope * v + (g[i] * rest + g[i + 1] * w);
    curve = curve * v + cz;
    du = du * v + R(q) * cq;
    if (q >= 2) du2 = du2 * v + R(q * (q - 1)) * cq;
  }
  d = value * v;
  d_dx = du / a.x_scale;
  laplacian = du2 / (a.x_scale * a.x_scale) + curve * v;
  d_dz = slope * v;
}

// d(ux, uy)/dz from the field beyond the on-axis By at a node (x, y) of the path: By = -y^2/2
// f'', Bz = y f' and, with x tables, dBy = d - y^2/2 (d_xx + d_zz), Bx = y d_x, dBz = y d_z.
// inv_uz: 1 / uz of (ux, uy) (inverse_uz).
template <class R, class L>
RAYTRACK_HD void path_force(const Model<R>& m, const Point<R>& p, const L& x, const L& y,
                            const L& ux, const L& uy, const L& inv_uz, const L& kq, L& gx,
                            L& gy) {
  const L half_y2 = R(0.5) * y * y;
  L by = -half_y2 * p.d2by, bz = y * p.dby;
  if (m.axis.x_degree > 0 && p.inside) {
    // The polynomial in the plain arithmetic (Lite) of L: its coefficients are R numbers.
    using Lite = typename Traits<L>::Lite;
    Lite d, d_dx, laplacian, d_dz;
    midplane(m.axis, p, Traits<L>::lite(x), d, d_dx, laplacian, d_dz);
    by = by + Traits<L>::full(d) - half_y2 * Traits<L>::full(laplacian);
    bz = bz + y * Traits<L>::full(d_dz);
    gx = -kq * (by - uy * bz * inv_uz);
    gy = kq * (y * Traits<L>::full(d_dx) - ux * bz * inv_uz);
  } else {
    gx = -kq * (by - uy * bz * inv_uz);
    gy = -kq * (ux * bz * inv_uz);
  }
}

// The on-axis transport corrected for the whole field along the track's own path
// (raytrack.physics.transports.path_transport): in direction cosines the on-axis By changes ux by exactly
// -kappa qop dF; `passes` times the rest of the field is evaluated at the quadrature nodes of
// the current path (first: the straight line plus the kick's bending) and integrated to every
// node (the matrix S) for the directions there, and their slopes for the next path. All of it
// in S: a track's field depends on where it is, so every pass's path needs the precision of
// the last one.
template <class R, class S>
RAYTRACK_HD void path(const Model<R>& m, const S s[5], R z0, R z1, S out[4]) {
  using V = Value<R>;
  using T = Traits<S>;
  const S &x = s[0], &y = s[1], &tx = s[2], &ty = s[3], &qop = s[4];
  const S norm = sqrt_(R(1) + tx * tx + ty * ty);
  const S ux0 = tx / norm, uy0 = ty / norm, kq = m.kappa_value() * qop;
  const V dz = V(z1) - z0;
  const Point<R> st = m.axis.at(z0);
  // Never more nodes than the arrays hold (the loaders refuse such a model; a header's
  // arrays are its model's).
  const int nk = min_(m.n_quad, kMaxPathNodes);
  const S zero = T::constant(R(0));
  // Zeroed: with a header's one-node arrays (a model of another base) g++ cannot tell that
  // nothing is read unwritten (-Wmaybe-uninitialized).
  Point<R> at[kMaxPathNodes] = {};
  S ux_axis[kMaxPathNodes] = {}, ux[kMaxPathNodes] = {}, uy[kMaxPathNodes] = {};
  S px[kMaxPathNodes] = {}, py[kMaxPathNodes] = {}, gx[kMaxPathNodes] = {}, gy[kMaxPathNodes] = {};
  S inv_uz[kMaxPathNodes] = {};  // 1 / uz at the nodes: the force's, and the path's slopes
  const S bend0 = kq * norm, lever_x = R(1) + tx * tx, lever_y = tx * ty;
  for (int k = 0; k < nk; ++k) {
    const V step = dz * m.node(k);  // z - z0 at the node
    at[k] = m.axis.at(step + z0);
    ux_axis[k] = ux0 - kq * (at[k].f - st.f);
    ux[k] = ux_axis[k];
    uy[k] = uy0;
    const S bend = bend0 * (at[k].h - st.h - st.f * step);
    px[k] = x + tx * step - lever_x * bend;
    py[k] = y + ty * step - lever_y * bend;
    gx[k] = gy[k] = zero;
    inv_uz[k] = inverse_uz(m, ux[k], uy[k]);
  }
  for (int pass = 0; pass < m.passes; ++pass) {
    for (int k = 0; k < nk; ++k) {
      path_force(m, at[k], px[k], py[k], ux[k], uy[k], inv_uz[k], kq, gx[k], gy[k]);
    }
    for (int k = 0; k < nk; ++k) {
      const R* row = m.integration + k * nk;
      ux[k] = ux_axis[k] + dz * dot_row(row, gx, nk);
      uy[k] = uy0 + dz * dot_row(row, gy, nk);
    }
    if (pass + 1 == m.passes) break;
    // The next path: the integral of its slopes at the nodes (held where the force was: the
    // next pass computes that again).
    for (int k = 0; k < nk; ++k) {
      inv_uz[k] = inverse_uz(m, ux[k], uy[k]);
      gx[k] = ux[k] * inv_uz[k];
      gy[k] = uy[k] * inv_uz[k];
    }
    for (int k = 0; k < nk; ++k) {
      const R* row = m.integration + k * nk;
      px[k] = x + dz * dot_row(row, gx, nk);
      py[k] = y + dz * dot_row(row, gy, nk);
    }
  }
  S sum_x = zero, sum_y = zero, turn_x = zero, turn_y = zero;
  for (int k = 0; k < nk; ++k) {
    const V w = m.weight(k);
    S txk, tyk;
    slopes(m, ux[k], uy[k], txk, tyk);
    sum_x = sum_x + txk * w;
    sum_y = sum_y + tyk * w;
    turn_x = turn_x + gx[k] * w;
    turn_y = turn_y + gy[k] * w;
  }
  S tx1, ty1;
  slopes(m, ux0 - kq * (m.axis.at(z1).f - st.f) + dz * turn_x, uy0 + dz * turn_y, tx1, ty1);
  out[0] = x + dz * sum_x;
  out[1] = y + dz * sum_y;
  out[2] = tx1;
  out[3] = ty1;
}

template <class R, class S>
RAYTRACK_HD void base_prediction(const Model<R>& m, const S s[5], R z0, R z1, S out[4]) {
  switch (m.base) {
    case kKick: kick(m, s, z0, z1, out); return;
    case kAxial: axial(m, s, z0, z1, out); return;
    case kExpansion: expansion(m, s, z0, z1, out); return;
    case kPath: path(m, s, z0, z1, out); return;
    default: line(s, Value<R>(z1) - z0, out); return;
  }
}
