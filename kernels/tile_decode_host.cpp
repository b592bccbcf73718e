// Host side of kernels/tile_decode.h: uploads a tensor's tiles once, sizes the launches, checks
// every CUDA call.
#include "kernels/tile_decode.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "formats/error.h"
#include "kernels/detail/align.h"
#include "kernels/detail/ring_plan.h"  // kMaxRingStages
#include "kernels/detail/tile_kernels.h"
#include "packer/codec.h"         // Codec: the kernels' codec bytes are checked against it
#include "packer/detail/fp.h"     // f16_bits_to_float for row scales and LUT tables
#include "packer/exp4.h"         // exp4_check: the exp4 tiles the bulk-copy GEMV trusts
#include "packer/filters.h"       // Filter, kFilterQuant*: the kernels' filter bytes are checked against them
#include "packer/quant_tile.h"    // parse_quant_params: the lossy tensor's params blob
#include "packer/quantize.h"      // Scheme
#include "packer/rans.h"          // rans_stream_precision: the table size a plane needs

namespace wpack::gpu {
namespace {

using detail::align16;
using detail::align_up;
using detail::DevTile;
using detail::QuantDevParams;
using detail::QuantSmemPlan;
using detail::QuantStreamPlan;
using detail::SmemPlan;

// Every CUDA runtime call goes through this: a failure becomes Error(kIo) naming the call.
#define WPACK_CUDA_CHECK(call)                                                                   \
  do {                                                                                           \
    const cudaError_t wpack_cuda_err_ = (call);                                                  \
    if (wpack_cuda_err_ != cudaSuccess)                                                          \
      throw ::wpack::Error(::wpack::ErrorCode::kIo,                                              \
                           std::string(#call) + ": " + cudaGetErrorString(wpack_cuda_err_));     \
  } while (0)

int current_device() {
  int device = 0;
  WPACK_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

// The current device's multiprocessors.
int multiprocessor_count() {
  int sms = 0;
  WPACK_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, current_device()));
  return sms;
}
// A persistent kernel's grid on the current device: blocks_per_sm blocks on every multiprocessor,
// but no more than blocks_needed; -1 when no block fits (blocks_per_sm <= 0).
int persistent_grid(uint64_t blocks_needed, int blocks_per_sm) {
  if (blocks_per_sm <= 0) return -1;
  return static_cast<int>(std::min<uint64_t>(blocks_needed, uint64_t(multiprocessor_count()) * blocks_per_sm));
}

// Whether the current device has the bulk-copy engine the Hopper kernels use (compute capability 9.0+).
bool device_has_bulk_copy() {
  int major = 0;
  WPACK_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, current_device()));
  return major >= 9;
}

using detail::kCodecNone, detail::kCodecZstd, detail::kCodecRans, detail::kCodecExp4, detail::kFilterNone,
    detail::kFilterBitShuffle, detail::kFilterFloatPlanes, detail::kLayoutDense, detail::kLayoutSparse,
    detail::kRawPlaneBit;
// The kernels' copies of the tile record bytes are the packer's.
static_assert(kCodecNone == static_cast<uint8_t>(Codec::kNone) && kCodecZstd == static_cast<uint8_t>(Codec::kZstd) &&
              kCodecRans == static_cast<uint8_t>(Codec::kRans) && kCodecExp4 == static_cast<uint8_t>(Codec::kExp4));
static_assert(kFilterNone == static_cast<uint8_t>(Filter::kNone) &&
              detail::kFilterByteShuffle == static_cast<uint8_t>(Filter::kByteShuffle) &&
              kFilterBitShuffle == static_cast<uint8_t>(Filter::kBitShuffle) &&
              kFilterFloatPlanes == static_cast<uint8_t>(Filter::kFloatPlanes));
static_assert(kLayoutDense == kFilterQuantDense && kLayoutSparse == kFilterQuantSparse &&
              detail::kLayoutDenseZeroRel == kFilterQuantDenseZeroRel);
constexpr uint32_t kStreamStages = 4;  // cp.async ring depth of the streaming GEMV
constexpr uint8_t kNotALayout = 0xFF;  // a tile layout byte no kernel takes (upload marks a corrupt tile so)

// Where each tile's stored bytes start in the device buffer: a multiple of 128 bytes (a cache
// line), not just of 16 (what cp.async and the bulk copies need). Measured on the H200: the
// bulk-copy ring of bench_bulk_copy streams 8592-byte int4 tiles at 4.00 TB/s packed 16 bytes
// apart and at 4.55 TB/s 128-aligned in global and shared memory; the GEMVs at batch 1 took 3-5%
// less time (int4 28672 x 8192: 42.8 -> 41.4 us). Costs at most 112 bytes of device memory a tile.
constexpr uint64_t kDeviceTileAlign = 128;

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
    if (!(word & kRawPlaneBit)) best = std::max(best, rans_stream_precision(stored.subspan(start, size)));
    start += size;
  }
  return best;
}

// The warp-per-tile lossless GEMV (kernels/lossless_gemv.cu) takes a tile when it is BF16,
// floatplanes and rans, with the exponent plane a mode-1 rANS stream of at most
// kLosslessMaxExpBytes (with the directory; its shared memory per warp) and the mantissa plane
// raw, a table precision of at most detail::kLosslessMaxPrecision, and the tile 32, 64 or 128
// columns wide (a decode step covers 32 columns of one row, and a mantissa chunk of 16 steps
// whole rows). Nearly every 128x128 tile of `wpack compress` qualifies. *exp_bytes: the aligned
// bytes of directory and exponent stream; *precision: the stream's table precision.
constexpr uint32_t kLosslessMaxExpBytes = 8192;
bool lossless_fast_tile(std::span<const uint8_t> stored, const WpkTile& rec, const DevTile& d, DType dtype,
                        uint32_t* exp_bytes, uint32_t* precision) {
  if (dtype != DType::BF16 || rec.filter != kFilterFloatPlanes || rec.codec != kCodecRans) return false;
  if ((d.cols != 32 && d.cols != 64 && d.cols != 128) || d.rows == 0 || stored.size() < 10) return false;
  const uint64_t n = uint64_t{d.rows} * d.cols;
  if (rec.raw_size != 2 * n) return false;  // the block-per-tile kernel reports the tile corrupt
  const uint32_t d0 = load_u32_le(stored.data()), d1 = load_u32_le(stored.data() + 4);
  const uint64_t size0 = d0 & ~kRawPlaneBit;
  if ((d0 & kRawPlaneBit) || d1 != (kRawPlaneBit | n) || size0 < 2 || 8 + size0 + n != stored.size()) return false;
  if (stored[8] != 1 || align16(8 + size0) > kLosslessMaxExpBytes) return false;  // mode 1: rANS, inline table
  *exp_bytes = static_cast<uint32_t>(align16(8 + size0));
  *precision = rans_stream_precision(stored.subspan(8, size0));
  return *precision != 0 && *precision <= detail::kLosslessMaxPrecision;
}

