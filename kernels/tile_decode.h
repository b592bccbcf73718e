// GPU decode of .wpk tiles, and fused decode + matmul (GEMV/GEMM) with BF16 activations.
//
// Host-only header: it includes no CUDA header and builds without CUDA. In a build without CUDA
// (WPACK_CUDA=OFF or no nvcc) every function below except gpu_build_has_cuda(),
// gpu_build_has_warp_tiles() (both false there) and gpu_ring_gemv_name() (nullptr) throws
// Error(kUnsupported, "this wpack build has no CUDA").
//
// Model: a GpuTensor is one tensor of an open .wpk whose tiles' stored bytes (exactly as in the
// file, codec and filter not undone) and a tile table were copied to device memory once. Its
// kernels then work from that copy: a thread block (lossless BF16 tiles of the default shape: a
// warp, kernels/lossless_gemv.cu) loads a tile's stored bytes into shared memory (cp.async or
// bulk copies), decodes each plane there (raw copy, or the rANS stream of docs/FORMAT-rans.md
// with one warp per stream), undoes the filter, and either writes the elements to a dense tensor
// (decode) or multiplies them with a vector (gemv). Lossy tensors: kernels/quant_*.cu.
//
// What the GPU decodes: codec none, rans or exp4 (with floatplanes: a lossless BF16 tensor whose
// tiles are all exp4 multiplies on the bulk-copy GEMV of kernels/quant_gemv_tma.cu); filter none,
// byteshuffle, bitshuffle or floatplanes; element size 1 (not floatplanes), 2, 4 or 8. Anything
// else (zstd tiles) is not an error of the call: the tile is left
// unwritten and reported per tile in the status array (DietGPU style). A malformed stream is
// reported as kCorrupt the same way; the kernels never trap and never read or write outside their
// buffers.
//
// Pointers named *_dev are device memory (cudaMalloc'ed by the caller); `stream` is a
// cudaStream_t passed as void* (nullptr: the default stream). Calls are asynchronous on `stream`
// except where stated; launch and API errors throw Error(kIo, "<call>: <CUDA error text>").
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats/error.h"
#include "formats/wpk.h"

namespace wpack::gpu {

// Per-tile result codes written by the kernels into a uint32_t array of tile_count() entries.
enum class TileStatus : uint32_t {
  kOk = 0,
  kUnsupportedCodec = 1,   // zstd (archive codec: CPU decode only)
  kUnsupportedFilter = 2,  // floatplanes on 1-byte elements (the packer never writes it)
  kCorrupt = 3,            // plane directory or rANS stream inconsistent (sizes, table, final states)
  kTooLarge = 4,           // the tile does not fit the shared memory the launch was sized for
};
// A status's name for messages ("ok", "unsupported codec", ...). One definition for both builds.
inline const char* tile_status_name(TileStatus status) {
  switch (status) {
    case TileStatus::kOk: return "ok";
    case TileStatus::kUnsupportedCodec: return "unsupported codec";
    case TileStatus::kUnsupportedFilter: return "unsupported filter";
    case TileStatus::kCorrupt: return "corrupt";
    case TileStatus::kTooLarge: return "too large";
  }
  return "?";
}

// True when this build has the CUDA kernels (never throws).
bool gpu_build_has_cuda();
// True when it also has the warp-per-tile rANS GEMVs (kernels/lossless_gemv.cu, quant_rans_gemv.cu;
// built with CUDA 11.8 or later, the Hopper kernels' mbarriers; never throws).
bool gpu_build_has_warp_tiles();
// The name gemv_kernel() gives the ring GEMV of kernels/quant_gemv_tma.cu in this build:
// GpuTensor::kGemvBulkCopy (CUDA 12 or later), GpuTensor::kGemvCpAsyncRing (CUDA 11.8: its stages
// filled by cp.async copies), nullptr when it is not built (never throws).
const char* gpu_ring_gemv_name();

// Number of CUDA devices visible; 0 when there is none or the driver is missing (the reason then
// goes to *why when `why` is not null). Never throws in a CUDA build.
int gpu_device_count(std::string* why = nullptr);

// Whether the current device runs this build's kernels: its compute capability is one the build
// was compiled for (CMAKE_CUDA_ARCHITECTURES, 90 by default), or it can compile the build's PTX.
// When not, the reason goes to *why when `why` is not null ("device sm_80 (NAME): no kernel image
// in this build (...)"). Throws Error(kIo) when the device fails otherwise (its context cannot be
// made: busy in exclusive mode, out of memory, a driver too old for the toolkit).
bool gpu_device_runs_kernels(std::string* why = nullptr);
// After a failed call: "" when the device still works, else the error that its context keeps
// (an illegal address, a kernel trap: every later CUDA call fails with it). Never throws in a CUDA
// build.
std::string gpu_context_error();

// One lossless tensor's tiles resident in device memory. Move-only; frees its device memory.
class GpuTensor {
 public:
  // Copies tensor `tensor` of `reader` to the current device (synchronous). Checks each tile's
  // checksum first (Error(kCorrupt) naming file, tensor and tile). Lossy tensors also carry their
  // parsed params (row scales, LUT tables) to the device. Throws Error(kUnsupported) when a GPU-decodable tile needs more shared memory than the device gives a
  // block (raw + stored bytes + rANS tables; a 128x128 tile of 4-byte elements needs ~150 KiB).
  static GpuTensor upload(const WpkReader& reader, size_t tensor);

  GpuTensor(GpuTensor&&) noexcept;
  GpuTensor& operator=(GpuTensor&&) noexcept;
  ~GpuTensor();

