// Internal to kernels/: the device tile table and the kernel launchers that tile_decode.cu
// implements and tile_decode_host.cpp calls. Plain C++17 types only (included by nvcc and g++).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>  // cudaError_t, cudaStream_t

namespace wpack::gpu::detail {

// The tile record bytes the kernels compare with (docs/FORMAT.md; the packer's constants are
// packer/codec.h Codec, packer/filters.h Filter and kFilterQuant*, packer/quant_tile.h
// kFilterQuantDenseZeroRel: tile_decode_host.cpp checks that they agree), and the plane directory's
// raw-plane bit.
inline constexpr uint8_t kCodecNone = 0, kCodecZstd = 1, kCodecRans = 2, kCodecExp4 = 3;
inline constexpr uint8_t kFilterNone = 0, kFilterByteShuffle = 1, kFilterBitShuffle = 2, kFilterFloatPlanes = 3;
inline constexpr uint8_t kLayoutDense = 4, kLayoutSparse = 5, kLayoutDenseZeroRel = 6;  // lossy tiles' filter byte
inline constexpr uint32_t kRawPlaneBit = 0x80000000u;

// One tile as the kernels see it (device memory, an array of tile_count entries).
struct DevTile {
  uint64_t offset;       // of its stored bytes in the device byte buffer; a multiple of 128
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
  uint32_t cols_cap;       // widest tile, elements
  uint32_t table_warps;    // 1..4: warps that decode rANS planes (= most planes of a tile, at most 4);
                           // fewer tables leave room for more blocks per multiprocessor
  // Tile columns of x the gemv holds at once: cols_cap when x for the widest tile fits beside the
  // decode at 8 batch columns (the host sets it so), else 0: min(cols_cap, 512), a wider tile's x
  // then staged in slices (re-read for every round of rows: slower, but any width fits).
  uint32_t x_cols = 0;
};

// Bytes of dynamic shared memory decode/gemv launches need (gemv adds x: the plan's x columns *
// batch floats).
uint64_t decode_smem_bytes(const SmemPlan& plan);
uint64_t gemv_smem_bytes(const SmemPlan& plan, uint32_t batch);

// The launchers return the launch's error (cudaGetLastError after the launch); they do not sync.
//   bytes_dev   (sum of aligned stored sizes) bytes: the tiles' stored bytes
//   tiles_dev   (tile_count) DevTile
//   out_dev     (tensor_rows, tensor_cols) elements of elem_size bytes, row-major
//   status_dev  (tile_count) uint32_t TileStatus
//   ids_dev     nullptr (block k takes tile k) or tile_count tile ids (status_dev indexed by id)
// cudaSuccess when the current device can run this build's kernels (a cubin for its compute
// capability, or PTX it can compile); else cudaErrorNoKernelImageForDevice or the like.
cudaError_t kernel_image_status();
cudaError_t launch_decode(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                          uint64_t tile_count, uint32_t elem_size, uint64_t tensor_cols, const SmemPlan& plan,
                          void* out_dev, uint32_t* status_dev, cudaStream_t stream);
//   The weights are lossless BF16, F16, F32 or FP8 tiles (`kind`; the block-per-tile kernel);
//   x_dev (tensor_cols, batch) BF16 bits, y_dev (tensor_rows, batch) float, zeroed by the caller;
//   batch 1..64 (passes of up to 8 columns). ids_dev: nullptr (block k takes tile k, tile_count
//   blocks) or tile_count tile ids, the tiles to take (status_dev is indexed by tile id).
enum class WeightKind : uint8_t { kBf16, kF16, kF32, kF8E4M3, kF8E5M2 };
cudaError_t launch_gemv_block(WeightKind kind, const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                             uint64_t tile_count, const SmemPlan& plan, const uint16_t* x_dev, float* y_dev,
                             uint32_t batch, uint32_t* status_dev, cudaStream_t stream);

// The lossless BF16 GEMV with a warp per tile (kernels/lossless_gemv.cu) for the tiles the host
// picks: floatplanes, codec rans, exponent plane a mode-1 rANS stream, mantissa plane raw, tile
// width a multiple of 32 up to 128. Needs compute capability 9.0 and CUDA 11.8 (mbarriers; its copies
// are bulk copies with CUDA 12, cp.async with 11.8); lossless_fast_built() says whether this build
// has the kernel.
struct LosslessPlan {
  uint32_t exp_cap;        // largest aligned (directory + exponent stream) of the tiles, bytes
  uint32_t precision_cap;  // largest table precision of their streams, 8..kLosslessMaxPrecision
  uint32_t pass;           // batch columns per launch: 1 or 16 (tensor cores); 0: the decode-only kernel
  uint32_t smem_bytes;     // dynamic shared memory per block
  int blocks_per_sm;       // 0: does not fit
};
// Largest table precision it takes: the slot table (2^p bytes per warp) is sized for the tensor's
// largest p, and p = 12 (chosen for ~0.3% of exponent streams) would cost every warp 2 KiB more,
// 4 blocks per multiprocessor instead of 5; such tiles take the block-per-tile kernel.
constexpr uint32_t kLosslessMaxPrecision = 11;
bool lossless_fast_built();
LosslessPlan lossless_plan(uint32_t exp_cap, uint32_t precision_cap, uint32_t batch);  // batch 0: decode
// ids_dev: the count tile ids to take; y_dev zeroed by the caller; batch 1..64 in passes.
cudaError_t launch_gemv_bf16_fast(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                  uint32_t count, const LosslessPlan& plan, uint32_t grid, const uint16_t* x_dev,
                                  float* y_dev, uint32_t batch, uint32_t* status_dev, cudaStream_t stream);
// The same tiles decoded into out_dev (rows, tensor_cols) BF16 (plan of batch 0).
cudaError_t launch_decode_bf16_fast(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                    uint32_t count, const LosslessPlan& plan, uint32_t grid, uint16_t* out_dev,
                                    uint64_t tensor_cols, uint32_t* status_dev, cudaStream_t stream);

}  // namespace wpack::gpu::detail