// The bulk-copy GEMV (kernels/quant_gemv_tma.cu) takes a lossless BF16 tensor whose tiles are all
// codec exp4 (docs/FORMAT.md "Codec 3, exp4") and pass exp4_check (packer/exp4.h): the kernel
// trusts the header, the size and the escapes. It needs at most 128 rows and a width that is a
// multiple of 32 (its k-step).
bool exp4_tma_tile(std::span<const uint8_t> stored, const WpkTile& rec, const DevTile& d) {
  if (rec.codec != kCodecExp4 || rec.filter != kFilterFloatPlanes || d.rows == 0 || d.rows > 128 || d.cols == 0 ||
      d.cols % 32)
    return false;
  const uint64_t n = uint64_t{d.rows} * d.cols;
  if (rec.raw_size != 2 * n) return false;
  try {
    exp4_check(stored, 2, n);
  } catch (const Error&) {
    return false;  // the block-per-tile kernel reports the tile corrupt
  }
  return true;
}

// ---- lossy tensors ----
// The warp-per-tile quantized rANS GEMV (kernels/quant_rans_gemv.cu) takes a tile when its codec
// is rans, its layout dense (4), sparse (5) or zero-relative (6), plane B a mode-1 rANS stream of the codes
// themselves (2, 3, 4 or 8 bits) or of the packed code bytes (fp6, fp5: 8-bit symbols), plane A
// raw or a mode-1 stream, the tile 32, 64 or 128 columns wide, its stored bytes at most
// detail::kQuantRansMaxStored and its raw size what the layout implies; a LUT scheme only with one
// table. Nearly every full tile that `wpack compress` writes for those schemes with the default
// codec qualifies, pruned or not. A sparse tile may also have plane B raw (codec none, or rans
// where it did not pay; *raw_only says when neither plane is a stream: such a tile is the bulk-copy
// GEMV's where that takes the tensor). *side_bytes: what the warp keeps beside the stream (plane A
// decoded, 16-aligned, then the tile's row scales as float); *precision: the largest table
// precision of its streams (8 without any); *packed_bytes: the symbols the warp decodes into shared
// memory first (fp6/fp5: the packed code bytes; sparse tiles: their codes, one byte each, at most
// what plane B's raw size holds), 0 for the others and for a raw plane B.
bool quant_warp_tile(std::span<const uint8_t> stored, const WpkTile& rec, const DevTile& d, const QuantTensorParams& qp,
                     const QuantDevParams& q, uint32_t* side_bytes, uint32_t* precision, uint32_t* packed_bytes,
                     bool* raw_only) {
  const bool sparse = rec.filter == kLayoutSparse;
  if (rec.codec != kCodecRans && !(rec.codec == kCodecNone && sparse)) return false;
  if (rec.filter != kLayoutDense && !sparse && rec.filter != detail::kLayoutDenseZeroRel) return false;
  const bool packed = detail::packed_code_symbols(q);  // fp6, fp5
  if ((packed && q.kind != detail::kQuantTable) || (q.kind == detail::kQuantLut && q.lut_rows != 0)) return false;
  if ((d.cols != 32 && d.cols != 64 && d.cols != 128) || d.rows == 0 || stored.size() < 8) return false;
  if (align16(uint64_t{stored.size()}) > detail::kQuantRansMaxStored) return false;
  const uint64_t n = uint64_t{d.rows} * d.cols;
  const uint64_t a_bytes = quant_side_plane_bytes(qp, TileRect{d.row0, d.col0, d.rows, d.cols}, sparse);
  if (sparse ? rec.raw_size <= a_bytes || rec.raw_size - a_bytes > (n * qp.bits + 7) / 8
             : rec.raw_size != a_bytes + (n * qp.bits + 7) / 8)
    return false;
  const uint64_t b_bytes = rec.raw_size - a_bytes;
  const uint32_t word_a = load_u32_le(stored.data()), word_b = load_u32_le(stored.data() + 4);
  const uint64_t size_a = word_a & ~kRawPlaneBit, size_b = word_b & ~kRawPlaneBit;
  const bool raw_b = (word_b & kRawPlaneBit) != 0;
  if (8 + size_a + size_b != stored.size() || (raw_b && (!sparse || size_b != b_bytes))) return false;
  uint32_t p = 8;  // the smallest table precision
  if (!raw_b) {
    if (size_b < 2 || stored[8 + size_a] != 1) return false;
    p = rans_stream_precision(stored.subspan(8 + size_a, size_b));  // 0: a header it cannot read
    if (p == 0) return false;
  }
  if (word_a & kRawPlaneBit) {
    if (size_a != a_bytes) return false;
  } else {
    if (rec.codec != kCodecRans || a_bytes == 0 || size_a < 2 || size_a >= a_bytes || stored[8] != 1)
      return false;  // coded: smaller than raw
    const uint32_t pa = rans_stream_precision(stored.subspan(8, size_a));
    if (pa == 0) return false;
    p = std::max(p, pa);
  }
  *side_bytes = static_cast<uint32_t>(align16(a_bytes) + (q.grouped ? 0 : 4ull * d.rows));
  *precision = p;
  // (dense fp6/fp5: n a multiple of 32, whole bytes; sparse: count codes in b_bytes = ceil(count bits / 8))
  *packed_bytes = static_cast<uint32_t>(raw_b ? 0u : packed ? b_bytes : sparse ? b_bytes * 8 / qp.bits : 0u);
  *raw_only = raw_b && (word_a & kRawPlaneBit);
  return true;
}

// The device view of a lossy tensor's params (pointers filled by upload_quant_side).
QuantDevParams quant_dev_params(const QuantTensorParams& qp) {
  QuantDevParams q{};
  const bool is_int = qp.scheme == Scheme::kInt8 || qp.scheme == Scheme::kInt4 || qp.scheme == Scheme::kInt3 ||
                      qp.scheme == Scheme::kInt2;
  q.kind = is_int ? detail::kQuantInt : scheme_is_lut(qp.scheme) ? detail::kQuantLut : detail::kQuantTable;
  q.bits = qp.bits;
  q.code_symbol_bits = (qp.bits == 2 || qp.bits == 3 || qp.bits == 4 || qp.bits == 8) ? qp.bits : 8;
  q.grouped = scheme_is_grouped(qp.scheme) ? 1 : 0;
  q.zero_points = (is_int && q.grouped && !qp.symmetric) ? 1 : 0;
  q.group = q.grouped ? qp.group : 0;
  q.symmetric_zero = static_cast<float>(1u << (qp.bits - 1));
  q.lut_rows = qp.lut_rows;
  q.fp4_e2m1 = qp.scheme == Scheme::kFp4 ? 1 : 0;
  q.nan_codes = qp.nan_codes ? 1 : 0;
  // A sparse tile's fill code in the bulk-copy GEMV: one whose value is 0 (+0.0 or -0.0: either
  // adds nothing to a product). Int codes: the symmetric zero point (asymmetric tiles take their
  // groups' zero points); tables: the first code of the (first) table with that value.
  q.sparse_fill = detail::kNoSparseFill;
  if (is_int) {
    q.sparse_fill = 1u << (qp.bits - 1);
  } else {
    const std::vector<float>& values = qp.code_values;
    const size_t codes = size_t{1} << qp.bits;
    for (size_t c = 0; c < codes && q.sparse_fill == detail::kNoSparseFill; ++c)
      if (q.kind == detail::kQuantTable ? c < values.size() && values[c] == 0.0f
                                        : c < qp.tables.size() && (qp.tables[c] & 0x7FFFu) == 0)
        q.sparse_fill = static_cast<uint32_t>(c);
  }
  return q;
}

