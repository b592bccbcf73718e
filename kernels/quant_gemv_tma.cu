// The Hopper streaming GEMV for int4/3/2, int8, fp8/6/5/4, nf4 and lut4 (one table) tensors whose
// tiles all have raw planes (dense or sparse, layout 5; sparse lut4 where its table has a 0), and for
// lossless BF16 tensors whose tiles are all codec exp4 (kLosslessExp4: 4-bit exponent codes, run as
// fp8 is, tma_tile_exp4): a warp-specialised bulk-copy pipeline feeding tensor cores.
//
//   block = consumer warps + 1 producer warp, persistent; block b owns tiles
//           [b T / grid, (b + 1) T / grid) in row-major tile order (stream-K over tiles)
//   producer: its lanes walk the block's tiles in step, each holding the tile's record (grouped
//           schemes: shuffled from a load of 32 records, the others: a broadcast load); lane 0 waits until
//           ring stage s is free (mbarrier empty[s]), writes the tile's geometry to meta[s] and
//           issues one cp.async.bulk of the tile's stored bytes and one of its x (batch > 1, and
//           int4/3/2 at batch 1: prepare_kernel's block of x for the tile column, every batch row
//           16 bytes staggered as the stage holds it: no bank conflicts; int4/3/2: those bytes hold
//           the sums of x over each 32 columns, x_sums); both complete on mbarrier full[s]
//   consumers: wait on full[s], multiply with mma.sync m16n8k16 (BF16 in, float32 accumulate;
//           codes -> BF16 by kernels/detail/mma_codes.cuh), arrive on empty[s]; no block-wide
//           barrier in the loop. Two ways to share the work (tma_dispatch picks by measurement):
//             a warp per part of a tile (batch <= 16): int4/3/2, fp5/4, nf4, lut4 at batch 1, 8 warps, two
//               per tile (64 rows each), at 2..8 4 warps, two per tile, at 9..16 4 warps, four per
//               tile (32 rows each); int8/fp8 8 warps at batch 1, 4 above, two per tile; fp6 8
//               warps, two per tile (batch <= 8) or 4 warps, four per tile (9..16). A warp's x fragments serve all
//               its 16-row blocks, whose MMA chains are independent. int4/3/2: A holds 128 + code
//               and (128 + zero) * sum(x) is removed per group (sum(x) from prepare_kernel's sums
//               in the stage): no subtraction per code (the lane-codes types of mma_codes.cuh: one
//               LOP3 per pair);
//               int8: FP16 MMAs, A = 1024 + code byte (one PRMT per pair, MmaInt8Half) and x in
//               FP16, a power of two per tile column (prepare_kernel, half_x); fp8/fp6/fp5/fp4: the
//               minifloat bits placed in BF16, the value times 2^-120 / 2^-124 / 2^-126 (MmaFp8 /
//               MmaFp6 / LaneFp5, LaneFp4), with x taken times 2^64 (scale_x, in prepare_kernel)
//               and the sums times 2^56 / 2^60 / 2^62 with the scales; nf4, lut4: FP16 MMAs, each
//               code byte's two FP16 values one load from a 256-entry table in shared memory
//               (LanePairTable4) and x in FP16 as int8's (at every batch). prepare_kernel writes x
//               in the B pairs' column order, minifloats' times 2^64 (prepared_x): a B fragment is a
//               plain load (batch 16: int4 8%, fp4 13% faster; batch 1: 1-3%). The standard tile (128 x 128, one group
//               per row) takes a copy of the code with its geometry known at compile time: every shared
//               load at a constant offset, no per-tile address arithmetic
//             warps share a tile (batch > 16; 8 warps): warp w takes rows [16w, 16w + 16) of
//               every tile; A holds the codes' values (int: HSUB2 per pair; fp as above)
//   row partials stay in registers while a warp's tiles share a tile row and are added to y
//   (atomicAdd) when the tile row changes or the range ends
//
// A stage is [stored bytes, 16-aligned size | x slices (batch, w) BF16, rows x_row bytes apart (TmaLayout)]. The host sizes the ring to
// about 220 KiB per multiprocessor (110 KiB per block at two blocks), so that well over 64 KiB
// per multiprocessor are in flight: enough to cover HBM latency.
//
// Sparse tiles ("loaded sparse, computed dense"): the stage holds the bitmap and the occupied codes
// only; the consumer warp first expands them into the dense code layout in its own scratch (after
// the ring: a selector table, then one scratch per consumer warp), every unoccupied element given a
// code that contributes exactly 0 like the +0.0 it decodes to (int codes: the group's zero point,
// symmetric 2^(bits-1); fp5, fp4: 0; nf4, lut4: the table's 0 entry; QuantDevParams::sparse_fill);
// then the dense MMA path runs on the scratch unchanged (int4/3/2, fp5, fp4, nf4, lut4:
// expand_sparse_lanes; fp6: expand_sparse_rows; int8 and fp8, a byte a code, unoccupied elements
// 128 (int8) or 0 (fp8): expand_sparse_int8). Only a tensor with sparse tiles runs instances that
// hold the expansions (template flag kSparse, QuantTmaPlan::sparse_tiles), with layouts of their
// own at batch 2..16 (tma_dispatch_grouped, tma_dispatch_8bit).
//
// Tile layout (docs/FORMAT.md "Quantized tiles"): [plane directory 8 B][fp16 scales (h, G)]
// [u8 zeros (h, G)][codes, row-major]; int8/fp8/fp6/fp5 have no plane A (per-row scales in the
// params), lut4 none either (no scales).
// Preconditions (quant_tma_supported): every tile dense or sparse (lut4: with a 0 entry), with raw planes whose sizes match the tile (the caller checks, sparse: plane B
// holds popcount(bitmap) codes); int4/3/2, int8, fp8 (E4M3), fp6 (E3M2), fp5 (E2M2), fp4 (E2M1),
// nf4 or one-table lut4 codes (fp8/6/5: per-row scales; int4/3/2, fp4, nf4: group scales);
// tile_rows <= 128; tile_cols and K multiples of a k-step (128 columns for int3 and fp5, 64 for
// int4/2, fp6, fp4, nf4 and lut4, 32 for int8 and fp8); groups a multiple of that and dividing K; x
// 16-byte aligned; a device of compute capability 9.0 or later. (A code plane or a sparse tile's
// bitmap off a 4-byte boundary is read by funnel shifts: realign_codes, expand_sparse_rows.)
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/detail/align.h"
#include "kernels/detail/bf16.cuh"
#include "kernels/detail/bulk_copy.cuh"
#include "kernels/detail/mma_codes.cuh"
#include "kernels/detail/ring_plan.h"
#include "kernels/detail/smem_limit.cuh"
#include "kernels/detail/tile_kernels.h"