namespace wpack::gpu::detail {

// ---- lossy tensors (docs/FORMAT.md "Lossy tensors"; kernels/quant_kernels.cu) ----

// How a code becomes a value (packer/quantize.h):
//   kQuantInt   (code - zero) * scale   zero: per group in the tile (asymmetric int4/3/2) or 2^(bits-1)
//   kQuantTable values[code] * scale    fp8/6/5/4 and nf4: values_dev holds the 2^bits code values
//   kQuantLut   values[table][code]     lut4/3: values_dev holds num_tables * 2^bits floats
// scale: per row (int8, fp8/6/5: row_scales_dev) or per (row, group) from the tile's plane A.
//   kLosslessExp4  not a lossy scheme: a lossless BF16 tensor whose tiles are all codec exp4, for
//                  the bulk-copy GEMV only (bits 8, nothing else set)
enum QuantKind : uint32_t { kQuantInt = 0, kQuantTable = 1, kQuantLut = 2, kLosslessExp4 = 3 };

struct QuantDevParams {
  uint32_t kind;              // QuantKind
  uint32_t bits;              // bits per code: 2..8
  uint32_t code_symbol_bits;  // rANS symbols of plane B: bits when 2, 3, 4 or 8, else 8 (packed bytes)
  uint32_t grouped;           // 1: fp16 scales [h][G] at the start of plane A
  uint32_t zero_points;       // 1: u8 zeros [h][G] after the scales (asymmetric int4/3/2)
  uint32_t group;             // elements per group along K (grouped schemes), else 0
  float symmetric_zero;       // int schemes without zero points: 2^(bits-1)
  uint32_t lut_rows;          // LUT: rows per table (0 = one table)
  uint32_t fp4_e2m1;          // 1: fp4 E2M1 codes (kQuantTable, 4 bits; 0 there: nf4)
  const float* row_scales_dev;  // (tensor rows) float: int8, fp8/6/5; else nullptr
  const float* values_dev;      // see QuantKind; nullptr for kQuantInt
  uint32_t values_bf16;         // 1: every value of values_dev is a BF16 number (minifloat codes; not nf4)
  uint32_t nan_codes;           // 1: some code's value in values_dev is NaN (kQuantTable: fp8's 0x7F and
                                // 0xFF): the decode refuses such a code (corrupt), as the CPU reference
  uint32_t tiles_per_sm;        // the tensor's tiles per multiprocessor, rounded down (the bulk-copy
                                // GEMV's layouts at batch 9..16, and int8/fp8's at batch 1, follow it)
  uint32_t sparse_fill;         // the code an unoccupied element of a sparse tile takes in the bulk-copy
                                // GEMV's expansion, one whose value is 0 (int without zero points:
                                // 2^(bits-1); minifloats: 0; nf4, lut4: a table entry 0), or kNoSparseFill
};
inline constexpr uint32_t kNoSparseFill = 0xFFFFFFFFu;  // no code has the value 0 (a LUT without one)
// Plane B's rANS symbols are the packed code bytes, not the codes (fp6, fp5).
inline bool packed_code_symbols(const QuantDevParams& q) { return q.code_symbol_bits != q.bits; }
// fp6 at batch 9..16: a warp per half tile (2 blocks per multiprocessor) ran 5% faster than a
// quarter tile (3 blocks) on 28672x8192 and 8192x28672 (14336 tiles of 128 x 128, 109 per
// multiprocessor of an H200), the same on 8192^2 (31) and 4096x14336, 4-12% slower on 14336x4096
// (27) and 4096^2 (8): half tiles from kManyTilesPerSm on; dense nf4, lut4 and fp5 too (1.3-2.5%
// faster on the two large shapes, 0-4% slower on 8192^2). int8 and fp8 at batch 1 take quarter
// tiles below it (8192^2: 5-7% faster) and half tiles from it on (28672x8192: the same, +-1%).
inline constexpr uint32_t kManyTilesPerSm = 48;
// int8 and fp8 at batch 9..16: a quarter tile ran 5-6% faster than a half tile on 4096^2 (8 tiles
// per multiprocessor), 1-8% slower on 14336x4096, 4096x14336 and 8192^2 (27-31): quarter tiles
// below kFewTilesPerSm. Dense int3 the same way (4096^2 13.1-13.4 against 14.5 us).
inline constexpr uint32_t kFewTilesPerSm = 16;

// Shared memory of the generic lossy kernels (one block per tile), the maximum over the tiles.
struct QuantSmemPlan {
  uint32_t stored_cap;     // bytes, multiple of 16
  uint32_t elements_cap;   // largest tile, elements (multiple of 32)
  uint32_t side_cap;       // largest plane A (side data + bitmap), bytes, multiple of 16
  uint32_t precision_cap;  // largest rANS table precision, 10..12
  uint32_t cols_cap;       // widest tile, elements
  uint32_t x_cols = 0;     // as SmemPlan::x_cols: cols_cap when the whole x fits, else 0 (slices of 512)
};
// The generic gemv's (with x: the plan's x columns * 8 floats, whatever the batch).
uint64_t quant_generic_smem_bytes(const QuantSmemPlan& plan);
uint64_t quant_decode_smem_bytes(const QuantSmemPlan& plan);   // the decode's (no x)

// Generic decode of every tile (dense or sparse, planes raw or rANS; zstd tiles are reported
// kUnsupportedCodec): out_dev (tensor_rows, tensor_cols) float32, status_dev (tile_count).
cudaError_t launch_quant_decode(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                const QuantDevParams& params, const QuantSmemPlan& plan, uint64_t tensor_cols,
                                float* out_dev, uint32_t* status_dev, cudaStream_t stream);

// Generic fused decode + GEMV, one block per tile, for any tile: y (rows, batch) += W x, x (cols,
// batch) BF16 bits; batch 1..64 (processed 8 at a time). y zeroed by the caller. ids_dev: nullptr
// (block k takes tile k) or tile_count tile ids, the tiles to take (status_dev indexed by tile id).
cudaError_t launch_quant_gemv_generic(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                      uint64_t tile_count, const QuantDevParams& params, const QuantSmemPlan& plan,
                                      const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev,
                                      cudaStream_t stream);

// The streaming GEMV for tensors whose tiles are all dense with raw planes (codec none, or rANS
// that did not pay): each block walks a contiguous range of tiles through a multi-stage cp.async
// ring. batch 1..8 columns of x (K, batch), added to columns [y_col0, y_col0 + batch) of y
// (N, y_stride) (y zeroed by the caller; a wider batch runs in passes of at most 8 columns, x's
// columns gathered by launch_gather_x_columns). stored_cap: largest aligned stored size;
// tile_rows/tile_cols: the nominal tile shape.
struct QuantStreamPlan {
  uint32_t stored_cap;  // bytes, multiple of 16
  uint32_t tile_rows, tile_cols;
  uint32_t stages;      // 2..8
};
uint64_t quant_stream_smem_bytes(const QuantStreamPlan& plan, uint32_t batch);
cudaError_t launch_quant_gemv_stream(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                     const QuantDevParams& params, const QuantStreamPlan& plan, uint32_t grid,
                                     const uint16_t* x_dev, uint64_t x_elements, float* y_dev, uint32_t batch,
                                     uint32_t y_stride, uint32_t y_col0, uint32_t* status_dev, cudaStream_t stream);
// out (K, count) = columns [col0, col0 + count) of x (K, batch), BF16 bits.
cudaError_t launch_gather_x_columns(const uint16_t* x_dev, uint64_t k_cols, uint32_t batch, uint32_t col0,
                                    uint32_t count, uint16_t* out_dev, cudaStream_t stream);
// The tensor-core variant of the streaming GEMV: int8/int4 codes, tile_cols and K multiples of 8,
// x_dev 16-byte aligned (quant_tc_supported); batch 1..64; tiles row-major over grid_cols tile
// columns of the nominal plan shape. Otherwise as launch_quant_gemv_stream.
bool quant_tc_supported(const QuantDevParams& params, const QuantStreamPlan& plan, uint64_t tensor_cols,
                        const void* x_dev);
cudaError_t launch_quant_gemv_tc(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                 uint32_t grid_cols, uint64_t tensor_rows, uint64_t tensor_cols,
                                 const QuantDevParams& params, const QuantStreamPlan& plan, uint32_t grid,
                                 const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev,
                                 cudaStream_t stream);
int quant_tc_blocks_per_sm(const QuantStreamPlan& plan, uint32_t bits, uint32_t batch);
// Blocks of the streaming kernel that fit on one multiprocessor for this plan and batch.
int quant_stream_blocks_per_sm(const QuantStreamPlan& plan, uint32_t bits, uint32_t batch);

// The quantized rANS GEMV with a warp per tile (kernels/quant_rans_gemv.cu) for the tiles the host
// picks (quant_warp_tile in tile_decode_host.cpp): codec rans, layout 4, 5 (sparse) or 6, plane B a
// mode-1 rANS stream of the codes themselves (bits 2, 3, 4 or 8) or, fp6 and fp5, of the packed
// code bytes (sparse tiles: or raw, codec none too), plane A raw or a mode-1 stream, tile width 32,
// 64 or 128; not a LUT scheme with a table per lut_rows rows. Built where the lossless one is
// (lossless_fast_built()).
struct QuantRansPlan {
  uint32_t stored_cap;     // largest aligned stored tile of those tiles, bytes
  uint32_t side_cap;       // largest plane A (16-aligned) + 4 bytes per tile row for per-row scales, multiple of 16
  uint32_t precision_cap;  // largest table precision of their streams, 8..12
  uint32_t packed_cap;     // the largest tile's buffered plane-B symbols (fp6, fp5: packed code bytes;
                           // sparse tiles: their codes), multiple of 16 (else 0)
  uint32_t pass;           // batch columns per launch: 1, 2, 4, 8 or 16
  uint32_t mma;            // 1: the pass of 16 on tensor cores
  uint32_t warps;          // per block: 1, 2 or 4, whichever puts the most on a multiprocessor
  uint32_t smem_bytes;     // dynamic shared memory per block
  int blocks_per_sm;       // 0: does not fit
};
// Largest stored tile it takes: a 128x128 int8 or fp8 tile codes to about 12-15 KiB.
constexpr uint32_t kQuantRansMaxStored = 20480;
QuantRansPlan quant_rans_plan(const QuantDevParams& params, uint32_t stored_cap, uint32_t side_cap,
                              uint32_t precision_cap, uint32_t packed_cap, uint32_t batch);
// ids_dev: the count tile ids to take; y_dev (rows, batch) zeroed by the caller; batch 1..64 in passes.
cudaError_t launch_quant_rans_gemv(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                   uint32_t count, const QuantDevParams& params, const QuantRansPlan& plan,
                                   uint32_t grid, const uint16_t* x_dev, float* y_dev, uint32_t batch,
                                   uint32_t* status_dev, cudaStream_t stream);

}  // namespace wpack::gpu::detail

