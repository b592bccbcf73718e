// Internal to kernels/: the device tile table and the kernel launchers that tile_decode.cu
// implements and tile_decode_host.cpp calls. Plain C++17 types only (included by nvcc and g++).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>  // cudaError_t, cudaStream_t

namespace wpack::gpu::detail {

// One tile as the kernels see it (device memory, an array of tile_count entries).
struct DevTile {
  uint64_t offset;       // of its stored bytes in the device byte buffer; a multiple of 16
  uint32_t stored_size;  // bytes
  uint32_t raw_size;     // bytes after the codec is undone = rows * cols * elem_size
  uint32_t row0, col0;   // its first element in the tensor's 2-D view
  uint32_t rows, cols;   // its shape (edge tiles are cut short)
  uint8_t filter;        // packer/filters.h Filter code
  uint8_t codec;         // packer/codec.h Codec code
  uint8_t reserved[6];
};
static_assert(sizeof(DevTile) == 40, "DevTile is 40 bytes");

// Shared-memory plan of a launch, the maximum over the tensor's GPU-decodable tiles.
struct SmemPlan {
  uint32_t stored_cap;     // bytes, a multiple of 16
  uint32_t raw_cap;        // bytes, a multiple of 16
  uint32_t precision_cap;  // largest rANS table precision (10..12); tables are 4 << precision_cap bytes
  uint32_t cols_cap;       // widest tile, elements (gemv keeps x for it in shared memory)
  uint32_t table_warps;    // 1..4: warps that decode rANS planes (= most planes of a tile, at most 4);
                           // fewer tables leave room for more blocks per multiprocessor
};

// Bytes of dynamic shared memory decode/gemv launches need (gemv adds x: cols_cap * batch floats).
uint64_t decode_smem_bytes(const SmemPlan& plan);
uint64_t gemv_smem_bytes(const SmemPlan& plan, uint32_t batch);

// The launchers return the launch's error (cudaGetLastError after the launch); they do not sync.
//   bytes_dev   (sum of aligned stored sizes) bytes: the tiles' stored bytes
//   tiles_dev   (tile_count) DevTile
//   out_dev     (tensor_rows, tensor_cols) elements of elem_size bytes, row-major
//   status_dev  (tile_count) uint32_t TileStatus
cudaError_t launch_decode(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                          uint32_t elem_size, uint64_t tensor_cols, const SmemPlan& plan, void* out_dev,
                          uint32_t* status_dev, cudaStream_t stream);
//   x_dev (tensor_cols, batch) BF16 bits, y_dev (tensor_rows, batch) float, zeroed by the caller.
cudaError_t launch_gemv_bf16(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                             const SmemPlan& plan, const uint16_t* x_dev, float* y_dev, uint32_t batch,
                             uint32_t* status_dev, cudaStream_t stream);

}  // namespace wpack::gpu::detail