// The bulk copies need CUDA 12 (kernels/detail/bulk_copy.cuh); CUDA 11.8 (Debian 12's) builds
// the same kernel with a producer warp whose lanes fill each stage by 16-byte cp.async copies
// (WPACK_HAVE_BULK_COPY 0). With an older toolkit the kernel is left out, quant_tma_supported() says no
// and the other kernels serve these tensors.
namespace wpack::gpu::detail {
#if WPACK_HAVE_MBAR_RING
namespace {

// Arrivals that complete a stage: the producer's lane 0 with the bulk copies' byte count, or
// (cp.async) each of its 32 lanes once its copies have landed and lane 0 once more after it wrote
// the stage's record.
constexpr uint32_t kFullArrivals = WPACK_HAVE_BULK_COPY ? 1 : 33;
constexpr uint32_t kMaxStages = kMaxRingStages;
constexpr uint32_t kHeaderBytes = 1536;  // barriers (2 x 32 x 8 B) and stage geometry (32 x 32 B)
constexpr uint32_t kStatusOk = 0;
constexpr uint32_t kSelectorBytes = 256 * 8;  // the sparse expansions' table: uint2 per bitmap byte

// Waits until the kernel launched before this one (prepare_kernel: y zeroed, x transposed) has
// finished and its writes are visible (a programmatic dependent launch).
__device__ __forceinline__ void wait_for_prepare() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

// Warps per tile and tiles a block's consumer warps hold at once, for kRowBlocks (16-row blocks per
// warp; 0: the warps share every tile).
constexpr uint32_t warps_per_tile(uint32_t row_blocks) { return row_blocks ? 8 / row_blocks : 1; }
constexpr uint32_t tiles_in_hand(uint32_t warps, uint32_t row_blocks) {
  return row_blocks ? warps / warps_per_tile(row_blocks) : 1;
}

// kFloat of nf4 and of lut4 with one table: their codes index a 16-entry table (LanePairTable4: a
// table of its pairs in shared memory).
constexpr uint32_t kNf4Codes = 1, kLut4Codes = 2;
// kFloat of lossless BF16 tensors of codec exp4 (kLosslessExp4; kBits 8, no scales).
constexpr uint32_t kExp4Tiles = 16;

// Producer warps: one issues the bulk copies; with cp.async, two take turns by tile at batch 1 and
// for int8, fp8 and fp6 above it, but in their quarter-tile instances (kRowBlocks 2: tensors of few
// tiles per multiprocessor at batch 9..16). One warp's copies alone streamed int4 28672x8192 at
// 46% of the DRAM bandwidth at batch 1, its consumers waiting; two: int4 60.0 -> 45.7 us, int8
// 74.1 -> 64.8 on an H200. At batch 16 int4, nf4 and exp4 ran 10-20% slower with two and keep one.
// The 8-bit kinds (CUDA 11.8 build, H200, two alternations, us, one -> two): 28672x8192 int8 b4
// 92.3-92.7 -> 69.8-69.9, b16 96.2-96.6 -> 72.0-72.5, b32 183.8-184.1 -> 178.3-178.4, b64 the same;
// fp8 b16 96.4-96.9 -> 76.3-76.5, b64 333 -> 313; fp6 b8 84.6 -> 60.7-61.5, b16 93.9-94.2 ->
// 71.8-71.9; 8192^2 int8 b4 34.8-35.1 -> 28.8-29.1, b16 36.5-38.0 -> 30.6-30.9, b64 100.7-100.8 ->
// 102.9-103.2; 4096^2 within +-0.5 us but int8 b64 39.9-40.1 -> 41.3-41.5.
constexpr uint32_t producer_warps(bool batch1, uint32_t bits, uint32_t kind_float, uint32_t row_blocks) {
  const bool eight_bit = bits == 8 && kind_float != kExp4Tiles && row_blocks != 2;
  return WPACK_HAVE_BULK_COPY ? 1 : batch1 || eight_bit ? 2 : 1;
}

// The lane-codes type (mma_codes.cuh) of a scheme below 8 bits but fp6: kFloat 0 int codes, 4 fp4
// E2M1, 1 nf4, 2 lut4 (one table; no scales, which the kernel treats as grouped without plane A:
// no row scales either), 5 fp5 E2M2 (kBits 5, per-row scales: not grouped). (The 8- and 6-bit
// kernels do not use it.)
template <uint32_t kBits, uint32_t kFloat>
struct LaneOf {
  using type = LaneInt4;
};
template <>
struct LaneOf<3, 0> {
  using type = LaneInt3;
};
template <>
struct LaneOf<2, 0> {
  using type = LaneInt2;
};
template <>
struct LaneOf<4, 4> {
  using type = LaneFp4;
};
template <>
struct LaneOf<4, kNf4Codes> {
  using type = LanePairTable4<true>;
};
template <>
struct LaneOf<4, kLut4Codes> {
  using type = LanePairTable4<false>;
};
template <>
struct LaneOf<5, 5> {
  using type = LaneFp5;
};
// Instances that multiply FP16 x: int8 with a warp per part of a tile (MmaInt8Half) and nf4 / lut4
// (LanePairTable4). prepare_kernel writes xt in FP16, each tile column's block times its own power
// of two 2^-e (its largest |x| times 2^-e in [2^14, 2^15): FP16 holds BF16 x exactly down to 2^-28
// of that), and 2^e as a float per block after the blocks (half_x_scales), which the GEMV
// multiplies each tile's sums by. The blocks are the stage's x layout, batch rows xt_row_elements
// apart.
__host__ __device__ constexpr bool half_x(uint32_t bits, uint32_t kind_float, uint32_t row_blocks) {
  return (bits == 8 && kind_float == 0 && row_blocks != 0) ||
         (bits == 4 && (kind_float == kNf4Codes || kind_float == kLut4Codes));
}

// A warp per part of a tile: prepare_kernel writes x in the order and scale the
// kernel's B fragments take (so that a fragment is a plain load: no byte permutes, no multiply per
// B register). Within each span of S columns the pairs are (x_i, x_{i + S/2}), i = 0 .. S/2 - 1,
// the MmaCodes / XPairs order: S = 8 for int4, fp4, nf4, lut4 and fp6 (pairs 4 apart), 16 for int2,
// int3 and fp5 (8 apart), 4 for fp8 ((x0, x2), (x1, x3)); 0: x as it is (int8's FP16 x; exp4,
// whose escapes read x by column; warps sharing a tile). Batch 1 too: x's columns in a row. Minifloat
// codes (fp8/6/5/4): x also times 2^kXExp (scale_x's factor).
struct PreparedX {
  uint32_t span;  // 0, 4, 8 or 16
  bool scaled;    // times 2^kXExp
};
template <uint32_t kBits, uint32_t kFloat>
constexpr PreparedX prepared_x(uint32_t row_blocks) {
  if (row_blocks == 0 || kFloat == kExp4Tiles || half_x(kBits, kFloat, row_blocks)) return {0, false};
  if constexpr (kBits == 8) return {kFloat == 8 ? 4u : 8u, true};  // fp8; fp6 (MmaCodes<4>'s order)
  using L = typename LaneOf<kBits, kFloat>::type;
  return {L::kXSpan, L::kValueExp != 0};
}
// Whether prepare_kernel also writes the sums of x over each 32 columns into the x blocks (after
// each batch row, at TmaLayout::x_sums_at): the int codes (int4/3/2) with a warp per part of a
// tile, whose A holds 128 + code and which remove (128 + zero) * sum(x) per group (tma_tile_warp).
// Their x is then blocked at batch 1 too.
__host__ __device__ constexpr bool x_sums(uint32_t bits, uint32_t kind_float, uint32_t row_blocks) {
  return row_blocks != 0 && bits < 8 && kind_float == 0;
}
// Whether the GEMV reads x from prepare_kernel's scratch rather than the caller's x: above batch
// 1 (the blocked layout), FP16 x (half_x) or x in the B order.
__host__ __device__ constexpr bool x_from_prepare(uint32_t batch, bool half, PreparedX order) {
  return batch > 1 || half || order.span != 0;
}
struct StageGeometry {
  uint32_t row0, col0, h, w;
  uint32_t sparse;  // 1: layout 5 (bitmap + occupied codes)
  uint32_t x_block;  // x in blocks (above batch 1; int4/3/2 at 1) or FP16 x (half_x): col0 / tile_cols
  uint32_t unused[2];
};
static_assert(sizeof(StageGeometry) * kMaxStages + 2 * 8 * kMaxStages == kHeaderBytes, "header layout");

// Bytes from a batch row's x in a stage or an x block to the sums of x after it (x_sums): its
// tile_cols BF16 values, rounded up to 16 bytes.
__host__ __device__ constexpr uint32_t x_sums_offset(uint32_t tile_cols) { return align_up(tile_cols * 2, 16); }

struct TmaLayout {
  uint32_t stage_bytes, x_at, x_row, x_sums_at, stages, sparse_at, total;
  // x_row: bytes from one batch column's x slice to the next: batch > 1, the tile width rounded up
  // to 16 bytes (x_sums_at) plus 16, which staggers the rows across shared-memory banks; sums
  // (x_sums, every batch), x_sums_at plus tile_cols / 8 rounded up to 16, where prepare_kernel
  // writes the sums of x over each 32 columns as floats; batch 1 without sums, 0. scratch_bytes: per
  // consumer warp, for the dense codes of sparse tiles (0: the tensor has none); sparse_at: the
  // selector table, then the warps' scratches. The code table of nf4 or lut4 (table_bytes, 0: none)
  // sits at kHeaderBytes, before the ring.
  __host__ __device__ TmaLayout(uint32_t stored_cap, uint32_t tile_cols, uint32_t batch, uint32_t stage_count,
                                uint32_t scratch_bytes, uint32_t warps, uint32_t table_bytes, bool sums) {
    x_at = align_up(stored_cap, 128);
    // (the sums' size computed for every instance gave int8's and nf4's batch-1 instances 8 bytes
    // of spills)
    x_sums_at = x_sums_offset(tile_cols);
    x_row = sums ? x_sums_at + align_up(tile_cols / 8, 16) : batch == 1 ? 0 : x_sums_at + 16;
    stage_bytes = x_at + align_up(x_row == 0 ? tile_cols * 2 : batch * x_row, 128);
    stages = stage_count;
    sparse_at = kHeaderBytes + table_bytes + stages * stage_bytes;
    total = sparse_at + (scratch_bytes ? kSelectorBytes + warps * scratch_bytes : 0);
  }
};

__host__ __device__ inline uint64_t x_blocks_of(uint64_t k_cols, uint32_t tile_cols) {
  return (k_cols + tile_cols - 1) / tile_cols;
}
// Elements from one batch row of a block of prepare_kernel's x to the next (every prepared x:
// FP16, reordered or transposed): the stage's x_row; batch 1 without sums: tile_cols, so that the
// blocks are x's columns in a row of K, as the batch-1 copies read x.
__host__ __device__ inline uint32_t xt_row_elements(uint32_t tile_cols, uint32_t batch, bool sums) {
  return batch == 1 && !sums ? tile_cols : TmaLayout(0, tile_cols, batch, 0, 0, 0, 0, sums).x_row / 2;
}
__device__ __forceinline__ const float* half_x_scales(const uint16_t* xt, uint64_t k_cols, uint32_t tile_cols,
                                                      uint32_t batch) {
  return reinterpret_cast<const float*>(xt + x_blocks_of(k_cols, tile_cols) * batch *
                                                 xt_row_elements(tile_cols, batch, false));
}

// Code words of `cols` codes of `bits` bits, and back: whole words. When bits does not divide 32
// (int3, fp5) a code straddles words and whole words come every 32 codes (quant_tma_supported:
// their tile widths and groups are multiples of 128 columns); the others' of 32. No multiply before
// the division, which could wrap: for int4 the compiler would not make cols / 8 of it.
__host__ __device__ constexpr uint32_t words_of(uint32_t cols, uint32_t bits) {
  return 32 % bits ? cols / 32 * bits : cols / (32 / bits);
}
__host__ __device__ constexpr uint32_t cols_of(uint32_t words, uint32_t bits) {
  return 32 % bits ? words / bits * 32 : words * (32 / bits);
}

// The per-tile geometry of plane A and the code plane.
struct TileSide {
  uint32_t groups, group_words, words_per_row, scale_bytes, codes_at;
  __device__ TileSide(const QuantDevParams& p, const StageGeometry& m, uint32_t bits, bool grouped) {
    words_per_row = words_of(m.w, bits);
    groups = grouped ? m.w / p.group : 1;
    group_words = grouped ? words_of(p.group, bits) : words_per_row;
    scale_bytes = grouped ? 2 * m.h * groups : 0;
    codes_at = 8 + (grouped ? scale_bytes + (p.zero_points ? m.h * groups : 0) : 0);
  }
  // The standard tile of a grouped scheme: 128 x 128, one group of 128 per row (compile-time
  // geometry).
  __device__ TileSide(const QuantDevParams& p, uint32_t bits)
      : groups(1), group_words(4 * bits), words_per_row(4 * bits), scale_bytes(256),
        codes_at(8 + 256 + (p.zero_points ? 128 : 0)) {}
};

// The x fragments (MmaCodes::b_from_x order) of the word starting at column `col` for one batch
// column (zeros when `valid` is false). xrow: that batch column's x slice in the stage (BF16).
template <uint32_t kBits>
__device__ __forceinline__ void x_fragment(const uint8_t* xrow, uint32_t col, bool valid, uint32_t (&b)[4]) {
  using C = MmaCodes<kBits>;
  b[0] = b[1] = b[2] = b[3] = 0;
  if (!valid) return;
  if constexpr (kBits == 4) {
    const uint4 x4 = *reinterpret_cast<const uint4*>(xrow + 2 * col);
    C::b_from_x(x4.x, x4.y, x4.z, x4.w, b);
  } else {
    const uint2 x2 = *reinterpret_cast<const uint2*>(xrow + 2 * col);
    C::b_from_x(x2.x, x2.y, 0, 0, b);
  }
}

// (kBase + zero): what one code's A value holds beyond its value (C: a lane-codes
// type of mma_codes.cuh). zero: the group's u8 zero point in plane A (read only when the tensor has
// zero points).
template <class C>
__device__ __forceinline__ float code_offset(const QuantDevParams& p, const uint8_t* zero) {
  return C::kBase + (p.zero_points ? static_cast<float>(*zero) : p.symmetric_zero);
}
// The zero point of tile row r and group gi in a stage.
__device__ __forceinline__ const uint8_t* zero_of(const uint8_t* stage, const TileSide& ts, uint32_t r, uint32_t gi) {
  return stage + (8 + ts.scale_bytes + r * ts.groups + gi);
}

// PRMT with a selector whose nibbles are 0..7 (fill_selectors'): `prmt.b32` as written, where
// __byte_perm's definition (the low 3 bits of each nibble) made the compiler mask every run-time
// selector with 0x7777 first (two LOP3s per 8-element chunk in the expansions below).
__device__ __forceinline__ uint32_t prmt_sel(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// A chunk's 8 dense elements from its window of 8 occupied codes a byte each (lo: codes 0..3, hi:
// 4..7) and its selector entry e (fill_selectors, byte layout): byte 3 of hi made the fill code
// (fill_byte3: the code in byte 3) where the chunk has fewer than 8 codes, then elements 0..3 and
// 4..7 gathered by one PRMT each.
__device__ __forceinline__ uint2 gather_chunk(uint32_t lo, uint32_t hi, uint2 e, uint32_t fill_byte3) {
  hi = bit_select(hi, fill_byte3, e.y);
  return make_uint2(prmt_sel(lo, hi, e.x), prmt_sel(lo, hi, e.x >> 16));
}

// Code k of a bit stream (LSB first, kB bits each, kB 2..6) in the low kB bits of byte k of the
// result, for the 4 codes in bits 0..4 kB - 1 of x (the bits above ignored); each byte's bits above
// its code are not cleared.
template <uint32_t kB>
__device__ __forceinline__ uint32_t spread_codes(uint32_t x) {
  const uint32_t y = bit_select(x, x << (16 - 2 * kB), 0x0000FFFFu);  // codes 0, 1 at bit 0; 2, 3 at bit 16
  return bit_select(y, y << (8 - kB), 0x00FF00FFu);                   // codes 1, 3 moved to bytes 1, 3
}
// The inverse: the low kB bits of bytes 0..3 of b as the stream of 4 codes in bits 0..4 kB - 1
// (the bits above are not cleared). Each step keeps one term's bits and the other's complement
// (one LOP3); what that lets through lands where the next step or the caller drops it.
template <uint32_t kB>
__device__ __forceinline__ uint32_t pack_codes(uint32_t b) {
  constexpr uint32_t kCode = (1u << kB) - 1;
  const uint32_t y = bit_select(b, b >> (8 - kB), kCode | kCode << 16);  // codes 0, 1 at bit 0; 2, 3 at 16
  return bit_select(y, y >> (16 - 2 * kB), (1u << (2 * kB)) - 1);
}

// ---- sparse int4 tiles: bitmap + occupied codes -> the dense code layout ----
//
// A tile row's elements in 8-element chunks, one bitmap byte m each (bit i: element i occupied).
// S = the nibble window whose nibble j is the chunk's j-th occupied code (a funnel shift of the
// code plane at the chunk's first code index). PRMT moves bytes, not nibbles, so S is split into
// L = S & 0x0F0F0F0F (nibbles 0, 2, 4, 6 as bytes) and H = (S >> 4) & 0x0F0F0F0F (1, 3, 5, 7);
// two PRMTs with per-m selectors gather the chunk's even elements (P) and odd elements (Q) as
// bytes, and P | Q << 4 is the dense word (nibble i = element i). An unoccupied element takes
// nibble 7 (byte 3 of H): with fewer than 8 codes in the chunk that nibble is not one of them, and
// H's byte 3 is replaced by the fill code z (one that contributes exactly 0, as the +0.0 an
// unoccupied element decodes to: int4's zero point, symmetric 8; QuantDevParams::sparse_fill for
// fp4, nf4 and lut4); with 8 there is no unoccupied element.
//   selectors[m].x = PRMT selectors over (L, H): bits 0..15 for P (elements 0, 2, 4, 6), 16..31
//                    for Q (1, 3, 5, 7); byte index k of the pair is L byte k (k < 4), H byte k - 4
//   selectors[m].y = the mask of H that keeps nibble 7 (m = 0xFF) or frees byte 3 for z
// kBits 8 (expand_sparse_int8), and the other widths (their codes spread into bytes first,
// spread_codes): the window is 8 code bytes (L, H: bytes 0..3, 4..7), element i takes byte
// rank(i) (occupied) or 7, whose value is replaced by the fill code when the chunk has fewer than 8
// codes; selectors[m].x: bits 0..15 for elements 0..3, 16..31 for 4..7; .y the mask of H that
// keeps byte 3 (m = 0xFF) or frees it.
// (Entries of 16 bytes, both selectors in words of their own and one LDS.128 a chunk, saved the
// shift of the second selector but ran 6-13% slower at batch 1: a warp's random entries cost more
// shared-memory wavefronts at 16 bytes than at 8; BENCHMARKS.md, 2026-11-24.)
template <uint32_t kBits>
__device__ void fill_selectors(uint2* selectors) {
  for (uint32_t m = threadIdx.x; m < 256; m += blockDim.x) {
    uint32_t sel = 0, rank = 0;
    for (uint32_t i = 0; i < 8; ++i) {
      const uint32_t index = ((m >> i) & 1) ? rank++ : 7;  // the nibble (kBits 4) or byte (others) of the window
      if constexpr (kBits != 4) {
        sel |= index << (4 * (i % 4) + 16 * (i / 4));
      } else {
        const uint32_t byte = index % 2 ? 4 + index / 2 : index / 2;
        sel |= byte << (4 * (i / 2) + 16 * (i % 2));
      }
    }
    if constexpr (kBits != 4) selectors[m] = make_uint2(sel, m == 0xFF ? 0xFFFFFFFFu : 0x00FFFFFFu);
    else selectors[m] = make_uint2(sel, m == 0xFF ? 0x0F0F0F0Fu : 0x000F0F0Fu);
  }
}

// The occupied elements of bitmap words [0, first) (word(i) reads word i), summed over the warp:
// the first code index of the rows a sparse expansion starts at.
template <typename WordAt>
__device__ __forceinline__ uint32_t codes_before(WordAt word, uint32_t first) {
  uint32_t before = 0;
  for (uint32_t i = threadIdx.x & 31; i < first; i += 32) before += __popc(word(i));
  return __reduce_add_sync(0xFFFFFFFFu, before);
}

// One pass of the sparse expansions: lane l loads bitmap words pass + 32 j + l (j < kWords; 0 at or
// past `last`; word(i) reads word i) into bits[j], and first_code[j] is that word's first code
// index: base plus the occupied elements of the pass's words before it (warp scans of the
// popcounts, the kWords scans interleaved so that their shuffles overlap); base moves past the
// pass.
template <uint32_t kWords, typename WordAt>
__device__ __forceinline__ void scan_bitmap_pass(WordAt word, uint32_t pass, uint32_t last, uint32_t& base,
                                                 uint32_t (&bits)[kWords], uint32_t (&first_code)[kWords]) {
  constexpr uint32_t kFull = 0xFFFFFFFFu;
  const uint32_t lane = threadIdx.x & 31;
  uint32_t count[kWords], inclusive[kWords];
#pragma unroll
  for (uint32_t j = 0; j < kWords; ++j) {
    const uint32_t i = pass + 32 * j + lane;
    bits[j] = i < last ? word(i) : 0u;
    count[j] = __popc(bits[j]);
    inclusive[j] = count[j];
  }
#pragma unroll
  for (uint32_t d = 1; d < 32; d *= 2) {
#pragma unroll
    for (uint32_t j = 0; j < kWords; ++j) {
      const uint32_t v = __shfl_up_sync(kFull, inclusive[j], d);
      if (lane >= d) inclusive[j] += v;
    }
  }
#pragma unroll
  for (uint32_t j = 0; j < kWords; ++j) {
    first_code[j] = base + inclusive[j] - count[j];
    base += __shfl_sync(kFull, inclusive[j], 31);
  }
}

// The sparse expansions' walk over bitmap words [first, last) (word(i) reads word i; the warp's
// rows): passes of 32 kWords words, a scan each (scan_bitmap_pass, from `base` codes), then
// per_word(i, bits, first_code) for j < kWords, i = pass + 32 j + lane, on every lane (i >= last:
// bits 0, and nothing to expand), so that per_word may shuffle.
template <uint32_t kWords, typename WordAt, typename PerWord>
__device__ __forceinline__ void for_each_bitmap_word(WordAt word, uint32_t first, uint32_t last, uint32_t base,
                                                     PerWord&& per_word) {
  const uint32_t lane = threadIdx.x & 31;
  for (uint32_t pass = first; pass < last; pass += 32 * kWords) {
    uint32_t bits[kWords], first_code[kWords];
    scan_bitmap_pass<kWords>(word, pass, last, base, bits, first_code);
#pragma unroll
    for (uint32_t j = 0; j < kWords; ++j) per_word(pass + 32 * j + lane, bits[j], first_code[j]);
  }
}

// Expands tile rows [r_begin, r_end) of a sparse stage of a lane-codes kind (kBits 2..5) or fp6
// (kBits 6; plane A: scales, zeros, bitmap of h * w bits, fp6 the bitmap only; plane B: the
// occupied codes) into the dense code plane of those rows at `dense_out` (row r_begin first;
// 16-byte aligned; (r_end - r_begin) * w * kBits / 32 words), unoccupied elements given their
// group's zero point (kZeros: int codes, where the tensor has them) or p.sparse_fill. kBits 4 as
// described above; the other widths spread a chunk's 8 codes into bytes (spread_codes), gather
// them with the byte selectors (gather_chunk) and pack them back (pack_codes): a chunk is kBits
// dense bytes, a word's 4 chunks kBits dense words. In a pass of 32 kWords
// bitmap words, lane l takes words l, l + 32, ... (32 elements each: conflict-free loads and one
// 16-byte store of 4 dense words); warp scans of the words' popcounts give each word's first code.
// The kWords scans and expansions of a pass are independent, so their shuffle and shared-memory
// latencies overlap (one word per pass left the warp waiting on them). group_magic:
// ceil(2^32 / (group / 32)), so that __umulhi(word, group_magic) is the word's group (exact:
// words and group / 32 are below 2^16). The bitmap may start off a 4-byte boundary (an edge tile
// row whose plane A is not a multiple of 4 bytes, e.g. asymmetric int4 with h odd): its words are
// then funnel shifts of the two aligned words they span, and the code plane (the bitmap is a
// multiple of 8 bytes, w being one of 64 bits) is off by as much, which the code index absorbs
// (kShifted: a separate instance, so that the aligned tiles' loop keeps its single loads).
// Reads at most 8 bytes past plane B: the stage's x slices follow it.
template <uint32_t kBits, bool kShifted, bool kZeros>
__device__ __forceinline__ void expand_sparse_rows(const QuantDevParams& p, const uint8_t* stage,
                                                   const StageGeometry& m, const TileSide& ts, uint32_t r_begin,
                                                   uint32_t r_end, const uint2* selectors, uint32_t group_magic,
                                                   uint32_t* dense_out) {
  constexpr uint32_t kWords = 4;
  const uint32_t lane = threadIdx.x & 31;
  const uint32_t row_words = m.w / 32;  // bitmap words per tile row (w is a multiple of 64)
  const uint32_t off = kShifted ? ts.codes_at % 4 : 0, shift = 8 * off;  // bytes past a word boundary
  const uint32_t* bitmap = reinterpret_cast<const uint32_t*>(stage + (ts.codes_at - off));
  const uint32_t* codes = bitmap + m.h * row_words;  // code k: bits [kBits k, kBits (k + 1)) from bit 8 off
  auto bitmap_word = [&](uint32_t i) {
    if constexpr (kShifted) return __funnelshift_r(bitmap[i], bitmap[i + 1], shift);
    else return bitmap[i];
  };
  const uint8_t* zeros = stage + 8 + ts.scale_bytes;
  const uint32_t first = r_begin * row_words, last = r_end * row_words;
  // the codes of the rows before r_begin (kBits 4: in nibbles from `codes`, off included)
  uint32_t base = codes_before(bitmap_word, first) + (kBits == 4 ? 2 * off : 0);
  // the lane's next word (kZeros): tile row `row`, word `col_word` of it; each word moves it 32 words on
  [[maybe_unused]] uint32_t row = r_begin + lane / row_words, col_word = lane % row_words;
  [[maybe_unused]] const uint32_t step_rows = 32 / row_words, step_words = 32 % row_words;
  for_each_bitmap_word<kWords>(bitmap_word, first, last, base, [&](uint32_t i, uint32_t bits, uint32_t idx) {
    if (i < last) {
      const uint32_t z =
          kZeros && p.zero_points ? zeros[row * ts.groups + __umulhi(col_word, group_magic)] : p.sparse_fill;
      const uint32_t z_byte3 = z << 24;
      if constexpr (kBits == 4) {
        uint32_t out[4];
#pragma unroll
        for (uint32_t c = 0; c < 4; ++c) {
          const uint32_t chunk = (bits >> (8 * c)) & 0xFFu;
          const uint2 e = selectors[chunk];
          const uint32_t* at = codes + idx / 8;
          const uint32_t window = __funnelshift_r(at[0], at[1], 4 * idx);  // shift taken mod 32: idx % 8 nibbles
          const uint32_t lo = window & 0x0F0F0F0Fu;
          const uint32_t hi = ((window >> 4) & e.y) | (z_byte3 & ~e.y);
          // P's bytes hold nibbles in their low halves, Q's too: Q * 16 + P is one LEA (the OR of
          // a shift took two instructions)
          out[c] = prmt_sel(lo, hi, e.x >> 16) * 16u + prmt_sel(lo, hi, e.x);
          idx += __popc(chunk);
        }
        *reinterpret_cast<uint4*>(dense_out + 4 * (i - first)) = make_uint4(out[0], out[1], out[2], out[3]);
      } else {
        constexpr uint32_t kHalf = 4 * kBits, kChunk = 8 * kBits;  // bits of 4 and of 8 codes
        uint32_t lo[4], hi[4];  // chunk c's dense codes 0..3 and 4..7 in bits 0..kHalf - 1 (above: not cleared)
#pragma unroll
        for (uint32_t c = 0; c < 4; ++c) {
          const uint32_t chunk = (bits >> (8 * c)) & 0xFFu;
          const uint2 e = selectors[chunk];
          const uint32_t bit = shift + kBits * idx;
          const uint32_t* at = codes + bit / 32;
          const uint32_t w0 = __funnelshift_r(at[0], at[1], bit);  // shift taken mod 32
          uint32_t upper = w0 >> kHalf;                            // codes 4..7 from bit 0
          if constexpr (kChunk > 32) upper = __funnelshift_r(w0, __funnelshift_r(at[1], at[2], bit), kHalf);
          const uint2 d = gather_chunk(spread_codes<kBits>(w0), spread_codes<kBits>(upper), e, z_byte3);
          lo[c] = pack_codes<kBits>(d.x);
          hi[c] = pack_codes<kBits>(d.y);
          idx += __popc(chunk);
        }
        if constexpr (kBits == 6) {
          // chunk c: bytes 0..2 of lo[c], then bytes 0..2 of hi[c]: 6 PRMTs (the 64-bit assembly
          // below took more instructions)
          uint2* dst = reinterpret_cast<uint2*>(dense_out + 6 * (i - first));
          dst[0] = make_uint2(prmt_sel(lo[0], hi[0], 0x4210), prmt_sel(hi[0], lo[1], 0x5421));
          dst[1] = make_uint2(prmt_sel(lo[1], hi[1], 0x6542), prmt_sel(lo[2], hi[2], 0x4210));
          dst[2] = make_uint2(prmt_sel(hi[2], lo[3], 0x5421), prmt_sel(lo[3], hi[3], 0x6542));
        } else {
          constexpr uint32_t kHalfMask = (1u << kHalf) - 1;
          uint64_t v[4];  // chunk c's 8 dense codes, kChunk bits
#pragma unroll
          for (uint32_t c = 0; c < 4; ++c) v[c] = uint64_t{hi[c] & kHalfMask} << kHalf | (lo[c] & kHalfMask);
          // dense word k: bits [32 k, 32 k + 32) of the 4 chunks' stream (compile-time positions)
#pragma unroll
          for (uint32_t k = 0; k < kBits; ++k) {
            const uint32_t c = 32 * k / kChunk, o = 32 * k % kChunk;
            uint64_t word = v[c] >> o;
            if (c + 1 < 4 && o + 32 > kChunk) word |= v[c + 1] << (kChunk - o);
            dense_out[kBits * (i - first) + k] = static_cast<uint32_t>(word);
          }
        }
      }
    }
    if constexpr (kZeros) {
      col_word += step_words;
      row += step_rows;
      if (col_word >= row_words) col_word -= row_words, ++row;
    }
  });
}

// kZeros: the kind has zero points (int codes; the others fill with p.sparse_fill only).
template <uint32_t kBits, bool kZeros>
__device__ __forceinline__ void expand_sparse_lanes(const QuantDevParams& p, const uint8_t* stage,
                                                    const StageGeometry& m, const TileSide& ts, uint32_t r_begin,
                                                    uint32_t r_end, const uint2* selectors, uint32_t group_magic,
                                                    uint32_t* dense_out) {
  if (ts.codes_at % 4)
    expand_sparse_rows<kBits, true, kZeros>(p, stage, m, ts, r_begin, r_end, selectors, group_magic, dense_out);
  else
    expand_sparse_rows<kBits, false, kZeros>(p, stage, m, ts, r_begin, r_end, selectors, group_magic, dense_out);
}

// One 8-element chunk of a sparse 8-bit tile: its dense bytes from the code bytes at index idx
// (two funnel shifts of three aligned words) and the chunk's selector entry e; fill_byte3: the fill
// code in byte 3.
__device__ __forceinline__ uint2 expand_chunk8(const uint32_t* codes, uint32_t idx, uint2 e, uint32_t fill_byte3) {
  const uint32_t* at = codes + idx / 4;
  const uint32_t shift = 8 * (idx % 4);
  return gather_chunk(__funnelshift_r(at[0], at[1], shift), __funnelshift_r(at[1], at[2], shift), e, fill_byte3);
}

// Sparse int8 and fp8 tiles (no plane A: the bitmap at stage byte 8, h * w bits, w a multiple of 32;
// then the occupied codes, a byte each, 4-aligned): rows [r_begin, r_end) expanded into the dense
// code plane at `dense_out` (16-byte aligned, a byte per code), every unoccupied element given
// `fill` (int8: 128, the code of 0; fp8: 0, +0.0). As expand_sparse_rows: lane l takes bitmap words
// l, l + 32, ... of a pass, warp scans of their popcounts give each word's first code; a chunk of 8
// elements (bitmap byte m) takes the 8 code bytes from its first code (two funnel shifts of three
// aligned words) and two PRMTs by fill_selectors<8>. Reads at most 12 bytes past the codes: the
// stage's x slices follow them. kByChunk (the batch-1 instances): the scans as above, then each
// step's 32 lanes expand 32 consecutive chunks, a lane each, instead of a lane each word's four:
// a word's ~16 code bytes put the lanes' windows 4 banks apart (4-way conflicts on every code
// load), a chunk's ~4 bytes side by side. 8-10% faster at batch 1, 10-12% slower at batch 16 on
// 28672x8192 and 8192^2, so batch 1 only (BENCHMARKS.md, 2026-11-24); the 4-bit expansion the
// same way ran 16-24% slower (more instructions, in kernels that issue twice as often).
template <bool kByChunk>
__device__ __forceinline__ void expand_sparse_int8(const uint8_t* stage, const StageGeometry& m, uint32_t r_begin,
                                                   uint32_t r_end, const uint2* selectors, uint32_t fill,
                                                   uint32_t* dense_out) {
  constexpr uint32_t kWords = 4;
  const uint32_t lane = threadIdx.x & 31;
  const uint32_t row_words = m.w / 32;  // bitmap words per tile row
  const uint32_t* bitmap = reinterpret_cast<const uint32_t*>(stage + 8);
  const uint32_t* codes = bitmap + m.h * row_words;  // code k: byte k from here
  const uint32_t fill_byte3 = fill << 24;
  const uint32_t first = r_begin * row_words, last = r_end * row_words;
  auto bitmap_word = [&](uint32_t i) { return bitmap[i]; };
  uint32_t base = codes_before(bitmap_word, first);  // the codes of the rows before r_begin
  for_each_bitmap_word<kWords>(bitmap_word, first, last, base, [&](uint32_t i, uint32_t bits, uint32_t idx) {
    if constexpr (kByChunk) {
      // the word's chunks a lane each: lane l expands chunk l % 4 of word 8 s + l / 4 (of the 32
      // words of this j) in step s (its bits and first code by shuffle), so that the warp's 32
      // code windows lie side by side and its dense bytes are one contiguous store
#pragma unroll
      for (uint32_t step = 0; step < 4; ++step) {
        const uint32_t src = 8 * step + lane / 4, c = lane % 4;
        const uint32_t wbits = __shfl_sync(0xFFFFFFFFu, bits, src);
        const uint32_t wfirst = __shfl_sync(0xFFFFFFFFu, idx, src);
        const uint32_t wi = i - lane + src;
        if (wi < last) {
          const uint32_t chunk = (wbits >> (8 * c)) & 0xFFu;
          const uint32_t cidx = wfirst + __popc(wbits & ((1u << (8 * c)) - 1u));  // this chunk's first code
          *reinterpret_cast<uint2*>(dense_out + 8 * (wi - first) + 2 * c) =
              expand_chunk8(codes, cidx, selectors[chunk], fill_byte3);
        }
      }
    } else if (i < last) {
      uint32_t out[8];
#pragma unroll
      for (uint32_t c = 0; c < 4; ++c) {
        const uint32_t chunk = (bits >> (8 * c)) & 0xFFu;
        const uint2 d = expand_chunk8(codes, idx, selectors[chunk], fill_byte3);
        out[2 * c] = d.x;
        out[2 * c + 1] = d.y;
        idx += __popc(chunk);
      }
      uint4* dst = reinterpret_cast<uint4*>(dense_out + 8 * (i - first));
      dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
      dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
    }
  });
}

// Copies code-plane rows [r_begin, r_end) of a tile whose code plane starts off a 4-byte boundary
// (an edge tile row of h rows with h * (plane A bytes per row) not a multiple of 4, e.g.
// asymmetric int4: 3 bytes per row and group) to `out` (4-byte aligned), row r_begin first, so that
// the MMA path reads whole words: each word is a funnel shift of the two aligned words it spans.
// The last one reads at most 3 bytes past the plane's end, inside the stage (its tile bytes are
// copied in 16-byte units).
__device__ __forceinline__ void realign_codes(const uint8_t* stage, const TileSide& ts, uint32_t r_begin,
                                              uint32_t r_end, uint32_t* out) {
  const uint32_t lane = threadIdx.x & 31, shift = 8 * (ts.codes_at % 4);
  const uint32_t* in = reinterpret_cast<const uint32_t*>(stage + (ts.codes_at & ~3u)) + r_begin * ts.words_per_row;
  const uint32_t n = (r_end - r_begin) * ts.words_per_row;
  for (uint32_t i = lane; i < n; i += 32) out[i] = __funnelshift_r(in[i], in[i + 1], shift);
}

// The FP8 x fragment (MmaFp8::b_from_x order) of the 4 columns from `col`, one batch column.
__device__ __forceinline__ void x_fragment_fp8(const uint8_t* xrow, uint32_t col, bool valid, uint32_t (&b)[2]) {
  b[0] = b[1] = 0;
  if (!valid) return;
  const uint2 x2 = *reinterpret_cast<const uint2*>(xrow + 2 * col);
  MmaFp8::b_from_x(x2.x, x2.y, b);
}

// Rows [16 warp, 16 warp + 16) of a tile, all warps sharing it (batch > 16): the warp's partials
// yacc[nt] (rows g: 0, 1; g + 8: 2, 3 at batch columns 8 nt + 2t, + 1).
// tma_tile_8bit: int8 (A holds the codes' values: HSUB2 of 128 per low-nibble pair, of 2176 per
// high-nibble pair) or fp8 (MmaFp8); the per-row scale is applied at the flush.
template <uint32_t kNT, bool kFp8>
__device__ __forceinline__ void tma_tile_8bit(const uint32_t* codes, uint32_t codes_row0, const uint8_t* xs,
                                              uint32_t x_row, const StageGeometry& m, uint32_t batch,
                                              float (&yacc)[kNT][4]) {
  using C = MmaCodes<8>;
  constexpr uint32_t kStepWords = 8;  // words of a row per k-step: 4 lanes x 2 words
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
  const uint32_t r0 = min(warp * 16 + g, m.h - 1), r1 = min(warp * 16 + g + 8, m.h - 1);  // clamped; dropped at flush
  const uint32_t words_per_row = m.w / C::kPerWord;
  const uint32_t* row0w = codes + (r0 - codes_row0) * words_per_row + 2 * t;  // codes: 8-aligned
  const uint32_t* row1w = codes + (r1 - codes_row0) * words_per_row + 2 * t;
  const uint32_t off_lo = bf16x2_splat_int(128.0f), off_hi = bf16x2_splat_int(2176.0f);
  for (uint32_t j = 0; j < words_per_row; j += kStepWords) {  // the step's first word; this lane's: j + 2t, + 1
    const uint2 wa = *reinterpret_cast<const uint2*>(row0w + j), wb = *reinterpret_cast<const uint2*>(row1w + j);
    const uint32_t w0[2] = {wa.x, wa.y}, w1[2] = {wb.x, wb.y};
    if constexpr (kFp8) {  // one MMA per word: 4 codes of each of the two rows
#pragma unroll
      for (uint32_t v = 0; v < 2; ++v) {
        uint32_t a0[2], a1[2];
        MmaFp8::pairs(w0[v], a0);
        MmaFp8::pairs(w1[v], a1);
#pragma unroll
        for (uint32_t i = 0; i < 2; ++i)  // one row block, up to 8 batch tiles: fewer A pairs than B registers
          a0[i] = minifloat_value<MmaFp8::kValueExp>(a0[i]), a1[i] = minifloat_value<MmaFp8::kValueExp>(a1[i]);
        const uint32_t col = (j + 2 * t + v) * MmaFp8::kPerWord;
#pragma unroll
        for (uint32_t nt = 0; nt < kNT; ++nt) {
          uint32_t b[2];
          x_fragment_fp8(xs + (8 * nt + g) * x_row, col, 8 * nt + g < batch, b);
          mma_bf16_16816(yacc[nt], a0[0], a1[0], a0[1], a1[1], b[0], b[1]);
        }
      }
    } else {
#pragma unroll
      for (uint32_t v = 0; v < 2; ++v) {
        uint32_t a0[4], a1[4];
        C::pairs_sub(w0[v], off_lo, off_hi, a0);
        C::pairs_sub(w1[v], off_lo, off_hi, a1);
        const uint32_t col = (j + 2 * t + v) * C::kPerWord;
#pragma unroll
        for (uint32_t nt = 0; nt < kNT; ++nt) {
          uint32_t b[4];
          x_fragment<8>(xs + (8 * nt + g) * x_row, col, 8 * nt + g < batch, b);
          mma_bf16_16816(yacc[nt], a0[0], a1[0], a0[1], a1[1], b[0], b[1]);
          mma_bf16_16816(yacc[nt], a0[2], a1[2], a0[3], a1[3], b[2], b[3]);
        }
      }
    }
  }
}

// A lane's code words of one row in a k-step (L::kWords from `ptr`); kAligned8: two-word loads as one
// (ptr 8-byte aligned).
template <class L, bool kAligned8>
__device__ __forceinline__ void load_lane_words(const uint32_t* ptr, uint32_t (&w)[L::kWords]) {
  if constexpr (kAligned8 && L::kWords == 2) {
    const uint2 a = *reinterpret_cast<const uint2*>(ptr);
    w[0] = a.x, w[1] = a.y;
  } else {
#pragma unroll
    for (uint32_t i = 0; i < L::kWords; ++i) w[i] = ptr[i];
  }
}

// tma_tile_grouped: the schemes of the lane-codes types (L, mma_codes.cuh: int4/3/2, fp5/4, nf4,
// lut4). L::kScaled: an fp16 scale per (row, group) in plane A, applied per group (else none here:
// fp5's per-row scale is applied at the flush, lut4 has none); int codes: A holds the codes'
// values (HSUB2 of kBase + zero per pair). codes: the dense code plane from tile row codes_row0 on
// (the stage's, or a sparse tile's rows expanded into the warp's scratch).
template <class L, uint32_t kNT>
__device__ __forceinline__ void tma_tile_grouped(const QuantDevParams& p, const uint8_t* stage, const uint32_t* codes,
                                                 uint32_t codes_row0, const uint8_t* xs, uint32_t x_row,
                                                 const StageGeometry& m, const TileSide& ts, const LaneTable& lut,
                                                 uint32_t batch, float (&yacc)[kNT][4], float x_scale) {
  constexpr uint32_t kStepWords = 4 * L::kWords;  // words of a row per k-step: 4 lanes
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
  const uint32_t r0 = min(warp * 16 + g, m.h - 1), r1 = min(warp * 16 + g + 8, m.h - 1);  // clamped; dropped at flush
  const uint32_t* row0w = codes + (r0 - codes_row0) * ts.words_per_row + L::kWords * t;
  const uint32_t* row1w = codes + (r1 - codes_row0) * ts.words_per_row + L::kWords * t;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(stage + 8);
  const bool aligned8 = reinterpret_cast<uintptr_t>(codes) % 8 == 0;  // two-word loads as one
  for (uint32_t gi = 0; gi < ts.groups; ++gi) {
    uint32_t off0 = 0, off1 = 0;  // (kBase + zero) pairs of the two rows
    if constexpr (L::kOffset) {
      off0 = bf16x2_splat_int(code_offset<L>(p, zero_of(stage, ts, r0, gi)));
      off1 = bf16x2_splat_int(code_offset<L>(p, zero_of(stage, ts, r1, gi)));
    }
    float c[kNT][4];
#pragma unroll
    for (uint32_t nt = 0; nt < kNT; ++nt) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
    for (uint32_t q = 0; q < ts.group_words; q += kStepWords) {
      const uint32_t j = gi * ts.group_words + q;  // the step's first word; this lane's: j + kWords t
      const uint32_t col = cols_of(j + L::kWords * t, L::kBits);  // this lane's first column
      uint32_t w0[L::kWords], w1[L::kWords];
      if (aligned8) {
        load_lane_words<L, true>(row0w + j, w0);
        load_lane_words<L, true>(row1w + j, w1);
      } else {
        load_lane_words<L, false>(row0w + j, w0);
        load_lane_words<L, false>(row1w + j, w1);
      }
#pragma unroll
      for (uint32_t part = 0; part < L::kPairs / 4; ++part) {  // 4 pairs of each row: two MMAs per batch tile
        uint32_t a0[4], a1[4];
        L::pairs4(w0, part, a0, lut);
        L::pairs4(w1, part, a1, lut);
#pragma unroll
        for (uint32_t i = 0; i < 4; ++i)  // minifloats: the values (fewer A pairs than B registers)
          a0[i] = minifloat_value<L::kValueExp>(a0[i]), a1[i] = minifloat_value<L::kValueExp>(a1[i]);
        if constexpr (L::kOffset) {
#pragma unroll
          for (uint32_t i = 0; i < 4; ++i) a0[i] = bf16x2_sub(a0[i], off0), a1[i] = bf16x2_sub(a1[i], off1);
        }
#pragma unroll
        for (uint32_t nt = 0; nt < kNT; ++nt) {
          uint32_t b[4];
          L::x_part4(xs + (8 * nt + g) * x_row, col, part, 8 * nt + g < batch, b);
          mma_16816<L::kHalf>(c[nt], a0[0], a1[0], a0[1], a1[1], b[0], b[1]);
          mma_16816<L::kHalf>(c[nt], a0[2], a1[2], a0[3], a1[3], b[2], b[3]);
        }
      }
    }
    const float s0 = L::kScaled ? x_scale * __half2float(__ushort_as_half(scales[r0 * ts.groups + gi])) : x_scale;
    const float s1 = L::kScaled ? x_scale * __half2float(__ushort_as_half(scales[r1 * ts.groups + gi])) : x_scale;
#pragma unroll
    for (uint32_t nt = 0; nt < kNT; ++nt) {
      yacc[nt][0] = fmaf(s0, c[nt][0], yacc[nt][0]);
      yacc[nt][1] = fmaf(s0, c[nt][1], yacc[nt][1]);
      yacc[nt][2] = fmaf(s1, c[nt][2], yacc[nt][2]);
      yacc[nt][3] = fmaf(s1, c[nt][3], yacc[nt][3]);
    }
  }
}

// The tile rows lane group g of a warp multiplies in its kBlocks 16-row blocks from block
// first_block on: rows[rb][0] = 16 (first_block + rb) + g and rows[rb][1] = that + 8, clamped to
// the tile's last row h - 1 unless kStd (a 128-row tile has them all). A block past the tile
// reruns its last row; flush_partials drops those rows.
template <uint32_t kBlocks, bool kStd>
__device__ __forceinline__ void warp_block_rows(uint32_t first_block, uint32_t g, uint32_t h,
                                                uint32_t (&rows)[kBlocks][2]) {
#pragma unroll
  for (uint32_t rb = 0; rb < kBlocks; ++rb) {
    rows[rb][0] = kStd ? 16 * (first_block + rb) + g : min(16 * (first_block + rb) + g, h - 1);
    rows[rb][1] = kStd ? 16 * (first_block + rb) + g + 8 : min(16 * (first_block + rb) + g + 8, h - 1);
  }
}

// The sum of x over group gi of a batch row from prepare_kernel's sums of its 32-column parts
// (x_sums; `sums` 16-byte aligned); kStd: the standard tile, one group of 128 columns.
template <bool kStd>
__device__ __forceinline__ float group_x_sum(const float* sums, uint32_t gi, uint32_t group) {
  if constexpr (kStd) {
    const float4 v = *reinterpret_cast<const float4*>(sums);
    return (v.x + v.y) + (v.z + v.w);
  }
  const uint32_t parts = group / 32;  // even: groups are multiples of 64 columns (quant_tma_supported)
  const float2* at = reinterpret_cast<const float2*>(sums + gi * parts);
  float sum = 0.f;
#pragma unroll 1
  for (uint32_t j = 0; j < parts / 2; ++j) sum += at[j].x + at[j].y;
  return sum;
}

// The schemes of the lane-codes types (L, mma_codes.cuh: int4/3/2, fp5/4, nf4, lut4) at batch
// 1..16: one warp multiplies kBlocks 16-row blocks of a tile, from block first_block on, so the x
// fragments of a k-step are loaded once for those blocks, and the blocks' MMA chains are
// independent. Int codes: A holds 128 + code (no subtraction per code); per group, (128 + zero) *
// sum(x) is removed, from the sums of x that prepare_kernel wrote after each batch row's x
// (x_sums; before, MMAs with A = ones, a fifth of the MMAs at batch 1); the others: A holds the
// value.
// Per group the fp16 scale is applied (L::kScaled; fp5's per-row scale at the flush).
// yacc[rb * kNT + nt]: rows 16 (first_block + rb) + g (0, 1) and + 8 (2, 3) at batch columns
// 8 nt + 2t, + 1. codes_plane: the dense code plane from tile row codes_row0 on (the stage's, or a
// sparse tile's rows expanded into the warp's scratch); kAligned8: it is 8-byte aligned; kStd: the
// tile is the standard one.
template <class L, bool kBatch1, bool kAligned8, uint32_t kBlocks, uint32_t kNT, bool kStd>
__device__ __forceinline__ void tma_tile_warp(const QuantDevParams& p, const uint8_t* stage, const uint32_t* codes_plane,
                                              uint32_t codes_row0, uint32_t first_block, const uint8_t* xs,
                                              uint32_t x_row, uint32_t x_sums_at, const StageGeometry& m,
                                              const TileSide& ts_in, const LaneTable& lut, uint32_t batch,
                                              float (&yacc)[kBlocks * kNT][4], float x_scale) {
  constexpr uint32_t kStepWords = 4 * L::kWords;  // words of a row per k-step: 4 lanes
  constexpr uint32_t kSubBlocks = L::kCols / 16;  // 16-column blocks of a lane's share: 4 MMAs each
  const uint32_t lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
  // kStd: the standard tile (TileSide(p, bits)), whose geometry is known here, so that every shared
  // load is at a constant offset from one base and the group loop is unrolled.
  const TileSide ts = kStd ? TileSide(p, L::kBits) : ts_in;
  const uint32_t* codes = codes_plane + L::kWords * t;
  uint32_t rows[kBlocks][2];
  warp_block_rows<kBlocks, kStd>(first_block, g, m.h, rows);
  // kStd: the warp's first row g of its first block; its other rows at constant offsets
  const uint32_t* std_codes = codes + (16 * first_block + g - codes_row0) * ts.words_per_row;
  for (uint32_t gi = 0; gi < ts.groups; ++gi) {
    float c[kBlocks * kNT][4], cs[kNT][2];  // cs: sum(x) of the group at batch columns 8 nt + 2t, + 1
#pragma unroll
    for (uint32_t i = 0; i < kBlocks * kNT; ++i) c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.f;
    if constexpr (L::kOffset) {
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (uint32_t v = 0; v < 2; ++v) {
          const uint32_t col = 8 * nt + 2 * t + v;
          cs[nt][v] = (kBatch1 && v) || col >= batch
                          ? 0.f
                          : group_x_sum<kStd>(reinterpret_cast<const float*>(xs + col * x_row + x_sums_at), gi,
                                              p.group);
        }
      }
    }
    for (uint32_t q = 0; q < ts.group_words; q += kStepWords) {
      const uint32_t j = gi * ts.group_words + q;  // the step's first word; this lane's: j + kWords t
      const uint32_t col = cols_of(j + L::kWords * t, L::kBits);  // this lane's first column
      uint32_t b[kNT][L::kPairs];
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (uint32_t sb = 0; sb < kSubBlocks; ++sb) {
          // prepare_kernel's order and scale (prepared_x)
          prepared_x_words<8>(xs + (8 * nt + g) * x_row, col + 16 * sb, 8 * nt + g < batch, b[nt] + 8 * sb);
        }
      }
      // All the step's code words first (loads in flight together), then the arithmetic: blocks
      // past the tile rerun its last row (dropped at flush).
      uint32_t words[kBlocks][2][L::kWords];
#pragma unroll
      for (uint32_t rb = 0; rb < kBlocks; ++rb) {
#pragma unroll
        for (uint32_t h = 0; h < 2; ++h) {
          const uint32_t* ptr = kStd ? std_codes + (16 * rb + 8 * h) * ts.words_per_row + j
                                     : codes + (rows[rb][h] - codes_row0) * ts.words_per_row + j;
          load_lane_words<L, kAligned8>(ptr, words[rb][h]);
        }
      }
#pragma unroll
      for (uint32_t rb = 0; rb < kBlocks; ++rb) {
#pragma unroll
        for (uint32_t part = 0; part < L::kPairs / 4; ++part) {  // 4 pairs of each row: two MMAs per batch tile
          const uint32_t i = 4 * part;
          uint32_t a0[4], a1[4];
          L::pairs4(words[rb][0], part, a0, lut);
          L::pairs4(words[rb][1], part, a1, lut);
#pragma unroll
          for (uint32_t nt = 0; nt < kNT; ++nt) {
            mma_16816<L::kHalf>(c[rb * kNT + nt], a0[0], a1[0], a0[1], a1[1], b[nt][i], b[nt][i + 1]);
            mma_16816<L::kHalf>(c[rb * kNT + nt], a0[2], a1[2], a0[3], a1[3], b[nt][i + 2], b[nt][i + 3]);
          }
        }
      }
    }
    const uint16_t* scales = reinterpret_cast<const uint16_t*>(stage + 8);
    // kStd (one group): row 16 first_block + g's scale and zero; the warp's other rows at
    // constant offsets
    const uint16_t* std_scales = scales + 16 * first_block + g;
    const uint8_t* std_zeros = zero_of(stage, ts, 16 * first_block + g, 0);
    constexpr float kFlush = pow2f(minifloat_flush_exp(L::kValueExp));  // 1 unless minifloat codes
#pragma unroll
    for (uint32_t rb = 0; rb < kBlocks; ++rb) {
      float s0, s1, o0 = 0.f, o1 = 0.f;
      if constexpr (kStd) {
        s0 = x_scale * kFlush * __half2float(__ushort_as_half(std_scales[16 * rb]));
        s1 = x_scale * kFlush * __half2float(__ushort_as_half(std_scales[16 * rb + 8]));
        if constexpr (L::kOffset) {
          o0 = code_offset<L>(p, std_zeros + 16 * rb);
          o1 = code_offset<L>(p, std_zeros + 16 * rb + 8);
        }
      } else {
        s0 = L::kScaled ? x_scale * kFlush * __half2float(__ushort_as_half(scales[rows[rb][0] * ts.groups + gi]))
                        : x_scale;
        s1 = L::kScaled ? x_scale * kFlush * __half2float(__ushort_as_half(scales[rows[rb][1] * ts.groups + gi]))
                        : x_scale;
        if constexpr (L::kOffset) {
          o0 = code_offset<L>(p, zero_of(stage, ts, rows[rb][0], gi));
          o1 = code_offset<L>(p, zero_of(stage, ts, rows[rb][1], gi));
        }
      }
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) {
        float(&y)[4] = yacc[rb * kNT + nt];
        const float(&cc)[4] = c[rb * kNT + nt];
        if constexpr (L::kOffset) {
          y[0] = fmaf(s0, fmaf(-o0, cs[nt][0], cc[0]), y[0]);
          y[2] = fmaf(s1, fmaf(-o1, cs[nt][0], cc[2]), y[2]);
          if constexpr (!kBatch1) {  // batch 1: only column 0 (elements 0 and 2 of lanes t = 0) is used
            y[1] = fmaf(s0, fmaf(-o0, cs[nt][1], cc[1]), y[1]);
            y[3] = fmaf(s1, fmaf(-o1, cs[nt][1], cc[3]), y[3]);
          }
        } else {
          y[0] = fmaf(s0, cc[0], y[0]);
          y[2] = fmaf(s1, cc[2], y[2]);
          if constexpr (!kBatch1) {
            y[1] = fmaf(s0, cc[1], y[1]);
            y[3] = fmaf(s1, cc[3], y[3]);
          }
        }
      }
    }
  }
}

