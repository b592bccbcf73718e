// The read-only L2 flush of GpuTimer: see verify/gpu_timing.h for why it reads rather than writes.
#include "verify/detail/l2_flush.h"

#include "verify/detail/stream_load.cuh"

namespace wpack::gpu::detail {
namespace {

// Preconditions (checked by the host wrapper): buf 16-byte aligned, words = bytes / 16.
__global__ void l2_flush_kernel(const uint4* __restrict__ buf, uint64_t words, unsigned* __restrict__ sink) {
  uint32_t acc = 0;
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  for (uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < words; i += stride) {
    // __ldcg: cached in L2 only (not L1): the point is to fill L2 with this buffer's lines.
    const uint4 v = __ldcg(buf + i);
    acc ^= (v.x ^ v.y) ^ (v.z ^ v.w);
  }
  // The buffer is filled with one byte value, so acc is 0 for every thread; the store keeps the
  // compiler from removing the loads and never happens.
  if (acc == 0x9E3779B9u) atomicAdd(sink, 1u);
}

__global__ void read_once_kernel(const uint4* __restrict__ buf, uint64_t words, unsigned* __restrict__ sink) {
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  const uint32_t acc = xor_words<4>(buf, uint64_t{blockIdx.x} * blockDim.x + threadIdx.x, words, stride);
  if (acc == 0x9E3779B9u) atomicAdd(sink, 1u);
}

}  // namespace

cudaError_t launch_read_once(const void* buf_dev, uint64_t bytes, unsigned* sink_dev, int blocks, int threads,
                             cudaStream_t stream) {
  if (bytes % 16 != 0 || (reinterpret_cast<uintptr_t>(buf_dev) % 16) != 0 || blocks <= 0 || threads <= 0 ||
      threads % 32 != 0 || threads > 1024)
    return cudaErrorInvalidValue;
  read_once_kernel<<<blocks, threads, 0, stream>>>(static_cast<const uint4*>(buf_dev), bytes / 16, sink_dev);
  return cudaGetLastError();
}

cudaError_t launch_l2_flush(const void* buf_dev, uint64_t bytes, unsigned* sink_dev, int blocks, cudaStream_t stream) {
  if (bytes % 16 != 0 || (reinterpret_cast<uintptr_t>(buf_dev) % 16) != 0 || blocks <= 0) return cudaErrorInvalidValue;
  l2_flush_kernel<<<blocks, 512, 0, stream>>>(static_cast<const uint4*>(buf_dev), bytes / 16, sink_dev);
  return cudaGetLastError();
}

}  // namespace wpack::gpu::detail
