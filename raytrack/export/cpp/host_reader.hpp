// @part model.bin's host reader: CRC-32, byte reader, checks, load_mlp
namespace detail {

inline std::uint32_t crc32(const unsigned char* data, std::size_t size) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

class Reader {
 public:
  Reader(std::string name, std::vector<unsigned char> bytes)
      : name_(std::move(name)), bytes_(std::move(bytes)) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(name_ + ": " + what);
  }

  std::uint64_t uint(int bytes) {
    need(static_cast<std::size_t>(bytes));
    std::uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | bytes_[pos_ + static_cast<std::size_t>(k)];
    pos_ += static_cast<std::size_t>(bytes);
    return v;
  }

  std::uint32_t u32() { return static_cast<std::uint32_t>(uint(4)); }

  float f32() {
    const std::uint32_t bits = u32();
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }

  double f64() {
    const std::uint64_t bits = uint(8);
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }

  template <typename T>
  void read(std::vector<T>& dst, std::size_t count) {
    dst.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
      if constexpr (sizeof(T) == 8) {
        dst[i] = f64();
      } else {
        dst[i] = f32();
      }
    }
  }

  void floats(float* dst, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) dst[i] = f32();
  }

  void expect_magic(const char (&magic)[9]) {
    need(8);
    if (std::memcmp(bytes_.data(), magic, 8) != 0) fail("bad magic (not a raytrack model.bin)");
    pos_ = 8;
  }

  std::size_t size() const { return bytes_.size(); }
  std::size_t pos() const { return pos_; }
  const unsigned char* data() const { return bytes_.data(); }

 private:
  void need(std::size_t k) const {
    if (pos_ + k > bytes_.size()) fail("truncated (" + std::to_string(bytes_.size()) + " bytes)");
  }

  std::string name_;
  std::vector<unsigned char> bytes_;
  std::size_t pos_ = 0;
};

// Magic, version, endianness, dtype; returns the version (1 to 5).
inline std::uint32_t check_header(Reader& r) {
  r.expect_magic("RTRKMLP\0");
  const std::uint32_t version = r.u32();
  const std::uint32_t endian = r.u32();
  if (endian == 0x04030201u) r.fail("byte-swapped file (written big-endian)");
  if (endian != 0x01020304u) r.fail("bad endianness marker " + std::to_string(endian));
  if (version < 1u || version > 5u) {
    r.fail("unsupported format version " + std::to_string(version) +
           " (this reader supports versions 1, 2, 3, 4, 5)");
  }
  if (r.u32() != 1u) r.fail("unsupported dtype code (only 1 = float32)");
  return version;
}

// The formulation block (bytes 40-111 in version 2, 40-127 in version 3); checks that what
// the formulation needs is present.
inline void read_formulation(Reader& r, Mlp& m, std::size_t& n_quad, std::size_t& n_table,
                             std::size_t& n_x) {
  const std::uint32_t base = r.u32(), inputs = r.u32();
  if (base > (m.version >= 3u ? 4u : 3u)) r.fail("unknown base code " + std::to_string(base));
  if (inputs > 1u) r.fail("unknown input set code " + std::to_string(inputs));
  m.base = static_cast<Base>(base);
  m.inputs = static_cast<Inputs>(inputs);
  const std::uint32_t n_features = r.u32();
  if (n_features != m.n_features()) {
    r.fail("n_features " + std::to_string(n_features) + " does not match the input set (" +
           std::to_string(m.n_features()) + ")");
  }
  n_quad = r.u32();
  n_table = r.u32();
  n_x = r.u32();  // reserved (0) in version 2
  if (m.version < 3u && n_x != 0u) r.fail("reserved header field is not 0");
  m.leg_power = r.f64();
  m.kappa = r.f64();
  m.min_uz_squared = r.f64();
  m.min_leg_m = r.f64();
  m.axis.z_first = r.f64();
  m.axis.spacing = r.f64();
  if (m.version >= 3u) {
    m.axis.x_scale = r.f64();
    m.passes = r.u32();
    const std::uint32_t reserved = r.u32();
    if (reserved != 0u) {
      r.fail("reserved header field (byte 124) is " + std::to_string(reserved) + ", expected 0");
    }
  }
  if (!std::isfinite(m.leg_power) || !std::isfinite(m.kappa) || !std::isfinite(m.axis.z_first))
    r.fail("non-finite leg_power, kappa or z_first");
  if (!(m.min_uz_squared > 0.0 && m.min_uz_squared <= 1.0) || !(m.min_leg_m > 0.0) ||
      !std::isfinite(m.min_leg_m))
    r.fail("min_uz_squared must be in (0, 1] and min_leg_m > 0");
  if (n_quad > 1024u || n_table > (1u << 24)) r.fail("implausible quadrature or table size");
  const bool quadrature =
      m.base == Base::Axial || m.base == Base::Expansion || m.base == Base::Path;
  if (quadrature && n_quad < 1) r.fail("the base needs quadrature nodes, the file has none");
  if (m.base != Base::Path) {
    if (n_x != 0u || m.passes != 0u || m.axis.x_scale != 0.0)
      r.fail("only base path has x tables, passes or x_scale (the file has D " +
             std::to_string(n_x) + ", passes " + std::to_string(m.passes) + ")");
  } else {
    if (m.passes < 1u || m.passes > 64u)
      r.fail("base path needs 1 to 64 passes, the file has " + std::to_string(m.passes));
    if (n_quad > static_cast<std::size_t>(core::kMaxPathNodes))
      r.fail("base path takes at most " + std::to_string(core::kMaxPathNodes) +
             " quadrature nodes, the file has " + std::to_string(n_quad));
    if (n_x > 32u) r.fail("implausible x degree D " + std::to_string(n_x) + " (at most 32)");
    if (!std::isfinite(m.axis.x_scale) || (n_x > 0u && !(m.axis.x_scale > 0.0)))
      r.fail("x_scale must be finite (and positive with x tables)");
  }
  if (m.base != Base::Line || m.inputs == Inputs::Physics) {
    if (n_table < 2) r.fail("the formulation needs the field tables (at least 2 nodes)");
    if (!(std::isfinite(m.axis.spacing) && m.axis.spacing > 0.0))
      r.fail("table spacing must be finite and positive");
  }
}

}  // namespace detail