// int8 and fp8 E4M3 (per-row scales, applied at the flush) with a warp per part of a tile: the
// warp's rows 16 first_block .. + 16 kBlocks, x fragments loaded once per k-step for all its row
// blocks. int8: x is FP16, x_scale times prepare_kernel's (the tile column's power of two, half_x),
// A holds MmaInt8Half's 1152 + value, one FP16 MMA per word, and 1152 * sum(x) is removed per tile
// (sum(x) from an MMA with A = ones); fp8: MmaFp8, x taken times 2^64 (scale_x). kStd: the tile is
// 128 x 128 (rows of 32 words at constant offsets). codes_plane: the dense code plane from tile row
// codes_row0 on (the stage's, after the plane directory: there is no plane A; or a sparse tile's
// rows expanded into the warp's scratch); yacc as tma_tile_warp's. fp8: x in prepare_kernel's order
// and scale (prepared_x).
template <bool kFp8, uint32_t kBlocks, uint32_t kNT, bool kStd>
__device__ __forceinline__ void tma_tile_warp8(const uint32_t* codes_plane, uint32_t codes_row0, uint32_t first_block,
                                               const uint8_t* xs, uint32_t x_row, const StageGeometry& m,
                                               uint32_t batch, float (&yacc)[kBlocks * kNT][4], float x_scale) {
  constexpr uint32_t kStepWords = 8;  // words of a row per k-step: 4 lanes x 2 words (32 columns)
  constexpr float kOffset = MmaInt8Half::kBase;
  const uint32_t lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
  const uint32_t words_per_row = kStd ? 32 : m.w / 4;
  const uint32_t* codes = codes_plane + 2 * t;  // 8-aligned (the stage and the scratch are)
  uint32_t rows[kBlocks][2];
  warp_block_rows<kBlocks, kStd>(first_block, g, m.h, rows);
  const uint32_t* std_codes = codes + (16 * first_block + g - codes_row0) * 32;
  float c[kBlocks * kNT][4], cs[kNT][4];
#pragma unroll
  for (uint32_t i = 0; i < kBlocks * kNT; ++i) c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.f;
#pragma unroll
  for (uint32_t nt = 0; nt < kNT; ++nt) cs[nt][0] = cs[nt][1] = cs[nt][2] = cs[nt][3] = 0.f;
  for (uint32_t j = 0; j < words_per_row; j += kStepWords) {
    uint32_t b[kNT][2][2];  // per batch tile and word: the B fragment pair
#pragma unroll
    for (uint32_t nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (uint32_t v = 0; v < 2; ++v) {
        const uint32_t col = (j + 2 * t + v) * 4;
        const uint8_t* xr = xs + (8 * nt + g) * x_row;
        if constexpr (kFp8) {
          prepared_x_words<2>(xr, col, 8 * nt + g < batch, b[nt][v]);
        } else {  // FP16 x in column order: the B pair as it is
          b[nt][v][0] = b[nt][v][1] = 0;
          if (8 * nt + g < batch) {
            const uint2 x2 = *reinterpret_cast<const uint2*>(xr + 2 * col);
            b[nt][v][0] = x2.x, b[nt][v][1] = x2.y;
          }
          mma_f16_16816(cs[nt], kF16x2Ones, kF16x2Ones, kF16x2Ones, kF16x2Ones, b[nt][v][0], b[nt][v][1]);
        }
      }
    }
    uint32_t words[kBlocks][2][2];
#pragma unroll
    for (uint32_t rb = 0; rb < kBlocks; ++rb) {
#pragma unroll
      for (uint32_t h = 0; h < 2; ++h) {
        const uint32_t* ptr =
            kStd ? std_codes + (16 * rb + 8 * h) * 32 + j : codes + (rows[rb][h] - codes_row0) * words_per_row + j;
        const uint2 a = *reinterpret_cast<const uint2*>(ptr);
        words[rb][h][0] = a.x, words[rb][h][1] = a.y;
      }
    }
#pragma unroll
    for (uint32_t rb = 0; rb < kBlocks; ++rb) {
#pragma unroll
      for (uint32_t v = 0; v < 2; ++v) {
        if constexpr (kFp8) {
          uint32_t a0[2], a1[2];
          MmaFp8::pairs(words[rb][0][v], a0);
          MmaFp8::pairs(words[rb][1][v], a1);
#pragma unroll
          for (uint32_t nt = 0; nt < kNT; ++nt)
            mma_bf16_16816(c[rb * kNT + nt], a0[0], a1[0], a0[1], a1[1], b[nt][v][0], b[nt][v][1]);
        } else {
          uint32_t a0[2], a1[2];
          MmaInt8Half::pairs(words[rb][0][v], a0);
          MmaInt8Half::pairs(words[rb][1][v], a1);
#pragma unroll
          for (uint32_t nt = 0; nt < kNT; ++nt)
            mma_f16_16816(c[rb * kNT + nt], a0[0], a1[0], a0[1], a1[1], b[nt][v][0], b[nt][v][1]);
        }
      }
    }
  }
#pragma unroll
  for (uint32_t i = 0; i < kBlocks * kNT; ++i) {
    const uint32_t nt = i % kNT;
#pragma unroll
    for (uint32_t e = 0; e < 4; ++e) {
      if constexpr (kFp8) yacc[i][e] += c[i][e];
      else yacc[i][e] = fmaf(x_scale, fmaf(-kOffset, cs[nt][e], c[i][e]), yacc[i][e]);
    }
  }
}

