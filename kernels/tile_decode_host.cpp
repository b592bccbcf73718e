// Host side of kernels/tile_decode.h: uploads a tensor's tiles once, sizes the launches, checks
// every CUDA call.
#include "kernels/tile_decode.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "formats/error.h"
#include "kernels/detail/tile_kernels.h"

namespace wpack::gpu {
namespace {

using detail::DevTile;
using detail::SmemPlan;

// Every CUDA runtime call goes through this: a failure becomes Error(kIo) naming the call.
#define WPACK_CUDA_CHECK(call)                                                                   \
  do {                                                                                           \
    const cudaError_t wpack_cuda_err_ = (call);                                                  \
    if (wpack_cuda_err_ != cudaSuccess)                                                          \
      throw ::wpack::Error(::wpack::ErrorCode::kIo,                                              \
                           std::string(#call) + ": " + cudaGetErrorString(wpack_cuda_err_));     \
  } while (0)

constexpr uint8_t kCodecNone = 0, kCodecZstd = 1, kCodecRans = 2;
constexpr uint8_t kFilterNone = 0, kFilterBitShuffle = 2, kFilterFloatPlanes = 3;
constexpr uint32_t kRawPlaneBit = 0x80000000u;

uint64_t align16(uint64_t v) { return (v + 15) & ~uint64_t{15}; }

uint32_t load_u32_le(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// Largest rANS table precision among the tile's coded planes (10 when none; a malformed directory
// is left to the kernel, which reports it per tile).
uint32_t tile_max_precision(std::span<const uint8_t> stored, uint32_t planes) {
  uint32_t best = 10;
  if (stored.size() < 4ull * planes) return best;
  uint64_t start = 4ull * planes;
  for (uint32_t p = 0; p < planes; ++p) {
    const uint32_t word = load_u32_le(stored.data() + 4 * p);
    const uint64_t size = word & ~kRawPlaneBit;
    if (start + size > stored.size()) break;
    if (!(word & kRawPlaneBit) && size >= 2 && stored[start] == 1) best = std::max(best, 10u + std::min(2u, stored[start + 1] & 3u));
    start += size;
  }
  return best;
}

}  // namespace

const char* tile_status_name(TileStatus status) {
  switch (status) {
    case TileStatus::kOk: return "ok";
    case TileStatus::kUnsupportedCodec: return "unsupported codec";
    case TileStatus::kUnsupportedFilter: return "unsupported filter";
    case TileStatus::kCorrupt: return "corrupt";
    case TileStatus::kTooLarge: return "too large";
  }
  return "?";
}

bool gpu_build_has_cuda() { return true; }

int gpu_device_count(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (count == 0 && why) *why = "no CUDA device";
  return count;
}

struct GpuTensor::Impl {
  uint64_t rows = 0, cols = 0;
  uint32_t elem_size = 0;
  DType dtype = DType::F32;
  uint8_t scheme = 0;
  uint64_t tile_count = 0;
  uint64_t stored_bytes = 0;
  uint64_t device_bytes = 0;
  SmemPlan plan{};
  uint8_t* bytes_dev = nullptr;
  DevTile* tiles_dev = nullptr;

  ~Impl() {
    // Destructors must not throw; a failure to free is ignored (the context may already be gone).
    if (bytes_dev) cudaFree(bytes_dev);
    if (tiles_dev) cudaFree(tiles_dev);
  }
};

GpuTensor::GpuTensor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuTensor::GpuTensor(GpuTensor&&) noexcept = default;
GpuTensor& GpuTensor::operator=(GpuTensor&&) noexcept = default;
GpuTensor::~GpuTensor() = default;

uint64_t GpuTensor::rows() const { return impl_->rows; }
uint64_t GpuTensor::cols() const { return impl_->cols; }
uint32_t GpuTensor::elem_size() const { return impl_->elem_size; }
DType GpuTensor::dtype() const { return impl_->dtype; }
uint8_t GpuTensor::scheme() const { return impl_->scheme; }
uint64_t GpuTensor::tile_count() const { return impl_->tile_count; }
uint64_t GpuTensor::stored_bytes() const { return impl_->stored_bytes; }
uint64_t GpuTensor::device_bytes() const { return impl_->device_bytes; }

GpuTensor GpuTensor::upload(const WpkReader& reader, size_t tensor) {
  if (tensor >= reader.tensors().size()) throw Error(ErrorCode::kInvalidArgument, "gpu upload: tensor index out of range");
  const WpkTensor& t = reader.tensors()[tensor];
  const std::string where = reader.path() + ": tensor '" + t.name + "'";
  if (t.scheme != 0) throw Error(ErrorCode::kUnsupported, where + ": lossy tensors are not GPU-decodable yet");
  auto impl = std::make_unique<Impl>();
  impl->rows = t.rows();
  impl->cols = t.cols();
  impl->elem_size = static_cast<uint32_t>(dtype_size(t.dtype));
  impl->dtype = t.dtype;
  impl->tile_count = t.tile_count;
  if (impl->rows > UINT32_MAX || impl->cols > UINT32_MAX || t.tile_count > INT32_MAX)
    throw Error(ErrorCode::kUnsupported, where + ": more than 2^32 rows, columns or 2^31 tiles");

  // Tile table and the byte buffer layout (each tile 16-aligned for cp.async).
  const uint64_t grid_cols = t.tile_grid_cols();
  std::vector<DevTile> tiles(t.tile_count);
  uint64_t total = 0;
  uint32_t precision_cap = 10, table_warps = 1;
  uint64_t stored_cap = 16, raw_cap = 16, cols_cap = 1;
  for (uint64_t k = 0; k < t.tile_count; ++k) {
    const WpkTile& rec = reader.tiles()[t.first_tile + k];
    if (!reader.tile_checksum_ok(t.first_tile + k))
      throw Error(ErrorCode::kCorrupt, where + ": tile " + std::to_string(k) + ": checksum mismatch");
    DevTile& d = tiles[k];
    std::memset(&d, 0, sizeof d);
    const uint64_t grid_row = k / grid_cols, grid_col = k % grid_cols;
    d.row0 = static_cast<uint32_t>(grid_row * t.tile_rows);
    d.col0 = static_cast<uint32_t>(grid_col * t.tile_cols);
    d.rows = static_cast<uint32_t>(std::min<uint64_t>(t.tile_rows, impl->rows - d.row0));
    d.cols = static_cast<uint32_t>(std::min<uint64_t>(t.tile_cols, impl->cols - d.col0));
    if (rec.stored_size > UINT32_MAX || rec.raw_size > UINT32_MAX)
      throw Error(ErrorCode::kUnsupported, where + ": tile " + std::to_string(k) + " larger than 4 GiB");
    d.stored_size = static_cast<uint32_t>(rec.stored_size);
    d.raw_size = static_cast<uint32_t>(rec.raw_size);
    d.filter = rec.filter;
    d.codec = rec.codec;
    d.offset = total;
    total = checked_add(total, align16(rec.stored_size), "gpu upload bytes");
    // Only tiles the GPU can decode size the shared memory (a zstd tile is reported, not loaded).
    const bool decodable = (rec.codec == kCodecNone || rec.codec == kCodecRans) && rec.filter != kFilterBitShuffle &&
                           rec.filter <= kFilterFloatPlanes;
    if (decodable) {
      stored_cap = std::max(stored_cap, align16(rec.stored_size));
      raw_cap = std::max(raw_cap, align16(rec.raw_size));
      cols_cap = std::max<uint64_t>(cols_cap, d.cols);
      if (rec.codec == kCodecRans) {
        const uint32_t planes = rec.filter == kFilterNone ? 1 : impl->elem_size;
        precision_cap = std::max(precision_cap, tile_max_precision(reader.tile_bytes(t.first_tile + k), planes));
        table_warps = std::max(table_warps, std::min(planes, 4u));
      }
    }
  }
  impl->stored_bytes = 0;
  for (uint64_t k = 0; k < t.tile_count; ++k) impl->stored_bytes += reader.tiles()[t.first_tile + k].stored_size;
  impl->plan = SmemPlan{static_cast<uint32_t>(stored_cap), static_cast<uint32_t>(raw_cap), precision_cap,
                        static_cast<uint32_t>(cols_cap), table_warps};

  int device = 0, smem_limit = 0;
  WPACK_CUDA_CHECK(cudaGetDevice(&device));
  WPACK_CUDA_CHECK(cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const uint64_t need = detail::decode_smem_bytes(impl->plan) + 1024;  // + static shared and margin
  if (need > static_cast<uint64_t>(smem_limit))
    throw Error(ErrorCode::kUnsupported, where + ": tiles need " + std::to_string(need) +
                                             " bytes of shared memory per block, the device gives " +
                                             std::to_string(smem_limit) + " (use smaller tiles)");

  // One host staging buffer, one copy (pinned memory would not pay for a once-per-tensor upload).
  std::vector<uint8_t> staging(total, 0);
  for (uint64_t k = 0; k < t.tile_count; ++k) {
    const auto bytes = reader.tile_bytes(t.first_tile + k);
    if (!bytes.empty()) std::memcpy(staging.data() + tiles[k].offset, bytes.data(), bytes.size());
  }
  WPACK_CUDA_CHECK(cudaMalloc(&impl->bytes_dev, std::max<uint64_t>(total, 16)));
  WPACK_CUDA_CHECK(cudaMalloc(&impl->tiles_dev, std::max<uint64_t>(tiles.size(), 1) * sizeof(DevTile)));
  if (total) WPACK_CUDA_CHECK(cudaMemcpy(impl->bytes_dev, staging.data(), total, cudaMemcpyHostToDevice));
  if (!tiles.empty())
    WPACK_CUDA_CHECK(cudaMemcpy(impl->tiles_dev, tiles.data(), tiles.size() * sizeof(DevTile), cudaMemcpyHostToDevice));
  impl->device_bytes = total + tiles.size() * sizeof(DevTile);
  return GpuTensor(std::move(impl));
}

void GpuTensor::decode(void* out_dev, uint32_t* status_dev, void* stream) const {
  WPACK_CUDA_CHECK(detail::launch_decode(impl_->bytes_dev, impl_->tiles_dev, impl_->tile_count, impl_->elem_size,
                                         impl_->cols, impl_->plan, out_dev, status_dev,
                                         static_cast<cudaStream_t>(stream)));
}

void GpuTensor::gemv(const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev,
                          void* stream) const {
  if (batch < 1 || batch > 64) throw Error(ErrorCode::kInvalidArgument, "gemv: batch must be 1..64");
  if (impl_->dtype != DType::BF16) throw Error(ErrorCode::kUnsupported, "gemv: the tensor is not BF16");
  if (batch > 8) throw Error(ErrorCode::kUnsupported, "gemv: batch above 8 is not implemented yet");
  const auto s = static_cast<cudaStream_t>(stream);
  WPACK_CUDA_CHECK(cudaMemsetAsync(y_dev, 0, impl_->rows * batch * sizeof(float), s));
  WPACK_CUDA_CHECK(detail::launch_gemv_bf16(impl_->bytes_dev, impl_->tiles_dev, impl_->tile_count, impl_->plan, x_dev,
                                            y_dev, batch, status_dev, s));
}

}  // namespace wpack::gpu