  uint64_t rows() const;         // the 2-D view of docs/FORMAT.md "Tiling"
  uint64_t cols() const;
  uint32_t elem_size() const;    // bytes per element of the source dtype
  DType dtype() const;
  uint8_t scheme() const;        // the tensor record's scheme: 0 lossless, else packer/quantize.h Scheme
  bool lossy() const { return scheme() != 0; }
  uint32_t decoded_elem_size() const { return lossy() ? 4u : elem_size(); }  // bytes per element of decode()
  uint64_t tile_count() const;
  uint64_t stored_bytes() const;  // sum of the tiles' stored sizes (what the kernels read)
  uint64_t device_bytes() const;  // device memory held (stored bytes with 128-byte alignment + tables)
  // The tiles that a warp-per-tile kernel takes, decided at upload (0 when this build has no such
  // kernel, the device has no bulk copies (compute capability below 9.0) or WPACK_GPU_NO_TMA is
  // set): lossless BF16, in gemv() and decode(), the others taking the block-per-tile kernel;
  // lossy rANS-coded tiles, in gemv() (when the bulk-copy GEMV does not take the tensor), the
  // others taking the generic kernel.
  uint64_t warp_tiles() const;

  // Decodes every tile into out_dev: rows() x cols() elements of decoded_elem_size() bytes,
  // row-major. Lossless tensors: the source bytes. Lossy tensors: the dequantized float32 values,
  // bit-exact with the CPU reference decode_quant_tile_ref() (pruned/unoccupied elements +0.0f).
  // status_dev: tile_count() uint32_t, one TileStatus per tile, all written. A tile that is not kOk
  // leaves its part of out_dev unspecified: unsupported and malformed-header tiles leave it
  // untouched, but the warp-per-tile kernel writes a lossless tile's values as it decodes them and
  // finds a corrupt stream only at its end (final states, word count).
  void decode(void* out_dev, uint32_t* status_dev, void* stream = nullptr) const;

  // Y = W * X for W of shape (N, K) = (rows(), cols()), decoded inside the kernel:
  //   x_dev: (K, batch) BF16 bit patterns (uint16_t), row-major (the batch index fastest)
  //   y_dev: (N, batch) float32, row-major; overwritten (zeroed on `stream`, then accumulated)
  // For a BF16 lossless tensor or any lossy tensor (the dequantized weights). batch in 1..64.
  // Float32 accumulation; partial sums of different tile columns are combined with float
  // atomicAdd, so the last bits of y can vary from run to run. status_dev as for decode(), except
  // that gemv() may not check a lossy tile's values and padding (an infinite or NaN scale, an fp8
  // NaN code, a code plane's padding bits: kCorrupt in decode(); the fused kernels multiply what
  // they read); when a tile is not kOk, y is unspecified (a tile found corrupt at the end of its
  // stream may already have added to it). Raw quantized tiles and lossless BF16 tensors whose
  // tiles are all exp4 run on the bulk-copy GEMV (kernels/quant_gemv_tma.cu), rANS-coded tiles of
  // the default shape on a warp-per-tile kernel (kernels/lossless_gemv.cu,
  // kernels/quant_rans_gemv.cu), the others on block-per-tile kernels. Throws Error(kUnsupported)
  // for a lossless tensor that is not BF16 and for tiles that the block-per-tile kernel, holding x
  // beside them, cannot fit in shared memory (upload checked decode()'s need only);
  // Error(kInvalidArgument) for a batch outside 1..64. The fast kernels need x_dev 16-byte aligned
  // (cudaMalloc'ed buffers are); another x_dev takes the slower generic kernel. x's range: the
  // bulk-copy GEMV of fp8/fp6/fp5/fp4 tensors takes x times 2^64 and the codes' values times 2^-120
  // to 2^-126 in BF16, so |x| must stay below 2^64, and far below 2^-60 products underflow (tested:
  // x of magnitude 2^-60 to 2^60 within 2e-3, 2^-116 not; real activations lie far inside); its
  // int8, int4, nf4 and lut4 were tested from 2^-116 to 2^60 (FP16 x is scaled per tile column;
  // further down y nears float32's subnormals, which the float atomics adding partial sums flush).
  void gemv(const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev,
            void* stream = nullptr) const;
  // The kernel the last gemv() call launched, for reports: one of the kGemv* names below; "" before
  // the first call.
  const char* gemv_kernel() const;
  static constexpr const char* kGemvBulkCopy = "bulk-copy";      // kernels/quant_gemv_tma.cu
  static constexpr const char* kGemvCpAsyncRing = "cp.async-ring";  // the same, built by CUDA 11.8
  static constexpr const char* kGemvTensorCore = "tensor-core";  // the cp.async GEMVs of
  static constexpr const char* kGemvStreaming = "streaming";     // kernels/quant_kernels.cu
  // one block per tile: sparse or raw tiles outside the bulk-copy GEMV, x not 16-byte aligned
  static constexpr const char* kGemvGeneric = "generic";
  // rANS-coded tiles, a warp per tile: lossless BF16 (kernels/lossless_gemv.cu) beside the
  // block-per-tile kernel of kernels/tile_decode.cu, lossy (kernels/quant_rans_gemv.cu) beside
  // the generic one; some tiles on each, or all on one
  static constexpr const char* kGemvWarpPerTile = "warp-per-tile";
  static constexpr const char* kGemvBlockPerTile = "block-per-tile";
  static constexpr const char* kGemvWarpAndBlockPerTile = "warp-per-tile + block-per-tile";
  static constexpr const char* kGemvWarpPerTileAndGeneric = "warp-per-tile + generic";

 private:
  struct Impl;
  explicit GpuTensor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace wpack::gpu