// Lossless BF16 tiles of codec exp4 (docs/FORMAT.md "Codec 3, exp4"; MmaExp4) with a warp per part
// of a tile, or (kBlocks 1, first_block = warp) the warps sharing it: tma_tile_warp8's fp8 loop
// over [16-byte header][plane 1: a byte per weight][codes: a nibble per weight][escapes]. Lane t
// takes 8 columns of each 32-column k-step: two words of plane 1 and one word of codes per row.
// Every weight is decoded as base + code; exp4_escapes corrects the escaped ones afterwards.
// A is the weights themselves: the products go straight into yacc (no scale).
template <uint32_t kBlocks, uint32_t kNT, bool kStd>
__device__ __forceinline__ void tma_tile_exp4(const uint8_t* stage, uint32_t first_block, const uint8_t* xs,
                                              uint32_t x_row, const StageGeometry& m, uint32_t batch,
                                              float (&yacc)[kBlocks * kNT][4]) {
  constexpr uint32_t kStepWords = 8;  // plane-1 words of a row per k-step: 4 lanes x 2 words (32 columns)
  const uint32_t lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
  const uint32_t w = kStd ? 128 : m.w, words_per_row = w / 4, code_words_per_row = w / 8;
  const uint32_t base4 = stage[0] * 0x01010101u, select = MmaExp4::kSelect;
  const uint32_t* mant = reinterpret_cast<const uint32_t*>(stage + 16) + 2 * t;  // 16-aligned
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + 16 + (kStd ? 128 * 128 : m.h * w)) + t;
  uint32_t rows[kBlocks][2];
  warp_block_rows<kBlocks, kStd>(first_block, g, m.h, rows);
  for (uint32_t j = 0; j < words_per_row; j += kStepWords) {
    uint32_t b[kNT][2][2];  // per batch tile and word: the B fragment pair
#pragma unroll
    for (uint32_t nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (uint32_t v = 0; v < 2; ++v)
        x_fragment_fp8(xs + (8 * nt + g) * x_row, (j + 2 * t + v) * 4, 8 * nt + g < batch, b[nt][v]);
    }
    uint32_t words[kBlocks][2][2], cw[kBlocks][2];
#pragma unroll
    for (uint32_t rb = 0; rb < kBlocks; ++rb) {
#pragma unroll
      for (uint32_t h = 0; h < 2; ++h) {
        const uint2 a = *reinterpret_cast<const uint2*>(mant + rows[rb][h] * words_per_row + j);
        words[rb][h][0] = a.x, words[rb][h][1] = a.y;
        cw[rb][h] = codes[rows[rb][h] * code_words_per_row + j / 2];
      }
    }
#pragma unroll
    for (uint32_t rb = 0; rb < kBlocks; ++rb) {
#pragma unroll
      for (uint32_t v = 0; v < 2; ++v) {
        uint32_t a0[2], a1[2];
        MmaExp4::pairs(words[rb][0][v], __byte_perm(cw[rb][0], 0, v ? 0x4342 : 0x4140), base4, select, a0);
        MmaExp4::pairs(words[rb][1][v], __byte_perm(cw[rb][1], 0, v ? 0x4342 : 0x4140), base4, select, a1);
#pragma unroll
        for (uint32_t nt = 0; nt < kNT; ++nt)
          mma_bf16_16816(yacc[rb * kNT + nt], a0[0], a1[0], a0[1], a1[1], b[nt][v][0], b[nt][v][1]);
      }
    }
  }
}

