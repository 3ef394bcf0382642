// @part Dual, the forward-mode dual numbers, and Traits over plain and dual (core)
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
