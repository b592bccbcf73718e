// The quantized rANS GEMV: a warp per tile, the codes decoded from their rANS stream in registers
// and multiplied at once. Byte layouts: docs/FORMAT.md ("Quantized tiles") and
// docs/FORMAT-rans.md; the scalar references are packer/quant_tile.cpp decode_quant_tile_ref()
// and packer/rans.cpp rans_decode(). Each weight is dequantized exactly as the reference does it
// ((code - zero) * scale, value(code) * scale or table[code], in float32), then multiplied in
// float32 (tests/gpu_tile_decode.cpp compares y with a float64 GEMV of the dequantized weights).
//
// Which tiles (the host picks them, quant_warp_tile in tile_decode_host.cpp): codec rans, layout 4
// (codes), 5 (sparse: plane A ends with the occupancy bitmap, plane B holds the occupied elements'
// codes) or 6 (zero-relative symbols), plane B a mode-1 rANS stream whose symbols are the codes
// (int8/4/3/2, fp8, fp4, nf4, lut4/lut3 with one table) or, for fp6 and fp5, the packed code bytes
// (decoded into shared memory first, then each code read by a funnel shift: kPacked), plane A raw
// or a mode-1 stream, tile width 32, 64 or 128. That is every full tile that
// `wpack compress --scheme <one of those>` writes with the default codec, pruned or not, where
// rANS paid. Sparse tiles with plane B raw too (codec none: the pruned tensors that the bulk-copy
// GEMV does not take, fp6/fp5/fp4/nf4/int3/int2/lut4; the codes read in place). The other tiles
// (dense ones with planes stored raw, odd widths) take the generic kernel in the same gemv().
//
// Before this kernel, such tensors ran the generic kernel: a block of 256 threads per tile, one
// warp decoding the 16384-symbol stream (its table parsed by one lane) while seven waited. The
// stream is 32 interleaved rANS lanes, so a warp is all the parallelism a tile has; here each warp
// owns a tile at a time (about 10 KiB of shared memory for an int4 tile, 20 KiB for int8 or fp8;
// a block has 1, 2 or 4 warps, whichever puts the most warps on a multiprocessor):
//
//   global: [dir 8 B][plane A: scales, zeros (raw or rANS)][plane B: rANS stream of the codes]
//             | the whole stored tile, one copy (bulk, or the lanes' cp.async: warp_copy)
//             v
//   shared: stored[] -> plane A decoded into side[] (or read in place when raw; per-row schemes
//           put the tile's row scales there); plane B's header, table (info, tab) and lane
//           states as in lossless_gemv.cu (kernels/detail/rans_warp.cuh). Plane A (384 bytes for
//           a 128x128 int4 g128 tile) has nearly every byte value, so its table costs more than
//           its 12 steps: it is decoded without a slot table, by a search of the cum column. The
//           packer now stores a dense tile's plane A raw (its serial table parse took ~40% of
//           this kernel's time: int4 892 -> 542 us, nf4 949 -> 529 at 28672x8192 batch 1); sparse
//           tiles, and dense tiles of files written before, still bring it coded.
//   step t (element 32 t + lane, tile row t / (w / 32)): symbol -> code (layout 6: + the group's
//           zero point, mod 2^bits) -> v = value(code) - zero; a step's 32 columns lie in one
//           group (groups are >= 32 wide), so scale and zero are warp-uniform shared loads.
//           Sparse tiles: the occupied codes are decoded into shared memory first (a raw plane B
//           is read in place); step t's bitmap word says which lanes are occupied and, by popc,
//           each one's rank among the occupied elements, i.e. where its code is; an unoccupied
//           element's v is 0 (+0.0)
//   batch 1..8: w = v * scale, acc[b] += w x[b]; rows merged by the transposing butterfly of
//           kernels/detail/warp_tiles.cuh (RowMerge), one atomicAdd per row and batch column
//   batch 9..64 (passes of 16): v staged as BF16 for 8 rows (int codes and minifloats: exact;
//           other value tables: a high part and the rest, two stages), m16n8k16 MMAs with x as A
//           per 32-column part (warp_tiles.cuh), then y += scale * D per part and row.
//
// Measured (H200, docs/BENCHMARKS.md, 28672x8192 at batch 1): int4 1017 us, fp4 685, int8 1315,
// fp8 1904, 0.06-0.16x cuBLAS BF16 and 5-8x the generic kernel; batch 16 on tensor cores int4
// 1261 us (1789 with FMAs), fp4 866 (1347). Bound by instructions (~4 warps per scheduler issuing
// 0.6 per cycle): ~35 per decode step, and for tiles with zero points ~16 k per tile for plane A's
// table. Since the batch 1..8 row groups wholly in every lane's main phase run their steps without
// per-step tests (~37 -> ~21 SASS instructions a step, int4 batch 1): int4 895 us (was 994), int8
// 1110 (1276), fp4 528 (668), nf4 946 (1081).
//
// y is accumulated with float atomicAdd across tile columns. A tile found corrupt at the end of
// its stream (final states, word count) may already have added to y; its status says so.
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/detail/align.h"
#include "kernels/detail/bulk_copy.cuh"
#include "kernels/detail/rans_warp.cuh"
#include "kernels/detail/smem_limit.cuh"
#include "kernels/detail/tile_kernels.h"
#include "kernels/detail/warp_tiles.cuh"

