// raytrack_mlp.hpp -- single-header C++17 reader and forward pass for raytrack's model.bin.
//
// The format is specified byte by byte in docs/model_bin.md (raytrack repository); the Python
// writer is raytrack.export.model_bin.write_model_bin. No dependencies beyond the standard
// library; the file is decoded byte by byte as little-endian, so it works on any host.
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
//
// load_mlp checks the magic, format version, endianness marker, dtype, the layer shape chain
// (7 -> ... -> 4), the exact file length and the trailing CRC-32; every error message starts
// with the file name. Weight matrices are stored ROW-MAJOR, shape (out_features, in_features):
// W[o][i] is at weights[o * in + i], exactly as torch's nn.Linear.weight holds it.
//
// forward() computes, per track, in float32:
//   h = (in - input_mean) / input_std
//   h = act(W_k h + b_k) for every layer but the last; h = W_L h + b_L for the last
//   enc = h * target_std + target_mean
//   raw:          out = enc
//   residual:     out = line + enc
//   residual_qop: out = line + enc * qop
//   with line = [x + tx*dz, y + ty*dz, tx, ty], dz = z_end - z_start.
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

struct Layer {
  std::size_t rows = 0;  // out_features
  std::size_t cols = 0;  // in_features
  std::vector<float> weight;  // rows * cols, row-major: W[o][i] at o * cols + i
  std::vector<float> bias;    // rows
};

class Mlp {
 public:
  static constexpr std::size_t kInputs = 7;
  static constexpr std::size_t kOutputs = 4;

  Activation activation = Activation::Relu;
  Target target = Target::Raw;
  std::array<float, kInputs> input_mean{}, input_std{};
  std::array<float, kOutputs> target_mean{}, target_std{};
  std::vector<Layer> layers;

  std::size_t n_layers() const { return layers.size(); }

  // Weights and biases of every layer (the normalisation is not counted).
  std::size_t weight_count() const {
    std::size_t total = 0;
    for (const Layer& l : layers) total += l.weight.size() + l.bias.size();
    return total;
  }

  std::size_t max_width() const {
    std::size_t w = kInputs;
    for (const Layer& l : layers) w = std::max(w, l.rows);
    return w;
  }

  // in: row-major (n, 7); out: row-major (n, 4).
  void forward(const float* in, float* out, std::size_t n) const {
    const std::size_t width = max_width();
    std::vector<float> a(width), b(width);
    for (std::size_t t = 0; t < n; ++t) forward_one(in + t * kInputs, out + t * kOutputs, a, b);
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

  void forward_one(const float* in, float* out, std::vector<float>& a,
                   std::vector<float>& b) const {
    for (std::size_t i = 0; i < kInputs; ++i) a[i] = (in[i] - input_mean[i]) / input_std[i];
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
    const float x = in[0], y = in[1], tx = in[2], ty = in[3], qop = in[4];
    const float dz = in[6] - in[5];
    const float line[kOutputs] = {x + tx * dz, y + ty * dz, tx, ty};
    for (std::size_t j = 0; j < kOutputs; ++j) {
      float enc = a[j] * target_std[j] + target_mean[j];
      if (target == Target::Raw) {
        out[j] = enc;
        continue;
      }
      if (target == Target::ResidualQop) enc *= qop;
      out[j] = line[j] + enc;
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

  std::uint32_t u32() {
    need(4);
    std::uint32_t v = 0;
    for (int k = 3; k >= 0; --k) v = (v << 8) | bytes_[pos_ + static_cast<std::size_t>(k)];
    pos_ += 4;
    return v;
  }

  float f32() {
    const std::uint32_t bits = u32();
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
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

inline void check_header(Reader& r) {
  r.expect_magic("RTRKMLP\0");
  const std::uint32_t version = r.u32();
  const std::uint32_t endian = r.u32();
  if (endian == 0x04030201u) r.fail("byte-swapped file (written big-endian)");
  if (endian != 0x01020304u) r.fail("bad endianness marker " + std::to_string(endian));
  if (version != 1u) r.fail("unsupported format version " + std::to_string(version));
  if (r.u32() != 1u) r.fail("unsupported dtype code (only 1 = float32)");
}

}  // namespace detail

// Load and validate a model.bin; throws std::runtime_error("<path>: <problem>") on bad input.
inline Mlp load_mlp(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(path + ": cannot open file");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(file)),
                                   std::istreambuf_iterator<char>());
  detail::Reader r(path, std::move(bytes));
  detail::check_header(r);

  Mlp m;
  const std::uint32_t act = r.u32(), target = r.u32();
  if (act < 1u || act > 4u) r.fail("unknown activation code " + std::to_string(act));
  if (target > 2u) r.fail("unknown target mode code " + std::to_string(target));
  m.activation = static_cast<Activation>(act);
  m.target = static_cast<Target>(target);
  if (r.u32() != Mlp::kInputs || r.u32() != Mlp::kOutputs) r.fail("n_inputs/n_outputs not 7/4");
  const std::uint32_t n_layers = r.u32();
  if (n_layers < 1u || n_layers > 1024u) r.fail("implausible layer count");

  std::size_t width = Mlp::kInputs, n_floats = 2 * Mlp::kInputs + 2 * Mlp::kOutputs;
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
  const std::size_t expected = r.pos() + 4 * n_floats + 4;
  if (r.size() != expected) {
    r.fail(std::string(r.size() < expected ? "truncated" : "trailing bytes") + ": " +
           std::to_string(r.size()) + " bytes, header implies " + std::to_string(expected));
  }

  r.floats(m.input_mean.data(), Mlp::kInputs);
  r.floats(m.input_std.data(), Mlp::kInputs);
  r.floats(m.target_mean.data(), Mlp::kOutputs);
  r.floats(m.target_std.data(), Mlp::kOutputs);
  for (Layer& l : m.layers) {
    l.weight.resize(l.rows * l.cols);
    l.bias.resize(l.rows);
    r.floats(l.weight.data(), l.weight.size());  // row-major, as written
    r.floats(l.bias.data(), l.bias.size());
  }
  const std::uint32_t computed = detail::crc32(r.data(), expected - 4);
  if (r.u32() != computed) r.fail("checksum mismatch (corrupt file)");
  return m;
}

}  // namespace raytrack

#endif  // RAYTRACK_MLP_HPP
