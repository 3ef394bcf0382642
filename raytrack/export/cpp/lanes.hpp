// @part Lanes, a block of floats as one SIMD value, and its math (core, host code)
// The batched engine's number: kBlock floats, one per track of a block, as a GCC/Clang vector
// type, so that each operation is one SIMD instruction whatever the auto-vectoriser decides
// (it keeps a loop over the block scalar as soon as the loop holds a sqrt, a floor or a
// branch). Square root and floor, which the vector types lack, are the CPU's own instructions
// where the target has them (AVX-512, AVX, SSE), lane by lane otherwise: the same IEEE
// results either way.
// The block is the target's widest float vector: 16 floats with AVX-512, 8 with AVX, else 4
// (SSE, NEON); wider than the target, a vector passed between functions changes their ABI.
#if defined(__AVX512F__)
constexpr int kBlock = 16;
#elif defined(__AVX__)
constexpr int kBlock = 8;
#else
constexpr int kBlock = 4;
#endif
typedef float Lanes __attribute__((vector_size(kBlock * sizeof(float))));
typedef int LaneInts __attribute__((vector_size(kBlock * sizeof(int))));

inline Lanes splat(float v) { return Lanes{} + v; }

inline Lanes load_lanes(const float* p) {
  Lanes v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void store_lanes(float* p, Lanes v) { __builtin_memcpy(p, &v, sizeof v); }

inline Lanes max_(Lanes a, Lanes b) { return a < b ? b : a; }
inline Lanes min_(Lanes a, Lanes b) { return b < a ? b : a; }

inline Lanes sqrt_(Lanes x) {
#if defined(__AVX512F__)
  const __m512 v = reinterpret_cast<__m512>(x);
  return reinterpret_cast<Lanes>(_mm512_mask_sqrt_ps(v, 0xFFFF, v));  // GCC 12 warns on the
                                                                      // unmasked form
#elif defined(__AVX__)
  return reinterpret_cast<Lanes>(_mm256_sqrt_ps(reinterpret_cast<__m256>(x)));
#elif defined(__SSE2__)
  return reinterpret_cast<Lanes>(_mm_sqrt_ps(reinterpret_cast<__m128>(x)));
#else
  Lanes r;
  for (int b = 0; b < kBlock; ++b) r[b] = sqrtf(x[b]);
  return r;
#endif
}

inline Lanes floor_(Lanes x) {
#if defined(__AVX512F__)
  const __m512 v = reinterpret_cast<__m512>(x);
  return reinterpret_cast<Lanes>(
      _mm512_mask_roundscale_ps(v, 0xFFFF, v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
#elif defined(__AVX__)
  return reinterpret_cast<Lanes>(_mm256_floor_ps(reinterpret_cast<__m256>(x)));
#elif defined(__SSE4_1__)
  return reinterpret_cast<Lanes>(_mm_floor_ps(reinterpret_cast<__m128>(x)));
#else
  Lanes r;
  for (int b = 0; b < kBlock; ++b) r[b] = floorf(x[b]);
  return r;
#endif
}

inline Lanes fabs_(Lanes x) { return x < 0.0f ? -x : x; }

// table[index[b]] + offset in every lane (a gather where the target has one).
inline Lanes gather(const float* table, LaneInts index, int offset) {
  Lanes r;
  for (int b = 0; b < kBlock; ++b) r[b] = table[index[b] + offset];
  return r;
}

// pow(x, y) lane by lane (the target scale's leg length; powf has no vector instruction).
inline Lanes pow_(Lanes x, float y) {
  Lanes r;
  for (int b = 0; b < kBlock; ++b) r[b] = powf(x[b], y);
  return r;
}

// exp(x) in every lane, within 2 ulp of expf (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2,
// a degree-6 polynomial in r, 2^n from the exponent bits); x clamped to [-87.3, 88.7], where
// expf neither overflows nor goes subnormal.
inline Lanes exp_(Lanes x) {
  x = min_(max_(x, splat(-87.33654f)), splat(88.72283f));
  const Lanes n = floor_(x * 1.44269504088896341f + 0.5f);
  const Lanes r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  Lanes p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Lanes e = p * (r * r) + r + 1.0f;
  // 2^n in two factors, so that n = 128 (x near the top of the range) stays finite
  const LaneInts half = __builtin_convertvector(n, LaneInts) >> 1;
  const LaneInts other = __builtin_convertvector(n, LaneInts) - half;
  return e * reinterpret_cast<Lanes>((half + 127) << 23) *
         reinterpret_cast<Lanes>((other + 127) << 23);
}

// An activation in every lane: relu, silu and tanh in SIMD (tanh from exp), gelu lane by lane
// (erf has no vector form here).
inline Lanes activate(unsigned code, Lanes x) {
  switch (code) {
    case kRelu: return x > 0.0f ? x : Lanes{};
    case kSilu: return x / (1.0f + exp_(-x));
    case kTanh: {
      const Lanes e = exp_(-2.0f * fabs_(x));
      const Lanes t = (1.0f - e) / (1.0f + e);
      return x < 0.0f ? -t : t;
    }
    default: {
      Lanes r;
      for (int b = 0; b < kBlock; ++b) r[b] = activate(code, x[b]);
      return r;
    }
  }
}