namespace wpack::gpu::detail {
#if WPACK_HAVE_MBAR_RING
namespace {

constexpr uint32_t kMaxWarps = 4;           // warps per block (the plan's choice: 1, 2 or 4); each works alone
constexpr uint32_t kValuesBytes = 256 * 4;  // the block's code values (table kinds): float[2^bits]

// The tensor-core pass's stages (warp_tiles.cuh): int codes stage (code - zero) exactly in BF16, and
// so do minifloat tables; other value tables (nf4, LUTs) are floats, staged as a BF16 high part and
// the rest (a second stage, and twice the MMAs).
__host__ __device__ inline uint32_t mma_stages(bool mma, const QuantDevParams& p) {
  return !mma ? 0u : p.kind == kQuantInt || p.values_bf16 ? 1u : 2u;
}

// One warp's shared memory, offsets in bytes from the warp's base (128-aligned).
struct WarpLayout {
  uint32_t info, tab, stage, side, words, stored, packed, total;
  __host__ __device__ WarpLayout(uint32_t stored_cap, uint32_t side_cap, uint32_t precision_cap, uint32_t packed_cap,
                                 uint32_t stages) {
    // [0, 16): the mbarrier of the tile copy
    info = 64;                                    // 256 u32: f << 16 | cum, per symbol
    tab = info + 1024;                            // 2^p u8: slot -> symbol
    stage = align16(tab + (1u << precision_cap));  // the MMA pass's staged rows: `stages` of kStageBytes
    side = stage + stages * kStageBytes;          // plane A decoded, or the tile's row scales (float)
    words = side + side_cap;                      // plane A's renormalisation words (< its stream)
    stored = words + side_cap + 16;               // the stored tile
    packed = align16(stored + stored_cap + 16);   // + 16: bit reads and the word move run past the end
    total = (packed + packed_cap + (packed_cap ? 16 : 0) + 127) & ~127u;  // the buffered symbols, + 16: a
                                                                           // code's second word
  }
};

// The code of element i of a tile whose codes are packed LSB first at `bits` bits each from bit
// `bit0` of `words` (4-aligned, readable 4 bytes past the last code).
__device__ __forceinline__ uint32_t packed_code(const uint32_t* words, uint32_t i, uint32_t bits, uint32_t mask,
                                                uint32_t bit0 = 0) {
  const uint32_t bit = bit0 + i * bits;
  return __funnelshift_r(words[bit / 32], words[bit / 32 + 1], bit % 32) & mask;
}

// Word i of a sparse tile's occupancy bitmap (bit b: element 32 i + b), which starts wherever plane A's
// scales and zero points end: a funnel shift of the two aligned words it spans.
__device__ __forceinline__ uint32_t bitmap_word(const uint8_t* bitmap, uint32_t i) {
  const uint32_t mis = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(bitmap)) & 3u;
  const uint32_t* words = reinterpret_cast<const uint32_t*>(bitmap - mis);
  return __funnelshift_r(words[i], words[i + 1], 8 * mis);
}

// kB: batch columns per pass (1, 2, 4, 8 or 16); kMma: the pass of 16 on tensor cores (else CUDA
// cores); kIntCodes: int schemes, else value tables; kPacked: fp6/fp5, whose plane B codes the
// packed code bytes (8-bit symbols): the warp decodes them into its `packed` buffer first, then
// reads each code by a funnel shift.
template <uint32_t kB, bool kIntCodes, bool kPacked, bool kMma>
__global__ void __launch_bounds__(32 * kMaxWarps) quant_rans_gemv_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // the tensor's tiles
    const uint32_t* __restrict__ ids_dev,   // (count) the tiles this kernel takes
    uint32_t count, QuantDevParams p, uint32_t stored_cap, uint32_t side_cap, uint32_t precision_cap,
    uint32_t packed_cap,                    // the buffer for plane B's symbols (fp6/fp5, sparse tiles), bytes
    const uint16_t* __restrict__ x_dev,     // (K, ld) BF16 bits, columns [0, nb) of this pass
    float* __restrict__ y_dev,              // (N, ld) float, columns [0, nb) of this pass
    uint32_t ld, uint32_t nb,
    uint32_t* __restrict__ status_dev) {    // (tile_count), indexed by tile id
  static_assert(kB == 1 || kB == 2 || kB == 4 || kB == 8 || kB == 16, "batch per pass");
  static_assert(!kMma || kB == 16, "the tensor-core pass is 16 wide");
  constexpr uint32_t kCols = kMma ? 1 : kB;  // the CUDA-core path's array extents
  using Merge = RowMerge<kCols>;
  extern __shared__ __align__(128) uint8_t smem[];
  float* values = reinterpret_cast<float*>(smem);
  if constexpr (!kIntCodes) {
    for (uint32_t i = threadIdx.x; i < (1u << p.bits); i += blockDim.x) values[i] = p.values_dev[i];
  }
  __syncthreads();
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const uint32_t stages = mma_stages(kMma, p);
  const WarpLayout layout(stored_cap, side_cap, precision_cap, packed_cap, stages);
  uint8_t* base = smem + kValuesBytes + warp * layout.total;
  uint64_t* bar = reinterpret_cast<uint64_t*>(base);
  uint32_t* info = reinterpret_cast<uint32_t*>(base + layout.info);
  uint8_t* tab = base + layout.tab;
  uint16_t* stage = reinterpret_cast<uint16_t*>(base + layout.stage);
  uint8_t* side_buf = base + layout.side;
  uint32_t* side_words = reinterpret_cast<uint32_t*>(base + layout.words);
  uint8_t* stored = base + layout.stored;
  [[maybe_unused]] uint8_t* packed = base + layout.packed;

  const WarpRange range = warp_range(count, blockDim.x / 32, warp);
  if (range.first == range.last) return;
  warp_copy_init(bar, 1);
  __syncwarp();
  const uint64_t policy = evict_first_policy();
  TileRecords records(tiles_dev, ids_dev, range, lane);
  auto fits = [&](const WarpTile& t) { return t.stored >= 8 && align16(t.stored) <= stored_cap; };
  uint32_t phase = 0;
  auto issue_tile = [&](const WarpTile& t) {  // the whole stored tile
    if (fits(t) && warp_copy_lane(lane)) warp_copy(stored, bytes_dev + t.offset, align16(t.stored), bar, policy);
  };

  const uint32_t below = (1u << lane) - 1u, code_mask = (1u << p.bits) - 1u;
  const uint32_t group_shift = p.grouped ? __ffs(p.group) - 1 : 0u;  // groups are powers of two >= 32
  const uint32_t default_zero = kIntCodes ? static_cast<uint32_t>(p.symmetric_zero) : 0u;  // int8, symmetric int
  WarpTile cur = records.at(range.first);
  uint32_t cur_raw = records.raw_size_at(range.first);  // sparse tiles: plane A + plane B before coding
  issue_tile(cur);
  for (uint32_t k = range.first; k < range.last; ++k) {
    WarpTile nxt{};
    uint32_t nxt_raw = 0;
    if (k + 1 < range.last) nxt = records.at(k + 1), nxt_raw = records.raw_size_at(k + 1);
    const bool cur_fits = fits(cur);
    uint32_t status = cur_fits ? kOk : kTooLarge;
    const uint32_t h = cur.rows, w = cur.cols, n = h * w;
    float xr[4][kCols];  // loaded while the copy is in flight
    uint32_t xa[8][4];   // (MMA pass) the same as A operands
    if constexpr (kMma) load_x_mma(xa, x_dev, cur, ld, nb, lane);
    else load_x(xr, x_dev, cur, ld, nb, lane);
    if (cur_fits) {
      mbar_wait(bar, phase);
      phase ^= 1;
    }

    // ---- plane directory and plane A (docs/FORMAT.md "Quantized tiles") ----
    const uint32_t word_a = reinterpret_cast<const uint32_t*>(stored)[0];
    const uint32_t word_b = reinterpret_cast<const uint32_t*>(stored)[1];
    const uint32_t size_a = word_a & ~kRawPlaneBit, size_b = word_b & ~kRawPlaneBit;
    const uint32_t groups = p.grouped ? (w + p.group - 1) >> group_shift : 0u;
    const uint32_t scale_bytes = 2 * h * groups, a_bytes = scale_bytes + (p.zero_points ? h * groups : 0u);
    const bool zero_rel = cur.filter == kLayoutDenseZeroRel, sparse = cur.filter == kLayoutSparse;
    const uint32_t a_total = a_bytes + (sparse ? n / 8 : 0u);  // plane A: + the sparse tile's bitmap (n / 32 words)
    // Plane B stored raw: sparse tiles only (codec none, or rans that did not pay), its codes read in
    // place, packed at `bits` bits.
    const bool raw_b = (word_b & kRawPlaneBit) != 0;
    if (status == kOk) {
      const bool plain = cur.filter == kLayoutDense || sparse || (zero_rel && p.zero_points);
      if (!plain || (raw_b && !sparse) || uint64_t{8} + size_a + size_b != cur.stored ||
          ((word_a & kRawPlaneBit) ? size_a != a_total : a_total == 0) || (w != 32 && w != 64 && w != 128))
        status = kCorrupt;
    }
    const uint8_t* side = stored + 8;
    if (status == kOk && !(word_a & kRawPlaneBit)) {
      LaneStream as;
      if (a_total > side_cap || size_a > side_cap ||
          !open_stream(stored, 8, size_a, a_total, 8, precision_cap, info, nullptr, side_words, lane, as)) {
        status = kCorrupt;
      } else {
        const uint32_t mask = (1u << as.precision) - 1u;
        for (uint32_t t = 0; 32 * t < a_total; ++t) {
          const bool active = 32 * t + lane < a_total;
          const uint32_t symbol = decode_step<true>(as, t, active, mask, below, lane, info, nullptr);
          if (active) side_buf[32 * t + lane] = static_cast<uint8_t>(symbol);
        }
        if (!as.ended_ok()) status = kCorrupt;
        side = side_buf;
      }
    }
    // per-row schemes (no scales in plane A): the tile's row scales, after a decoded bitmap
    float* row_scales = reinterpret_cast<float*>(side_buf + align16(a_total));
    if (status == kOk && p.row_scales_dev != nullptr) {
      if (align16(a_total) + 4 * h > side_cap) {
        status = kTooLarge;
      } else {
        for (uint32_t r = lane; r < h; r += 32) row_scales[r] = p.row_scales_dev[cur.row0 + r];
      }
    }
    __syncwarp();

    // ---- plane B: header, table and lane states, then decode + multiply ----
    LaneStream bs;
    // Sparse tiles: the occupied elements, counted in the bitmap (words of 32 elements: w is a
    // multiple of 32), whose codes alone plane B holds: exactly its raw size (as the reference
    // decoder requires; the stream's own checks would miss a count one off).
    const uint8_t* bitmap = side + a_bytes;
    uint32_t count = n;
    if (status == kOk && sparse) {
      uint32_t mine = 0;
      for (uint32_t i = lane; i < n / 32; i += 32) mine += __popc(bitmap_word(bitmap, i));
      count = __reduce_add_sync(0xFFFFFFFFu, mine);
      if (uint64_t{a_total} + (uint64_t{count} * p.bits + 7) / 8 != cur_raw || (raw_b && size_b != cur_raw - a_total))
        status = kCorrupt;
    }
    // Plane B's symbols: the codes, or (kPacked) their packed bytes. They are decoded into the
    // warp's `packed` buffer first where the elements cannot take them in stream order: fp6/fp5
    // (a code from its bytes) and sparse tiles (an occupied element's code from its rank).
    const uint32_t symbols = kPacked ? (count * p.bits + 7) / 8 : count;
    const bool buffered = (kPacked || sparse) && !raw_b;
    if (status == kOk && buffered && symbols > packed_cap) status = kTooLarge;
    if (status == kOk && !raw_b &&
        !open_stream(stored, 8 + size_a, size_b, symbols, kPacked ? 8 : p.bits, precision_cap, info, tab, nullptr,
                     lane, bs))
      status = kCorrupt;
    if (status == kOk && buffered) {
      const uint32_t mask = (1u << bs.precision) - 1u;
      for (uint32_t t = 0; 32 * t < symbols; ++t) {
        const bool active = 32 * t + lane < symbols;
        const uint32_t symbol = decode_step(bs, t, active, mask, below, lane, info, tab);
        if (active) packed[32 * t + lane] = static_cast<uint8_t>(symbol);
      }
      if (!bs.ended_ok()) status = kCorrupt;
      __syncwarp();
    }
    // Code k of the buffer, or of a raw plane B in place (bit 8 mis + k bits from its aligned word).
    auto buffered_code = [&](uint32_t k) {
      return kPacked ? packed_code(reinterpret_cast<const uint32_t*>(packed), k, p.bits, code_mask)
                     : smem_byte(packed, k);
    };
    const uint8_t* plane_b = stored + 8 + size_a;
    const uint32_t plane_b_mis = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(plane_b)) & 3u;
    auto raw_code = [&](uint32_t k) {
      return packed_code(reinterpret_cast<const uint32_t*>(plane_b - plane_b_mis), k, p.bits, code_mask, 8 * plane_b_mis);
    };
    // The multiply, for dense tiles or (kSparse) sparse ones.
    auto multiply = [&](auto sparse_tag) {
      constexpr bool kSparse = decltype(sparse_tag)::value;
      const uint32_t steps_per_row = w / 32, mask = (1u << bs.precision) - 1u;
      const uint16_t* scales16 = reinterpret_cast<const uint16_t*>(side);
      uint32_t t = 0;
      [[maybe_unused]] uint32_t rank = 0;  // sparse: the occupied elements before step t
      // The scale of a row's step j (its 32 columns lie in one group); rows past the tile's end (a
      // group's last rows) read their clamped neighbours' and are skipped by the callers.
      auto scale_of = [&](uint32_t row, uint32_t j) {
        const uint32_t srow = min(row, h - 1);
        if (p.grouped)
          return __half2float(__ushort_as_half(scales16[srow * groups + min((32 * j) >> group_shift, groups - 1)]));
        return p.row_scales_dev != nullptr ? row_scales[srow] : 1.f;
      };
      // The zero points of a row's steps as (2^23 + zero) (int codes: value - zero is then
      // (2^23 + code) - (2^23 + zero), exact), and the raw ones for zero-relative symbols.
      auto zeros_of = [&](uint32_t row, uint32_t (&zero)[4], float (&zero_f)[4]) {
        const uint32_t srow = min(row, h - 1);
#pragma unroll
        for (uint32_t j = 0; j < 4; ++j) {
          zero[j] = default_zero;
          if (p.grouped && p.zero_points)
            zero[j] = side[scale_bytes + srow * groups + min((32 * j) >> group_shift, groups - 1)];
          zero_f[j] = kIntCodes ? __uint_as_float(0x4B000000u | zero[j]) : 0.f;
        }
      };
      // Step t's code value less its zero point (exact for int codes), the stream advanced; 0 for
      // an unoccupied element of a sparse tile (it decodes to +0.0). main_phase (std::true_type):
      // every lane is in its main phase at step t (decode_step's kMain).
      auto step_value = [&](uint32_t j, const uint32_t (&zero)[4], const float (&zero_f)[4], auto main_phase) {
        uint32_t symbol;
        bool occupied = true;
        if constexpr (kSparse) {  // element 32 t + lane: bit `lane` of bitmap word t
          const uint32_t bm = bitmap_word(bitmap, t);
          occupied = (bm >> lane) & 1u;
          // (an unoccupied lane reads code r <= count: in the buffer, or plane B, with their slack)
          const uint32_t r = rank + __popc(bm & below);
          symbol = raw_b ? raw_code(r) : buffered_code(r);
          rank += __popc(bm);
        } else {
          symbol = kPacked ? buffered_code(32 * t + lane)
                           : decode_step<false, decltype(main_phase)::value>(bs, t, true, mask, below, lane, info, tab);
        }
        ++t;
        const uint32_t code = zero_rel ? (symbol + zero[j]) & code_mask : symbol;
        const float value = kIntCodes ? __uint_as_float(0x4B000000u | code) : values[code];
        return occupied ? __fsub_rn(value, zero_f[j]) : 0.f;
      };
      // Dense tiles' row groups before the warp's first step out of its main phase that are whole run
      // without a test per step (group_untested, as kernels/lossless_gemv.cu).
      const uint32_t main_steps = kSparse || kPacked ? ~0u : warp_main_steps(bs);
      if constexpr (kMma) {
        // Groups of 8 rows: (value - zero) staged as BF16 (int codes and minifloats: exact; nf4 and
        // LUT values: a high and a low part, each its own stage and MMAs), then per 32-column part j (one group) D_j
        // (16 batch columns x 8 rows) = x (A) * rows (B), and y += scale(row, j) D_j.
        const uint32_t g = lane / 4, q = lane % 4;
        for (uint32_t rg = 0; rg < h; rg += kStageRows) {
          // main_phase (std::true_type): the group is untested (group_untested); else rows past the
          // tile and steps past its width are skipped.
          auto stage_rows = [&](auto main_phase) {
            constexpr bool kChecked = !decltype(main_phase)::value;
#pragma unroll 1
            for (uint32_t r = 0; r < kStageRows && (!kChecked || rg + r < h); ++r) {
              uint32_t zero[4];
              float zero_f[4];
              zeros_of(rg + r, zero, zero_f);
#pragma unroll
              for (uint32_t j = 0; j < 4; ++j) {
                if (!kChecked || j < steps_per_row) {
                  const float v = step_value(j, zero, zero_f, main_phase);
                  const __nv_bfloat16 hi = __float2bfloat16_rn(v);
                  stage[r * kStagePitch + 32 * j + lane] = __bfloat16_as_ushort(hi);
                  if (stages == 2)
                    stage[kStageBytes / 2 + r * kStagePitch + 32 * j + lane] =
                        __bfloat16_as_ushort(__float2bfloat16_rn(v - __bfloat162float(hi)));
                }
              }
            }
          };
          if (group_untested(steps_per_row, rg, kStageRows, h, t, main_steps))
            stage_rows(std::true_type{});
          else
            stage_rows(std::false_type{});
          __syncwarp();
          float d[4][4] = {};  // per part j: batch g rows 2q, 2q + 1; batch g + 8 the same
#pragma unroll
          for (uint32_t j = 0; j < 4; ++j) {
            if (j < steps_per_row) {
              mma_stage_part(d[j], xa, stage, j, lane);
              if (stages == 2) mma_stage_part(d[j], xa, stage + kStageBytes / 2, j, lane);
            }
          }
          __syncwarp();  // every lane's ldmatrix is done before the next group's rows land
#pragma unroll
          for (uint32_t i = 0; i < 4; ++i) {
            const uint32_t row = rg + 2 * q + (i & 1u), b = g + 8 * (i >> 1);
            if (row < h && b < nb) {
              float sum = 0.f;
#pragma unroll
              for (uint32_t j = 0; j < 4; ++j)
                if (j < steps_per_row) sum = fmaf(scale_of(row, j), d[j][i], sum);
              atomicAdd(y_dev + uint64_t{cur.row0 + row} * ld + b, sum);
            }
          }
        }
      }
      for (uint32_t rg = 0; !kMma && rg < h; rg += Merge::kGroupRows) {
        Merge merge;
        // main_phase (std::true_type): the group is untested (group_untested); else rows past the
        // tile and steps past its width are skipped.
        auto group_rows = [&](auto main_phase) {
          constexpr bool kChecked = !decltype(main_phase)::value;
#pragma unroll
          for (uint32_t r = 0; r < Merge::kGroupRows; ++r) {
            const uint32_t row = rg + r;
            float acc[kCols];
#pragma unroll
            for (uint32_t b = 0; b < kCols; ++b) acc[b] = 0.f;
            // The scale and zero point of each of the row's steps (warp-uniform: a step's 32 columns
            // lie in one group), loaded before its steps.
            float scale[4], zero_f[4];
            uint32_t zero[4];
            // Branch-free: rows past the tile's end (a group's last rows) read their clamped
            // neighbours, and their steps are skipped below.
            const uint32_t srow = kChecked ? min(row, h - 1) : row;
            const float row_scale = p.row_scales_dev != nullptr ? row_scales[srow] : 1.f;
#pragma unroll
            for (uint32_t j = 0; j < 4; ++j) {
              scale[j] = row_scale;
              zero[j] = default_zero;
            }
            if (p.grouped) {
#pragma unroll
              for (uint32_t j = 0; j < 4; ++j) {
                const uint32_t i = srow * groups + min((32 * j) >> group_shift, groups - 1);
                scale[j] = __half2float(__ushort_as_half(scales16[i]));
                if (p.zero_points) zero[j] = side[scale_bytes + i];
              }
            }
#pragma unroll
            for (uint32_t j = 0; j < 4; ++j)  // int codes: value - zero as (2^23 + code) - (2^23 + zero), exact
              zero_f[j] = kIntCodes ? __uint_as_float(0x4B000000u | zero[j]) : 0.f;
#pragma unroll
            for (uint32_t j = 0; j < 4; ++j) {
              if (!kChecked || (row < h && j < steps_per_row)) {
                const float wv = __fmul_rn(step_value(j, zero, zero_f, main_phase), scale[j]);
#pragma unroll
                for (uint32_t b = 0; b < kCols; ++b) acc[b] = fmaf(wv, xr[j][b], acc[b]);
              }
            }
            merge.push(r, acc, lane);
          }
        };
        if (group_untested(steps_per_row, rg, Merge::kGroupRows, h, t, main_steps))
          group_rows(std::true_type{});
        else
          group_rows(std::false_type{});
        merge.add(y_dev, cur.row0, rg, h, ld, nb, lane);
      }
    };
    if (status == kOk) {
      if (sparse) multiply(std::true_type{});
      else multiply(std::false_type{});
      if (!raw_b && !bs.ended_ok()) status = kCorrupt;
    }
    // Every lane is done with the buffers: the next tile's copy may land (after the lanes' own
    // writes, the word moves).
    warp_copy_fence();
    __syncwarp();
    if (k + 1 < range.last) issue_tile(nxt);
    if (lane == 0) status_dev[cur.id] = status;
    cur = nxt;
    cur_raw = nxt_raw;
  }
}