// BF16 bits (sign, exponent, 7 mantissa bits) from an exponent byte and a floatplanes plane-1 byte
// (mantissa << 1 | sign), as a float.
__device__ __forceinline__ float exp4_weight(uint32_t exponent, uint32_t m) {
  return __uint_as_float(((m & 1u) << 31) | (exponent << 23) | ((m >> 1) << 16));
}

// The escapes of an exp4 tile (header word E at byte 4; E u32 indices, then E u8 values, after the
// codes) in rows [16 first_block, 16 (first_block + kBlocks)) of the tile: tma_tile_exp4 multiplied
// such a weight as exponent base (its code is 0); this adds (weight - that) x to y, one atomicAdd
// per batch column (escapes are rare: 0.011% of MiniLM's matrix weights). y must be zeroed
// first: the warp waits for prepare_kernel once (y_ready).
template <uint32_t kBlocks>
__device__ __forceinline__ void exp4_escapes(const uint8_t* stage, const StageGeometry& m, uint32_t first_block,
                                             const uint8_t* xs, uint32_t x_row, uint32_t batch, float* y_dev,
                                             bool& y_ready) {
  const uint32_t count = *reinterpret_cast<const uint32_t*>(stage + 4);
  if (count == 0) return;  // warp-uniform
  if (!y_ready) wait_for_prepare(), y_ready = true;
  const uint32_t n = m.h * m.w, at = 16 + n + n / 2;  // w a multiple of 32: 4-aligned
  const uint32_t* index = reinterpret_cast<const uint32_t*>(stage + at);
  const uint8_t* value = stage + at + 4 * count;
  const uint32_t base = stage[0], r_lo = 16 * first_block, r_hi = min(16 * (first_block + kBlocks), m.h);
  for (uint32_t j = threadIdx.x & 31; j < count; j += 32) {
    const uint32_t i = index[j], r = i / m.w, c = i - r * m.w;
    if (r < r_lo || r >= r_hi) continue;
    const uint32_t mb = stage[16 + i];
    const float d = exp4_weight(value[j], mb) - exp4_weight(base, mb);
    for (uint32_t col = 0; col < batch; ++col) {
      const float x = bf16_bits_to_float(*reinterpret_cast<const uint16_t*>(xs + col * x_row + 2 * c));
      atomicAdd(&y_dev[(uint64_t{m.row0} + r) * batch + col], d * x);
    }
  }
}

// fp6 E3M2 (per-row scales, applied at the flush) with a warp per part of a tile: lane t takes the
// 16-column chunks t, t + 4, ... (3 code words per row each, MmaFp6::chunk), the x fragments of a
// chunk loaded once for the warp's kBlocks row blocks. kStd: 128 x 128 tiles (rows of 24 words).
// Tile widths are multiples of 64 columns (quant_tma_supported), so every lane runs the same
// number of chunks. Also the warps-share-a-tile path (batch > 16): kBlocks 1, first_block = warp.
// kPrepared (a warp per part of a tile): x in prepare_kernel's order, times 2^kXExp (prepared_x;
// its B registers serve kBlocks row blocks, the flush scales back); else x as it is and one
// multiply per A pair (warps sharing a tile: one row block, up to 8 batch tiles). plane: the dense
// code plane from tile row codes_row0 on (the stage's, at byte 8, or a sparse tile's rows expanded
// into the warp's scratch).
template <uint32_t kBlocks, uint32_t kNT, bool kStd, bool kPrepared>
__device__ __forceinline__ void tma_tile_warp6(const uint32_t* plane, uint32_t codes_row0, uint32_t first_block,
                                               const uint8_t* xs, uint32_t x_row, const StageGeometry& m,
                                               uint32_t batch, float (&yacc)[kBlocks * kNT][4]) {
  const uint32_t lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
  const uint32_t row_words = kStd ? 24 : m.w * 6 / 32, chunks = kStd ? 8 : m.w / 16;
  plane -= codes_row0 * row_words;
  uint32_t rows[kBlocks][2];
  warp_block_rows<kBlocks, kStd>(first_block, g, m.h, rows);
  for (uint32_t c = t; c < chunks; c += 4) {
    uint32_t b[kNT][8];
#pragma unroll
    for (uint32_t nt = 0; nt < kNT; ++nt) {
      const uint8_t* xr = xs + (8 * nt + g) * x_row;
      if constexpr (kPrepared) {
        prepared_x_words<8>(xr, 16 * c, 8 * nt + g < batch, b[nt]);
      } else {
        x_fragment<4>(xr, 16 * c, 8 * nt + g < batch, *reinterpret_cast<uint32_t(*)[4]>(b[nt]));
        x_fragment<4>(xr, 16 * c + 8, 8 * nt + g < batch, *reinterpret_cast<uint32_t(*)[4]>(b[nt] + 4));
      }
    }
#pragma unroll
    for (uint32_t rb = 0; rb < kBlocks; ++rb) {
      const uint32_t* r0 = plane + rows[rb][0] * row_words + 3 * c;
      const uint32_t* r1 = plane + rows[rb][1] * row_words + 3 * c;
      uint32_t a0[8], a1[8];
      MmaFp6::chunk<!kPrepared>(r0[0], r0[1], r0[2], a0);
      MmaFp6::chunk<!kPrepared>(r1[0], r1[1], r1[2], a1);
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (uint32_t k = 0; k < 4; ++k)
          mma_bf16_16816(yacc[rb * kNT + nt], a0[2 * k], a1[2 * k], a0[2 * k + 1], a1[2 * k + 1], b[nt][2 * k],
                         b[nt][2 * k + 1]);
      }
    }
  }
}

// Fills the 256-entry LaneTable of nf4 or lut4 (mma_codes.cuh, LanePairTable4) from the 16 code
// values v (float): entry b is (FP16(v[b & 15]), FP16(v[b >> 4])), once per bank. By warps
// [0, warps) (the consumers, while the producer issues the first copies): lane l converts v[l % 16]
// once, and a warp writes an entry's 32 copies from two shuffles.
__device__ void fill_pair_table(uint8_t* table, const float* values, uint32_t warps) {
  const uint32_t lane = threadIdx.x & 31, h = __half_as_ushort(__float2half_rn(values[lane & 15]));
  for (uint32_t b = threadIdx.x / 32; b < 256; b += warps) {
    const uint32_t lo = __shfl_sync(0xFFFFFFFFu, h, b & 15), hi = __shfl_sync(0xFFFFFFFFu, h, b >> 4);
    reinterpret_cast<uint32_t*>(table)[32 * b + lane] = lo | hi << 16;
  }
}

// Non-grouped: pulls the row scales that flush_partials will read for rows row0 + 16 * first_block
// ... (kBlocks blocks of 16, rows >= h left out) into L1 when a tile row starts, so that the flush
// at its end (the last one on the launch's tail) does not wait for them in DRAM.
template <uint32_t kBlocks, bool kGrouped>
__device__ __forceinline__ void prefetch_row_scales(const QuantDevParams& p, uint32_t row0, uint32_t h,
                                                    uint32_t first_block) {
  if constexpr (!kGrouped) {
    const uint32_t g = (threadIdx.x & 31) / 4;
#pragma unroll
    for (uint32_t rb = 0; rb < kBlocks; ++rb)
#pragma unroll
      for (uint32_t half = 0; half < 2; ++half) {
        const uint32_t r = 16 * (first_block + rb) + g + 8 * half;
        if (r < h) asm volatile("prefetch.global.L1 [%0];\n" ::"l"(p.row_scales_dev + row0 + r));
      }
  }
}

// Adds a warp's row partials to y and clears them: kBlocks blocks of 16 rows starting at tile
// row 16 * first_block (rows >= h dropped), partials in the MMA C layout. Non-grouped: times the
// row's scale and 2^kFlushExp (minifloat codes: minifloat_flush_exp, 0 for the others).
template <uint32_t kNT, uint32_t kBlocks, bool kGrouped, int kFlushExp = 0>
__device__ __forceinline__ void flush_partials(const QuantDevParams& p, uint32_t row0, uint32_t h, uint32_t first_block,
                                               uint32_t batch, float* y_dev, float (&yacc)[kBlocks * kNT][4]) {
  const uint32_t lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
#pragma unroll
  for (uint32_t rb = 0; rb < kBlocks; ++rb) {
#pragma unroll
    for (uint32_t half = 0; half < 2; ++half) {
      const uint32_t r = 16 * (first_block + rb) + g + 8 * half;
      if (r < h) {
        const float scale = kGrouped ? 1.0f : pow2f(kFlushExp) * p.row_scales_dev[row0 + r];
#pragma unroll
        for (uint32_t nt = 0; nt < kNT; ++nt) {
#pragma unroll
          for (uint32_t k = 0; k < 2; ++k) {
            const uint32_t n = 8 * nt + 2 * t + k;
            float v = yacc[rb * kNT + nt][2 * half + k];
            if (!kGrouped) v = scale * v;
            if (n < batch) atomicAdd(&y_dev[(uint64_t{row0} + r) * batch + n], v);
          }
        }
      }
    }
  }
#pragma unroll
  for (uint32_t i = 0; i < kBlocks * kNT; ++i) yacc[i][0] = yacc[i][1] = yacc[i][2] = yacc[i][3] = 0.f;
}

// kRowBlocks: 0, the warps share every tile (16 rows each); 8, 4 or 2, a warp takes that many
// 16-row blocks of a tile (a whole tile, a half, a quarter). kMinBlocks: the blocks per
// multiprocessor its plan is sized for, given to ptxas as the minimum (0: none), which sets the
// register budget (96 for the int4 batch-1 instance at 288 threads, 126 for batch 9..16 at 160).
template <uint32_t kBits, uint32_t kNT, bool kBatch1, bool kGrouped, uint32_t kWarps, uint32_t kRowBlocks,
          uint32_t kFloat, uint32_t kMinBlocks,  // kFloat 0: int codes; 8, 6, 5, 4: fp8/6/5/4; 1: nf4; 2: lut4
          bool kSparse>                          // the tensor has sparse tiles (layout 5; not exp4)
__global__ void __launch_bounds__(32 * (kWarps + producer_warps(kBatch1, kBits, kFloat, kRowBlocks)), kMinBlocks)
    quant_gemv_tma_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 128-aligned (the copies need 16)
    const DevTile* __restrict__ tiles_dev,  // (tile_count), row-major over the tile grid
    uint64_t tile_count, QuantDevParams params, uint32_t stored_cap, uint32_t tile_cols, uint32_t stages,
    uint32_t scratch_bytes,               // per consumer warp (sparse or realigned codes); 0: none
    const uint16_t* __restrict__ xt_dev,  // batch 1: x or prepare_kernel's x; above: its blocks; 16-aligned
    uint64_t k_cols,                      // K
    uint32_t batch,                       // kBatch1 ? 1 : 1 .. 8 kNT
    float* __restrict__ y_dev,           // (N, batch), zeroed by prepare_kernel (waited for before the first add)
    uint32_t* __restrict__ status_dev) {  // (tile_count)
  constexpr bool kWarpTile = kRowBlocks != 0;
  constexpr uint32_t kSplit = warps_per_tile(kRowBlocks);
  static_assert(!kSparse || kFloat != kExp4Tiles, "exp4 tiles are never sparse");
  using Lane = typename LaneOf<kBits, kFloat>::type;  // codes below 8 bits (kBits < 8)
  constexpr bool kUnscaled = kGrouped || kFloat == kExp4Tiles;  // flush_partials: no row scale
  constexpr bool kHalfX = half_x(kBits, kFloat, kRowBlocks);  // int8 (warp per part of a tile), nf4, lut4: FP16 x
  constexpr PreparedX kX = prepared_x<kBits, kFloat>(kRowBlocks);  // x's order and scale
  static_assert(!kWarpTile || kHalfX || kFloat == kExp4Tiles || kX.span != 0,
                "a warp per part of a tile multiplies prepared x (tma_tile_warp, tma_tile_warp6, tma_tile_warp8)");
  // flush_partials' power of two for A values that are minifloat values times 2^-kValueExp (a warp
  // per part of a tile: x scaled; warps sharing a tile multiply the A values instead)
  constexpr int kFlushExp = kFloat == 8   ? minifloat_flush_exp(MmaFp8::kValueExp)
                            : kFloat == 6 ? minifloat_flush_exp(MmaFp6::kValueExp)
                            : kBits < 8   ? minifloat_flush_exp(Lane::kValueExp)
                                          : 0;
  static_assert(!kWarpTile || (kNT <= 2 && (kRowBlocks == 8 || kRowBlocks == 4 || kRowBlocks == 2) &&
                                 kWarps % kSplit == 0),
                "a warp holds the partials of 16 kRowBlocks rows of a tile row, batch <= 16");
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr bool kXSums = x_sums(kBits, kFloat, kRowBlocks);  // x blocked at batch 1 too, sums after each row
  constexpr bool kXBlock = !kBatch1 || kXSums;                // a tile's x is its tile column's block of xt
  const TmaLayout layout(stored_cap, tile_cols, batch, stages, scratch_bytes, kWarps, Lane::kTableBytes, kXSums);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem);
  uint64_t* empty = full + kMaxStages;
  StageGeometry* meta = reinterpret_cast<StageGeometry*>(smem + 2 * 8 * kMaxStages);
  uint8_t* ring = smem + kHeaderBytes + Lane::kTableBytes;  // the code table before it
  uint2* selectors = reinterpret_cast<uint2*>(smem + layout.sparse_at);
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  uint32_t* scratch = reinterpret_cast<uint32_t*>(smem + layout.sparse_at + kSelectorBytes + warp * scratch_bytes);
  const uint32_t group_magic = params.group >= 64 ? 0xFFFFFFFFu / (params.group / 32) + 1 : 0;
  const uint64_t t_begin = blockIdx.x * tile_count / gridDim.x, t_end = (blockIdx.x + 1ull) * tile_count / gridDim.x;
  if (kSparse && scratch_bytes) fill_selectors<kBits>(selectors);  // read after the __syncthreads below
  // the codes' table (nf4, lut4), at kHeaderBytes, filled by the consumers below
  const LaneTable lut{smem + kHeaderBytes, 4 * lane};

  if (threadIdx.x == 0) {
    for (uint32_t s = 0; s < stages; ++s) {
      mbar_init(&full[s], kFullArrivals);
      mbar_init(&empty[s], kWarpTile ? kSplit : kWarps);
    }
#if WPACK_HAVE_BULK_COPY
    mbar_init_fence();
#endif
  }
  __syncthreads();

  // producer: its lanes walk the block's tiles in step; lane 0 issues the bulk copies (cp.async: all
  // lanes copy, each of the kProducerWarps warps every kProducerWarps-th tile)
  constexpr uint32_t kProducerWarps = producer_warps(kBatch1, kBits, kFloat, kRowBlocks);
  if (kProducerWarps == 1 ? warp == kWarps : warp >= kWarps) {
    const uint32_t producer = kProducerWarps == 1 ? 0 : warp - kWarps;
    // How a tile's record reaches the lanes, by measurement (H200, 28672x8192, batch 1): int8, fp8
    // and fp6 run 2-8% faster when every lane loads it (one broadcast load, the next tile's in
    // flight; no shuffles, fewer producer instructions per tile), int4 6% faster when the lanes
    // load 32 records at once and shuffle each to all (with the broadcast load its batch-1 kernel
    // spilled 12 bytes instead of 4; whether that is why was not checked).
    constexpr bool kShuffled = kBits <= 4;  // int3/2, fp4, nf4, lut4 follow int4 (not measured apart)
    const uint64_t policy = evict_first_policy();  // tile bytes are read once; x by every tile row
    uint64_t x_policy;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(x_policy));
    uint32_t s = 0, phase = 0;
    // xt from prepare_kernel: waited for before the first x copy
    bool x_ready = !x_from_prepare(batch, kHalfX, kX);
    // A tile's x block, col0 / tile_cols, without a division per tile (int4 at batch 1 measured 5%
    // slower with one): col0 is a multiple of tile_cols = odd << cols_shift, so the quotient is
    // (col0 >> cols_shift) times odd's inverse mod 2^32 (Newton's steps double its correct low
    // bits: 3, 6, .., 48)
    const uint32_t cols_shift = __ffs(tile_cols) - 1, cols_odd = tile_cols >> cols_shift;
    uint32_t cols_inverse = cols_odd;
