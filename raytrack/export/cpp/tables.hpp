// @part the field-table look-ups: on-axis Point and Axis, the x tables (core)
// On-axis field tables at one z: By and dBy/dz linear between nodes, F and H cubic Hermite
// (slopes By and F), d2By linear between the nodes' central differences of dBy/dz (a model of
// model.bin version 3: the slope of the dBy/dz interpolant). Past either end By = dBy =
// d2By = 0, F keeps its end value and H grows linearly with it. (docs/model_bin.md, step 1)
// Also where z lies, for the path base's x tables: interval i, fraction u, inside the tables.
template <class R>
struct Point {
  R by, dby, d2by;
  Value<R> f, h;
  R u;
  int i;
  bool inside;
};

template <class R>
struct Axis {
  R z_first, spacing;  // node i at z_first + i * spacing, exactly (a whole number of mm)
  int n;  // nodes (>= 2 when the formulation reads the tables)
  const R* by;
  const R* dby;  // null where nothing reads dBy/dz (every base but expansion), or see by_lo
  const R* f;
  const R* h;
  // May be null: what rounding By, F, H to R left out (a float header's tables). With by_lo
  // and no dby row, dBy/dz is computed from By as the tables made it.
  const R* by_lo;
  const R* f_lo;
  const R* h_lo;
  // May be null: what rounding dBy/dz to R left out (a float header's, where dBy/dz is not
  // By's central differences: a map's, smoothed), so that d2By keeps its digits.
  const R* dby_lo;
  // The path base's midplane x dependence (x_degree = D, 0 for none): 2D rows of n, the D
  // coefficients of (x / x_scale)^1..D (T), then their dz derivatives (T/mm).
  // x_lo may be null: what rounding the derivative rows to R left out (a float header's),
  // D rows: the second dz derivative, a difference of neighbouring derivatives, would lose
  // most of a float's digits to cancellation without it.
  int x_degree;
  R x_scale;
  const R* x;
  const R* x_lo;
  // d2By linear between the nodes (model.bin version 4); false: constant on each interval
  // (version 3), so a model computes what it was trained with. continuous_x_curvature: the
  // same for the x coefficients' second dz derivatives (version 5; false: version 4).
  bool continuous_curvature;
  bool continuous_x_curvature;

  // The rise of x coefficient q's (1..D) dz derivative from node `from` to node `to`, with
  // what rounding the derivatives to R left out (x_lo): the difference of neighbours cancels
  // most of a float's digits.
  RAYTRACK_HD R x_slope_rise(int q, int from, int to) const {
    const R* g = x + (x_degree + q - 1) * n;
    R rise = g[to] - g[from];
    if (x_lo != nullptr) rise += x_lo[(q - 1) * n + to] - x_lo[(q - 1) * n + from];
    return rise;
  }

  // The second dz derivative of x coefficient q at node j: central differences of its dz
  // derivative, one-sided at the tables' ends (as np.gradient).
  RAYTRACK_HD R x_node_curvature(int q, int j) const {
    const int below = j > 0 ? j - 1 : 0, above = j + 1 < n ? j + 1 : n - 1;
    return x_slope_rise(q, below, above) / (spacing * static_cast<R>(above - below));
  }

  RAYTRACK_HD Value<R> f_at(int i) const { return join(f[i], f_lo ? f_lo[i] : R(0)); }

  // 2 spacing dBy/dz at node i: the table's, or By's central difference (one-sided at the two
  // ends, as np.gradient made the table) from By and its rounding error: d2By, a difference of
  // neighbouring dBy, would lose ten bits of a float dBy/dz table to cancellation.
  RAYTRACK_HD Value<R> double_step_slope(int i) const {
    if (dby != nullptr) return join(dby[i], dby_lo ? dby_lo[i] : R(0)) * (R(2) * spacing);
    const int below = i > 0 ? i - 1 : 0, above = i + 1 < n ? i + 1 : n - 1;
    const Value<R> step = join(by[above], by_lo[above]) - join(by[below], by_lo[below]);
    return above - below == 2 ? step : step * R(2);
  }