template <uint32_t kB, bool kIntCodes, bool kPacked, bool kMma>
struct QuantRansKernel {
  static constexpr auto kernel = quant_rans_gemv_kernel<kB, kIntCodes, kPacked, kMma>;
};

// Calls f(QuantRansKernel<pass, int codes, packed, mma>{}) for a pass width of the kernel (mma: 16
// only); false for another.
template <bool kIntCodes, bool kPacked, typename F>
bool with_kernel(uint32_t pass, bool mma, F&& f) {
  if (mma) {
    if (pass != 16) return false;
    f(QuantRansKernel<16, kIntCodes, kPacked, true>{});
    return true;
  }
  switch (pass) {
    case 1: f(QuantRansKernel<1, kIntCodes, kPacked, false>{}); return true;
    case 2: f(QuantRansKernel<2, kIntCodes, kPacked, false>{}); return true;
    case 4: f(QuantRansKernel<4, kIntCodes, kPacked, false>{}); return true;
    case 8: f(QuantRansKernel<8, kIntCodes, kPacked, false>{}); return true;
    case 16: f(QuantRansKernel<16, kIntCodes, kPacked, false>{}); return true;
    default: return false;
  }
}
template <typename F>
bool with_pass_kernel(const QuantDevParams& p, uint32_t pass, bool mma, F&& f) {
  if (p.kind == kQuantInt) return with_kernel<true, false>(pass, mma, f);
  return packed_code_symbols(p) ? with_kernel<false, true>(pass, mma, f) : with_kernel<false, false>(pass, mma, f);
}

}  // namespace

