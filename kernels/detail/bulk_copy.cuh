// Internal to kernels/ (CUDA only): the rings of stages that the Hopper GEMVs fill from global memory
// and the mbarriers their stages complete on, as small inline-PTX helpers.
//
// Two ways to fill a stage:
//   WPACK_HAVE_BULK_COPY (CUDA 12+, PTX ISA 8.0): the bulk-copy engine (cp.async.bulk), one
//     instruction per copy, completing on a transaction-count mbarrier (arrive.expect_tx).
//   WPACK_HAVE_MBAR_RING without it (CUDA 11.8, which Debian 12 ships: PTX ISA 7.8): the lanes of
//     a warp issue 16-byte cp.async copies (ring_copy_async) and each lane then arrives on the
//     stage's mbarrier when its copies have landed (ring_arrive_async, cp.async.mbarrier.arrive
//     .noinc), so the barrier counts 32 such arrivals.
// kernels/quant_gemv_tma.cu takes either (WPACK_HAVE_MBAR_RING), and so do the warp-per-tile
// kernels (lossless_gemv.cu, quant_rans_gemv.cu), whose warps each fill their own buffers
// (warp_copy below). Defining WPACK_NO_BULK_COPY makes a CUDA 12+ build take the cp.async copies
// too, so that they can be tested on a toolkit with both.
#pragma once

#include <cstdint>

#if defined(__CUDACC_VER_MAJOR__) && __CUDACC_VER_MAJOR__ >= 12 && !defined(WPACK_NO_BULK_COPY)
#define WPACK_HAVE_BULK_COPY 1
#else
#define WPACK_HAVE_BULK_COPY 0
#endif
#if defined(__CUDACC_VER_MAJOR__) && (__CUDACC_VER_MAJOR__ >= 12 || (__CUDACC_VER_MAJOR__ == 11 && __CUDACC_VER_MINOR__ >= 8))
#define WPACK_HAVE_MBAR_RING 1
#else
#define WPACK_HAVE_MBAR_RING 0
#endif

#if WPACK_HAVE_MBAR_RING
namespace wpack::gpu::detail {
namespace {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared.b64 state, [%0];\n}\n" ::"r"(smem_u32(bar)) : "memory");
}
// Waits until the phase of `bar` with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      " .reg .pred done;\n"
      "WPACK_MBAR_WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared.b64 done, [%0], %1;\n"
      " @!done bra WPACK_MBAR_WAIT_%=;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}
// An L2 policy for bytes read once (weights): evicted first, so that they do not push out x.
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// The cp.async ring: this lane's 16-byte copies of dst[0, bytes) from src (both 16-aligned, bytes
// a multiple of 16; lane l copies bytes 16 l, 16 l + 512, ...). Every lane of the warp calls it.
__device__ __forceinline__ void ring_copy_async(void* dst, const void* src, uint32_t bytes, uint64_t policy) {
  const uint32_t d = smem_u32(dst);
  const char* s = static_cast<const char*>(src);
  for (uint32_t off = 16 * (threadIdx.x & 31); off < bytes; off += 512)
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(d + off), "l"(s + off),
                 "l"(policy)
                 : "memory");
}
// This lane's arrival on `bar` once all its cp.async copies issued so far have landed (not counted
// in advance: the barrier's count includes it).
__device__ __forceinline__ void ring_arrive_async(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}

#if WPACK_HAVE_BULK_COPY
// Makes initialised barriers visible to the bulk-copy engine (the async proxy).
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
// Bulk copy global -> shared (dst, src 16-aligned, bytes a multiple of 16), completing on `bar`.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(
          smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
      : "memory");
}
#endif  // WPACK_HAVE_BULK_COPY

// ---- a warp's own copies (the warp-per-tile kernels: no producer warp, each warp fills its own
// buffers and waits on its own barriers) ----
// Arrivals per phase of a barrier that warp_copy completes on (mbar_init's count).
constexpr uint32_t kWarpCopyArrivals = WPACK_HAVE_BULK_COPY ? 1 : 32;
// Whether lane `lane` of a warp issues its warp_copy calls: lane 0 alone (bulk copies) or every lane
// (cp.async).
__device__ __forceinline__ bool warp_copy_lane(uint32_t lane) { return !WPACK_HAVE_BULK_COPY || lane == 0; }
// dst[0, bytes) from src (both 16-aligned, bytes a multiple of 16), completing on `bar`; called by
// the lanes of warp_copy_lane, with the same arguments. Bulk copies: lane 0 sets the byte count and
// issues one copy. cp.async: each lane copies its 16-byte pieces and arrives once they (and its
// earlier cp.async copies) have landed.
__device__ __forceinline__ void warp_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
#if WPACK_HAVE_BULK_COPY
  mbar_arrive_expect_tx(bar, bytes);
  bulk_load(dst, src, bytes, bar, policy);
#else
  ring_copy_async(dst, src, bytes, policy);
  ring_arrive_async(bar);
#endif
}
// Lane 0 (then a __syncwarp): `count` barriers for warp_copy, made visible to the copies.
__device__ __forceinline__ void warp_copy_init(uint64_t* bars, uint32_t count) {
  if ((threadIdx.x & 31) == 0) {
    for (uint32_t i = 0; i < count; ++i) mbar_init(bars + i, kWarpCopyArrivals);
#if WPACK_HAVE_BULK_COPY
    mbar_init_fence();
#endif
  }
}
// Before a __syncwarp after which warp_copy may overwrite shared memory that the lanes wrote: the
// bulk-copy engine writes through the async proxy, so a proxy fence orders the lanes' own writes
// before its; cp.async copies are the lanes' own generic-proxy writes and need nothing more.
__device__ __forceinline__ void warp_copy_fence() {
#if WPACK_HAVE_BULK_COPY
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

}  // namespace
}  // namespace wpack::gpu::detail
#endif  // WPACK_HAVE_MBAR_RING
