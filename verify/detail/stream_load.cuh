// Internal (CUDA device code): the 16-byte load of bytes read once, shared by the read floor's
// kernel (l2_flush.cu) and bench/bench_read_floor.cu, so that the bench sweeps the same load.
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

}  // namespace wpack::gpu::detail