// Load and validate a model.bin (version 1 to 4); throws std::runtime_error("<path>: <problem>").
inline Mlp load_mlp(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(path + ": cannot open file");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(file)),
                                   std::istreambuf_iterator<char>());
  detail::Reader r(path, std::move(bytes));
  Mlp m;
  m.version = detail::check_header(r);

  const std::uint32_t act = r.u32(), target = r.u32();
  if (act < 1u || act > 4u) r.fail("unknown activation code " + std::to_string(act));
  if (target > 2u) r.fail("unknown target mode code " + std::to_string(target));
  m.activation = static_cast<Activation>(act);
  m.target = static_cast<Target>(target);
  if (r.u32() != Mlp::kInputs || r.u32() != Mlp::kOutputs) r.fail("n_inputs/n_outputs not 7/4");
  const std::uint32_t n_layers = r.u32();
  if (n_layers < 1u || n_layers > 1024u) r.fail("implausible layer count");

  // Version 1 has no formulation block: it is the straight line on the 7 inputs (the Mlp's
  // defaults), with no tables or quadrature.
  std::size_t n_quad = 0, n_table = 0, n_x = 0;
  if (m.version >= 2u) detail::read_formulation(r, m, n_quad, n_table, n_x);

  const std::size_t nf = m.n_features();
  std::size_t width = nf, n_floats = 2 * nf + 2 * Mlp::kOutputs;
  m.layers.resize(n_layers);
  for (std::uint32_t k = 0; k < n_layers; ++k) {
    Layer& l = m.layers[k];
    l.rows = r.u32();
    l.cols = r.u32();
    const std::string name = "layer " + std::to_string(k);
    if (l.rows == 0 || l.rows > (1u << 20)) r.fail(name + " has an implausible row count");
    if (l.cols != width) r.fail(name + " input width does not match the previous layer");
    width = l.rows;
    n_floats += l.rows * l.cols + l.rows;
  }
  if (width != Mlp::kOutputs) r.fail("last layer does not have 4 outputs");
  const std::size_t expected =
      r.pos() + 8 * (2 * n_quad + 4 * n_table + 2 * n_x * n_table) + 4 * n_floats + 4;
  if (r.size() != expected) {
    r.fail(std::string(r.size() < expected ? "truncated" : "trailing bytes") + ": " +
           std::to_string(r.size()) + " bytes, header implies " + std::to_string(expected));
  }

  r.read(m.nodes, n_quad);
  r.read(m.weights, n_quad);
  r.read(m.axis.by, n_table);
  r.read(m.axis.dby, n_table);
  r.read(m.axis.f, n_table);
  r.read(m.axis.h, n_table);
  r.read(m.axis.x, 2 * n_x * n_table);
  m.axis.continuous_curvature = m.version >= 4u;
  m.axis.continuous_x_curvature = m.version >= 5u;
  if (m.base == Base::Path) m.integration = integration_matrix(m.nodes, m.weights);
  r.read(m.input_mean, nf);
  r.read(m.input_std, nf);
  r.floats(m.target_mean.data(), Mlp::kOutputs);
  r.floats(m.target_std.data(), Mlp::kOutputs);
  for (Layer& l : m.layers) {
    r.read(l.weight, l.rows * l.cols);  // row-major, as written
    r.read(l.bias, l.rows);
  }
  const std::uint32_t computed = detail::crc32(r.data(), expected - 4);
  if (r.u32() != computed) r.fail("checksum mismatch (corrupt file)");
  m.prepare_batch();
  return m;
}
