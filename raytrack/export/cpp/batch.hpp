// @part the batched engine: predict_batch over blocks of tracks (core, host code)
// predict_batch (docs/model_bin.md, "Batches"): tracks in blocks of kBlock, every quantity a
// Lanes (one SIMD value over the block). The path and line bases run here in float (what it
// costs in accuracy: docs/model_bin.md), their tables read from one row per interval
// (BatchTables); the network runs in float, as predict's, a layer at a time over the block,
// four rows at once (independent sums, so that the adds do not wait on each other). The other
// bases go one track a call (predict).

// One interval's row of the batch tables: F, H, By, dBy/dz and d2By/dz2 at its two nodes, then
// for each x coefficient q = 1..D its value, dz derivative and second dz derivative at both.
enum BatchRow : int {
  kRowF,
  kRowF1,
  kRowH,
  kRowH1,
  kRowBy,
  kRowBy1,
  kRowDby,
  kRowDby1,
  kRowCurve,
  kRowCurve1,
  kRowFixed
};
constexpr int kRowPerDegree = 6;

// The path nodes the batched engine runs (0 for another base).
constexpr int batch_nodes(unsigned base, int n_quad) {
  return base != kPath ? 0 : n_quad < kMaxPathNodes ? n_quad : kMaxPathNodes;
}

// Whether the batched engine reads the on-axis tables: every base but the line does, and so do
// the physics features.
constexpr bool reads_tables(unsigned base, unsigned inputs, int table_nodes) {
  return (base != kLine || inputs == kPhysics) && table_nodes > 1;
}

// The floats of the batch tables: the rows, then the path's nodes, weights and S.
constexpr int batch_table_size(unsigned base, unsigned inputs, int table_nodes, int x_degree,
                               int n_quad) {
  return (reads_tables(base, inputs, table_nodes)
              ? (table_nodes - 1) * (kRowFixed + kRowPerDegree * x_degree)
              : 0) +
         batch_nodes(base, n_quad) * (batch_nodes(base, n_quad) + 2);
}

// The Lanes of predict_batch's `work`: the x coefficients at every path node.
constexpr int batch_work_size(unsigned base, int x_degree, int n_quad) {
  return 3 * batch_nodes(base, n_quad) * x_degree;
}

template <class R>
int batch_table_size(const Model<R>& m) {
  return batch_table_size(m.base, m.inputs, m.axis.n, m.axis.x_degree, m.n_quad);
}

template <class R>
int batch_work_size(const Model<R>& m) {
  return batch_work_size(m.base, m.axis.x_degree, m.n_quad);
}

struct BatchTables {
  float z_first, spacing, x_scale, kappa, min_uz_squared;
  int intervals, stride, x_degree, n_quad, passes;
  const float* rows;  // intervals x stride (BatchRow)
  const float* nodes;
  const float* weights;
  const float* integration;  // n_quad x n_quad
};

inline double as_double(float v) { return v; }
inline double as_double(double v) { return v; }
template <class T>
inline double as_double(const Wide<T>& v) {
  return static_cast<double>(v.hi) + static_cast<double>(v.lo);
}

// F, H, By, dBy/dz and d2By/dz2 (continuous rule) at table node j, in double, as the axis
// look-up takes them at its nodes (Axis::at).
template <class R>
void batch_node_values(const Axis<R>& a, int j, double v[5]) {
  const R zero = R(0);
  v[0] = as_double(a.f_at(j));
  v[1] = as_double(join(a.h[j], a.h_lo ? a.h_lo[j] : zero));
  v[2] = as_double(join(a.by[j], a.by_lo ? a.by_lo[j] : zero));
  v[3] = v[4] = 0.0;
  if (a.dby == nullptr && a.by_lo == nullptr) return;  // nothing reads dBy/dz
  v[3] = as_double(a.double_step_slope(j)) / (2.0 * static_cast<double>(a.spacing));
  const int below = j > 0 ? j - 1 : 0, above = j + 1 < a.n ? j + 1 : a.n - 1;
  v[4] = a.node_curvature(a.double_step_slope(below), a.double_step_slope(above), above - below);
}

