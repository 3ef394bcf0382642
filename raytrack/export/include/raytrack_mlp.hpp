// raytrack_mlp.hpp -- single-header C++17 reader and forward pass for raytrack's model.bin.
//
// The format is specified byte by byte in docs/model_bin.md (raytrack repository); the Python
// writer is raytrack.export.model_bin.write_model_bin. No dependencies beyond the standard
// library; the file is decoded byte by byte as little-endian, so it works on any host.
// Reads format versions 1, 2 and 3 (a version-1 file is the straight-line formulation).
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
//     std::vector<float> jac(n * 20);                       // row-major (n, 4, 5):
//     mlp.forward_with_jacobian(in.data(), out.data(), jac.data(), n);
//     // jac[20 * t + 5 * a + b] = d out[a] / d in[b], b over x, y, tx, ty, q/p
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
//   1. in double, from the float inputs: the base end state (line, kick, axial, expansion or
//      path, reading the on-axis field tables and the path's x tables), the features (the 7 inputs, or those plus dz, I1, I2
//      and base - line) and the target scale (qop and |dz|/1000 to the power leg_power);
//   2. in float: h = (float(features) - input_mean) / input_std, then the layers,
//      h = act(W_k h + b_k) for every layer but the last, h = W_L h + b_L for the last;
//   3. in double: enc = h * target_std + target_mean; out = enc (raw) or base + scale * enc,
//      rounded to float.
// Activations: relu, silu (x * sigmoid(x)), gelu (exact: 0.5 x (1 + erf(x / sqrt 2))), tanh.
// forward() is const and allocates only a small per-call scratch buffer: thread-safe.
//
// forward_with_jacobian() also gives the transport Jacobian d (x, y, tx, ty)_end /
// d (x, y, tx, ty, q/p)_start of the model, exactly (not by finite differences): the same code
// evaluated with forward-mode dual numbers carrying 5 derivatives (the formulation in double,
// the network in float, the field-table look-ups plain: they depend on z only). Its outputs
// are forward()'s. The per-track code (namespace raytrack::core, between the "raytrack core"
// markers) uses no standard library and is __host__ __device__ under nvcc; the trigger
// headers of `python -m raytrack.export RUN_DIR --header OUT.h` (docs/trigger_header.md)
// carry a verbatim copy of it, and may run the formulation in float: in two floats a value
// (core::Wide), so that it reproduces the double one.

