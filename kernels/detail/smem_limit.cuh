// Internal to kernels/ (CUDA only): letting a kernel use the device's whole opt-in shared memory.
#pragma once

#include <atomic>

#include <cuda_runtime.h>

namespace wpack::gpu::detail {

// Sets kKernel's cudaFuncAttributeMaxDynamicSharedMemorySize to the current device's opt-in limit
// less the kernel's static shared memory, once per kernel instance and device (the first 16
// devices; later ones on every call), so that launches need no attribute call and plans of any
// size share the instance. Only a success is remembered: a failed call (say, a transient error)
// is tried again on the next one rather than leaving the kernel unusable for the process.
template <auto kKernel>
cudaError_t allow_max_dynamic_smem() {
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  auto set = [device] {
    int limit = 0;
    cudaFuncAttributes attributes{};
    cudaError_t e = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&attributes, kKernel);
    // the limit covers the kernel's static shared memory too
    const int dynamic = limit - static_cast<int>(attributes.sharedSizeBytes);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic);
    if (e != cudaSuccess) cudaGetLastError();  // returned here: not left for a later launch's check
    return e;
  };
  static std::atomic<bool> done[16];
  if (device < 0 || device >= 16) return set();
  if (done[device].load(std::memory_order_acquire)) return cudaSuccess;
  const cudaError_t e = set();  // concurrent first calls may both set it: the same value
  if (e == cudaSuccess) done[device].store(true, std::memory_order_release);
  return e;
}

// Blocks of kKernel (threads per block, smem_bytes of dynamic shared memory, the opt-in limit
// allowed first) that fit on one multiprocessor of the current device; 0 when none fits or a call
// fails (that call's error is cleared: a plan that does not fit is not a sticky error; an error
// left by an earlier, unrelated call is not).
template <auto kKernel>
int max_blocks_per_sm(uint32_t threads, uint64_t smem_bytes) {
  int blocks = 0;
  if (allow_max_dynamic_smem<kKernel>() != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kKernel, threads, smem_bytes) != cudaSuccess) {
    blocks = 0;
    cudaGetLastError();
  }
  return blocks;
}

}  // namespace wpack::gpu::detail
