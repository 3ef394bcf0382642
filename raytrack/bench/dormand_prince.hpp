// dormand_prince.hpp -- the adaptive Dormand-Prince 5(4) of raytrack/physics/propagate.py, one
// track at a time, in C++17, for `python -m raytrack.bench deploy`: the integrator a model has
// to beat in C++, written for the benchmark (not part of the exports).
//
// Same as propagate's, step for step: the DOPRI5 tableau with local extrapolation (the 5th-order
// result is kept) and first-same-as-last; the error of a step is the largest over x, y, tx, ty
// of |h * sum (b - b_err) k| divided by its tolerance (position, position, slope, slope); a step
// is accepted when that is <= 1; the next step is |h| * clamp(0.9 err^(-1/5), 0.2, 5) (err at
// least 1e-12), at most max_step; the first step is min(|dz|, 100 mm, max_step); the last step
// lands on z_end exactly; after each accepted step a track beyond |x| or |y| of 5000 mm or a
// slope of 2 is dropped; 20000 steps at most. Fields (mm in, tesla out): the default dipole
// with its off-plane terms, as raytrack/physics/fields.py's DipoleField, and a trilinear grid
// read from the binary file the benchmark writes (GridField's interpolation; zero outside).

#ifndef RAYTRACK_BENCH_DORMAND_PRINCE_HPP
#define RAYTRACK_BENCH_DORMAND_PRINCE_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace raytrack_bench {

constexpr double kKappa = 0.299792458;  // q/p in 1/MeV, B in tesla, lengths in mm