namespace wpack::gpu::detail {

// The Hopper GEMV (kernels/quant_gemv_tma.cu): warp-specialised, bulk copies (cp.async.bulk +
// mbarriers) into a ring of up to 16 stages, tensor cores; int4/3/2, int8, fp8/6/5/4, nf4 and
// one-table lut4 tensors whose tiles all have raw planes of the sizes their layout implies, dense
// (layout 4) or sparse (layout 5: plane B holds exactly the bitmap's popcount of codes; lut4 where
// its table has a 0, QuantDevParams::sparse_fill), batch 1..64.
// quant_tma_supported lists the shape conditions; sparse_tiles: some tile is sparse; codes_off_word
// (quant_tma_plan): some tile's code plane (a sparse tile's: its bitmap) starts off a 4-byte
// boundary (8 + its plane A bytes); the kernel reads such planes by funnel shifts, a dense one's
// realigned into the warps' scratch.
struct QuantTmaPlan {
  uint32_t stored_cap;     // largest stored tile (dense or sparse), bytes, multiple of 16
  uint32_t tile_cols;      // nominal tile width
  uint32_t stages;         // ring depth, 2..32, a multiple of the tiles the kernel's warps hold at once
  uint32_t scratch_bytes;  // per consumer warp: a sparse tile's dense codes, or a dense tile's code plane
                           // realigned to words (0: neither occurs)
  uint32_t smem_bytes;     // dynamic shared memory per block
  int blocks_per_sm;       // 0: the plan does not fit
  bool sparse_tiles;       // some tile is sparse: the instances that expand them (quant_tma_plan's argument)
  bool x_scratch;          // launch_quant_gemv_tma needs xt_scratch_dev (batch > 1, FP16 x, or x in the
                           // kernel's pair order: every warp-per-part kernel but exp4's); else it may be null
};
bool quant_tma_supported(const QuantDevParams& params, uint32_t tile_rows, uint32_t tile_cols, uint64_t tensor_cols,
                         const void* x_dev, bool sparse_tiles);
// How this build's kernel fills its ring's stages (kernels/detail/bulk_copy.cuh); kNone: the
// kernel is not built (a toolkit before CUDA 11.8), quant_tma_supported always false.
enum class RingFill { kNone, kBulkCopy, kCpAsync };
RingFill quant_tma_fill();
// A lossless BF16 tensor whose tiles are all codec exp4 takes the same kernel with params of kind
// kLosslessExp4 (bits 8); the host checks every tile at upload (header, size and escapes well
// formed, at most 128 rows, a width that is a multiple of 32), and the kernel trusts that.
// stages_wanted 0: as many as fit in about 220 KiB per multiprocessor over the blocks the kernel is
// built for (scratch included; rounded down to a multiple of the tiles in hand); tile_rows,
// tile_cols: the nominal tile shape.
QuantTmaPlan quant_tma_plan(const QuantDevParams& params, uint32_t stored_cap, uint32_t tile_rows, uint32_t tile_cols,
                            uint32_t batch, uint32_t stages_wanted, bool sparse_tiles, bool codes_off_word);
// x_dev (k_cols, batch); batch > 1 first transposes x into xt_scratch_dev, one block per tile column
// (int8 at batch <= 16: in FP16, each block times a power of two, at batch 1 too):
// quant_tma_x_scratch_elements(k_cols, plan.tile_cols) elements per batch column.
// y_dev (n_rows, batch) need not be zeroed: the launch zeroes it.
uint64_t quant_tma_x_scratch_elements(uint64_t k_cols, uint32_t tile_cols);
cudaError_t launch_quant_gemv_tma(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                  const QuantDevParams& params, const QuantTmaPlan& plan, uint32_t grid,
                                  const uint16_t* x_dev, uint64_t k_cols, uint16_t* xt_scratch_dev, float* y_dev,
                                  uint64_t n_rows, uint32_t batch, uint32_t* status_dev, cudaStream_t stream);

}  // namespace wpack::gpu::detail