// Copies row scales and code values / LUT tables (as float32: fp16 -> float is exact) to the
// device; sets q's pointers into the returned allocation (owned by the caller).
float* upload_quant_side(QuantDevParams& q, const QuantTensorParams& qp, uint64_t rows) {
  std::vector<float> side;
  const bool row_scales = !qp.row_scales.empty();
  if (row_scales) {
    if (qp.row_scales.size() != rows) throw Error(ErrorCode::kCorrupt, "gpu upload: row scales do not match the rows");
    for (uint16_t h : qp.row_scales) side.push_back(wpack::detail::f16_bits_to_float(h));
  }
  const size_t values_at = side.size();
  if (q.kind == detail::kQuantTable) {
    side.insert(side.end(), qp.code_values.begin(), qp.code_values.end());
  } else if (q.kind == detail::kQuantLut) {
    for (uint16_t h : qp.tables) side.push_back(wpack::detail::f16_bits_to_float(h));
  }
  if (side.empty()) return nullptr;
  float* dev = nullptr;
  WPACK_CUDA_CHECK(cudaMalloc(&dev, side.size() * sizeof(float)));
  const cudaError_t err = cudaMemcpy(dev, side.data(), side.size() * sizeof(float), cudaMemcpyHostToDevice);
  if (err != cudaSuccess) {
    cudaFree(dev);
    WPACK_CUDA_CHECK(err);
  }
  q.row_scales_dev = row_scales ? dev : nullptr;
  q.values_dev = q.kind == detail::kQuantInt ? nullptr : dev + values_at;
  q.values_bf16 = std::all_of(side.begin() + static_cast<std::ptrdiff_t>(values_at), side.end(),
                              [](float v) { return (std::bit_cast<uint32_t>(v) & 0xFFFFu) == 0; });
  return dev;
}

// Running maxima over a lossy tensor's tiles, for the shared-memory plans.
struct QuantSizes {
  uint64_t stored_cap = 16, elements_cap = 32, side_cap = 16, cols_cap = 1;
  uint32_t precision_cap = 10;
  bool all_raw = true;        // every tile dense or sparse, both planes raw and of the sizes the layout implies
  bool any_sparse = false;    // some tile is sparse (layout 5)
  bool codes_off_word = false;  // some tile's code plane (sparse: bitmap) starts off a 4-byte boundary
};

void size_quant_tile(const QuantTensorParams& qp, const WpkTile& rec, const DevTile& d, std::span<const uint8_t> stored,
                     QuantSizes& sizes) {
  const uint64_t n = uint64_t{d.rows} * d.cols;
  const bool sparse = rec.filter == kLayoutSparse;
  const uint64_t a_bytes = quant_side_plane_bytes(qp, TileRect{d.row0, d.col0, d.rows, d.cols}, sparse);
  if (rec.codec == kCodecZstd || (rec.codec != kCodecNone && rec.codec != kCodecRans)) {
    sizes.all_raw = false;  // reported per tile by the kernels
    return;
  }
  sizes.stored_cap = std::max(sizes.stored_cap, align16(uint64_t{rec.stored_size}));
  sizes.elements_cap = std::max(sizes.elements_cap, n);
  sizes.side_cap = std::max(sizes.side_cap, a_bytes);
  sizes.cols_cap = std::max<uint64_t>(sizes.cols_cap, d.cols);
  if (rec.codec == kCodecRans) sizes.precision_cap = std::max(sizes.precision_cap, tile_max_precision(stored, 2));
  // The streaming GEMVs read planes in place: both raw, exactly a_bytes and ceil(codes * bits / 8),
  // codes = n (dense) or the bitmap's popcount (sparse: the bulk-copy kernel expands every code the
  // bitmap names, so plane B must hold exactly those).
  bool raw = (rec.filter == kLayoutDense || rec.filter == kLayoutSparse) && stored.size() >= 8 + a_bytes;
  uint64_t codes = n;
  if (raw && sparse) {
    const uint64_t bitmap_bytes = (n + 7) / 8;
    codes = 0;
    for (uint64_t i = 8 + a_bytes - bitmap_bytes; i < 8 + a_bytes; ++i) codes += std::popcount(stored[i]);
  }
  const uint64_t b_bytes = (codes * qp.bits + 7) / 8;
  raw = raw && stored.size() == 8 + a_bytes + b_bytes && rec.raw_size == a_bytes + b_bytes;
  if (raw) {
    const uint32_t word_a = load_u32_le(stored.data()), word_b = load_u32_le(stored.data() + 4);
    raw = word_a == (kRawPlaneBit | a_bytes) && word_b == (kRawPlaneBit | b_bytes);
  }
  sizes.all_raw = sizes.all_raw && raw;
  sizes.any_sparse = sizes.any_sparse || sparse;
  // where the bulk-copy GEMV reads the tile by words: the code plane (sparse: the bitmap)
  const uint64_t words_at = 8 + a_bytes - (sparse ? (n + 7) / 8 : 0);
  sizes.codes_off_word = sizes.codes_off_word || words_at % 4 != 0;
}

}  // namespace


bool gpu_build_has_cuda() { return true; }
bool gpu_build_has_warp_tiles() { return detail::lossless_fast_built(); }
const char* gpu_ring_gemv_name() {
  switch (detail::quant_tma_fill()) {
    case detail::RingFill::kBulkCopy: return GpuTensor::kGemvBulkCopy;
    case detail::RingFill::kCpAsync: return GpuTensor::kGemvCpAsyncRing;
    default: return nullptr;
  }
}

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

bool gpu_device_runs_kernels(std::string* why) {
  const cudaError_t err = detail::kernel_image_status();
  if (err == cudaSuccess) return true;
  cudaGetLastError();
  // Only these say that the build has nothing the device runs; anything else (the context cannot
  // be made: the device busy in exclusive mode, out of memory, a driver too old) is a failure.
  if (err != cudaErrorNoKernelImageForDevice && err != cudaErrorInvalidDeviceFunction &&
      err != cudaErrorInvalidKernelImage && err != cudaErrorUnsupportedPtxVersion)
    throw Error(ErrorCode::kIo, std::string("CUDA device set-up: ") + cudaGetErrorString(err));
  if (why) {
    int device = 0;
    cudaDeviceProp prop{};
    std::string name = "the current device";
    if (cudaGetDevice(&device) == cudaSuccess && cudaGetDeviceProperties(&prop, device) == cudaSuccess)
      name = "device sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + " (" + prop.name + ")";
    cudaGetLastError();
    *why = name + ": " + cudaGetErrorString(err) + " (this build's CMAKE_CUDA_ARCHITECTURES leave it out)";
  }
  return false;
}

