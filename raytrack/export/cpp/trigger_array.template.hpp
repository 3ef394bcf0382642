// @part one constant array of a trigger header: its host copy and its __constant__ device copy
// @comment@
@define@inline constexpr @ctype@ @name@[@size@] = {@macro@};
#if defined(__CUDACC__)
static __constant__ @ctype@ @name@Device[@size@] = {@macro@};
#endif
#undef @macro@

RAYTRACK_HD inline const @ctype@* @accessor@() {
#if defined(__CUDA_ARCH__)
  return @name@Device;
#else
  return @name@;
#endif
}