#pragma unroll
    for (uint32_t i = 0; i < 4; ++i) cols_inverse *= 2u - cols_odd * cols_inverse;
    DevTile next = !kShuffled && t_begin < t_end ? tiles_dev[t_begin] : DevTile{};
    for (uint64_t base = t_begin; base < t_end; base += 32) {
      DevTile mine{};
      if (base + lane < t_end) {
        if constexpr (kShuffled) mine = tiles_dev[base + lane];
        if (producer == 0) status_dev[base + lane] = kStatusOk;
      }
      const uint32_t n = t_end - base < 32 ? static_cast<uint32_t>(t_end - base) : 32u;
      for (uint32_t k = 0; k < n; ++k) {
        DevTile d = next;
        if constexpr (kShuffled) {
          d.offset = __shfl_sync(0xFFFFFFFFu, mine.offset, k);
          d.stored_size = __shfl_sync(0xFFFFFFFFu, mine.stored_size, k);
          d.row0 = __shfl_sync(0xFFFFFFFFu, mine.row0, k);
          d.col0 = __shfl_sync(0xFFFFFFFFu, mine.col0, k);
          d.rows = __shfl_sync(0xFFFFFFFFu, mine.rows, k);
          d.cols = __shfl_sync(0xFFFFFFFFu, mine.cols, k);
          d.filter = static_cast<uint8_t>(__shfl_sync(0xFFFFFFFFu, uint32_t{mine.filter}, k));
        } else if (base + k + 1 < t_end) {
          next = tiles_dev[base + k + 1];
        }
        // the x block only where the x copy or a consumer needs it
        const uint32_t x_block = kHalfX || kXBlock ? (d.col0 >> cols_shift) * cols_inverse : 0u;
        const StageGeometry geo{d.row0, d.col0, d.rows, d.cols, d.filter == kLayoutSparse, x_block, {}};
        // x: batch 1 (kBatch1) but int4/3/2, the tile's w columns of x, as before the blocked layout;
        // else (kXBlock) the tile column's block of prepare_kernel's xt, all batch rows x_row bytes
        // apart as the stage holds them (int4/3/2: with their sums), in one copy (28672x8192 batch 16: fp8 76.6-76.8 -> 71.7-71.9 us, int4 63.0-63.2 ->
        // 57.9-58.1, exp4 115.7-115.8 -> 108.9-109.6; batch 64: int4 339 -> 220, exp4 452 -> 396)
        const uint32_t bytes = align_up(d.stored_size, 16), x_bytes = geo.w * 2;  // x: per batch column
        uint8_t* stage = ring + s * layout.stage_bytes;
#if WPACK_HAVE_BULK_COPY
        if (lane == 0) {
          mbar_wait(&empty[s], phase ^ 1);  // the first round passes at once (fresh barrier)
          meta[s] = geo;
          mbar_arrive_expect_tx(&full[s], bytes + (kXBlock ? batch * layout.x_row : batch * x_bytes));
          bulk_load(stage, bytes_dev + d.offset, bytes, &full[s], policy);
        }
        __syncwarp();
        if (!x_ready) wait_for_prepare(), x_ready = true;
        if constexpr (!kXBlock) {
          for (uint32_t col = lane; col < batch; col += 32)
            bulk_load(stage + layout.x_at + col * layout.x_row, xt_dev + col * k_cols + geo.col0, x_bytes, &full[s],
                      x_policy);
        } else if (lane == 0) {
          const uint64_t block = geo.x_block;
          bulk_load(stage + layout.x_at, xt_dev + block * batch * (layout.x_row / 2), batch * layout.x_row, &full[s],
                    x_policy);
        }
#else
        if ((base + k - t_begin) % kProducerWarps != producer) {  // another producer warp's tile
          if (++s == stages) s = 0, phase ^= 1;
          continue;
        }
        if (lane == 0) {
          mbar_wait(&empty[s], phase ^ 1);  // the first round passes at once (fresh barrier)
          meta[s] = geo;
          mbar_arrive(&full[s]);  // releases the record (the lanes' copies arrive as they land)
        }
        __syncwarp();
        ring_copy_async(stage, bytes_dev + d.offset, bytes, policy);
        if (!x_ready) wait_for_prepare(), x_ready = true;
        if constexpr (!kXBlock) {
          for (uint32_t col = 0; col < batch; ++col)
            ring_copy_async(stage + layout.x_at + col * layout.x_row, xt_dev + col * k_cols + geo.col0, x_bytes,
                            x_policy);
        } else {
          ring_copy_async(stage + layout.x_at, xt_dev + geo.x_block * batch * (layout.x_row / 2), batch * layout.x_row,
                          x_policy);
        }
        ring_arrive_async(&full[s]);
#endif
        if (++s == stages) s = 0, phase ^= 1;
      }
    }
    return;
  }

  if constexpr (Lane::kTableBytes != 0) {  // while the producer's first copies are in flight
    fill_pair_table(smem + kHeaderBytes, params.values_dev, kWarps);
    asm volatile("bar.sync 1, %0;\n" ::"n"(32 * kWarps) : "memory");  // the consumer warps only
  }
  if constexpr (kWarpTile) {
    static_assert(kBits <= 4 ? kGrouped : ((kBits == 8 || kBits == 5) && !kGrouped),
                  "a warp per part of a tile: int4/3/2, fp4, nf4, lut4 (grouped); int8, fp8, fp6, fp5 (row scales)");
    constexpr uint32_t kUnits = tiles_in_hand(kWarps, kRowBlocks);
    const uint32_t unit = warp / kSplit, first_block = (warp % kSplit) * kRowBlocks;
    float yacc[kRowBlocks * kNT][4];
    flush_partials<kNT, kRowBlocks, kUnscaled, kFlushExp>(params, 0, 0, 0, batch, y_dev, yacc);  // h 0: clears only
    uint32_t acc_row0 = 0, acc_h = 0;  // the tile row the partials belong to (acc_h 0: none yet)
    bool y_ready = false;              // prepare_kernel done (y zeroed), waited for before the first add
    // int8's FP16 x: the blocks' powers of two (read after prepare_kernel), found once here: per
    // tile, with its 64-bit division, it cost int8 at batch 16 2.5%
    [[maybe_unused]] const float* x_scales = kHalfX ? half_x_scales(xt_dev, k_cols, tile_cols, batch) : nullptr;
    uint32_t s = unit, phase = 0;      // tile i of the block sits in stage i % stages, use i / stages
    while (s >= stages) s -= stages, phase ^= 1;
    for (uint64_t ti = t_begin + unit; ti < t_end; ti += kUnits) {
      mbar_wait(&full[s], phase);
      const StageGeometry m = meta[s];
      if (m.row0 != acc_row0 || acc_h == 0) {
        if (acc_h) {
          if (!y_ready) wait_for_prepare(), y_ready = true;
          flush_partials<kNT, kRowBlocks, kUnscaled, kFlushExp>(params, acc_row0, acc_h, first_block, batch, y_dev, yacc);
        }
        acc_row0 = m.row0, acc_h = m.h;
        prefetch_row_scales<kRowBlocks, kUnscaled>(params, acc_row0, acc_h, first_block);
      }
      if (16 * first_block < m.h) {  // the warp has rows in this tile
        const uint8_t* stage = ring + s * layout.stage_bytes;
        const uint8_t* xs = stage + layout.x_at;
        const bool std_shape = m.h == 128 && m.w == 128;  // takes the compile-time geometry
        float x_scale = 1.0f;  // FP16 x (half_x): the tile column's power of two, after prepare_kernel wrote it
        if constexpr (kHalfX) {
          if (!y_ready) wait_for_prepare(), y_ready = true;
          x_scale = x_scales[m.x_block];
        }
        if constexpr (kFloat == kExp4Tiles) {
          if (std_shape) tma_tile_exp4<kRowBlocks, kNT, true>(stage, first_block, xs, layout.x_row, m, batch, yacc);
          else tma_tile_exp4<kRowBlocks, kNT, false>(stage, first_block, xs, layout.x_row, m, batch, yacc);
          exp4_escapes<kRowBlocks>(stage, m, first_block, xs, layout.x_row, batch, y_dev, y_ready);
        } else if constexpr (kFloat == 6) {
          const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + 8);
          uint32_t codes_row0 = 0;
          if (kSparse && m.sparse) {  // this warp's rows only, expanded into its scratch
            codes_row0 = 16 * first_block;
            expand_sparse_rows<6, false, false>(params, stage, m, TileSide(params, m, 6, false), codes_row0,
                                         min(codes_row0 + 16 * kRowBlocks, m.h), selectors, 0, scratch);
            __syncwarp();
            codes = scratch;
          }
          if (std_shape)
            tma_tile_warp6<kRowBlocks, kNT, true, true>(codes, codes_row0, first_block, xs, layout.x_row, m, batch,
                                                        yacc);
          else
            tma_tile_warp6<kRowBlocks, kNT, false, true>(codes, codes_row0, first_block, xs, layout.x_row, m, batch,
                                                         yacc);
        } else if constexpr (kBits == 8) {
          static_assert(kFloat == 8 || kHalfX, "tma_tile_warp8: fp8, or int8 with FP16 x");
          const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + 8);
          uint32_t codes_row0 = 0;
          if (kSparse && m.sparse) {  // this warp's rows only, expanded into its scratch (16-aligned)
            codes_row0 = 16 * first_block;
            expand_sparse_int8<kBatch1>(stage, m, codes_row0, min(codes_row0 + 16 * kRowBlocks, m.h), selectors,
                                        params.sparse_fill, scratch);
            __syncwarp();
            codes = scratch;
          }
          if (std_shape)
            tma_tile_warp8<kFloat == 8, kRowBlocks, kNT, true>(codes, codes_row0, first_block, xs, layout.x_row, m,
                                                               batch, yacc, x_scale);
          else
            tma_tile_warp8<kFloat == 8, kRowBlocks, kNT, false>(codes, codes_row0, first_block, xs, layout.x_row, m,
                                                                batch, yacc, x_scale);
        } else {
          // the lane-codes schemes: the standard tile also has one group of 128 per row
          const bool std_tile = std_shape && params.group == 128;
          const TileSide ts = std_tile ? TileSide(params, kBits) : TileSide(params, m, kBits, Lane::kScaled);
          auto multiply = [&](auto aligned8, auto standard, const uint32_t* codes, uint32_t codes_row0) {
            tma_tile_warp<Lane, kBatch1, decltype(aligned8)::value, kRowBlocks, kNT, decltype(standard)::value>(
                params, stage, codes, codes_row0, first_block, xs, layout.x_row, layout.x_sums_at, m, ts, lut, batch,
                yacc, x_scale);
          };
          const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + ts.codes_at);
          if (kSparse && m.sparse) {  // this warp's rows only, expanded into its scratch (16-aligned)
            const uint32_t r0 = 16 * first_block;
            expand_sparse_lanes<kBits, kFloat == 0>(params, stage, m, ts, r0, min(r0 + 16 * kRowBlocks, m.h),
                                                    selectors, group_magic, scratch);
            __syncwarp();
            if (std_tile) multiply(std::true_type{}, std::true_type{}, scratch, r0);
            else multiply(std::true_type{}, std::false_type{}, scratch, r0);
          } else if (std_tile) {  // its code plane starts 8-aligned (TileSide(params, bits))
            multiply(std::true_type{}, std::true_type{}, codes, 0);
          } else if (Lane::kWords != 2 || ts.codes_at % 8 == 0 || ts.codes_at % 4) {  // two-word loads: 8-aligned
            uint32_t codes_row0 = 0;
            if (ts.codes_at % 4) {  // this warp's rows, realigned into its scratch (16-aligned)
              codes_row0 = 16 * first_block;
              realign_codes(stage, ts, codes_row0, min(codes_row0 + 16 * kRowBlocks, m.h), scratch);
              __syncwarp();
              codes = scratch;
            }
            multiply(std::true_type{}, std::false_type{}, codes, codes_row0);
          } else {
            multiply(std::false_type{}, std::false_type{}, codes, 0);
          }
        }
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[s]);
      s += kUnits;
      while (s >= stages) s -= stages, phase ^= 1;
    }
    if (acc_h) {
      if (!y_ready) wait_for_prepare();
      flush_partials<kNT, kRowBlocks, kUnscaled, kFlushExp>(params, acc_row0, acc_h, first_block, batch, y_dev, yacc);
    }
  } else {
    float yacc[kNT][4];
    flush_partials<kNT, 1, true>(params, 0, 0, 0, batch, y_dev, yacc);  // clears only
    uint32_t acc_row0 = 0, acc_h = 0;
    bool y_ready = false;
    uint32_t s = 0, phase = 0;
    for (uint64_t ti = t_begin; ti < t_end; ++ti) {
      mbar_wait(&full[s], phase);
      const StageGeometry m = meta[s];
      if (m.row0 != acc_row0 || acc_h == 0) {
        if (acc_h) {
          if (!y_ready) wait_for_prepare(), y_ready = true;
          flush_partials<kNT, 1, kUnscaled>(params, acc_row0, acc_h, warp, batch, y_dev, yacc);
        }
        acc_row0 = m.row0, acc_h = m.h;
        prefetch_row_scales<1, kUnscaled>(params, acc_row0, acc_h, warp);
      }
      const uint8_t* stage = ring + s * layout.stage_bytes;
      if (warp * 16 < m.h) {
        if constexpr (kFloat == kExp4Tiles) {
          tma_tile_exp4<1, kNT, false>(stage, warp, stage + layout.x_at, layout.x_row, m, batch, yacc);
          exp4_escapes<1>(stage, m, warp, stage + layout.x_at, layout.x_row, batch, y_dev, y_ready);
        } else if constexpr (kFloat == 6) {
          const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + 8);
          uint32_t codes_row0 = 0;
          if (kSparse && m.sparse) {  // this warp's 16 rows only
            expand_sparse_rows<6, false, false>(params, stage, m, TileSide(params, m, 6, false), warp * 16,
                                         min(warp * 16 + 16, m.h), selectors, 0, scratch);
            __syncwarp();
            codes = scratch, codes_row0 = warp * 16;
          }
          tma_tile_warp6<1, kNT, false, false>(codes, codes_row0, warp, stage + layout.x_at, layout.x_row, m, batch,
                                               yacc);
        } else if constexpr (kBits == 8) {
          const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + 8);
          uint32_t codes_row0 = 0;
          if (kSparse && m.sparse) {  // this warp's 16 rows only
            expand_sparse_int8<false>(stage, m, warp * 16, min(warp * 16 + 16, m.h), selectors, params.sparse_fill, scratch);
            __syncwarp();
            codes = scratch, codes_row0 = warp * 16;
          }
          tma_tile_8bit<kNT, kFloat == 8>(codes, codes_row0, stage + layout.x_at, layout.x_row, m, batch, yacc);
        } else {
          const TileSide ts(params, m, kBits, Lane::kScaled);
          const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + ts.codes_at);
          uint32_t codes_row0 = 0;
          if (kSparse && m.sparse) {  // this warp's 16 rows only
            expand_sparse_lanes<kBits, kFloat == 0>(params, stage, m, ts, warp * 16, min(warp * 16 + 16, m.h),
                                                    selectors, group_magic, scratch);
            __syncwarp();
            codes = scratch, codes_row0 = warp * 16;
          } else if (ts.codes_at % 4) {  // this warp's 16 rows, realigned into its scratch
            realign_codes(stage, ts, warp * 16, min(warp * 16 + 16, m.h), scratch);
            __syncwarp();
            codes = scratch, codes_row0 = warp * 16;
          }
          float x_scale = 1.0f;  // FP16 x (half_x): the tile column's power of two, after prepare_kernel wrote it
          if constexpr (kHalfX) {
            if (!y_ready) wait_for_prepare(), y_ready = true;
            // per tile (a batch above 16 gives each tile ample work): with the pointer held across
            // the loop, ptxas spilled 60 bytes in the batch 17..32 lut4 instance
            x_scale = half_x_scales(xt_dev, k_cols, tile_cols, batch)[m.x_block];
          }
          tma_tile_grouped<Lane, kNT>(params, stage, codes, codes_row0, stage + layout.x_at, layout.x_row, m, ts, lut,
                                      batch, yacc, x_scale);
        }
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[s]);
      if (++s == stages) s = 0, phase ^= 1;
    }
    if (acc_h) {
      if (!y_ready) wait_for_prepare();
      flush_partials<kNT, 1, kUnscaled>(params, acc_row0, acc_h, warp, batch, y_dev, yacc);
    }
  }
}