std::string gpu_context_error() {
  cudaGetLastError();  // a launch error that is not sticky
  cudaError_t err = cudaDeviceSynchronize();
  if (err == cudaSuccess) return {};
  cudaGetLastError();
  const cudaError_t again = cudaDeviceSynchronize();  // sticky: it stays
  if (again == cudaSuccess) return {};
  return cudaGetErrorString(again);
}

struct GpuTensor::Impl {
  uint64_t rows = 0, cols = 0;
  uint32_t elem_size = 0;
  DType dtype = DType::F32;
  uint8_t scheme = 0;
  uint64_t tile_count = 0;
  std::string smem_hint;  // what to do when the tiles do not fit a block's shared memory
  uint64_t stored_bytes = 0;
  uint64_t device_bytes = 0;
  // The bulk-copy kernels (quant GEMV, lossless warp per tile) may run: the device has the engine
  // (compute capability 9.0+) and WPACK_GPU_NO_TMA is unset. Decided at upload.
  bool bulk_copy = false;
  uint64_t smem_limit = 0;  // the device's shared memory per block (opt-in), bytes
  SmemPlan plan{};
  uint8_t* bytes_dev = nullptr;
  DevTile* tiles_dev = nullptr;
  // Lossy tensors only:
  QuantDevParams quant{};      // its pointers point into side_dev
  QuantSmemPlan quant_plan{};  // generic kernels
  QuantStreamPlan stream_plan{};
  bool streamable = false;     // every tile dense or sparse with raw planes: the bulk-copy GEMV applies
                               // (lossless BF16: every tile exp4, exp4_tma_tile; quant and
                               // stream_plan then describe it for that GEMV)
  bool sparse_tiles = false;   // some tile sparse: the bulk-copy GEMV (every kind with a sparse_fill) or the generic kernel only
  bool codes_off_word = false; // some tile's code plane starts off a word (QuantSizes): the bulk-copy GEMV needs scratch
  const char* last_kernel = "";  // gemv_kernel()
  // Per batch: the grid of the tensor-core GEMV [0] and of the CUDA-core streaming GEMV [1] (0: not
  // computed yet, -1: its stages do not fit). Two caches: which one a call takes depends on x's
  // alignment too, and the tensor-core kernel falls back to the streaming one.
  int stream_grid[2][65] = {};
  detail::QuantTmaPlan tma_plan[65] = {};  // per batch: the Hopper GEMV's plan (stages 0: not computed yet)
  int tma_grid[65] = {};                   // per batch: its grid (-1: it does not apply)
  float* side_dev = nullptr;   // row scales, then code values / LUT tables
  uint16_t* xt_dev = nullptr;  // x_scratch(): the bulk-copy GEMV's transposed x, or the streaming
                               // GEMV's x columns of one pass (batch > 8)
  // Room for batch 64 on the device, allocated on first use: cols x 64 BF16, or what the bulk-copy
  // GEMV's blocked x needs (a 16-byte stagger per tile column and batch row) when that is more.
  uint16_t* x_scratch() {
    const uint64_t per_column = std::max<uint64_t>(
        cols, stream_plan.tile_cols ? detail::quant_tma_x_scratch_elements(cols, stream_plan.tile_cols) : 0);
    if (xt_dev == nullptr) WPACK_CUDA_CHECK(cudaMalloc(&xt_dev, per_column * 64 * sizeof(uint16_t)));
    return xt_dev;
  }
  // The tiles of a warp-per-tile kernel (fast: lossless BF16 kernels/lossless_gemv.cu, lossy
  // kernels/quant_rans_gemv.cu) and of the block-per-tile ones (the other tile_count - fast_count),
  // as tile ids in one device array: fast ids first.
  uint32_t* ids_dev = nullptr;
  uint32_t fast_count = 0;
  // The fast tiles' largest aligned bytes in shared memory (lossless: directory + exponent stream;
  // lossy: the stored tile), plane A or row scales (lossy), and table precision.
  uint32_t fast_bytes_cap = 0, fast_side_cap = 16, fast_precision_cap = 8, fast_packed_cap = 0;
  detail::LosslessPlan lossless_plan[65] = {};  // per batch, [0]: decode
  int lossless_grid[65] = {};                   // per batch, [0]: decode (0: not computed yet, -1: none)
  detail::QuantRansPlan quant_rans_plan[65] = {};  // lossy, per batch
  int quant_rans_grid[65] = {};                    // lossy, per batch (0: not computed yet, -1: none)

  // The warp-per-tile kernel's grid for this batch width (0: decode), worked out on the first call;
  // -1 when it does not apply (no such tiles, which upload decides, or no fit).
  int fast_grid(uint32_t batch) {
    int& grid = lossless_grid[batch];
    if (grid != 0) return grid;
    grid = -1;
    if (fast_count == 0) return grid;
    detail::LosslessPlan& plan = lossless_plan[batch];
    plan = detail::lossless_plan(fast_bytes_cap, fast_precision_cap, batch);
    grid = persistent_grid((fast_count + 3) / 4, plan.blocks_per_sm);  // 4 warps per block
    if (std::getenv("WPACK_GPU_DEBUG"))
      std::fprintf(stderr, "%s: lossless warp-per-tile kernel, batch %u, %d blocks/SM, grid %d, %u B smem, %u+%u tiles\n",
                   batch ? "gemv" : "decode", batch, plan.blocks_per_sm, grid, plan.smem_bytes, fast_count,
                   static_cast<unsigned>(tile_count - fast_count));
    return grid;
  }
  // The same for the lossy warp-per-tile kernel (gemv only: batch 1..64).
  int quant_fast_grid(uint32_t batch) {
    int& grid = quant_rans_grid[batch];
    if (grid != 0) return grid;
    grid = -1;
    if (fast_count == 0) return grid;
    detail::QuantRansPlan& plan = quant_rans_plan[batch];
    plan = detail::quant_rans_plan(quant, fast_bytes_cap, fast_side_cap, fast_precision_cap, fast_packed_cap, batch);
    grid = plan.warps ? persistent_grid((fast_count + plan.warps - 1) / plan.warps, plan.blocks_per_sm) : -1;
    if (std::getenv("WPACK_GPU_DEBUG"))
      std::fprintf(stderr,
                   "gemv: quant warp-per-tile kernel, batch %u, passes of %u%s, %d blocks/SM of %u warps, grid %d, %u B "
                   "smem, %u+%u tiles\n",
                   batch, plan.pass, plan.mma ? " (tensor cores)" : "", plan.blocks_per_sm, plan.warps, grid,
                   plan.smem_bytes, fast_count,
                   static_cast<unsigned>(tile_count - fast_count));
    return grid;
  }

