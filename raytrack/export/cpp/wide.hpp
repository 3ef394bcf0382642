// @part Wide, a value held as two floats, and the value type of a precision (core)
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