// The batch tables of model m in `storage` (batch_table_size(m) floats, from
// fill_batch_tables).
template <class R>
BatchTables batch_tables_at(const Model<R>& m, const float* storage) {
  const Axis<R>& a = m.axis;
  BatchTables t{};
  t.z_first = static_cast<float>(a.z_first);
  t.spacing = static_cast<float>(a.spacing);
  t.x_scale = static_cast<float>(a.x_scale);
  t.kappa = static_cast<float>(as_double(m.kappa_value()));
  t.min_uz_squared = static_cast<float>(m.min_uz_squared);
  t.intervals = reads_tables(m.base, m.inputs, a.n) ? a.n - 1 : 0;
  t.x_degree = a.x_degree;
  t.stride = kRowFixed + kRowPerDegree * a.x_degree;
  t.n_quad = batch_nodes(m.base, m.n_quad);
  t.passes = m.passes;
  t.rows = storage;
  t.nodes = storage + t.intervals * t.stride;
  t.weights = t.nodes + t.n_quad;
  t.integration = t.weights + t.n_quad;
  return t;
}

// Fills `storage` with model m's batch tables, once per model.
template <class R>
void fill_batch_tables(const Model<R>& m, float* storage) {
  const Axis<R>& a = m.axis;
  const BatchTables t = batch_tables_at(m, storage);
  float* row = storage;
  double v0[5], v1[5];
  if (t.intervals > 0) batch_node_values(a, 0, v1);
  for (int i = 0; i < t.intervals; ++i, row += t.stride) {
    for (int c = 0; c < 5; ++c) v0[c] = v1[c];
    batch_node_values(a, i + 1, v1);
    const double stepped = (v1[3] - v0[3]) / static_cast<double>(a.spacing);
    for (int c = 0; c < 5; ++c) {
      const bool curve = c == 4 && !a.continuous_curvature;  // constant on the interval
      row[2 * c] = static_cast<float>(curve ? stepped : v0[c]);
      row[2 * c + 1] = static_cast<float>(curve ? stepped : v1[c]);
    }
    for (int q = 1; q <= a.x_degree; ++q) {
      float* x = row + kRowFixed + kRowPerDegree * (q - 1);
      const R* c = a.x + (q - 1) * a.n;
      const R* g = a.x + (a.x_degree + q - 1) * a.n;
      const bool smooth = a.continuous_x_curvature;
      const R stepped_x = smooth ? R(0) : a.x_slope_rise(q, i, i + 1) / a.spacing;
      x[0] = static_cast<float>(c[i]);
      x[1] = static_cast<float>(c[i + 1]);
      x[2] = static_cast<float>(g[i]);
      x[3] = static_cast<float>(g[i + 1]);
      x[4] = static_cast<float>(smooth ? a.x_node_curvature(q, i) : stepped_x);
      x[5] = static_cast<float>(smooth ? a.x_node_curvature(q, i + 1) : stepped_x);
    }
  }
  float* nodes = row;  // after the rows: nodes, weights, S
  for (int k = 0; k < t.n_quad; ++k) {
    nodes[k] = static_cast<float>(as_double(m.node(k)));
    nodes[t.n_quad + k] = static_cast<float>(as_double(m.weight(k)));
    for (int j = 0; j < t.n_quad; ++j) {
      nodes[2 * t.n_quad + k * t.n_quad + j] = static_cast<float>(m.integration[k * m.n_quad + j]);
    }
  }
}

template <class R>
BatchTables make_batch_tables(const Model<R>& m, float* storage) {
  fill_batch_tables(m, storage);
  return batch_tables_at(m, storage);
}

// The tables at z over a block: F, H, dBy/dz, d2By/dz2, and where z lies (its interval's row
// offset, the fraction into it, 1 inside the tables, 0 beyond them: there By = 0, F stays and
// H grows).
struct BlockPoint {
  Lanes f, h, dby, d2by, u, inside;
  LaneInts row;
};

