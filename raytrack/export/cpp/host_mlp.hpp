// @part the host reader's Mlp: its tables, forward passes, integration matrix
struct Layer {
  std::size_t rows = 0;  // out_features
  std::size_t cols = 0;  // in_features
  std::vector<float> weight;  // rows * cols, row-major: W[o][i] at o * cols + i
  std::vector<float> bias;    // rows
};

// On-axis field tables: By (T), dBy/dz (T/mm), F = int By dz (T mm), H = int F dz (T mm^2) at
// z_first + i * spacing (mm), i = 0 .. n-1.
struct AxisTables {
  double z_first = 0.0, spacing = 1.0;
  std::vector<double> by, dby, f, h;
  // The path base's midplane x dependence: 2D rows of size() nodes (coefficients of
  // (x / x_scale)^1..D, then their dz derivatives); empty for none.
  std::vector<double> x;
  double x_scale = 0.0;
  bool continuous_curvature = true;    // false for a model.bin of version 3 or older
  bool continuous_x_curvature = true;  // false for a model.bin of version 4 or older

  int x_degree() const { return size() ? static_cast<int>(x.size() / (2 * size())) : 0; }

  std::size_t size() const { return by.size(); }

  // Values at one z (AxisTables.at of raytrack.physics.axis_lookup): By and dBy/dz linear
  // between nodes, F and H cubic Hermite (slopes By and F), d2By linear between the nodes'
  // central differences of dBy/dz (version 3: constant on each interval). Past either end
  // By = dBy = d2By = 0, F keeps its end value and H grows linearly with it. Needs at least 2
  // nodes.
  using Point = core::Point<double>;

  Point at(double z) const { return view().at(z); }

  core::Axis<double> view() const {
    return core::Axis<double>{z_first,   spacing,   static_cast<int>(size()),
                              by.data(), dby.empty() ? nullptr : dby.data(),
                              f.data(),  h.data(),
                              nullptr,   nullptr,   nullptr,  // no rounding-error rows
                              nullptr,   x_degree(), x_scale,
                              x.empty() ? nullptr : x.data(), nullptr,
                              continuous_curvature, continuous_x_curvature};
  }
};

class Mlp {
 public:
  static constexpr std::size_t kInputs = 7;
  static constexpr std::size_t kOutputs = 4;
  static constexpr std::size_t kMaxFeatures = 14;
  static constexpr std::size_t kJacobian = 20;  // d out[a] / d in[b], a < 4, b < 5

  std::uint32_t version = 3;  // the format version the file had
  Activation activation = Activation::Relu;
  Target target = Target::Raw;
  Base base = Base::Line;
  Inputs inputs = Inputs::State;
  double leg_power = 0.0;  // target scale exponent (positions; slopes leg_power - 1)
  double kappa = 0.299792458;  // d(slope)/dz = kappa * qop [1/MeV] * B [T], lengths in mm
  double min_uz_squared = 0.04;  // floor of 1 - ux^2 - uy^2 in the axial/expansion transport
  double min_leg_m = 0.001;  // shortest leg length (m) in the target scale
  AxisTables axis;
  std::vector<double> nodes, weights;  // Gauss-Legendre on [0, 1]
  std::uint32_t passes = 0;  // path base: passes along the path (0 otherwise)
  // path base: the (K, K) integration matrix of the nodes, computed on loading
  // (integration_matrix).
  std::vector<double> integration;
  std::vector<float> input_mean, input_std;  // n_features() each
  std::array<float, kOutputs> target_mean{}, target_std{};
  std::vector<Layer> layers;

  std::size_t n_layers() const { return layers.size(); }
  std::size_t n_features() const { return inputs == Inputs::Physics ? 14 : 7; }

  // Weights and biases of every layer (the normalisation is not counted).
  std::size_t weight_count() const {
    std::size_t total = 0;
    for (const Layer& l : layers) total += l.weight.size() + l.bias.size();
    return total;
  }

  std::size_t max_width() const {
    std::size_t w = n_features();
    for (const Layer& l : layers) w = std::max(w, l.rows);
    return w;
  }

  // in: row-major (n, 7); out: row-major (n, 4).
  void forward(const float* in, float* out, std::size_t n) const {
    std::vector<core::Layer> views;
    const core::Model<double> m = model_view(views);
    std::vector<float> a(max_width()), b(max_width());
    for (std::size_t t = 0; t < n; ++t) {
      core::predict(m, in + t * kInputs, out + t * kOutputs, a.data(), b.data());
    }
  }

