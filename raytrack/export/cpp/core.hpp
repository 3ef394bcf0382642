// @part the per-track code in namespace core, in raytrack_mlp.hpp and every trigger header
// >>> raytrack core: begin
// The formulation, the network and the forward-mode Jacobian, for one track. Device-ready: no
// standard library, no allocation, every function __host__ __device__ under nvcc. The trigger
// headers that raytrack.export.header generates hold this same code (raytrack/export/cpp/
// core.hpp, inside their own namespace), so model.bin's reader and those headers run the same
// arithmetic.
#ifndef RAYTRACK_HD
#if defined(__CUDACC__)
#define RAYTRACK_HD __host__ __device__
#else
#define RAYTRACK_HD
#endif
#endif

namespace core {

// @include scalar.hpp

// @include wide.hpp

// @include dual.hpp

// @include network.hpp

// @include tables.hpp

// @include bases.hpp

// @include predict.hpp

#if !defined(__CUDACC__)  // host compilers: GCC's and Clang's vector types
// @include lanes.hpp

// @include batch.hpp
#endif

}  // namespace core
// <<< raytrack core: end
