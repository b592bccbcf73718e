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
// kernels/quant_gemv_tma.cu takes either (WPACK_HAVE_MBAR_RING); the warp-per-tile kernels
// (lossless_gemv.cu, quant_rans_gemv.cu) need the bulk copies. Defining WPACK_NO_BULK_COPY makes a
// CUDA 12+ build take the cp.async ring too, so that it can be tested on a toolkit with both.
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

}  // namespace
}  // namespace wpack::gpu::detail
#endif  // WPACK_HAVE_MBAR_RING