inline BlockPoint look_up(const BatchTables& t, Lanes z) {
  const float sp = t.spacing;
  // clamped before the floor, so that any z converts to an index
  const Lanes index = floor_(min_(max_((z - t.z_first) / sp, splat(0.0f)),
                                  splat(static_cast<float>(t.intervals - 1))));
  const Lanes d = z - (t.z_first + index * sp);
  const Lanes inner = min_(max_(d, splat(0.0f)), splat(sp)), outside = d - inner;
  const Lanes u = inner / sp, u2 = u * u, u3 = u2 * u;
  const Lanes a = 3.0f * u2 - 2.0f * u3, c = (u3 - u2) * sp;
  const LaneInts row = __builtin_convertvector(index, LaneInts) * t.stride;
  const Lanes f0 = gather(t.rows, row, kRowF), f1 = gather(t.rows, row, kRowF1);
  const Lanes by0 = gather(t.rows, row, kRowBy), by1 = gather(t.rows, row, kRowBy1);
  const Lanes h0 = gather(t.rows, row, kRowH), h1 = gather(t.rows, row, kRowH1);
  BlockPoint p;
  p.f = f0 + (inner * by0 + (a * (f1 - f0 - sp * by0) + c * (by1 - by0)));
  p.h = h0 + (inner * f0 + (a * (h1 - h0 - sp * f0) + c * (f1 - f0))) + p.f * outside;
  p.inside = outside == 0.0f ? splat(1.0f) : Lanes{};
  const Lanes rest = 1.0f - u;
  p.dby = p.inside * (gather(t.rows, row, kRowDby) * rest + gather(t.rows, row, kRowDby1) * u);
  p.d2by =
      p.inside * (gather(t.rows, row, kRowCurve) * rest + gather(t.rows, row, kRowCurve1) * u);
  p.u = u;
  p.row = row;
  return p;
}

// The x coefficients of the midplane at one node of the path over a block: value, dz
// derivative and second dz derivative of each q, [3][D], zero beyond the tables. They depend
// on z alone, so they are read once for every pass.
inline void x_coefficients(const BatchTables& t, const BlockPoint& p, Lanes* x) {
  const int d = t.x_degree;
  const Lanes rest = 1.0f - p.u;
  for (int q = 0; q < d; ++q) {
    const int at = kRowFixed + kRowPerDegree * q;
    x[q] = p.inside * (gather(t.rows, p.row, at) * rest + gather(t.rows, p.row, at + 1) * p.u);
    x[d + q] =
        p.inside * (gather(t.rows, p.row, at + 2) * rest + gather(t.rows, p.row, at + 3) * p.u);
    x[2 * d + q] =
        p.inside * (gather(t.rows, p.row, at + 4) * rest + gather(t.rows, p.row, at + 5) * p.u);
  }
}

// d(ux, uy)/dz over the block at one node (path_force's arithmetic).
inline void block_force(const BatchTables& t, const BlockPoint& p, const Lanes* xc, Lanes x,
                        Lanes y, Lanes ux, Lanes uy, Lanes inv_uz, Lanes kq, Lanes& gx,
                        Lanes& gy) {
  const Lanes half_y2 = 0.5f * y * y;
  Lanes by = -half_y2 * p.d2by, bz = y * p.dby;
  if (t.x_degree == 0) {
    gx = -kq * (by - uy * bz * inv_uz);
    gy = -kq * (ux * bz * inv_uz);
    return;
  }
  const int d = t.x_degree;
  const Lanes v = min_(max_(x / t.x_scale, splat(-1.0f)), splat(1.0f));
  Lanes value{}, slope{}, curve{}, du{}, du2{};
  for (int q = d; q >= 1; --q) {
    const Lanes cq = xc[q - 1];
    value = value * v + cq;
    slope = slope * v + xc[d + q - 1];
    curve = curve * v + xc[2 * d + q - 1];
    du = du * v + static_cast<float>(q) * cq;
    if (q >= 2) du2 = du2 * v + static_cast<float>(q * (q - 1)) * cq;
  }
  const Lanes laplacian = du2 / (t.x_scale * t.x_scale) + curve * v;
  by = (by + value * v) - half_y2 * laplacian;
  bz = bz + y * (slope * v);
  gx = -kq * (by - uy * bz * inv_uz);
  gy = kq * (y * (du / t.x_scale) - ux * bz * inv_uz);
}

inline Lanes inverse_uz(const BatchTables& t, Lanes ux, Lanes uy) {
  return 1.0f / sqrt_(max_(1.0f - ux * ux - uy * uy, splat(t.min_uz_squared)));
}

// sum_j row[j] v[j] over n nodes.
inline Lanes row_sum(const float* row, const Lanes* v, int n) {
  Lanes sum{};
  for (int j = 0; j < n; ++j) sum += row[j] * v[j];
  return sum;
}