#ifndef RAYTRACK_MLP_HPP
#define RAYTRACK_MLP_HPP

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <math.h>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace raytrack {

enum class Activation : std::uint32_t { Relu = 1, Silu = 2, Gelu = 3, Tanh = 4 };
enum class Target : std::uint32_t { Raw = 0, Residual = 1, ResidualQop = 2 };
enum class Base : std::uint32_t { Line = 0, Kick = 1, Axial = 2, Expansion = 3, Path = 4 };
enum class Inputs : std::uint32_t { State = 0, Physics = 1 };

// The path base's most quadrature nodes in this reader (the core below sizes its per-track
// arrays by the kCorePathNodes of the namespace it is in: a trigger header sets its model's).
constexpr int kCorePathNodes = 32;

// >>> raytrack core: begin
// The formulation, the network and the forward-mode Jacobian, for one track. Device-ready: no
// standard library, no allocation, every function __host__ __device__ under nvcc. This block
// is copied verbatim into the trigger headers that raytrack.export.header generates (inside
// their own namespace), so model.bin's reader and those headers run the same code.
#ifndef RAYTRACK_HD
#if defined(__CUDACC__)
#define RAYTRACK_HD __host__ __device__
#else
#define RAYTRACK_HD
#endif
#endif

namespace core {

// model.bin's codes (docs/model_bin.md).
constexpr unsigned kRelu = 1, kSilu = 2, kGelu = 3, kTanh = 4;
constexpr unsigned kRaw = 0, kResidual = 1, kResidualQop = 2;
constexpr unsigned kLine = 0, kKick = 1, kAxial = 2, kExpansion = 3, kPath = 4;
// The path base's most quadrature nodes: the length of its per-track arrays (a GPU thread's
// stack). The enclosing namespace sets it (kCorePathNodes): 32 in raytrack_mlp.hpp (model.bin's
// readers refuse more), a trigger header its model's K.
constexpr int kMaxPathNodes = kCorePathNodes;
constexpr unsigned kState = 0, kPhysics = 1;
constexpr int kInputs = 7, kOutputs = 4, kMaxFeatures = 14;
// Differentiated inputs: x, y, tx, ty, qop (z_start and z_end are not).
constexpr int kTangents = 5;

RAYTRACK_HD inline float sqrt_(float x) { return sqrtf(x); }
RAYTRACK_HD inline double sqrt_(double x) { return sqrt(x); }
RAYTRACK_HD inline float floor_(float x) { return floorf(x); }
RAYTRACK_HD inline double floor_(double x) { return floor(x); }
RAYTRACK_HD inline float fabs_(float x) { return fabsf(x); }
RAYTRACK_HD inline double fabs_(double x) { return fabs(x); }
RAYTRACK_HD inline float pow_(float x, float y) { return powf(x, y); }
RAYTRACK_HD inline double pow_(double x, double y) { return pow(x, y); }
RAYTRACK_HD inline float fma_(float a, float b, float c) { return fmaf(a, b, c); }
RAYTRACK_HD inline double fma_(double a, double b, double c) { return fma(a, b, c); }
// std::max / std::min semantics: the first argument unless the second is larger / smaller.
template <class T>
RAYTRACK_HD inline T max_(T a, T b) { return a < b ? b : a; }
template <class T>
RAYTRACK_HD inline T min_(T a, T b) { return b < a ? b : a; }

// --- Wide: a value held as the unevaluated sum hi + lo of two floats -----------------------
//
// A float formulation (the trigger headers' default) computes its values in Wide<float>, about
// 44 significant bits from float operations alone: every operation is the float operation plus
// its rounding error, recovered exactly (two_sum; two_prod with a fused multiply-add), the
// "double-word" arithmetic of Dekker and Knuth. Without it the end state would carry the float
// rounding of numbers that are large beside what is computed from them: the field integrals
// over the whole magnet (F to 4500 T mm, H to 4e7 T mm^2) of which a leg takes a difference,
// the quadrature's z of which the table look-up takes the distance to a node, 14 m of slope
// summed into a position. A double formulation computes in plain double (Value<double>).
template <class T>
struct Wide;

// a + b exactly, for any a and b (Knuth).
template <class T>
RAYTRACK_HD inline Wide<T> two_sum(T a, T b) {
  const T s = a + b, v = s - a;
  return Wide<T>(s, (a - (s - v)) + (b - v));
}
// a + b exactly where |a| >= |b| (or a = 0) (Dekker).
template <class T>
RAYTRACK_HD inline Wide<T> fast_two_sum(T a, T b) {
  const T s = a + b;
  return Wide<T>(s, b - (s - a));
}
// a * b exactly (the fused multiply-add rounds the exact product minus p once: exactly).
template <class T>
RAYTRACK_HD inline Wide<T> two_prod(T a, T b) {
  const T p = a * b;
  return Wide<T>(p, fma_(a, b, -p));
}

template <class T>
struct Wide {
  T hi, lo;  // |lo| <= ulp(hi) / 2 after every operation: hi is the value rounded to T

  Wide() = default;
  RAYTRACK_HD constexpr Wide(T h) : hi(h), lo(T(0)) {}  // exact, and implicit on purpose
  RAYTRACK_HD constexpr Wide(T h, T l) : hi(h), lo(l) {}

  friend RAYTRACK_HD Wide operator-(const Wide& a) { return Wide(-a.hi, -a.lo); }
  friend RAYTRACK_HD Wide operator+(const Wide& a, const Wide& b) {
    const Wide s = two_sum(a.hi, b.hi);
    return fast_two_sum(s.hi, s.lo + (a.lo + b.lo));
  }
  friend RAYTRACK_HD Wide operator+(const Wide& a, T b) {
    const Wide s = two_sum(a.hi, b);
    return fast_two_sum(s.hi, s.lo + a.lo);
  }
  friend RAYTRACK_HD Wide operator+(T a, const Wide& b) { return b + a; }
  friend RAYTRACK_HD Wide operator-(const Wide& a, const Wide& b) { return a + (-b); }
  friend RAYTRACK_HD Wide operator-(const Wide& a, T b) { return a + (-b); }
  friend RAYTRACK_HD Wide operator-(T a, const Wide& b) { return (-b) + a; }
  friend RAYTRACK_HD Wide operator*(const Wide& a, const Wide& b) {
    const Wide p = two_prod(a.hi, b.hi);
    return fast_two_sum(p.hi, p.lo + (a.hi * b.lo + a.lo * b.hi));
  }
  friend RAYTRACK_HD Wide operator*(const Wide& a, T b) {
    const Wide p = two_prod(a.hi, b);
    return fast_two_sum(p.hi, p.lo + a.lo * b);
  }
  friend RAYTRACK_HD Wide operator*(T a, const Wide& b) { return b * a; }
  // One float division and one correction from the exact remainder a - q b.
  friend RAYTRACK_HD Wide operator/(const Wide& a, const Wide& b) {
    const T q = a.hi / b.hi;
    const Wide r = a - b * q;
    return fast_two_sum(q, (r.hi + r.lo) / b.hi);
  }
  friend RAYTRACK_HD Wide operator/(const Wide& a, T b) {
    const T q = a.hi / b;
    const Wide r = a - two_prod(q, b);
    return fast_two_sum(q, (r.hi + r.lo) / b);
  }
  friend RAYTRACK_HD Wide operator/(T a, const Wide& b) { return Wide(a) / b; }
  friend RAYTRACK_HD bool operator<(const Wide& a, T b) {
    return a.hi < b || (a.hi == b && a.lo < T(0));
  }
};

// One float square root and one Newton correction from the exact residual a - s^2.
template <class T>
RAYTRACK_HD inline Wide<T> sqrt_(const Wide<T>& a) {
  const T s = sqrt_(a.hi);
  if (!(s > T(0))) return Wide<T>(s);  // 0, or NaN in, NaN out
  const Wide<T> p = two_prod(s, s);
  return fast_two_sum(s, (((a.hi - p.hi) - p.lo) + a.lo) / (T(2) * s));
}
template <class T>
RAYTRACK_HD inline Wide<T> max_(const Wide<T>& a, T b) { return a < b ? Wide<T>(b) : a; }
template <class T>
RAYTRACK_HD inline Wide<T> min_(const Wide<T>& a, T b) { return b < a.hi ? Wide<T>(b) : a; }

// The leading part of a value (itself for a plain number), and a value rounded to float.
RAYTRACK_HD inline float lead(float x) { return x; }
RAYTRACK_HD inline double lead(double x) { return x; }
template <class T>
RAYTRACK_HD inline T lead(const Wide<T>& x) { return x.hi; }
template <class V>
RAYTRACK_HD inline float to_float(const V& x) { return static_cast<float>(lead(x)); }

// The type a formulation of precision R computes its values in, and a value from a table's
// number and its rounding error (the float tables keep both; double ones have no error part).
template <class R>
struct Precise {
  using type = R;
};
template <>
struct Precise<float> {
  using type = Wide<float>;
};
template <class R>
using Value = typename Precise<R>::type;
RAYTRACK_HD inline Wide<float> join(float hi, float lo) { return Wide<float>(hi, lo); }
RAYTRACK_HD inline double join(double hi, double lo) { return hi + lo; }

// A forward-mode dual number: a value (V) and its derivatives (T) along kTangents directions.
// Every value is computed by exactly the operations the plain code applies to it, so the value
// part of a Jacobian evaluation is the plain prediction; the derivatives are computed in T
// from the values rounded to T (a Jacobian needs no more than T's precision).
template <class V, class T = V>
struct Dual {
  V v;
  T d[kTangents];

  RAYTRACK_HD static Dual constant(const V& value) {
    Dual r;
    r.v = value;
    for (int k = 0; k < kTangents; ++k) r.d[k] = T(0);
    return r;
  }
  friend RAYTRACK_HD Dual operator-(const Dual& a) {
    Dual r;
    r.v = -a.v;
    for (int k = 0; k < kTangents; ++k) r.d[k] = -a.d[k];
    return r;
  }
  friend RAYTRACK_HD Dual operator+(const Dual& a, const Dual& b) {
    Dual r;
    r.v = a.v + b.v;
    for (int k = 0; k < kTangents; ++k) r.d[k] = a.d[k] + b.d[k];
    return r;
  }
  friend RAYTRACK_HD Dual operator+(const Dual& a, const V& b) {
    Dual r = a;
    r.v = a.v + b;
    return r;
  }
  friend RAYTRACK_HD Dual operator+(const V& a, const Dual& b) {
    Dual r = b;
    r.v = a + b.v;
    return r;
  }
  friend RAYTRACK_HD Dual operator-(const Dual& a, const Dual& b) {
    Dual r;
    r.v = a.v - b.v;
    for (int k = 0; k < kTangents; ++k) r.d[k] = a.d[k] - b.d[k];
    return r;
  }
  friend RAYTRACK_HD Dual operator-(const Dual& a, const V& b) {
    Dual r = a;
    r.v = a.v - b;
    return r;
  }
  friend RAYTRACK_HD Dual operator-(const V& a, const Dual& b) {
    Dual r;
    r.v = a - b.v;
    for (int k = 0; k < kTangents; ++k) r.d[k] = -b.d[k];
    return r;
  }
  friend RAYTRACK_HD Dual operator*(const Dual& a, const Dual& b) {
    Dual r;
    r.v = a.v * b.v;
    const T av = lead(a.v), bv = lead(b.v);
    for (int k = 0; k < kTangents; ++k) r.d[k] = a.d[k] * bv + av * b.d[k];
    return r;
  }
  friend RAYTRACK_HD Dual operator*(const Dual& a, const V& b) {
    Dual r;
    r.v = a.v * b;
    const T bv = lead(b);
    for (int k = 0; k < kTangents; ++k) r.d[k] = a.d[k] * bv;
    return r;
  }
  friend RAYTRACK_HD Dual operator*(const V& a, const Dual& b) {
    Dual r;
    r.v = a * b.v;
    const T av = lead(a);
    for (int k = 0; k < kTangents; ++k) r.d[k] = av * b.d[k];
    return r;
  }
  friend RAYTRACK_HD Dual operator/(const Dual& a, const Dual& b) {
    Dual r;
    r.v = a.v / b.v;
    const T rv = lead(r.v), bv = lead(b.v);
    for (int k = 0; k < kTangents; ++k) r.d[k] = (a.d[k] - rv * b.d[k]) / bv;
    return r;
  }
  friend RAYTRACK_HD Dual operator/(const Dual& a, const V& b) {
    Dual r;
    r.v = a.v / b;
    const T bv = lead(b);
    for (int k = 0; k < kTangents; ++k) r.d[k] = a.d[k] / bv;
    return r;
  }
  friend RAYTRACK_HD Dual operator/(const V& a, const Dual& b) {
    Dual r;
    r.v = a / b.v;
    const T rv = lead(r.v), bv = lead(b.v);
    for (int k = 0; k < kTangents; ++k) r.d[k] = -rv * b.d[k] / bv;
    return r;
  }
};
template <class V, class T>
RAYTRACK_HD inline Dual<V, T> sqrt_(const Dual<V, T>& a) {
  Dual<V, T> r;
  r.v = sqrt_(a.v);
  const T half_inv = T(0.5) / lead(r.v);
  for (int k = 0; k < kTangents; ++k) r.d[k] = a.d[k] * half_inv;
  return r;
}
// max(a, floor): the floor (a constant) where it applies, as torch.clamp differentiates it.
template <class V, class T>
RAYTRACK_HD inline Dual<V, T> max_(const Dual<V, T>& a, T b) {
  return a.v < b ? Dual<V, T>::constant(V(b)) : a;
}
template <class V, class T>
RAYTRACK_HD inline Dual<V, T> min_(const Dual<V, T>& a, T b) {
  return b < lead(a.v) ? Dual<V, T>::constant(V(b)) : a;
}

// Plain and dual arithmetic behind one name: S is the formulation's scalar (its value type
// Value<R>, or Dual<Value<R>, R> for the Jacobian), Net the network's (float, or Dual<float>),
// Lite the plain-R arithmetic of S (R, or Dual<R>) for corrections whose R rounding is far
// below the float spacing of the end state (lite() rounds a value to it, full() widens back).
template <class S>
struct Traits {
  using Net = float;
  using Lite = decltype(lead(S()));
  RAYTRACK_HD static S constant(const S& v) { return v; }
  RAYTRACK_HD static Net narrow(const S& s) { return to_float(s); }
  RAYTRACK_HD static S widen(const Net& h) { return S(h); }
  RAYTRACK_HD static Lite lite(const S& s) { return lead(s); }
  RAYTRACK_HD static S full(const Lite& l) { return S(l); }
};
template <class V, class T>
struct Traits<Dual<V, T>> {
  using Net = Dual<float>;
  using Lite = Dual<T>;
  RAYTRACK_HD static Dual<V, T> constant(const V& v) { return Dual<V, T>::constant(v); }
  RAYTRACK_HD static Net narrow(const Dual<V, T>& s) {
    Net r;
    r.v = to_float(s.v);
    for (int k = 0; k < kTangents; ++k) r.d[k] = static_cast<float>(s.d[k]);
    return r;
  }
  RAYTRACK_HD static Dual<V, T> widen(const Net& h) {
    Dual<V, T> r;
    r.v = V(h.v);
    for (int k = 0; k < kTangents; ++k) r.d[k] = static_cast<T>(h.d[k]);
    return r;
  }
  RAYTRACK_HD static Lite lite(const Dual<V, T>& s) {
    Lite r;
    r.v = lead(s.v);
    for (int k = 0; k < kTangents; ++k) r.d[k] = s.d[k];
    return r;
  }
  RAYTRACK_HD static Dual<V, T> full(const Lite& l) {
    Dual<V, T> r;
    r.v = V(l.v);
    for (int k = 0; k < kTangents; ++k) r.d[k] = l.d[k];
    return r;
  }
};

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
// partial sums (lane k takes i = k, k + kLanes, ...) added at the end. A compiler vectorises
// that for floats without reassociating anything (one running sum it may not): the trigger
// model's predict ran 1.5 times faster on a CPU. Duals sum in the same order, so
// predict_with_jacobian's values are predict's. The order differs from ONNX Runtime's, as
// every engine's does, within float rounding.
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

// On-axis field tables at one z: By and dBy/dz linear between nodes, F and H cubic Hermite
// (slopes By and F), d2By the slope of the dBy/dz interpolant. Past either end By = dBy =
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
      p.d2by = lead(g1 - g0) / (twice * spacing);
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
// d position = int (z1 - z) g dz (field_integrals.expansion_transport).
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
// linear in z between nodes, their dz derivatives too, the second dz derivatives the slopes
// of those; d is their polynomial in v = clamp(x / x_scale, -1, 1) (Horner's rule).
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
    R rise = g[i + 1] - g[i];
    if (a.x_lo != nullptr) rise += a.x_lo[(q - 1) * n + i + 1] - a.x_lo[(q - 1) * n + i];
    value = value * v + cq;
    slope = slope * v + (g[i] * rest + g[i + 1] * w);
    curve = curve * v + rise / a.spacing;
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
// (field_integrals.path_transport): in direction cosines the on-axis By changes ux by exactly
// -kappa qop dF; `passes` times the rest of the field is evaluated at the quadrature nodes of
// the current path (first: the straight line plus the kick's bending) and integrated to every
// node (the matrix S) for the directions there, and their slopes for the next path. All of it
// in S: a track's field depends on where it is (on the window-frame map 1e-4 T/mm across x),
// and with the earlier passes' paths in plain float the map's float header was off by 2e-7 in
// slope.
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

}  // namespace core
// <<< raytrack core: end

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

  int x_degree() const { return size() ? static_cast<int>(x.size() / (2 * size())) : 0; }

  std::size_t size() const { return by.size(); }

  // Values at one z (AxisTables.at of raytrack.physics.field_integrals): By and dBy/dz linear
  // between nodes, F and H cubic Hermite (slopes By and F), d2By the slope of the dBy/dz
  // interpolant (constant on each interval). Past either end By = dBy = d2By = 0, F keeps its
  // end value and H grows linearly with it. Needs at least 2 nodes.
  using Point = core::Point<double>;

  Point at(double z) const { return view().at(z); }

  core::Axis<double> view() const {
    return core::Axis<double>{z_first,   spacing,   static_cast<int>(size()),
                              by.data(), dby.empty() ? nullptr : dby.data(),
                              f.data(),  h.data(),
                              nullptr,   nullptr,   nullptr,  // no rounding-error rows
                              nullptr,   x_degree(), x_scale,
                              x.empty() ? nullptr : x.data(), nullptr};
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

  // The base end state (x, y, tx, ty) of one track, double (u: the 7 inputs).
  std::array<double, kOutputs> base_prediction(const double* u) const {
    std::vector<core::Layer> views;
    const core::Model<double> m = model_view(views);
    std::array<double, kOutputs> end{};
    core::base_prediction(m, u, u[5], u[6], end.data());
    return end;
  }

 private:
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

// Magic, version, endianness, dtype; returns the version (1, 2 or 3).
inline std::uint32_t check_header(Reader& r) {
  r.expect_magic("RTRKMLP\0");
  const std::uint32_t version = r.u32();
  const std::uint32_t endian = r.u32();
  if (endian == 0x04030201u) r.fail("byte-swapped file (written big-endian)");
  if (endian != 0x01020304u) r.fail("bad endianness marker " + std::to_string(endian));
  if (version < 1u || version > 3u) {
    r.fail("unsupported format version " + std::to_string(version) +
           " (this reader supports versions 1, 2, 3)");
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

// Load and validate a model.bin (version 1, 2 or 3); throws std::runtime_error("<path>: <problem>").
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
  return m;
}

}  // namespace raytrack

#endif  // RAYTRACK_MLP_HPP