  // Refuses (kUnsupported, naming `what`, saying what to do) tiles whose kernel needs `need` bytes of
  // shared memory per block (the margin for static shared memory included) where the device gives less.
  void require_smem(uint64_t need, const std::string& what) const {
    if (need > smem_limit)
      throw Error(ErrorCode::kUnsupported, what + ": tiles need " + std::to_string(need) +
                                               " bytes of shared memory per block, the device gives " +
                                               std::to_string(smem_limit) + smem_hint);
  }
  // Whether the bulk-copy GEMV takes this tensor with x at x_dev (where bulk copies are allowed).
  bool bulk_copy_takes(const void* x_dev) const {
    return streamable &&
           detail::quant_tma_supported(quant, stream_plan.tile_rows, stream_plan.tile_cols, cols, x_dev, sparse_tiles);
  }
  // The Hopper bulk-copy GEMV (kernels/quant_gemv_tma.cu) when it applies (streamable, bulk
  // copies allowed, quant_tma_supported); its plan and grid are worked out on the first call of
  // each batch width. False when it does not apply (nothing launched).
  bool run_bulk_copy(const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev, cudaStream_t st) {
    // its x offsets are 32-bit: K x batch beyond 2^32 (K >= 2^26) takes the other kernels
    if (!bulk_copy_takes(x_dev) || cols * batch > UINT32_MAX) return false;
    int& grid = tma_grid[batch];
    detail::QuantTmaPlan& plan = tma_plan[batch];
    if (grid == 0 && !bulk_copy) grid = -1;
    if (grid == 0) {
      uint32_t stages = 0;
      if (const char* env = std::getenv("WPACK_TMA_STAGES"))
        stages = std::clamp<uint32_t>(std::atoi(env), 2, detail::kMaxRingStages);
      plan = detail::quant_tma_plan(quant, stream_plan.stored_cap, stream_plan.tile_rows, stream_plan.tile_cols, batch,
                                    stages, sparse_tiles, codes_off_word);
      grid = persistent_grid(tile_count, plan.blocks_per_sm);
      if (std::getenv("WPACK_GPU_DEBUG"))
        std::fprintf(stderr, "gemv: bulk-copy kernel, batch %u, %d blocks/SM, grid %d, %u stages, %u B smem%s\n", batch,
                     plan.blocks_per_sm, grid, plan.stages, plan.smem_bytes, sparse_tiles ? ", sparse tiles" : "");
    }
    if (grid <= 0) return false;
    // it zeroes y itself, in a kernel it overlaps, which also writes x into the scratch: transposed
    // for batch > 1, in FP16 (int8) or in the kernel's B order (QuantTmaPlan::x_scratch)
    uint16_t* xt = plan.x_scratch ? x_scratch() : nullptr;
    WPACK_CUDA_CHECK(detail::launch_quant_gemv_tma(bytes_dev, tiles_dev, tile_count, quant, plan,
                                                   static_cast<uint32_t>(grid), x_dev, cols, xt, y_dev, rows, batch,
                                                   status_dev, st));
    last_kernel = gpu_ring_gemv_name();
    return true;
  }