  // forward(), plus the Jacobian of every track: jac row-major (n, 4, 5),
  // jac[20 * t + 5 * a + b] = d out[t, a] / d in[t, b] for b over x, y, tx, ty, q/p.
  void forward_with_jacobian(const float* in, float* out, float* jac, std::size_t n) const {
    std::vector<core::Layer> views;
    const core::Model<double> m = model_view(views);
    std::vector<core::Dual<float>> a(max_width()), b(max_width());
    for (std::size_t t = 0; t < n; ++t) {
      core::predict_with_jacobian(m, in + t * kInputs, out + t * kOutputs, jac + t * kJacobian,
                                  a.data(), b.data());
    }
  }

  // predict_batch's tables (core::make_batch_tables): load_mlp makes them; empty, or after
  // the model's fields change, call prepare_batch() (predict_batch otherwise makes them on
  // every call).
  std::vector<float> batch_tables;

  void prepare_batch() { batch_tables = tables_for_batches(); }

  // forward()'s outputs for n tracks, in blocks of core::kBlock tracks laid out for SIMD (the
  // path and line bases in float: docs/model_bin.md, "Batches", says how close to forward()).
  void predict_batch(const float* in, float* out, std::size_t n) const {
    std::vector<core::Layer> views;
    const core::Model<double> m = model_view(views);
    const auto size = static_cast<std::size_t>(core::batch_table_size(m));
    const std::vector<float> own = batch_tables.size() == size ? std::vector<float>()
                                                               : tables_for_batches();
    const core::BatchTables t = core::batch_tables_at(m, (own.empty() ? batch_tables : own).data());
    std::vector<core::Lanes> a(max_width()), b(max_width()), work(core::batch_work_size(m));
    core::predict_batch(m, t, in, out, static_cast<int>(n), a.data(), b.data(), work.data());
  }

  // The base end state (x, y, tx, ty) of one track, double (u: the 7 inputs).
  std::array<double, kOutputs> base_prediction(const double* u) const {
    std::vector<core::Layer> views;
    const core::Model<double> m = model_view(views);
    std::array<double, kOutputs> end{};
    core::base_prediction(m, u, u[5], u[6], end.data());
    return end;
  }

 private:
  std::vector<float> tables_for_batches() const {
    std::vector<core::Layer> views;
    const core::Model<double> m = model_view(views);
    std::vector<float> tables(static_cast<std::size_t>(core::batch_table_size(m)));
    core::fill_batch_tables(m, tables.data());
    return tables;
  }

  // The per-track code's view of this model (pointers into it: valid while it is unchanged).
  core::Model<double> model_view(std::vector<core::Layer>& views) const {
    views.clear();
    for (const Layer& l : layers) {
      views.push_back(core::Layer{static_cast<int>(l.rows), static_cast<int>(l.cols),
                                  l.weight.data(), l.bias.data()});
    }
    core::Model<double> m{};
    m.activation = static_cast<unsigned>(activation);
    m.target = static_cast<unsigned>(target);
    m.base = static_cast<unsigned>(base);
    m.inputs = static_cast<unsigned>(inputs);
    m.leg_power = leg_power;
    m.kappa = kappa;
    m.min_uz_squared = min_uz_squared;
    m.min_leg_m = min_leg_m;
    m.axis = axis.view();
    m.n_quad = static_cast<int>(nodes.size());
    m.nodes = nodes.data();
    m.weights = weights.data();
    m.passes = static_cast<int>(passes);
    m.integration = integration.empty() ? nullptr : integration.data();
    m.input_mean = input_mean.data();
    m.input_std = input_std.data();
    m.target_mean = target_mean.data();
    m.target_std = target_std.data();
    m.n_layers = static_cast<int>(views.size());
    m.layers = views.data();
    return m;
  }
};

// S[k][j] = int_0^t_k L_j(t) dt for the Lagrange basis L_j of the nodes t (row-major K x K),
// by the nodes' own Gauss-Legendre rule on [0, t_k] (exact: L_j has degree K - 1).
inline std::vector<double> integration_matrix(const std::vector<double>& t,
                                              const std::vector<double>& w) {
  const std::size_t n = t.size();
  std::vector<double> s(n * n, 0.0);
  for (std::size_t k = 0; k < n; ++k) {
    for (std::size_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (std::size_t q = 0; q < n; ++q) {
        double basis = 1.0;
        for (std::size_t o = 0; o < n; ++o) {
          if (o != j) basis *= (t[k] * t[q] - t[o]) / (t[j] - t[o]);
        }
        sum += w[q] * basis;
      }
      s[k * n + j] = t[k] * sum;
    }
  }
  return s;
}
