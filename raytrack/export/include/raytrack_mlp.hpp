// raytrack_mlp.hpp -- single-header C++17 reader and forward pass for raytrack's model.bin.
//
// The format is specified byte by byte in docs/model_bin.md (raytrack repository); the Python
// writer is raytrack.export.model_bin.write_model_bin. No dependencies beyond the standard
// library; the file is decoded byte by byte as little-endian, so it works on any host.
// Reads format versions 1 and 2 (a version-1 file is the straight-line formulation).
//
// Usage:
//
//     #include "raytrack_mlp.hpp"
//
//     raytrack::Mlp mlp = raytrack::load_mlp("model.bin");  // throws std::runtime_error
//     std::vector<float> in(n * raytrack::Mlp::kInputs);   // row-major (n, 7):
//     // x [mm], y [mm], tx, ty, q/p [1/MeV], z_start [mm], z_end [mm]
//     std::vector<float> out(n * raytrack::Mlp::kOutputs); // row-major (n, 4):
//     // x_end [mm], y_end [mm], tx_end, ty_end
//     mlp.forward(in.data(), out.data(), n);
//
// Compile with -std=c++17 (e.g. g++ -std=c++17 -O2 -I raytrack/export/include main.cpp).
// Do not compile with -ffast-math: the formulation relies on IEEE double arithmetic.
//
// load_mlp checks the magic, format version, endianness marker, dtype, the formulation codes
// and what they need (field tables, quadrature), the layer shape chain (F -> ... -> 4), the
// exact file length and the trailing CRC-32; every error message starts with the file name.
// Weight matrices are stored ROW-MAJOR, shape (out_features, in_features): W[o][i] is at
// weights[o * in + i], exactly as torch's nn.Linear.weight holds it.
//
// forward() computes, per track (docs/model_bin.md, "Forward pass"):
//   1. in double, from the float inputs: the base end state (line, kick, axial or expansion,
//      reading the on-axis field tables), the features (the 7 inputs, or those plus dz, I1, I2
//      and base - line) and the target scale (qop and |dz|/1000 to the power leg_power);
//   2. in float: h = (float(features) - input_mean) / input_std, then the layers,
//      h = act(W_k h + b_k) for every layer but the last, h = W_L h + b_L for the last;
//   3. in double: enc = h * target_std + target_mean; out = enc (raw) or base + scale * enc,
//      rounded to float.
// Activations: relu, silu (x * sigmoid(x)), gelu (exact: 0.5 x (1 + erf(x / sqrt 2))), tanh.
// forward() is const and allocates only a small per-call scratch buffer: thread-safe.

#ifndef RAYTRACK_MLP_HPP
#define RAYTRACK_MLP_HPP

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace raytrack {

enum class Activation : std::uint32_t { Relu = 1, Silu = 2, Gelu = 3, Tanh = 4 };
enum class Target : std::uint32_t { Raw = 0, Residual = 1, ResidualQop = 2 };
enum class Base : std::uint32_t { Line = 0, Kick = 1, Axial = 2, Expansion = 3 };
enum class Inputs : std::uint32_t { State = 0, Physics = 1 };

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

  std::size_t size() const { return by.size(); }

  // Values at one z (AxisTables.at of raytrack.physics.field_integrals): By and dBy/dz linear
  // between nodes, F and H cubic Hermite (slopes By and F), d2By the slope of the dBy/dz
  // interpolant (constant on each interval). Past either end By = dBy = d2By = 0, F keeps its
  // end value and H grows linearly with it.
  struct Point {
    double by, dby, f, h, d2by;
  };

  Point at(double z) const {
    const double last = static_cast<double>(size()) - 2.0;
    const double t = (z - z_first) / spacing;
    if (std::isnan(t)) {  // a NaN input gives NaN out, never an out-of-range index
      const double nan = std::nan("");
      return Point{nan, nan, nan, nan, nan};
    }
    const double index_d = std::min(std::max(std::floor(t), 0.0), last);
    const double u = std::min(std::max(t - index_d, 0.0), 1.0);
    const double outside = (t - index_d - u) * spacing;  // signed mm past the end node
    const std::size_t i = static_cast<std::size_t>(index_d);
    Point p;
    p.f = hermite(f, by, i, u);
    p.h = hermite(h, f, i, u) + p.f * outside;
    const bool inside = outside == 0.0;
    p.by = inside ? by[i] * (1 - u) + by[i + 1] * u : 0.0;
    p.dby = inside ? dby[i] * (1 - u) + dby[i + 1] * u : 0.0;
    p.d2by = inside ? (dby[i + 1] - dby[i]) / spacing : 0.0;
    return p;
  }

 private:
  double hermite(const std::vector<double>& v, const std::vector<double>& d, std::size_t i,
                 double u) const {
    const double d0 = d[i] * spacing, d1 = d[i + 1] * spacing;
    const double u2 = u * u, u3 = u2 * u;
    return (2 * u3 - 3 * u2 + 1) * v[i] + (u3 - 2 * u2 + u) * d0 + (-2 * u3 + 3 * u2) * v[i + 1] +
           (u3 - u2) * d1;
  }
};