QuantRansPlan quant_rans_plan(const QuantDevParams& params, uint32_t stored_cap, uint32_t side_cap,
                              uint32_t precision_cap, uint32_t packed_cap, uint32_t batch) {
  QuantRansPlan plan{};
  plan.stored_cap = align16(stored_cap);
  plan.side_cap = align16(side_cap);
  plan.precision_cap = precision_cap;
  plan.packed_cap = align16(packed_cap);
  // Warps per block: the most warps per multiprocessor. A warp needs ~10 KiB of shared memory for an
  // int4 tile and ~20 KiB for an int8 or fp8 one, so that blocks of 4 warps would leave up to 40%
  // of it unused.
  auto fit = [&](uint32_t pass, bool mma) {
    QuantRansPlan q = plan;  // the caps
    q.pass = pass;
    q.mma = mma ? 1u : 0u;
    q.warps = 0, q.blocks_per_sm = 0, q.smem_bytes = 0;
    const uint32_t warp_bytes =
        WarpLayout(q.stored_cap, q.side_cap, precision_cap, q.packed_cap, mma_stages(mma, params)).total;
    with_pass_kernel(params, pass, mma, [&](auto kernel_type) {
      for (uint32_t warps = kMaxWarps; warps >= 1; warps /= 2) {
        const uint32_t smem = kValuesBytes + warps * warp_bytes;
        const int blocks = max_blocks_per_sm<decltype(kernel_type)::kernel>(32 * warps, smem);
        if (static_cast<uint32_t>(blocks) * warps > static_cast<uint32_t>(q.blocks_per_sm) * q.warps) {
          q.warps = warps;
          q.blocks_per_sm = blocks;
          q.smem_bytes = smem;
        }
      }
    });
    return q;
  };
  plan = fit(pass_width(batch), false);  // batch >= 1
  // Batch 9..64: one pass of 16 on tensor cores where that keeps as many warps on a multiprocessor
  // as the CUDA-core pass of 16 (whose 16 accumulators and x columns take ~155 registers; the
  // decode's dependency chain wants warps): int codes, nf4 and 4-bit tables, 28672x8192 at batch
  // 16 1.1-1.4x faster; fp8 and fp6, whose larger tiles and stage leave fewer warps, 7% slower.
  if (batch >= 9) {
    const QuantRansPlan mma = fit(16, true), fma = fit(16, false);
    if (mma.blocks_per_sm > 0 && mma.blocks_per_sm * mma.warps >= fma.blocks_per_sm * fma.warps) plan = mma;
  }
  return plan;
}