template <uint32_t kBits, uint32_t kNT, bool kBatch1, bool kGrouped, uint32_t kWarps, uint32_t kRowBlocks,
          uint32_t kFloat = 0, uint32_t kMinBlocks = 0, bool kSparseTiles = false>
struct TmaKernel {
  static constexpr uint32_t kThreads = 32 * (kWarps + producer_warps(kBatch1, kBits, kFloat, kRowBlocks));
  static constexpr uint32_t kConsumerWarps = kWarps;
  static constexpr uint32_t kWarpRows = kRowBlocks ? 16 * kRowBlocks : 16;  // the tile rows one warp multiplies
  static constexpr uint32_t kUnits = tiles_in_hand(kWarps, kRowBlocks);
  static constexpr bool kHalfX = half_x(kBits, kFloat, kRowBlocks);  // prepare_kernel writes FP16 x
  static constexpr PreparedX kX = prepared_x<kBits, kFloat>(kRowBlocks);  // and in this order
  static constexpr bool kXSums = x_sums(kBits, kFloat, kRowBlocks);          // and each group's sum of x
  static constexpr uint32_t kBlocksPerSm = kMinBlocks ? kMinBlocks : 2;     // what the ring is sized for
  using Lane = typename LaneOf<kBits, kFloat>::type;                         // used when kBits < 8
  static constexpr uint32_t kTableBytes = Lane::kTableBytes;  // TmaLayout's
  // a k-step: the columns of the 4 lanes of a row (fp6: 16 each; int8/fp8: 8)
  static constexpr uint32_t kStepCols = kBits < 8 ? 4 * Lane::kCols : kFloat == 6 ? 64 : 32;
  static constexpr auto kernel =
      quant_gemv_tma_kernel<kBits, kNT, kBatch1, kGrouped, kWarps, kRowBlocks, kFloat, kMinBlocks, kSparseTiles>;
  // Allows the device's whole opt-in shared memory (kernels/detail/smem_limit.cuh).
  static cudaError_t prepare() { return allow_max_dynamic_smem<kernel>(); }
  static int occupancy(uint64_t smem) { return max_blocks_per_sm<kernel>(kThreads, smem); }
  static cudaError_t launch(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                            const QuantDevParams& params, const QuantTmaPlan& plan, uint32_t grid,
                            const uint16_t* xt_dev, uint64_t k_cols, uint32_t batch, float* y_dev,
                            uint32_t* status_dev, cudaStream_t stream) {
    // a programmatic dependent launch: it may start while prepare_kernel, before it, runs
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(grid);
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = plan.smem_bytes;
    config.stream = stream;
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, kernel, bytes_dev, tiles_dev, tile_count, params, plan.stored_cap, plan.tile_cols,
                              plan.stages, plan.scratch_bytes, xt_dev, k_cols, batch, y_dev, status_dev);
  }
};

// Before the GEMV: y = 0 and, for batch > 1, xt = x (K, batch) transposed into one block per tile
// column: block j holds x's columns [j tile_cols, (j + 1) tile_cols) of every batch row, rows
// x_row_elements apart (xt_row_elements: the stage's own layout), so that a tile's x is one bulk
// copy (the stagger and an edge block's missing columns are never written, nor read as x). It
// lets the GEMV launch at once (programmatic dependent launch): the GEMV's blocks start, fill their
// rings with tiles and multiply while this runs, and wait for it (griddepcontrol.wait) only before
// they first add to y or, for batch > 1, copy x. half (half_x: int8 at batch 1..16, nf4 and lut4): xt in FP16,
// at batch 1 too, a thread block per x block: its largest |x| sets its power of two (x times 2^-e,
// 2^e stored after the blocks). order (PreparedX): each block's columns in the order of the
// kernel's B pairs, and times 2^kXExp for minifloat codes; at batch 1 too, into a row of K.
// 32 registers a thread (8 blocks of 256 per SM), as before the FP16 pass held x in registers: a
// block of it then fits beside two GEMV blocks (int8 at batch 1: 288 threads of 95 registers).
__global__ void __launch_bounds__(256, 8)
    prepare_kernel(const uint16_t* __restrict__ x_dev, uint16_t* __restrict__ xt_dev, uint32_t k_cols, uint32_t batch,
                   uint32_t tile_cols, uint32_t x_row_elements, float* __restrict__ y_dev, uint64_t y_count, bool half,
                   PreparedX order, bool sums) {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < y_count; i += stride) y_dev[i] = 0.f;
  if (half) {  // a thread block per x block (grid-stride), a thread per column of it: blockDim.x >= 32
    constexpr uint32_t kHeld = 16;  // batch <= 16: a column's values stay in registers (above: read twice)
    __shared__ float warp_largest[32];
    const uint32_t blocks = static_cast<uint32_t>(x_blocks_of(k_cols, tile_cols));
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    float* scales = reinterpret_cast<float*>(xt_dev + uint64_t{blocks} * batch * x_row_elements);
    auto x_bits = [&](uint32_t k, uint32_t col) {  // x (K, batch) is k-major: a column's batch values are adjacent
      return uint32_t{x_dev[uint64_t{k} * batch + col]};
    };
    auto x_at = [&](uint32_t k, uint32_t col) { return bf16_bits_to_float(x_bits(k, col)); };
    for (uint32_t block = blockIdx.x; block < blocks; block += gridDim.x) {
      const uint32_t k0 = block * tile_cols, w = min(tile_cols, k_cols - k0);
      // a block no wider than the thread block is read once (one trip to memory), a wider one twice
      const bool held = w <= blockDim.x && batch <= kHeld;
      uint32_t v[kHeld / 2];  // the column's BF16 values, two a register
      float largest = 0.f;
      if (held) {
        if (threadIdx.x < w) {
#pragma unroll
          for (uint32_t col = 0; col < kHeld; ++col) {
            if (col < batch) {
              const uint32_t bits = x_bits(k0 + threadIdx.x, col);
              v[col / 2] = col % 2 ? v[col / 2] | bits << 16 : bits;
              largest = fmaxf(largest, fabsf(bf16_bits_to_float(bits)));
            }
          }
        }
      } else {
        for (uint32_t k = threadIdx.x; k < w; k += blockDim.x)
          for (uint32_t col = 0; col < batch; ++col) largest = fmaxf(largest, fabsf(x_at(k0 + k, col)));
      }
      for (uint32_t o = 16; o; o /= 2) largest = fmaxf(largest, __shfl_xor_sync(0xFFFFFFFFu, largest, o));
      if (lane == 0) warp_largest[warp] = largest;
      __syncthreads();
      largest = 0.f;
      for (uint32_t i = 0; i < warps; ++i) largest = fmaxf(largest, warp_largest[i]);
      __syncthreads();  // warp_largest is rewritten for the next block
      // e: largest x 2^-e in [2^14, 2^15); 0 for an all-zero block or one with inf or NaN
      // (BF16 x down to 2^-133: e down to -147, so x is scaled by scalbnf, not times 2^-e, which is
      // infinite below e = -127: a block of x under 2^-113 became inf and NaN)
      const int e = largest > 0.f && largest <= 3.4e38f ? ilogbf(largest) - 14 : 0;
      auto put = [&](uint32_t k, uint32_t col, float value) {
        xt_dev[(uint64_t{block} * batch + col) * x_row_elements + k] =
            __half_as_ushort(__float2half_rn(scalbnf(value, -e)));
      };
      if (held) {
        if (threadIdx.x < w) {
#pragma unroll
          for (uint32_t col = 0; col < kHeld; ++col)
            if (col < batch)
              put(threadIdx.x, col, __uint_as_float(col % 2 ? v[col / 2] & 0xFFFF0000u : v[col / 2] << 16));
        }
      } else {
        for (uint32_t k = threadIdx.x; k < w; k += blockDim.x)
          for (uint32_t col = 0; col < batch; ++col) put(k, col, x_at(k0 + k, col));
      }
      if (threadIdx.x == 0) scales[block] = scalbnf(1.0f, e);
    }
    return;
  }
  if (batch == 1 && order.span == 0) return;  // batch 1: the GEMV copies x itself
  // The index and its step in 64 bits: launch_quant_gemv_tma allows k_cols * batch up to
  // UINT32_MAX, where a 32-bit i + stride would wrap and start over. In the loop i < total, so
  // it fits 32 bits (32-bit divisions).
  const uint64_t total = uint64_t{k_cols} * batch;
  const uint32_t x_sums_at = x_sums_offset(tile_cols);
  for (uint64_t i64 = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i64 < total; i64 += stride) {
    const uint32_t i = static_cast<uint32_t>(i64);
    const uint32_t n = i / k_cols, k = i - n * k_cols, block = k / tile_cols;
    uint32_t at = k - block * tile_cols;  // tile widths are multiples of the span
    uint16_t v = x_dev[k * batch + n];
    if (order.span) {  // column c of a span goes to position 2 (c % (span / 2)) + c / (span / 2)
      const uint32_t c = at % order.span, half_span = order.span / 2;
      at += 2 * (c % half_span) + c / half_span - c;
    }
    if (order.scaled) v = static_cast<uint16_t>(scale_x(v));  // the low half of a bf16x2 multiply
    xt_dev[(uint64_t{block} * batch + n) * x_row_elements + at] = v;
    if (sums) {
      // x_sums: the warp's 32 columns (K, tile_cols and the grid's stride are multiples of 32, so
      // all its lanes are here, in one tile column and batch row) summed, after the row's x
      float sum = bf16_bits_to_float(v);
      for (uint32_t o = 16; o; o /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
      if ((threadIdx.x & 31) == 0) {
        float* row = reinterpret_cast<float*>(xt_dev + (uint64_t{block} * batch + n) * x_row_elements);
        row[x_sums_at / 4 + (k - block * tile_cols) / 32] = sum;
      }
    }
  }
}

uint32_t tma_n_tiles(uint32_t batch) { return batch <= 8 ? 1 : batch <= 16 ? 2 : batch <= 32 ? 4 : 8; }

// Batch 17..64 (nt 4 or 8 batch tiles): the 8 warps of a block share each tile.
template <uint32_t kBits, bool kGrouped, uint32_t kFloat, bool kSp, typename F>
auto tma_dispatch_shared(uint32_t nt, F&& f) {
  return nt == 4 ? f(TmaKernel<kBits, 4, false, kGrouped, 8, 0, kFloat, 0, kSp>{})
                 : f(TmaKernel<kBits, 8, false, kGrouped, 8, 0, kFloat, 0, kSp>{});
}

// int8 (kFloat 0), fp8 (8) and fp6 (6), per-row scales: a warp per half tile at batch <= 8 (8
// warps at batch 1; at 2..8 int8/fp8 4 warps, fp6 8; 2 blocks per multiprocessor), but int8 and fp8
// at batch 1 on tensors of fewer than kManyTilesPerSm tiles per multiprocessor a warp per quarter
// tile (8 warps, 2 blocks; H200, two alternations: 8192^2 int8 27.0-27.3 -> 25.1-25.3 us, fp8
// 26.3-26.8 -> 25.0-25.2, 4096^2 fp8 13.4-13.7 -> 12.9-13.1, int8 the same; on 28672x8192 the
// same within +-1%, sparse int8 2.6% slower); at batch 9..16
// a warp per half tile (4 warps, 2 blocks) on tensors of many tiles per multiprocessor
// (QuantDevParams tiles_per_sm: fp6 from kManyTilesPerSm, int8/fp8 from kFewTilesPerSm on), else
// per quarter tile (4 warps, 3 blocks); exp4 always per half tile. fp6 with sparse tiles at 9..16:
// a warp per quarter tile, 8 warps, 2 blocks (H200, batch 16, one run beside two of the layouts
// above: 28672x8192 140.4-140.5 -> 134.9 us, 8192^2 50.0-50.6 -> 46.5; int8 and fp8 the same way
// ran 6-7% slower, and 8 warps at 2..8 3.5-4% slower).
// int8/fp8 at batch 1 with 8 warps instead of 4 (H200, same run, 3 alternations): 28672x8192 int8
// 66.8 -> 65.1-65.3 us, fp8 66.4-66.6 -> 62.6-62.9; 8192^2 int8 29.8-30.4 -> 27.7-27.8, fp8
// 28.3-28.7 -> 27.2-27.7; at batch 8 they lost 0.5-1.2% on 28672x8192 and keep 4.
template <uint32_t kFloat, bool kSp, typename F>
auto tma_dispatch_8bit(uint32_t nt, uint32_t batch, uint32_t tiles_per_sm, F&& f) {
  if (nt == 1) {
    constexpr uint32_t kW = kFloat == 6 ? 8 : 4;
    if constexpr (kFloat == 0 || kFloat == 8) {  // int8, fp8 at batch 1 on fewer tiles: a quarter tile
      if (batch == 1 && tiles_per_sm < kManyTilesPerSm)
        return f(TmaKernel<8, 1, true, false, 8, 2, kFloat, 2, kSp>{});
    }
    return batch == 1 ? f(TmaKernel<8, 1, true, false, 8, 4, kFloat, 2, kSp>{})
                      : f(TmaKernel<8, 1, false, false, kW, 4, kFloat, 2, kSp>{});
  }
  if (nt == 2) {
    if constexpr (kSp && kFloat == 6) {
      return f(TmaKernel<8, 2, false, false, 8, 2, 6, 2, true>{});
    } else {
      if constexpr (kFloat != kExp4Tiles) {
        if (tiles_per_sm < (kFloat == 6 ? kManyTilesPerSm : kFewTilesPerSm))
          return f(TmaKernel<8, 2, false, false, 4, 2, kFloat, 3, kSp>{});
      }
      return f(TmaKernel<8, 2, false, false, 4, 4, kFloat, 2, kSp>{});
    }
  }
  return tma_dispatch_shared<8, false, kFloat, kSp>(nt, f);
}