class Mlp {
 public:
  static constexpr std::size_t kInputs = 7;
  static constexpr std::size_t kOutputs = 4;
  static constexpr std::size_t kMaxFeatures = 14;

  std::uint32_t version = 2;  // the format version the file had
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
    const std::size_t width = max_width();
    std::vector<float> a(width), b(width);
    for (std::size_t t = 0; t < n; ++t) forward_one(in + t * kInputs, out + t * kOutputs, a, b);
  }

  // The base end state (x, y, tx, ty) of one track, double (u: the 7 inputs).
  std::array<double, kOutputs> base_prediction(const double* u) const {
    switch (base) {
      case Base::Line: return line(u);
      case Base::Kick: return kick(u);
      case Base::Axial: return axial(u);
      case Base::Expansion: return expansion(u);
    }
    return line(u);
  }

 private:
  float act(float x) const {
    switch (activation) {
      case Activation::Relu: return x > 0.0f ? x : 0.0f;
      case Activation::Silu: return x / (1.0f + std::exp(-x));
      case Activation::Gelu: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
      case Activation::Tanh: return std::tanh(x);
    }
    return x;
  }

  static std::array<double, kOutputs> line(const double* u) {
    const double dz = u[6] - u[5];
    return {u[0] + u[2] * dz, u[1] + u[3] * dz, u[2], u[3]};
  }

  // I1 = int By dz (T mm), I2 = int (z1 - z) By dz (T mm^2) between the two table points.
  static void integrals(const AxisTables::Point& s, const AxisTables::Point& e, double dz,
                        double& i1, double& i2) {
    i1 = e.f - s.f;
    i2 = e.h - s.h - s.f * dz;
  }

  // First-order kick: slopes and the factor kappa qop N taken at the start.
  std::array<double, kOutputs> kick(const double* u) const {
    const double x = u[0], y = u[1], tx = u[2], ty = u[3], qop = u[4];
    const double dz = u[6] - u[5];
    double i1, i2;
    integrals(axis.at(u[5]), axis.at(u[6]), dz, i1, i2);
    const double k = kappa * qop * std::sqrt(1 + tx * tx + ty * ty);
    const double bend_x = -k * (1 + tx * tx), bend_y = -k * tx * ty;
    return {x + tx * dz + bend_x * i2, y + ty * dz + bend_y * i2, tx + bend_x * i1,
            ty + bend_y * i1};
  }

  void slopes(double ux, double uy, double& tx, double& ty) const {
    const double inv_uz = 1.0 / std::sqrt(std::max(1 - ux * ux - uy * uy, min_uz_squared));
    tx = ux * inv_uz;
    ty = uy * inv_uz;
  }

  // Exact motion in B = (0, By(z), 0): ux = tx / N changes by -kappa qop (F(z) - F(z0)), uy is
  // constant; the positions are the quadrature of the slopes over the leg.
  std::array<double, kOutputs> axial(const double* u) const {
    const double x = u[0], y = u[1], tx = u[2], ty = u[3], qop = u[4], z0 = u[5], z1 = u[6];
    const double inv_n = 1.0 / std::sqrt(1 + tx * tx + ty * ty);
    const double ux0 = tx * inv_n, uy = ty * inv_n, kq = kappa * qop;
    const double f0 = axis.at(z0).f, dz = z1 - z0;
    double sum_x = 0.0, sum_y = 0.0;
    for (std::size_t k = 0; k < nodes.size(); ++k) {
      double txk, tyk;
      slopes(ux0 - kq * (axis.at(z0 + dz * nodes[k]).f - f0), uy, txk, tyk);
      sum_x += txk * weights[k];
      sum_y += tyk * weights[k];
    }
    double tx1, ty1;
    slopes(ux0 - kq * (axis.at(z1).f - f0), uy, tx1, ty1);
    return {x + dz * sum_x, y + dz * sum_y, tx1, ty1};
  }

  // The axial transport plus the field off the symmetry plane (By = f - y^2/2 f'', Bz = y f',
  // f = By on the axis) evaluated at the quadrature nodes of the on-axis trajectory (its slopes,
  // and y with the kick's bending in y) and integrated to first order: d slope = int g dz,
  // d position = int (z1 - z) g dz (field_integrals.expansion_transport).
  std::array<double, kOutputs> expansion(const double* u) const {
    const double x = u[0], y = u[1], tx = u[2], ty = u[3], qop = u[4], z0 = u[5], z1 = u[6];
    const double norm = std::sqrt(1 + tx * tx + ty * ty);
    const double ux0 = tx / norm, uy = ty / norm, kq = kappa * qop, dz = z1 - z0;
    const AxisTables::Point s = axis.at(z0);
    const double bend_y = kq * norm * tx * ty;  // the kick's factor of the y bending
    double sum_tx = 0.0, sum_ty = 0.0, sum_dtx = 0.0, sum_dty = 0.0;
    double lever_dtx = 0.0, lever_dty = 0.0;
    for (std::size_t k = 0; k < nodes.size(); ++k) {
      const double zk = z0 + dz * nodes[k];
      const AxisTables::Point p = axis.at(zk);
      const double ux = ux0 - kq * (p.f - s.f);
      const double inv_uz = 1.0 / std::sqrt(std::max(1 - ux * ux - uy * uy, min_uz_squared));
      const double txk = ux * inv_uz, tyk = uy * inv_uz;
      const double lever = p.h - s.h - s.f * (zk - z0);  // int_z0^zk (zk - z) By dz
      const double yk = y + ty * (zk - z0) - bend_y * lever;
      const double by_off = -0.5 * yk * yk * p.d2by, bz = yk * p.dby;
      const double kk = kq * inv_uz;  // kappa qop N along the path (N = 1 / uz)
      const double dtx = kk * (tyk * bz - (1 + txk * txk) * by_off);
      const double dty = -kk * (txk * tyk * by_off + txk * bz);
      const double w = weights[k], lw = weights[k] * (1 - nodes[k]);
      sum_tx += txk * w;
      sum_ty += tyk * w;
      sum_dtx += dtx * w;
      sum_dty += dty * w;
      lever_dtx += dtx * lw;
      lever_dty += dty * lw;
    }
    double tx1, ty1;
    slopes(ux0 - kq * (axis.at(z1).f - s.f), uy, tx1, ty1);
    return {x + dz * sum_tx + dz * dz * lever_dtx, y + dz * sum_ty + dz * dz * lever_dty,
            tx1 + dz * sum_dtx, ty1 + dz * sum_dty};
  }

  void forward_one(const float* in, float* out, std::vector<float>& a,
                   std::vector<float>& b) const {
    double u[kInputs];
    for (std::size_t i = 0; i < kInputs; ++i) u[i] = static_cast<double>(in[i]);
    const std::array<double, kOutputs> base_end = base_prediction(u);

    double features[kMaxFeatures];
    std::copy(u, u + kInputs, features);
    if (inputs == Inputs::Physics) {
      const double dz = u[6] - u[5];
      double i1, i2;
      integrals(axis.at(u[5]), axis.at(u[6]), dz, i1, i2);
      const std::array<double, kOutputs> straight = line(u);
      features[7] = dz;
      features[8] = i1;
      features[9] = i2;
      for (std::size_t j = 0; j < kOutputs; ++j) features[10 + j] = base_end[j] - straight[j];
    }

    // The network in float, as torch runs it: features rounded to float, then standardised.
    const std::size_t nf = n_features();
    for (std::size_t i = 0; i < nf; ++i) {
      a[i] = (static_cast<float>(features[i]) - input_mean[i]) / input_std[i];
    }
    for (std::size_t k = 0; k < layers.size(); ++k) {
      const Layer& l = layers[k];
      const bool last = k + 1 == layers.size();
      for (std::size_t o = 0; o < l.rows; ++o) {
        const float* w = l.weight.data() + o * l.cols;  // row o of W
        float s = l.bias[o];
        for (std::size_t i = 0; i < l.cols; ++i) s += w[i] * a[i];
        b[o] = last ? s : act(s);
      }
      a.swap(b);
    }

    // Target scale: 1, or qop, times max(|dz| / 1000, min_leg_m)^(leg_power, leg_power - 1).
    std::array<double, kOutputs> scale{1.0, 1.0, 1.0, 1.0};
    if (target == Target::ResidualQop) scale.fill(u[4]);
    if (target != Target::Raw && leg_power != 0.0) {
      const double leg = std::max(std::fabs(u[6] - u[5]) / 1000.0, min_leg_m);
      const double pos = std::pow(leg, leg_power), slope = std::pow(leg, leg_power - 1);
      scale[0] *= pos;
      scale[1] *= pos;
      scale[2] *= slope;
      scale[3] *= slope;
    }
    for (std::size_t j = 0; j < kOutputs; ++j) {
      const double enc = static_cast<double>(a[j]) * static_cast<double>(target_std[j]) +
                         static_cast<double>(target_mean[j]);
      out[j] = static_cast<float>(target == Target::Raw ? enc : base_end[j] + scale[j] * enc);
    }
  }
};

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