// The path base over a block (path's algorithm; s: x, y, tx, ty, qop); xc: 3 n_quad x_degree
// Lanes of scratch.
void path_block(const BatchTables& t, const Lanes s[5], Lanes z0, Lanes dz,
                const BlockPoint& st, const BlockPoint& en, Lanes* xc, Lanes end[4]) {
  const int nk = t.n_quad, stride = 3 * t.x_degree;
  const Lanes &x = s[0], &y = s[1], &tx = s[2], &ty = s[3];
  const Lanes norm = sqrt_(1.0f + tx * tx + ty * ty);
  const Lanes ux0 = tx / norm, uy0 = ty / norm, kq = t.kappa * s[4];
  const Lanes bend0 = kq * norm, lever_x = 1.0f + tx * tx, lever_y = tx * ty;
  // Zeroed: with a header's one-node arrays (a model of another base) g++ cannot tell that
  // nothing is read unwritten (-Wmaybe-uninitialized), as in path.
  BlockPoint at[kMaxPathNodes] = {};
  Lanes ux_axis[kMaxPathNodes] = {}, ux[kMaxPathNodes] = {}, uy[kMaxPathNodes] = {};
  Lanes px[kMaxPathNodes] = {}, py[kMaxPathNodes] = {}, gx[kMaxPathNodes] = {};
  Lanes gy[kMaxPathNodes] = {}, inv_uz[kMaxPathNodes] = {};
  for (int k = 0; k < nk; ++k) {
    const Lanes step = dz * t.nodes[k];
    at[k] = look_up(t, z0 + step);
    x_coefficients(t, at[k], xc + k * stride);
    ux_axis[k] = ux0 - kq * (at[k].f - st.f);
    ux[k] = ux_axis[k];
    uy[k] = uy0;
    const Lanes bend = bend0 * (at[k].h - st.h - st.f * step);
    px[k] = x + tx * step - lever_x * bend;
    py[k] = y + ty * step - lever_y * bend;
    inv_uz[k] = inverse_uz(t, ux[k], uy[k]);
  }
  for (int pass = 0; pass < t.passes; ++pass) {
    for (int k = 0; k < nk; ++k) {
      block_force(t, at[k], xc + k * stride, px[k], py[k], ux[k], uy[k], inv_uz[k], kq, gx[k],
                  gy[k]);
    }
    for (int k = 0; k < nk; ++k) {
      const float* row = t.integration + k * nk;
      ux[k] = ux_axis[k] + dz * row_sum(row, gx, nk);
      uy[k] = uy0 + dz * row_sum(row, gy, nk);
    }
    if (pass + 1 == t.passes) break;
    for (int k = 0; k < nk; ++k) {  // the path's slopes, held where the force was
      inv_uz[k] = inverse_uz(t, ux[k], uy[k]);
      gx[k] = ux[k] * inv_uz[k];
      gy[k] = uy[k] * inv_uz[k];
    }
    for (int k = 0; k < nk; ++k) {
      const float* row = t.integration + k * nk;
      px[k] = x + dz * row_sum(row, gx, nk);
      py[k] = y + dz * row_sum(row, gy, nk);
    }
  }
  Lanes sum_x{}, sum_y{}, turn_x{}, turn_y{};
  for (int k = 0; k < nk; ++k) {
    const Lanes inv = inverse_uz(t, ux[k], uy[k]);
    const float w = t.weights[k];
    sum_x += ux[k] * inv * w;
    sum_y += uy[k] * inv * w;
    turn_x += gx[k] * w;
    turn_y += gy[k] * w;
  }
  const Lanes ux1 = ux0 - kq * (en.f - st.f) + dz * turn_x, uy1 = uy0 + dz * turn_y;
  const Lanes inv1 = inverse_uz(t, ux1, uy1);
  end[0] = x + dz * sum_x;
  end[1] = y + dz * sum_y;
  end[2] = ux1 * inv1;
  end[3] = uy1 * inv1;
}

// One layer over a block: out[o] = act(bias[o] + sum_i W[o][i] a[i]) (no activation on the
// last), four rows at a time.
inline void layer_block(const Layer& l, unsigned activation, bool last, const Lanes* a,
                        Lanes* out) {
  int o = 0;
  for (; o + 4 <= l.rows; o += 4) {
    const float* w = l.weight + o * l.cols;
    const int c = l.cols;
    Lanes s0{}, s1{}, s2{}, s3{};
    for (int i = 0; i < c; ++i) {
      s0 += w[i] * a[i];
      s1 += w[c + i] * a[i];
      s2 += w[2 * c + i] * a[i];
      s3 += w[3 * c + i] * a[i];
    }
    out[o] = s0 + l.bias[o];
    out[o + 1] = s1 + l.bias[o + 1];
    out[o + 2] = s2 + l.bias[o + 2];
    out[o + 3] = s3 + l.bias[o + 3];
  }
  for (; o < l.rows; ++o) out[o] = row_sum(l.weight + o * l.cols, a, l.cols) + l.bias[o];
  if (last) return;
  for (int k = 0; k < l.rows; ++k) out[k] = activate(activation, out[k]);
}