  ~Impl() {
    // Destructors must not throw; a failure to free is ignored (the context may already be gone).
    if (bytes_dev) cudaFree(bytes_dev);
    if (tiles_dev) cudaFree(tiles_dev);
    if (side_dev) cudaFree(side_dev);
    if (xt_dev) cudaFree(xt_dev);
    if (ids_dev) cudaFree(ids_dev);
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
uint64_t GpuTensor::warp_tiles() const { return impl_->fast_count; }

GpuTensor GpuTensor::upload(const WpkReader& reader, size_t tensor) {
  if (tensor >= reader.tensors().size()) throw Error(ErrorCode::kInvalidArgument, "gpu upload: tensor index out of range");
  const WpkTensor& t = reader.tensors()[tensor];
  const std::string where = reader.path() + ": tensor '" + t.name + "'";
  auto impl = std::make_unique<Impl>();
  impl->scheme = t.scheme;
  impl->rows = t.rows();
  impl->cols = t.cols();
  impl->elem_size = static_cast<uint32_t>(dtype_size(t.dtype));
  impl->dtype = t.dtype;
  impl->tile_count = t.tile_count;
  // The packer cuts a 0-D or 1-D tensor into tiles of 64 KiB at most whatever --tile says, which
  // fit; earlier versions into tiles of up to 2^20 elements.
  impl->smem_hint = t.shape.size() > 1 ? " (pack it with smaller tiles: --tile)"
                    : t.scheme == 0
                        ? " (a 1-D tensor in tiles over 64 KiB, as earlier versions of wpack packed them: compress it again)"
                        : " (a quantized 1-D tensor: keep it lossless, --keep)";
  if (impl->rows > UINT32_MAX || impl->cols > UINT32_MAX || t.tile_count > INT32_MAX)
    throw Error(ErrorCode::kUnsupported, where + ": more than 2^32 rows, columns or 2^31 tiles");

  const bool lossy = t.scheme != 0;
  QuantTensorParams qp;
  QuantSizes quant_sizes;
  if (lossy) {
    try {
      qp = parse_quant_params(t.scheme, t.params, impl->rows, impl->cols, t.tile_rows, t.tile_cols);
    } catch (const Error& e) {
      throw Error(e.code(), where + ": " + e.what());
    }
    impl->quant = quant_dev_params(qp);
    impl->quant.tiles_per_sm =
        static_cast<uint32_t>(std::min<uint64_t>(t.tile_count / uint64_t(multiprocessor_count()), UINT32_MAX));
    impl->streamable = true;
  }

  // Tile table and the byte buffer layout (each tile kDeviceTileAlign-aligned).
  const uint64_t grid_cols = t.tile_grid_cols();
  std::vector<DevTile> tiles(t.tile_count);
  uint64_t total = 0;
  uint32_t precision_cap = 10, table_warps = 1;
  uint64_t stored_cap = 16, raw_cap = 16, cols_cap = 1;
  std::vector<uint32_t> fast_ids, slow_ids;  // which GEMV kernel takes each tile (warp- or block-per-tile)
  std::vector<uint32_t> raw_warp_ids;        // lossy: raw sparse tiles for the warp-per-tile kernel (below)
  // Whether the warp-per-tile kernels can run here at all (built, compute capability 9.0, not
  // WPACK_GPU_NO_TMA): decided once, so that warp_tiles() says what gemv() and decode() will do.
  impl->bulk_copy = device_has_bulk_copy() && !std::getenv("WPACK_GPU_NO_TMA");
  const bool fast_possible = (lossy || t.dtype == DType::BF16) && detail::lossless_fast_built() && impl->bulk_copy;
  // A lossless BF16 tensor whose tiles are all exp4 and pass exp4_tma_tile: the bulk-copy GEMV.
  bool exp4_all = !lossy && t.dtype == DType::BF16 && t.tile_count > 0 && t.tile_rows <= 128;
  uint64_t exp4_cap = 16;
  for (uint64_t k = 0; k < t.tile_count; ++k) {
    WpkTile rec = reader.tiles()[t.first_tile + k];  // a copy: a sparse tile may be marked below
    if (!reader.tile_checksum_ok(t.first_tile + k))
      throw Error(ErrorCode::kCorrupt, where + ": tile " + std::to_string(k) + ": checksum mismatch");
    // A sparse tile in a tensor whose params say it has none is corrupt, as decode_quant_tile_ref
    // says; the kernels know only the tile's layout byte, so it becomes one that none of them
    // takes, which they all report kCorrupt (no kernel that reads sparse tiles sees it).
    if (lossy && rec.filter == detail::kLayoutSparse && !qp.sparse_tiles) rec.filter = kNotALayout;
    DevTile& d = tiles[k];
    std::memset(&d, 0, sizeof d);
    const uint64_t grid_row = k / grid_cols, grid_col = k % grid_cols;
    d.row0 = static_cast<uint32_t>(grid_row * t.tile_rows);
    d.col0 = static_cast<uint32_t>(grid_col * t.tile_cols);
    d.rows = static_cast<uint32_t>(std::min<uint64_t>(t.tile_rows, impl->rows - d.row0));
    d.cols = static_cast<uint32_t>(std::min<uint64_t>(t.tile_cols, impl->cols - d.col0));
    if (rec.stored_size > UINT32_MAX)
      throw Error(ErrorCode::kUnsupported, where + ": tile " + std::to_string(k) + " larger than 4 GiB");
    // No tile holds over 4 GiB decoded (2^24 elements at most): raw size 0 makes every kernel
    // report it kCorrupt.
    if (rec.raw_size > UINT32_MAX) rec.raw_size = 0;
    d.stored_size = static_cast<uint32_t>(rec.stored_size);
    d.raw_size = static_cast<uint32_t>(rec.raw_size);
    d.filter = rec.filter;
    d.codec = rec.codec;
    d.offset = total;
    total = checked_add(total, align_up(uint64_t{rec.stored_size}, kDeviceTileAlign), "gpu upload bytes");
    if (lossy) {
      const auto bytes = reader.tile_bytes(t.first_tile + k);
      size_quant_tile(qp, rec, d, bytes, quant_sizes);
      uint32_t side_bytes = 0, precision = 0, packed_bytes = 0;
      bool raw_only = false;
      if (fast_possible &&
          quant_warp_tile(bytes, rec, d, qp, impl->quant, &side_bytes, &precision, &packed_bytes, &raw_only)) {
        (raw_only ? raw_warp_ids : fast_ids).push_back(static_cast<uint32_t>(k));
        impl->fast_bytes_cap = std::max(impl->fast_bytes_cap, static_cast<uint32_t>(align16(bytes.size())));
        impl->fast_side_cap = std::max(impl->fast_side_cap, static_cast<uint32_t>(align16(side_bytes)));
        impl->fast_precision_cap = std::max(impl->fast_precision_cap, precision);
        impl->fast_packed_cap = std::max(impl->fast_packed_cap, packed_bytes);
      } else if (fast_possible) {
        slow_ids.push_back(static_cast<uint32_t>(k));
      }
      continue;
    }
    // Only tiles the GPU can decode size the shared memory (a zstd tile is reported, not loaded).
    const bool decodable = (rec.codec == kCodecNone || rec.codec == kCodecRans || rec.codec == kCodecExp4) &&
                           rec.filter <= kFilterFloatPlanes;
    if (exp4_all) {
      const auto bytes = reader.tile_bytes(t.first_tile + k);
      exp4_all = exp4_tma_tile(bytes, rec, d);
      exp4_cap = std::max(exp4_cap, align16(uint64_t{bytes.size()}));
    }
    uint32_t exp_bytes = 0, precision = 0;
    if (fast_possible) {
      if (lossless_fast_tile(reader.tile_bytes(t.first_tile + k), rec, d, t.dtype, &exp_bytes, &precision)) {
        fast_ids.push_back(static_cast<uint32_t>(k));
        impl->fast_bytes_cap = std::max(impl->fast_bytes_cap, exp_bytes);
        impl->fast_precision_cap = std::max(impl->fast_precision_cap, precision);
      } else {
        slow_ids.push_back(static_cast<uint32_t>(k));
      }
    }
    // A tile whose raw size is not its shape's is reported corrupt before anything is loaded: it
    // sizes nothing (a raw size read from a damaged file could make the caps' sums wrap).
    const bool raw_size_ok = rec.raw_size > 0 && rec.raw_size == uint64_t{d.rows} * d.cols * impl->elem_size;
    if (decodable && raw_size_ok) {
      stored_cap = std::max(stored_cap, align16(uint64_t{rec.stored_size}));
      raw_cap = std::max(raw_cap, align16(uint64_t{rec.raw_size}));
      cols_cap = std::max<uint64_t>(cols_cap, d.cols);
      if (rec.codec == kCodecRans) {
        const uint32_t planes = rec.filter == kFilterNone || rec.filter == kFilterBitShuffle ? 1 : impl->elem_size;
        precision_cap = std::max(precision_cap, tile_max_precision(reader.tile_bytes(t.first_tile + k), planes));
        table_warps = std::max(table_warps, std::min(planes, 4u));
      }
    }
  }
  impl->stored_bytes = 0;
  for (uint64_t k = 0; k < t.tile_count; ++k) impl->stored_bytes += reader.tiles()[t.first_tile + k].stored_size;
  int smem_limit = 0;
  WPACK_CUDA_CHECK(cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, current_device()));
  impl->smem_limit = static_cast<uint64_t>(smem_limit);
  // The caps held in shared memory at once, summed in 64 bits before the plans narrow them to the
  // kernels' 32-bit layouts (a stored size is bounded only by the file; exp4_cap, used when every
  // tile passed exp4_tma_tile, so had its shape's raw size, is then at most stored_cap).
  impl->require_smem((lossy ? quant_sizes.stored_cap + quant_sizes.side_cap + 2 * quant_sizes.elements_cap
                            : stored_cap + raw_cap) + 1024,
                     where);
  impl->plan = SmemPlan{static_cast<uint32_t>(stored_cap), static_cast<uint32_t>(raw_cap), precision_cap,
                        static_cast<uint32_t>(cols_cap), table_warps};
  if (exp4_all) {
    impl->streamable = true;
    impl->quant = QuantDevParams{};
    impl->quant.kind = detail::kLosslessExp4;
    impl->quant.bits = 8;
    impl->stream_plan = QuantStreamPlan{static_cast<uint32_t>(exp4_cap), t.tile_rows, t.tile_cols, 0};
  }

  // x for the widest tile whole when it fits beside the decode at 8 batch columns (staged once a
  // pass, as before x was sliced), else in slices of 512 columns (any width fits).
  SmemPlan whole = impl->plan;
  whole.x_cols = whole.cols_cap;
  if (detail::gemv_smem_bytes(whole, 8) + 1024 <= impl->smem_limit) impl->plan.x_cols = whole.cols_cap;
  uint64_t need = detail::decode_smem_bytes(impl->plan) + 1024;  // + static shared and margin
  if (lossy) {
    impl->streamable = impl->streamable && quant_sizes.all_raw;
    impl->sparse_tiles = quant_sizes.any_sparse;
    impl->codes_off_word = quant_sizes.codes_off_word;
    impl->quant_plan = QuantSmemPlan{static_cast<uint32_t>(quant_sizes.stored_cap),
                                     static_cast<uint32_t>((quant_sizes.elements_cap + 31) & ~uint64_t{31}),
                                     static_cast<uint32_t>(align16(quant_sizes.side_cap)), quant_sizes.precision_cap,
                                     static_cast<uint32_t>(quant_sizes.cols_cap)};
    uint32_t stages = kStreamStages;
    if (const char* env = std::getenv("WPACK_STREAM_STAGES")) stages = std::clamp<uint32_t>(std::atoi(env), 2, 8);
    impl->stream_plan = QuantStreamPlan{static_cast<uint32_t>(quant_sizes.stored_cap), t.tile_rows, t.tile_cols,
                                        stages};
    QuantSmemPlan whole_x = impl->quant_plan;  // x whole when it fits, as for the plan above
    whole_x.x_cols = whole_x.cols_cap;
    if (detail::quant_generic_smem_bytes(whole_x) + 1024 <= impl->smem_limit) impl->quant_plan.x_cols = whole_x.cols_cap;
    need = detail::quant_decode_smem_bytes(impl->quant_plan) + 1024;  // gemv() checks its own need
    if (impl->streamable && detail::quant_stream_smem_bytes(impl->stream_plan, 8) + 1024 > static_cast<uint64_t>(smem_limit))
      impl->streamable = false;
  }
  impl->require_smem(need, where);

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
  if (lossy) impl->side_dev = upload_quant_side(impl->quant, qp, impl->rows);
  // Raw sparse tiles stay with the bulk-copy GEMV where it takes the tensor (x 16-byte aligned; a
  // tensor of raw tiles only, so no tile is the warp-per-tile kernel's then and its caps go unused);
  // else the warp-per-tile kernel takes them with the rANS-coded ones.
  if (!raw_warp_ids.empty()) {
    auto& to = impl->bulk_copy_takes(nullptr) ? slow_ids : fast_ids;  // (only where bulk copies are allowed)
    to.insert(to.end(), raw_warp_ids.begin(), raw_warp_ids.end());
  }
  if (!fast_ids.empty()) {
    impl->fast_count = static_cast<uint32_t>(fast_ids.size());
    fast_ids.insert(fast_ids.end(), slow_ids.begin(), slow_ids.end());
    WPACK_CUDA_CHECK(cudaMalloc(&impl->ids_dev, fast_ids.size() * sizeof(uint32_t)));
    WPACK_CUDA_CHECK(
        cudaMemcpy(impl->ids_dev, fast_ids.data(), fast_ids.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
    impl->device_bytes += fast_ids.size() * sizeof(uint32_t);
  }
  return GpuTensor(std::move(impl));
}

void GpuTensor::decode(void* out_dev, uint32_t* status_dev, void* stream) const {
  if (impl_->scheme != 0) {
    WPACK_CUDA_CHECK(detail::launch_quant_decode(impl_->bytes_dev, impl_->tiles_dev, impl_->tile_count, impl_->quant,
                                                 impl_->quant_plan, impl_->cols, static_cast<float*>(out_dev),
                                                 status_dev, static_cast<cudaStream_t>(stream)));
    return;
  }
  const auto st = static_cast<cudaStream_t>(stream);
  // The warp-per-tile kernel for the tiles it takes, the block-per-tile kernel for the rest (all
  // tiles when the warp-per-tile kernel does not apply).
  const uint32_t* slow_ids = nullptr;
  uint64_t slow_count = impl_->tile_count;
  if (const int grid = impl_->fast_grid(0); grid > 0) {
    WPACK_CUDA_CHECK(detail::launch_decode_bf16_fast(impl_->bytes_dev, impl_->tiles_dev, impl_->ids_dev,
                                                     impl_->fast_count, impl_->lossless_plan[0],
                                                     static_cast<uint32_t>(grid), static_cast<uint16_t*>(out_dev),
                                                     impl_->cols, status_dev, st));
    slow_ids = impl_->ids_dev + impl_->fast_count;
    slow_count -= impl_->fast_count;
  }
  WPACK_CUDA_CHECK(detail::launch_decode(impl_->bytes_dev, impl_->tiles_dev, slow_ids, slow_count, impl_->elem_size,
                                         impl_->cols, impl_->plan, out_dev, status_dev, st));
}

void GpuTensor::gemv(const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev,
                          void* stream) const {
  if (batch < 1 || batch > 64) throw Error(ErrorCode::kInvalidArgument, "gemv: batch must be 1..64");
  const auto st = static_cast<cudaStream_t>(stream);
  if (impl_->scheme != 0) {
    // The Hopper bulk-copy GEMV (int4/3/2, int8, fp8/6/5/4, nf4, one-table lut4 dense raw tiles, int4
    // sparse raw tiles too, int8 and fp8 ones) first, where bulk copies are allowed (upload).
    if (impl_->run_bulk_copy(x_dev, y_dev, batch, status_dev, st)) return;
    WPACK_CUDA_CHECK(cudaMemsetAsync(y_dev, 0, impl_->rows * batch * sizeof(float), st));
    // rANS-coded tiles: a warp per tile for those it takes, the generic kernel for the rest.
    if (const int grid = impl_->quant_fast_grid(batch); grid > 0) {
      const uint64_t slow_count = impl_->tile_count - impl_->fast_count;  // checked before anything is launched
      if (slow_count > 0) impl_->require_smem(detail::quant_generic_smem_bytes(impl_->quant_plan) + 1024, "gemv");
      WPACK_CUDA_CHECK(detail::launch_quant_rans_gemv(impl_->bytes_dev, impl_->tiles_dev, impl_->ids_dev,
                                                      impl_->fast_count, impl_->quant, impl_->quant_rans_plan[batch],
                                                      static_cast<uint32_t>(grid), x_dev, y_dev, batch, status_dev, st));
      WPACK_CUDA_CHECK(detail::launch_quant_gemv_generic(impl_->bytes_dev, impl_->tiles_dev,
                                                         impl_->ids_dev + impl_->fast_count, slow_count, impl_->quant,
                                                         impl_->quant_plan, x_dev, y_dev, batch, status_dev, st));
      impl_->last_kernel = slow_count == 0 ? kGemvWarpPerTile : kGemvWarpPerTileAndGeneric;
      return;
    }
    // Tensor cores for int8/4 (any batch), else the CUDA-core streaming kernel (int8/4 too, when the
    // tensor-core stages do not fit; in passes of at most 8 batch columns), both for dense tiles
    // only, else the generic one-block-per-tile kernel.
    const bool dense_streamable = impl_->streamable && !impl_->sparse_tiles;
    const bool tc =
        dense_streamable && detail::quant_tc_supported(impl_->quant, impl_->stream_plan, impl_->cols, x_dev);
    // The streaming kernels copy x in 16-byte chunks (cp.async): they need x 16-byte aligned.
    const bool x_aligned = reinterpret_cast<uintptr_t>(x_dev) % 16 == 0;
    // the grid of the tensor-core kernel (tensor_core) or of the streaming one for a pass of
    // `columns` batch columns (0: none fits)
    auto stream_grid = [&](bool tensor_core, uint32_t columns) {
      int& grid = impl_->stream_grid[tensor_core ? 0 : 1][columns];
      if (grid == 0) {
        const int per_sm = tensor_core
                               ? detail::quant_tc_blocks_per_sm(impl_->stream_plan, impl_->quant.bits, columns)
                               : detail::quant_stream_blocks_per_sm(impl_->stream_plan, impl_->quant.bits, columns);
        grid = persistent_grid(impl_->tile_count, per_sm);
        if (std::getenv("WPACK_GPU_DEBUG"))
          std::fprintf(stderr, "gemv: %s kernel, batch %u, %d blocks/SM, grid %d, %u stages, %llu tiles\n",
                       tensor_core ? "tensor-core" : "cuda-core", columns, per_sm, grid, impl_->stream_plan.stages,
                       static_cast<unsigned long long>(impl_->tile_count));
      }
      return std::max(grid, 0);
    };
    if (tc) {
      if (const int grid = stream_grid(true, batch); grid > 0) {
        const uint64_t grid_cols = (impl_->cols + impl_->stream_plan.tile_cols - 1) / impl_->stream_plan.tile_cols;
        WPACK_CUDA_CHECK(detail::launch_quant_gemv_tc(impl_->bytes_dev, impl_->tiles_dev, impl_->tile_count,
                                                      static_cast<uint32_t>(grid_cols), impl_->rows, impl_->cols,
                                                      impl_->quant, impl_->stream_plan, static_cast<uint32_t>(grid),
                                                      x_dev, y_dev, batch, status_dev, st));
        impl_->last_kernel = kGemvTensorCore;
        return;
      }
    }
    if (dense_streamable && x_aligned) {
      constexpr uint32_t kPassColumns = 8;  // the streaming kernel's widest batch
      const uint32_t passes = (batch + kPassColumns - 1) / kPassColumns;
      const uint32_t last = batch - (passes - 1) * kPassColumns;
      if (stream_grid(false, std::min(batch, kPassColumns)) > 0 && stream_grid(false, last) > 0) {
        // batch > 8: each pass multiplies 8 of x's columns (gathered into the scratch, 16-aligned)
        for (uint32_t p = 0; p < passes; ++p) {
          const uint32_t col0 = p * kPassColumns, columns = std::min(kPassColumns, batch - col0);
          const uint16_t* x_pass = x_dev;
          if (passes > 1) {
            uint16_t* gathered = impl_->x_scratch();
            WPACK_CUDA_CHECK(detail::launch_gather_x_columns(x_dev, impl_->cols, batch, col0, columns, gathered, st));
            x_pass = gathered;
          }
          WPACK_CUDA_CHECK(detail::launch_quant_gemv_stream(
              impl_->bytes_dev, impl_->tiles_dev, impl_->tile_count, impl_->quant, impl_->stream_plan,
              static_cast<uint32_t>(stream_grid(false, columns)), x_pass, impl_->cols * columns, y_dev, columns, batch,
              col0, status_dev, st));
        }
        impl_->last_kernel = kGemvStreaming;
        return;
      }
    }
    // the generic kernel holds x beside what decode needs (upload checked the decode's share)
    impl_->require_smem(detail::quant_generic_smem_bytes(impl_->quant_plan) + 1024, "gemv");
    WPACK_CUDA_CHECK(detail::launch_quant_gemv_generic(impl_->bytes_dev, impl_->tiles_dev, nullptr, impl_->tile_count,
                                                       impl_->quant, impl_->quant_plan, x_dev, y_dev, batch, status_dev,
                                                       st));
    impl_->last_kernel = kGemvGeneric;
    return;
  }
  detail::WeightKind kind;
  switch (impl_->dtype) {
    case DType::BF16: kind = detail::WeightKind::kBf16; break;
    case DType::F16: kind = detail::WeightKind::kF16; break;
    case DType::F32: kind = detail::WeightKind::kF32; break;
    case DType::F8_E4M3: kind = detail::WeightKind::kF8E4M3; break;
    case DType::F8_E5M2: kind = detail::WeightKind::kF8E5M2; break;
    default: throw Error(ErrorCode::kUnsupported, "gemv: the tensor is not BF16, F16, F32 or FP8");
  }
  const bool bf16 = kind == detail::WeightKind::kBf16;
  if (bf16 && impl_->run_bulk_copy(x_dev, y_dev, batch, status_dev, st)) return;  // every tile exp4 (upload)
  // As decode(): the warp-per-tile kernel for its tiles (BF16), the block-per-tile kernel for the
  // rest, which also holds x (up to 8 batch columns a pass) beside what decode needs: checked first.
  const int grid = bf16 ? impl_->fast_grid(batch) : 0;
  const uint64_t slow_count = impl_->tile_count - (grid > 0 ? impl_->fast_count : 0);
  if (slow_count > 0) impl_->require_smem(detail::gemv_smem_bytes(impl_->plan, std::min(batch, 8u)) + 1024, "gemv");
  WPACK_CUDA_CHECK(cudaMemsetAsync(y_dev, 0, impl_->rows * batch * sizeof(float), st));
  const uint32_t* slow_ids = nullptr;
  if (grid > 0) {
    WPACK_CUDA_CHECK(detail::launch_gemv_bf16_fast(impl_->bytes_dev, impl_->tiles_dev, impl_->ids_dev,
                                                   impl_->fast_count, impl_->lossless_plan[batch],
                                                   static_cast<uint32_t>(grid), x_dev, y_dev, batch, status_dev, st));
    slow_ids = impl_->ids_dev + impl_->fast_count;
  }
  WPACK_CUDA_CHECK(detail::launch_gemv_block(kind, impl_->bytes_dev, impl_->tiles_dev, slow_ids, slow_count, impl_->plan,
                                            x_dev, y_dev, batch, status_dev, st));
  impl_->last_kernel = slow_count == 0                  ? kGemvWarpPerTile
                       : slow_count == impl_->tile_count ? kGemvBlockPerTile
                                                         : kGemvWarpAndBlockPerTile;
}

const char* GpuTensor::gemv_kernel() const { return impl_->last_kernel; }

}  // namespace wpack::gpu
