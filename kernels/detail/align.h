// Internal to kernels/: rounding a size or an offset up to a multiple, in host and device code
// (stage layouts, tile offsets, shared-memory plans).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define WPACK_ALIGN_HD __host__ __device__
#else
#define WPACK_ALIGN_HD
#endif

namespace wpack::gpu::detail {

// v rounded up to a multiple of a (a > 0).
template <typename T>
WPACK_ALIGN_HD constexpr T align_up(T v, uint32_t a) {
  return static_cast<T>((v + a - 1) / a * a);
}
// v rounded up to a multiple of 16 (what cp.async and the bulk copies need).
template <typename T>
WPACK_ALIGN_HD constexpr T align16(T v) {
  return align_up(v, 16);
}

}  // namespace wpack::gpu::detail

#undef WPACK_ALIGN_HD
