// The L2 flush kernel of GpuTimer (verify/gpu_timing.h), compiled by nvcc in l2_flush.cu. Internal.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace wpack::gpu::detail {

// Enqueues a kernel on `stream` that reads every byte of buf_dev (`bytes`, a multiple of 16, 16-byte
// aligned: cudaMalloc memory) through L2 and writes nothing but, in a case that never happens for
// the pattern GpuTimer fills the buffer with, one word of sink_dev (so the reads cannot be dropped).
// `blocks` thread blocks of 512 threads. Returns the launch error (cudaGetLastError).
cudaError_t launch_l2_flush(const void* buf_dev, uint64_t bytes, unsigned* sink_dev, int blocks, cudaStream_t stream);

// The read floor's kernel (measure_read_floor, verify/gpu_timing.h): reads every byte of buf_dev
// once, as a streaming GEMV reads its weights (16-byte loads past L1, 4 in flight per thread,
// the grid striding over the buffer), and writes nothing (same sink rule as above). Same
// preconditions; `blocks` blocks of `threads` threads (a multiple of 32, at most 1024).
cudaError_t launch_read_once(const void* buf_dev, uint64_t bytes, unsigned* sink_dev, int blocks, int threads,
                             cudaStream_t stream);

}  // namespace wpack::gpu::detail