  // d2By at a node from 2 spacing dBy/dz at its neighbours `below` and `above`, `span` nodes
  // apart (2, or 1 at the tables' ends, one-sided as np.gradient), in two floats: a difference
  // of neighbours.
  RAYTRACK_HD R node_curvature(const Value<R>& below, const Value<R>& above, int span) const {
    return lead(above - below) / (R(2) * spacing * spacing * static_cast<R>(span));
  }

  RAYTRACK_HD Point<R> at(const Value<R>& z) const {
    using V = Value<R>;
    const R zl = lead(z);
    if (zl != zl) return Point<R>{zl, zl, zl, V(zl), V(zl), zl, 0, false};  // NaN in, out
    const R last = static_cast<R>(n) - R(2);
    R index = min_(max_(floor_((zl - z_first) / spacing), R(0)), last);
    // The interval is decided from the distance to its node, computed from z itself (exact
    // for a node of the grid): the division above may round across a node, where d2By jumps.
    V d = z - (z_first + index * spacing);
    if (d < R(0) && index > R(0)) {
      index -= R(1);
      d = d + spacing;
    } else if (!(d < spacing) && index < last) {
      index += R(1);
      d = d - spacing;
    }
    const R dl = lead(d);
    const R inner = min_(max_(dl, R(0)), spacing);  // mm into the interval
    const R outside = dl - inner;                    // signed mm past the end node
    const int i = static_cast<int>(index);
    const R u = inner / spacing, u2 = u * u, u3 = u2 * u;
    const R a = R(3) * u2 - R(2) * u3, b = (u3 - u2) * spacing;
    Point<R> p;
    p.f = rise(f, f_lo, i, by[i], by[i + 1], inner, a, b);
    p.h = rise(h, h_lo, i, f[i], f[i + 1], inner, a, b);
    const bool inside = outside == R(0);
    p.u = u;
    p.i = i;
    p.inside = inside;
    if (!inside) p.h = p.h + p.f * outside;
    p.by = inside ? by[i] * (R(1) - u) + by[i + 1] * u : R(0);
    p.dby = p.d2by = R(0);
    if (inside && (dby != nullptr || by_lo != nullptr)) {
      const V g0 = double_step_slope(i), g1 = double_step_slope(i + 1);
      const R twice = R(2) * spacing;
      p.dby = (lead(g0) * (R(1) - u) + lead(g1) * u) / twice;
      if (continuous_curvature) {
        // Nodes i and i + 1 take their neighbours' slopes; g0 and g1 are two of them.
        const int before = i > 0 ? i - 1 : 0, after = i + 2 < n ? i + 2 : n - 1;
        const R c0 = node_curvature(double_step_slope(before), g1, i + 1 - before);
        const R c1 = node_curvature(g0, double_step_slope(after), after - i);
        p.d2by = c0 * (R(1) - u) + c1 * u;
      } else {
        p.d2by = lead(g1 - g0) / (twice * spacing);
      }
    }
    return p;
  }

  // The cubic Hermite interpolant through v[i], v[i + 1] with slopes g0, g1 (per mm), at
  // `inner` mm into the interval (a, b: its basis terms): v[i] plus an increment whose terms
  // are each small beside v[i] (v[i + 1] - v[i] - spacing g0 is about spacing^2 g' / 2), so
  // that a float formulation rounds the increment, not the cumulative value. The difference of
  // neighbouring nodes is exact in R; v_lo (may be null) holds what rounding v to R left out.
  RAYTRACK_HD Value<R> rise(const R* v, const R* v_lo, int i, R g0, R g1, R inner, R a,
                            R b) const {
    const R lo0 = v_lo ? v_lo[i] : R(0), lo1 = v_lo ? v_lo[i + 1] : R(0);
    const R step = (v[i + 1] - v[i]) + (lo1 - lo0);
    return join(v[i], lo0) + (inner * g0 + (a * (step - spacing * g0) + b * (g1 - g0)));
  }
};