// Magic, version, endianness, dtype; returns the version (1 or 2).
inline std::uint32_t check_header(Reader& r) {
  r.expect_magic("RTRKMLP\0");
  const std::uint32_t version = r.u32();
  const std::uint32_t endian = r.u32();
  if (endian == 0x04030201u) r.fail("byte-swapped file (written big-endian)");
  if (endian != 0x01020304u) r.fail("bad endianness marker " + std::to_string(endian));
  if (version != 1u && version != 2u) {
    r.fail("unsupported format version " + std::to_string(version) +
           " (this reader supports versions 1, 2)");
  }
  if (r.u32() != 1u) r.fail("unsupported dtype code (only 1 = float32)");
  return version;
}

// Version-2 formulation block (bytes 40-111); checks what the formulation needs is present.
inline void read_formulation(Reader& r, Mlp& m, std::size_t& n_quad, std::size_t& n_table) {
  const std::uint32_t base = r.u32(), inputs = r.u32();
  if (base > 3u) r.fail("unknown base code " + std::to_string(base));
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
  if (r.u32() != 0u) r.fail("reserved header field is not 0");
  m.leg_power = r.f64();
  m.kappa = r.f64();
  m.min_uz_squared = r.f64();
  m.min_leg_m = r.f64();
  m.axis.z_first = r.f64();
  m.axis.spacing = r.f64();
  if (!std::isfinite(m.leg_power) || !std::isfinite(m.kappa) || !std::isfinite(m.axis.z_first))
    r.fail("non-finite leg_power, kappa or z_first");
  if (!(m.min_uz_squared > 0.0 && m.min_uz_squared <= 1.0) || !(m.min_leg_m > 0.0) ||
      !std::isfinite(m.min_leg_m))
    r.fail("min_uz_squared must be in (0, 1] and min_leg_m > 0");
  if (n_quad > 1024u || n_table > (1u << 24)) r.fail("implausible quadrature or table size");
  const bool quadrature = m.base == Base::Axial || m.base == Base::Expansion;
  if (quadrature && n_quad < 1) r.fail("the base needs quadrature nodes, the file has none");
  if (m.base != Base::Line || m.inputs == Inputs::Physics) {
    if (n_table < 2) r.fail("the formulation needs the field tables (at least 2 nodes)");
    if (!(std::isfinite(m.axis.spacing) && m.axis.spacing > 0.0))
      r.fail("table spacing must be finite and positive");
  }
}

}  // namespace detail

// Load and validate a model.bin (version 1 or 2); throws std::runtime_error("<path>: <problem>").
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
  std::size_t n_quad = 0, n_table = 0;
  if (m.version >= 2u) detail::read_formulation(r, m, n_quad, n_table);

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
  const std::size_t expected = r.pos() + 8 * (2 * n_quad + 4 * n_table) + 4 * n_floats + 4;
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
  return m;
}

}  // namespace raytrack

#endif  // RAYTRACK_MLP_HPP