// The tableau of propagate.py's DOPRI5: nodes, stage weights, 5th-order weights, and the
// error weights b - b_err (the embedded 4th order).
constexpr double kC[7] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
constexpr double kA[7][6] = {
    {},
    {1.0 / 5},
    {3.0 / 40, 9.0 / 40},
    {44.0 / 45, -56.0 / 15, 32.0 / 9},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
    {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
constexpr double kB[7] = {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84,
                          0.0};
constexpr double kBErr[7] = {5179.0 / 57600,    0.0,           7571.0 / 16695, 393.0 / 640,
                             -92097.0 / 339200, 187.0 / 2100, 1.0 / 40};

enum Status : int { kOk = 0, kLeftVolume = 1, kSlopeLimit = 2, kStepLimit = 3 };

// The default field: By = f(z) - y^2/2 f''(z), Bz = y f'(z), f a Gaussian (b0 signed by the
// polarity).
struct Dipole {
  double b0, z0, sigma;

  void operator()(double /*x*/, double y, double z, double b[3]) const {
    const double inv_s2 = 1.0 / (sigma * sigma);
    const double u = z - z0;
    const double f = b0 * std::exp((-0.5 * inv_s2) * u * u);
    const double f1 = -inv_s2 * u * f;
    const double f2 = (inv_s2 * inv_s2 * u * u - inv_s2) * f;
    b[0] = 0.0;
    b[1] = f - 0.5 * y * y * f2;
    b[2] = y * f1;
  }
};

// A regular grid, values (nx, ny, nz, 3) in tesla at origin + index * spacing (mm), read from
// the benchmark's file: "RTGRID1" and a NUL, int64 nx ny nz, float64 origin[3] spacing[3], then
// the values, all little-endian (the only byte order the benchmark runs on).
struct Grid {
  std::int64_t n[3] = {0, 0, 0};
  double origin[3] = {0, 0, 0};
  double spacing[3] = {1, 1, 1};
  std::vector<double> values;

  static Grid load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    char magic[8];
    Grid g;
    if (!in.read(magic, 8) || std::memcmp(magic, "RTGRID1", 8) != 0 ||
        !in.read(reinterpret_cast<char*>(g.n), sizeof g.n) ||
        !in.read(reinterpret_cast<char*>(g.origin), sizeof g.origin) ||
        !in.read(reinterpret_cast<char*>(g.spacing), sizeof g.spacing)) {
      throw std::runtime_error(path + ": not a benchmark grid file");
    }
    g.values.resize(static_cast<std::size_t>(g.n[0] * g.n[1] * g.n[2] * 3));
    if (!in.read(reinterpret_cast<char*>(g.values.data()),
                 static_cast<std::streamsize>(g.values.size() * sizeof(double)))) {
      throw std::runtime_error(path + ": grid file too short");
    }
    return g;
  }

  // Trilinear, as GridField.evaluate: cell clamped to the grid, weights clamped to [0, 1], the
  // corners summed in the same order; zero outside the grid.
  void operator()(double x, double y, double z, double b[3]) const {
    const double p[3] = {x, y, z};
    std::int64_t i0[3];
    double w[3];
    for (int a = 0; a < 3; ++a) {
      const double u = (p[a] - origin[a]) / spacing[a];
      if (!(u >= 0.0 && u <= static_cast<double>(n[a] - 1))) {
        b[0] = b[1] = b[2] = 0.0;
        return;
      }
      const double cell = std::min(std::max(std::floor(u), 0.0), static_cast<double>(n[a] - 2));
      i0[a] = static_cast<std::int64_t>(cell);
      w[a] = std::min(std::max(u - cell, 0.0), 1.0);
    }
    const std::int64_t ny = n[1], nz = n[2];
    const std::int64_t base = (i0[0] * ny + i0[1]) * nz + i0[2];
    b[0] = b[1] = b[2] = 0.0;
    for (int cx = 0; cx < 2; ++cx) {
      const double fx = cx ? w[0] : 1.0 - w[0];
      for (int cy = 0; cy < 2; ++cy) {
        const double fy = cy ? w[1] : 1.0 - w[1];
        for (int cz = 0; cz < 2; ++cz) {
          const double fz = cz ? w[2] : 1.0 - w[2];
          const double* corner = &values[3 * (base + (cx * ny + cy) * nz + cz)];
          const double weight = fx * fy * fz;
          b[0] += weight * corner[0];
          b[1] += weight * corner[1];
          b[2] += weight * corner[2];
        }
      }
    }
  }
};

struct Settings {
  double tolerance_position;  // mm, per step
  double tolerance_slope;     // per step
  double max_step;            // mm; infinity: no cap
};

// d(x, y, tx, ty)/dz (docs/physics.md section 2).
template <class Field>
inline void derivative(const Field& field, const double s[4], double z, double qop,
                       double k[4]) {
  double b[3];
  field(s[0], s[1], z, b);
  const double tx = s[2], ty = s[3];
  const double txty = tx * ty, tx2 = tx * tx, ty2 = ty * ty;
  const double kq = kKappa * qop * std::sqrt(1.0 + tx2 + ty2);
  k[0] = tx;
  k[1] = ty;
  k[2] = kq * (txty * b[0] - (1.0 + tx2) * b[1] + ty * b[2]);
  k[3] = kq * ((1.0 + ty2) * b[0] - txty * b[1] - tx * b[2]);
}

inline int limit_status(const double s[4]) {
  if (std::max(std::fabs(s[0]), std::fabs(s[1])) > 5000.0) return kLeftVolume;
  if (std::max(std::fabs(s[2]), std::fabs(s[3])) > 2.0) return kSlopeLimit;
  return kOk;
}

// Propagate one state (x, y, tx, ty, qop) from z0 to z1; end (x, y, tx, ty). Returns a Status.
template <class Field>
int propagate(const Field& field, const double state[5], double z0, double z1,
              const Settings& settings, double end[4]) {
  double s[4] = {state[0], state[1], state[2], state[3]};
  const double qop = state[4];
  const double inv_tol[4] = {1.0 / settings.tolerance_position,
                             1.0 / settings.tolerance_position, 1.0 / settings.tolerance_slope,
                             1.0 / settings.tolerance_slope};
  const double direction = (z1 > z0) ? 1.0 : (z1 < z0 ? -1.0 : 0.0);
  double z = z0;
  double h_size = std::min(std::fabs(z1 - z0), std::min(100.0, settings.max_step));
  double k[7][4];
  derivative(field, s, z, qop, k[0]);
  for (int iteration = 0; iteration < 20000; ++iteration) {
    const double remaining = std::fabs(z1 - z);
    const bool last = h_size >= remaining;
    const double h = direction * std::min(h_size, remaining);
    for (int stage = 1; stage < 7; ++stage) {
      double y_stage[4];
      for (int i = 0; i < 4; ++i) {
        double acc = 0.0;
        for (int j = 0; j < stage; ++j) acc += kA[stage][j] * k[j][i];
        y_stage[i] = s[i] + acc * h;
      }
      derivative(field, y_stage, z + kC[stage] * h, qop, k[stage]);
    }
    double y_new[4];
    double err = 0.0;
    for (int i = 0; i < 4; ++i) {
      double acc = 0.0, acc_err = 0.0;
      for (int j = 0; j < 7; ++j) {
        acc += kB[j] * k[j][i];
        acc_err += (kB[j] - kBErr[j]) * k[j][i];
      }
      y_new[i] = s[i] + acc * h;
      err = std::max(err, std::fabs(acc_err * h) * inv_tol[i]);
    }
    const bool accept = err <= 1.0;
    if (accept) {
      std::memcpy(s, y_new, sizeof s);
      z = last ? z1 : z + h;
      std::memcpy(k[0], k[6], sizeof k[0]);  // first same as last
    }
    const double factor = std::min(std::max(0.9 * std::pow(std::max(err, 1e-12), -0.2), 0.2), 5.0);
    h_size = std::min(std::fabs(h) * factor, settings.max_step);
    if (accept) {
      const int status = limit_status(s);
      if (status != kOk) return status;
      if (z == z1) {
        std::memcpy(end, s, sizeof s);
        return kOk;
      }
    }
  }
  return kStepLimit;
}

}  // namespace raytrack_bench

#endif  // RAYTRACK_BENCH_DORMAND_PRINCE_HPP