// A block of tracks through the formulation and the network (evaluate's steps); a, b: scratch
// of the widest layer's (or the feature count's) Lanes each; work: batch_work_size(m) Lanes.
template <class R>
void evaluate_block(const Model<R>& m, const BatchTables& t, const Lanes s[5], Lanes z0,
                    Lanes z1, Lanes end[4], Lanes* a, Lanes* b, Lanes* work) {
  const Lanes dz = z1 - z0;
  const Lanes straight[4] = {s[0] + s[2] * dz, s[1] + s[3] * dz, s[2], s[3]};
  BlockPoint st{}, en{};
  if (t.intervals > 0) {
    st = look_up(t, z0);
    en = look_up(t, z1);
  }
  if (m.base == kPath) {
    path_block(t, s, z0, dz, st, en, work, end);
  } else {
    for (int j = 0; j < 4; ++j) end[j] = straight[j];
  }
  Lanes features[kMaxFeatures] = {s[0], s[1], s[2], s[3], s[4], z0, z1};
  if (m.inputs == kPhysics) {
    features[7] = dz;
    features[8] = en.f - st.f;
    features[9] = en.h - st.h - st.f * dz;
    for (int j = 0; j < 4; ++j) features[10 + j] = end[j] - straight[j];
  }
  const int nf = m.n_features();
  for (int i = 0; i < nf; ++i) a[i] = (features[i] - m.input_mean[i]) / m.input_std[i];
  for (int k = 0; k < m.n_layers; ++k) {
    layer_block(m.layers[k], m.activation, k + 1 == m.n_layers, a, b);
    Lanes* swap = a;
    a = b;
    b = swap;
  }
  // the target scale and the decoding
  Lanes pos = splat(1.0f), slope = splat(1.0f);
  if (m.target != kRaw && m.leg_power != R(0)) {
    const Lanes leg = max_(fabs_(dz) / 1000.0f, splat(static_cast<float>(m.min_leg_m)));
    pos = pow_(leg, static_cast<float>(m.leg_power));
    slope = pow_(leg, static_cast<float>(m.leg_power) - 1.0f);
  }
  const Lanes q = m.target == kResidualQop ? s[4] : splat(1.0f);
  const Lanes scale[4] = {q * pos, q * pos, q * slope, q * slope};
  for (int j = 0; j < 4; ++j) {
    const Lanes enc = a[j] * m.target_std[j] + m.target_mean[j];
    end[j] = m.target == kRaw ? enc : end[j] + scale[j] * enc;
  }
}

// Whether predict_batch runs model m in blocks (else one track a call, as predict).
template <class R>
inline bool batched(const Model<R>& m) {
  return m.base == kPath || m.base == kLine;
}

// n tracks, in: n x 7 row-major (predict's in), out: n x 4; t: make_batch_tables(m); a, b:
// scratch of the widest layer's (or the feature count's) Lanes each, also predict's scratch
// for the bases that go one track a call; work: batch_work_size(m) Lanes.
template <class R>
void predict_batch(const Model<R>& m, const BatchTables& t, const float* in, float* out,
                   int n, Lanes* a, Lanes* b, Lanes* work) {
  if (!batched(m)) {
    float* fa = reinterpret_cast<float*>(a);
    float* fb = reinterpret_cast<float*>(b);
    for (int k = 0; k < n; ++k) predict(m, in + kInputs * k, out + kOutputs * k, fa, fb);
    return;
  }
  for (int first = 0; first < n; first += kBlock) {
    const int count = min_(kBlock, n - first);
    Lanes s[5], z0, z1, end[4];
    for (int l = 0; l < kBlock; ++l) {  // a short block repeats its last track
      const float* track = in + kInputs * (first + min_(l, count - 1));
      for (int j = 0; j < 5; ++j) s[j][l] = track[j];
      z0[l] = track[5];
      z1[l] = track[6];
    }
    evaluate_block(m, t, s, z0, z1, end, a, b, work);
    for (int l = 0; l < count; ++l) {
      for (int j = 0; j < 4; ++j) out[kOutputs * (first + l) + j] = end[j][l];
    }
  }
}
