// @part model.bin's codes, the core's sizes and the math functions by type (core)
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