cudaError_t launch_quant_rans_gemv(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                   uint32_t count, const QuantDevParams& params, const QuantRansPlan& plan,
                                   uint32_t grid, const uint16_t* x_dev, float* y_dev, uint32_t batch,
                                   uint32_t* status_dev, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  for (uint32_t b0 = 0; b0 < batch; b0 += plan.pass) {
    const uint32_t nb = min(plan.pass, batch - b0);
    const bool launched = with_pass_kernel(params, plan.pass, plan.mma != 0, [&](auto kernel_type) {
      using K = decltype(kernel_type);
      K::kernel<<<grid, 32 * plan.warps, plan.smem_bytes, stream>>>(bytes_dev, tiles_dev, ids_dev, count, params,
                                                               plan.stored_cap, plan.side_cap, plan.precision_cap,
                                                               plan.packed_cap, x_dev + b0, y_dev + b0, batch, nb,
                                                               status_dev);
    });
    if (!launched) return cudaErrorInvalidValue;
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

#else  // no mbarriers in this toolkit: the host keeps every tile on the generic kernel

QuantRansPlan quant_rans_plan(const QuantDevParams&, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t) {
  return QuantRansPlan{};
}
cudaError_t launch_quant_rans_gemv(const uint8_t*, const DevTile*, const uint32_t*, uint32_t, const QuantDevParams&,
                                   const QuantRansPlan&, uint32_t, const uint16_t*, float*, uint32_t, uint32_t*,
                                   cudaStream_t) {
  return cudaErrorNotSupported;
}

#endif  // WPACK_HAVE_MBAR_RING
}  // namespace wpack::gpu::detail
