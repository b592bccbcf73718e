// Internal (CUDA device code): reading bytes once, shared by the read floor's kernel (l2_flush.cu)
// and bench/bench_read_floor.cu, so that the bench sweeps the same loop.
#pragma once

#include <cstdint>

namespace wpack::gpu::detail {

// ld.global.nc.L1::no_allocate: through the read-only path, not kept in L1 (each byte is read once).
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The XOR of 16-byte words src[i], src[i + step], ... below `end`, kInFlight loads issued before
// any is used (the callers store it only when it equals a value it cannot be known to miss, so
// that the loads stay).
template <int kInFlight>
__device__ __forceinline__ uint32_t xor_words(const uint4* __restrict__ src, uint64_t i, uint64_t end, uint64_t step) {
  uint32_t acc = 0;
  for (; i + (kInFlight - 1) * step < end; i += kInFlight * step) {
    uint4 v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) v[u] = load_streaming(src + i + u * step);
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) acc ^= (v[u].x ^ v[u].y) ^ (v[u].z ^ v[u].w);
  }
  for (; i < end; i += step) {
    const uint4 v = load_streaming(src + i);
    acc ^= (v.x ^ v.y) ^ (v.z ^ v.w);
  }
  return acc;
}

}  // namespace wpack::gpu::detail