// The lane-codes schemes (int4/3/2: kFloat 0, fp4: 4, nf4, lut4; fp5 with kGrouped false: its row
// scales at the flush), dense tensors: a warp per half tile at batch 1 (8 warps, 2 blocks per
// multiprocessor) and 2..8 (4 warps, 3 blocks: int4 49 against 56 us on 28672x8192 at batch 8), per
// quarter tile at 9..16 (4 warps, 3 blocks: int4 126 registers without a spill); above 16 the 8
// warps share each tile. (The shapes int4 measured best; the others take the same, but int3, int2,
// nf4, lut4 and fp5 at 9..16, below.) Dense lut4 at 9..16 on the quarter tile keeps the instance
// with the sparse path: without it ptxas gives it 107 registers instead of
// 118 and it ran 57.5-57.6 us against 53.2-53.8 (28672x8192, batch 16, two runs).
// Tensors with sparse tiles: 8 warps, 2 blocks at batch 2..8 (H200, 28672x8192, batch 2 and 8, two
// alternations, 4 -> 8 warps, us: int4 50% pruned 93.9-94.7 -> 89.2-89.8, fp4 92.5-93.2 ->
// 89.5-90.2, nf4 106.8-108.0 -> 105.0-106.3, lut4 100.3-101.4 -> 96.7-98.5, int3 128.8-129.2 ->
// 122.1, fp5 139.6-140.8 -> 135.4-137.2; int2 not measured), and the 4-bit kinds at 9..16 (batch
// 16, two alternations, 28672x8192 / 8192^2: int4 114.8-115.5 / 40.2-41.1 -> the same / 40.2-40.3,
// fp4 108.9-109.0 / 39.0-39.3 -> 105.8-105.9 / 37.3-37.4, nf4 121.1-121.3 / 44.0-44.3 ->
// 118.8-118.9 / 42.5-42.8, lut4 110.0-110.4 / 40.6-41.4 -> 109.1-109.2 / 39.4-39.5; ptxas spills
// int4 62 bytes there, nf4 12, lut4 8; int3 would 494).
// At 9..16, a warp per half tile on 4 warps, 2 blocks (168 registers, no spill) for dense int3 from
// kFewTilesPerSm tiles per multiprocessor on and for int3 and int2 with sparse tiles (H200, batch
// 16, two alternations, quarter -> half tile, us: dense int3 28672x8192 56.7-57.1 -> 53.0-53.2,
// 8192x28672 58.2-58.6 -> 54.4-54.6, 8192^2 23.2-23.5 -> 22.7-22.9, 14336x4096 and 4096x14336 the
// same, 4096^2 (8 tiles per multiprocessor) 13.1-13.4 -> 14.5; 50% pruned int3 28672x8192
// 158.2-158.5 -> 156.1-156.8, 8192x28672 159.1-159.3 -> 154.0-154.4, 4096^2 21.0-21.1 -> 20.1-20.2,
// int2 146.6 -> 143.6-143.8, 147.7-148.1 -> 144.5, 20.0-20.1 -> 19.6-19.8, the other shapes 0.5-2.6%
// faster too). Dense int2 that way ran 0.8-15% slower on all six shapes; int4 and fp4 2-6% slower on
// 28672x8192 and 8192^2; on 3 blocks it spills. Dense nf4, lut4 and fp5 take it from
// kManyTilesPerSm on (157-168 registers; lut4 spills 16 bytes, so without the sparse path there):
// H200, batch 16, two alternations, us, 28672x8192 / 8192x28672: lut4 53.0-53.2 / 53.2 -> 51.7-51.9
// / 51.4-52.0, nf4 64.5 / 64.9-65.1 -> 63.6-63.8 / 63.6-64.3, fp5 64.7 / 65.3-65.8 -> 63.5-63.8 /
// 63.7-64.1; on 8192^2 (31 tiles per multiprocessor) nf4 27.3 -> 27.6, fp5 26.7-26.8 -> 27.6-27.8,
// lut4 the same. Tensors with sparse tiles of the 4-bit kinds on it (one run): int4 2.5-3% and fp4
// 6% slower, nf4 and lut4 the same.
template <uint32_t kBits, uint32_t kFloat, bool kSp, bool kGrouped = true, typename F>
auto tma_dispatch_grouped(uint32_t nt, uint32_t batch, uint32_t tiles_per_sm, F&& f) {
  if (nt == 1) {
    if (batch == 1) return f(TmaKernel<kBits, 1, true, kGrouped, 8, 4, kFloat, 2, kSp>{});
    if constexpr (kSp) return f(TmaKernel<kBits, 1, false, kGrouped, 8, 4, kFloat, 2, true>{});
    else return f(TmaKernel<kBits, 1, false, kGrouped, 4, 4, kFloat, 3, false>{});
  }
  if (nt == 2) {
    if constexpr (kSp && kBits == 4) return f(TmaKernel<kBits, 2, false, kGrouped, 8, 2, kFloat, 2, true>{});
    else if constexpr (kFloat == 0 && (kBits == 3 || (kBits == 2 && kSp))) {
      if (kSp || tiles_per_sm >= kFewTilesPerSm) return f(TmaKernel<kBits, 2, false, kGrouped, 4, 4, 0, 2, kSp>{});
      return f(TmaKernel<kBits, 2, false, kGrouped, 4, 2, 0, 3, kSp>{});
    } else if constexpr (!kSp && (kFloat == kNf4Codes || kFloat == kLut4Codes || kFloat == 5)) {
      if (tiles_per_sm >= kManyTilesPerSm)
        return f(TmaKernel<kBits, 2, false, kGrouped, 4, 4, kFloat, 2, false>{});
      return f(TmaKernel<kBits, 2, false, kGrouped, 4, 2, kFloat, 3, kFloat == kLut4Codes>{});
    }
    else return f(TmaKernel<kBits, 2, false, kGrouped, 4, 2, kFloat, 3, kSp>{});
  }
  return tma_dispatch_shared<kBits, kGrouped, kFloat, kSp>(nt, f);
}

// Lossless BF16 tensors of codec exp4 (stages of ~25 KiB for a 128x128 tile): fp8's instances but
// at batch 2..8, which run 3 blocks per multiprocessor of 4 warps (2 stages each) instead of 2.
// Measured on the H200 (bench_gpu_layers, 28672x8192, two alternations each): batch 1, fp8's 8
// warps a half tile each: 90.9-91.2 us; 8 warps a quarter tile: 98.0-98.1; 4 warps a half tile:
// 92.0-92.6. Batch 4: 94.4-95.0 with fp8's 2 blocks, 92.7-92.8 with 3. Batch 16: fp8's 4 warps a
// half tile 114.2-115.6; 4 warps a quarter tile, 3 blocks: 123.9-125.1; 8 warps a quarter tile:
// 136.8; 3 blocks of fp8's: 114.4 (the same).
template <typename F>
auto tma_dispatch_exp4(uint32_t nt, uint32_t batch, F&& f) {
  if (nt == 1 && batch > 1) return f(TmaKernel<8, 1, false, false, 4, 4, kExp4Tiles, 3>{});
  return tma_dispatch_8bit<kExp4Tiles, false>(nt, batch, 0, f);
}

// Calls f(TmaKernel<...>{}) for the instance that serves this tensor and batch (the kinds that
// quant_tma_supported admits: int4/3/2, fp4, nf4 grouped; one-table lut4; int8, fp8, fp6, fp5 with
// per-row scales), and instantiates only those. Measured on the H200 (bench_gpu_layers, 28672x8192, docs/BENCHMARKS.md):
// at batch <= 16 every kind runs fastest with a warp per part of a tile; above 16 the warps share
// each tile.
template <bool kSp, typename F>
auto tma_dispatch_kind(const QuantDevParams& p, uint32_t batch, F&& f) {
  const uint32_t nt = tma_n_tiles(batch);
  if (p.kind == kLosslessExp4) return tma_dispatch_exp4(nt, batch, f);  // never sparse
  if (p.kind == kQuantLut) return tma_dispatch_grouped<4, kLut4Codes, kSp>(nt, batch, p.tiles_per_sm, f);  // lut4, one table
  if (p.kind == kQuantInt) {
    switch (p.bits) {
      case 2: return tma_dispatch_grouped<2, 0, kSp>(nt, batch, p.tiles_per_sm, f);
      case 3: return tma_dispatch_grouped<3, 0, kSp>(nt, batch, p.tiles_per_sm, f);
      case 4: return tma_dispatch_grouped<4, 0, kSp>(nt, batch, p.tiles_per_sm, f);
      default: return tma_dispatch_8bit<0, kSp>(nt, batch, p.tiles_per_sm, f);
    }
  }
  switch (p.bits) {
    case 5: return tma_dispatch_grouped<5, 5, kSp, false>(nt, batch, p.tiles_per_sm, f);  // fp5: per-row scales
    case 4:
      return p.fp4_e2m1 ? tma_dispatch_grouped<4, 4, kSp>(nt, batch, p.tiles_per_sm, f)
                        : tma_dispatch_grouped<4, kNf4Codes, kSp>(nt, batch, p.tiles_per_sm, f);
    case 6: return tma_dispatch_8bit<6, kSp>(nt, batch, p.tiles_per_sm, f);
    default: return tma_dispatch_8bit<8, kSp>(nt, batch, p.tiles_per_sm, f);
  }
}
// sparse: the tensor has sparse tiles. Its instances expand them; a dense tensor's have no sparse
// path (but lut4's at batch 9..16, tma_dispatch_grouped). Without it, H200, 28672x8192, two
// alternations, us: int4 b1 40.9-41.1 -> 40.7-40.9, b16 52.3-52.4 -> 51.3-51.6; int3 b1 44.3-44.8 ->
// 43.5-43.8, b16 58.3-58.7 -> 56.7-56.9; int8 b1 64.6-64.8 -> 63.9-64.2, b8 68.1-68.5 -> 66.9-67.3,
// b16 71.2-71.4 -> 69.5-69.6; nf4, lut4 at batch 1 and fp6 at 1 and 8 within 1%, fp6 at 16 1.3%
// slower (62.5 -> 63.3); ptxas: the batch-1 spills of int3 18 -> 6 bytes, int4 10 -> 6, nf4 8 and
// lut4 16 -> 0.
template <typename F>
auto tma_dispatch(const QuantDevParams& p, uint32_t batch, bool sparse, F&& f) {
  return sparse ? tma_dispatch_kind<true>(p, batch, f) : tma_dispatch_kind<false>(p, batch, f);
}

}  // namespace

bool quant_tma_supported(const QuantDevParams& params, uint32_t tile_rows, uint32_t tile_cols, uint64_t tensor_cols,
                         const void* x_dev, bool sparse_tiles) {
  // int4/3/2 always have group scales, int8 per-row ones (packer/quantize.h)
  const bool low_int = params.kind == kQuantInt && params.bits <= 4 && params.grouped;
  const bool int8 = params.kind == kQuantInt && params.bits == 8 && !params.grouped;
  // fp8 E4M3, fp6 E3M2 and fp5 E2M2 (the only 8-, 6- and 5-bit table schemes), per-row scales; fp4 E2M1 and nf4
  // (the 4-bit table schemes), group scales
  const bool fp = params.kind == kQuantTable && (params.bits == 8 || params.bits == 6 || params.bits == 5) &&
                  !params.grouped;
  const bool table4 = params.kind == kQuantTable && params.bits == 4 && params.grouped;
  // lut4 with one table for the tensor (no scales; more tables would change within a tile)
  const bool lut4 = params.kind == kQuantLut && params.bits == 4 && params.lut_rows == 0;
  const bool exp4 = params.kind == kLosslessExp4;  // BF16 tiles of codec exp4: as int8 (8-bit plane, 32-column steps)
  if (!(low_int || int8 || fp || table4 || lut4 || exp4) || tile_rows > 128) return false;
  if (sparse_tiles && (params.sparse_fill == kNoSparseFill || exp4)) return false;
  const uint32_t step_cols = tma_dispatch(params, 1, sparse_tiles, [](auto k) { return decltype(k)::kStepCols; });
  if (tile_cols % step_cols || tensor_cols % step_cols || reinterpret_cast<uintptr_t>(x_dev) % 16) return false;
  return !(params.grouped && (params.group % step_cols || tensor_cols % params.group || tile_cols % params.group));
}

RingFill quant_tma_fill() { return WPACK_HAVE_BULK_COPY ? RingFill::kBulkCopy : RingFill::kCpAsync; }

QuantTmaPlan quant_tma_plan(const QuantDevParams& params, uint32_t stored_cap, uint32_t tile_rows, uint32_t tile_cols,
                            uint32_t batch, uint32_t stages_wanted, bool sparse_tiles, bool codes_off_word) {
  QuantTmaPlan plan{};
  plan.stored_cap = align_up(stored_cap, 16);
  plan.tile_cols = tile_cols;
  plan.sparse_tiles = sparse_tiles;
  struct Shape {
    uint32_t warps, warp_rows, blocks_per_sm, units, table_bytes;
    bool x_sums, x_scratch;
  };
  const Shape shape = tma_dispatch(params, batch, sparse_tiles, [=](auto k) {
    using K = decltype(k);
    return Shape{K::kConsumerWarps, K::kWarpRows, K::kBlocksPerSm, K::kUnits, K::kTableBytes, K::kXSums,
                 x_from_prepare(batch, K::kHalfX, K::kX)};
  });
  const bool sums = shape.x_sums;
  const uint32_t warps = shape.warps;
  // A sparse tile expands into the dense codes of the rows its warp multiplies, and a code plane
  // off a word boundary is realigned there: the whole tile or half of it (a warp per tile or half
  // tile) or 16 rows (warps sharing it), at least 4 bits a code (a sparse tile's: its kind's).
  const bool scratch = sparse_tiles || codes_off_word;
  const uint32_t code_bits = sparse_tiles ? std::max(params.bits, 4u) : 4;
  plan.scratch_bytes = scratch ? align_up(std::min(shape.warp_rows, tile_rows) * tile_cols * code_bits / 8, 16) : 0;
  const uint32_t table_bytes = shape.table_bytes;
  const uint32_t stage_bytes = TmaLayout(plan.stored_cap, tile_cols, batch, 1, 0, warps, 0, sums).stage_bytes;
  const uint32_t aux_bytes =
      TmaLayout(0, tile_cols, batch, 0, plan.scratch_bytes, warps, table_bytes, sums).total - kHeaderBytes;
  // About 220 KiB per multiprocessor over the blocks the instance is built for (110 KiB at two:
  // 12 stages of standard int4 tiles at batch 1, a multiple of its 4 units), a sparse tensor's
  // scratch included; the opt-in limit is 227 KiB per block and 228 KiB per multiprocessor, 1 KiB
  // of it reserved per block. (Sparse tensors had 72 KiB blocks, three per multiprocessor, for
  // more warps; the int4 instances now reach that count with two blocks or by registers.)
  const uint32_t block_budget = kRingBytesPerSm / shape.blocks_per_sm;
  const uint32_t ring_budget = aux_bytes + (16u << 10) <= block_budget ? block_budget - aux_bytes : (16u << 10);
  const uint32_t stages = ring_stages(ring_budget, stage_bytes, shape.units, kMaxStages, stages_wanted);
  plan.stages = stages;
  plan.smem_bytes =
      TmaLayout(plan.stored_cap, tile_cols, batch, stages, plan.scratch_bytes, warps, table_bytes, sums).total;
  plan.blocks_per_sm =
      tma_dispatch(params, batch, sparse_tiles, [&](auto k) { return decltype(k)::occupancy(plan.smem_bytes); });
  plan.x_scratch = shape.x_scratch;
  return plan;
}

uint64_t quant_tma_x_scratch_elements(uint64_t k_cols, uint32_t tile_cols) {
  // the blocks' rows (with sums: the longer ones), and (half_x) two elements for each block's float
  return x_blocks_of(k_cols, tile_cols) * (TmaLayout(0, tile_cols, 2, 0, 0, 0, 0, true).x_row / 2 + 2);
}

cudaError_t launch_quant_gemv_tma(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                  const QuantDevParams& params, const QuantTmaPlan& plan, uint32_t grid,
                                  const uint16_t* x_dev, uint64_t k_cols, uint16_t* xt_scratch_dev, float* y_dev,
                                  uint64_t n_rows, uint32_t batch, uint32_t* status_dev, cudaStream_t stream) {
  if (grid == 0 || batch == 0 || batch > 64 || plan.stages < 2 || plan.stages > kMaxStages ||
      k_cols * batch > UINT32_MAX)
    return cudaErrorInvalidValue;
  return tma_dispatch(params, batch, plan.sparse_tiles, [&](auto k) {
    using K = decltype(k);
    const bool from_prepare = x_from_prepare(batch, K::kHalfX, K::kX);
    if (from_prepare && xt_scratch_dev == nullptr) return cudaErrorInvalidValue;
    if (plan.stages % K::kUnits) return cudaErrorInvalidValue;  // see ring_stages: units would race
    // y = 0, x transposed (batch > 1) or reordered (PreparedX), in one small kernel the GEMV
    // overlaps: at most two blocks per multiprocessor the GEMV runs on (grid-stride loops beyond),
    // so that they leave the SMs' thread slots to the GEMV's blocks, which start while it runs (264
    // on an H200, the count the A/Bs measured). FP16 x (half_x): a block per x block, up to that cap.
    const uint64_t per_sm = std::max(plan.blocks_per_sm, 1), prep_cap = 2 * ((grid + per_sm - 1) / per_sm);
    const uint64_t prep_work = std::max(n_rows * batch, k_cols * batch);
    const uint32_t prep_blocks = static_cast<uint32_t>(std::min<uint64_t>(
        prep_cap, std::max((prep_work + 255) / 256, K::kHalfX ? x_blocks_of(k_cols, plan.tile_cols) : 0)));
    prepare_kernel<<<std::max(prep_blocks, 1u), 256, 0, stream>>>(
        x_dev, xt_scratch_dev, static_cast<uint32_t>(k_cols), batch, plan.tile_cols,
        xt_row_elements(plan.tile_cols, batch, K::kXSums), y_dev, n_rows * batch, K::kHalfX, K::kX,
        K::kXSums);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess || tile_count == 0) return err;
    err = K::prepare();
    if (err != cudaSuccess) return err;
    return K::launch(bytes_dev, tiles_dev, tile_count, params, plan, grid, from_prepare ? xt_scratch_dev : x_dev,
                     k_cols, batch, y_dev, status_dev, stream);
  });
}

#else   // no mbarrier ring PTX in this toolkit (before CUDA 11.8)

bool quant_tma_supported(const QuantDevParams&, uint32_t, uint32_t, uint64_t, const void*, bool) {
  return false;
}
RingFill quant_tma_fill() { return RingFill::kNone; }
QuantTmaPlan quant_tma_plan(const QuantDevParams&, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t, bool, bool) {
  return QuantTmaPlan{};
}
uint64_t quant_tma_x_scratch_elements(uint64_t k_cols, uint32_t) { return k_cols; }
cudaError_t launch_quant_gemv_tma(const uint8_t*, const DevTile*, uint64_t, const QuantDevParams&, const QuantTmaPlan&,
                                  uint32_t, const uint16_t*, uint64_t, uint16_t*, float*, uint64_t, uint32_t, uint32_t*,
                                  cudaStream_t) {
  return cudaErrorNotSupported;
}

#endif  // WPACK_HAVE_MBAR_RING
}  // namespace wpack::gpu::detail
