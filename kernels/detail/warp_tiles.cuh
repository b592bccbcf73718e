// Internal to kernels/ (CUDA only): what the warp-per-tile GEMVs (lossless_gemv.cu,
// quant_rans_gemv.cu) share around their decoders: each warp's contiguous range of tiles, the
// tile records read 32 at a time, x in registers, and the transposing butterfly that merges the
// partial sums of a group of tile rows.
#pragma once

#include <cstdint>

#include "kernels/detail/bf16.cuh"
#include "kernels/detail/mma_codes.cuh"  // mma_bf16_16816, ldmatrix_x4
#include "kernels/detail/tile_kernels.h"  // DevTile

namespace wpack::gpu::detail {
namespace {

// The tiles [first, last) of `count` that warp `warp` of its block takes: every warp of the grid a
// contiguous range of (nearly) equal length.
struct WarpRange {
  uint32_t first, last;
};
__device__ __forceinline__ WarpRange warp_range(uint32_t count, uint32_t warps_per_block, uint32_t warp) {
  const uint64_t gw = uint64_t{blockIdx.x} * warps_per_block + warp, warps = uint64_t{gridDim.x} * warps_per_block;
  return WarpRange{static_cast<uint32_t>(gw * count / warps), static_cast<uint32_t>((gw + 1) * count / warps)};
}

// Batch columns per launch of a warp-per-tile GEMV (wider batches run as passes of 16); batch 0,
// the lossless decode-only kernel, stays 0.
inline uint32_t pass_width(uint32_t batch) {
  return batch >= 16 ? 16 : batch >= 8 ? 8 : batch >= 4 ? 4 : batch >= 2 ? 2 : batch;
}

// One tile's record as every lane of the warp holds it.
struct WarpTile {
  uint64_t offset;
  uint32_t id, stored, row0, col0, rows, cols, filter;
};

// The tile records of a warp's range, 32 at a time: lane l holds record base + l; at(k) hands
// record k to every lane by shuffles (k in the range, not decreasing from call to call).
struct TileRecords {
  const DevTile* tiles;
  const uint32_t* ids;
  uint32_t last, lane, base = 0, id = 0;
  DevTile rec{};
  __device__ TileRecords(const DevTile* tiles_dev, const uint32_t* ids_dev, WarpRange range, uint32_t lane_)
      : tiles(tiles_dev), ids(ids_dev), last(range.last), lane(lane_) {
    load(range.first);
  }
  __device__ void load(uint32_t from) {
    base = from;
    if (from + lane < last) {
      id = ids[from + lane];
      rec = tiles[id];
    }
  }
  __device__ WarpTile at(uint32_t k) {
    if (k - base >= 32) load(k);
    const uint32_t src = k - base;
    WarpTile t;
    t.offset = __shfl_sync(0xFFFFFFFFu, rec.offset, src);
    t.id = __shfl_sync(0xFFFFFFFFu, id, src);
    t.stored = __shfl_sync(0xFFFFFFFFu, rec.stored_size, src);
    t.row0 = __shfl_sync(0xFFFFFFFFu, rec.row0, src);
    t.col0 = __shfl_sync(0xFFFFFFFFu, rec.col0, src);
    t.rows = __shfl_sync(0xFFFFFFFFu, rec.rows, src);
    t.cols = __shfl_sync(0xFFFFFFFFu, rec.cols, src);
    t.filter = __shfl_sync(0xFFFFFFFFu, uint32_t{rec.filter}, src);
    return t;
  }
  // Record k's raw size, k that of the last at(k).
  __device__ uint32_t raw_size_at(uint32_t k) const { return __shfl_sync(0xFFFFFFFFu, rec.raw_size, k - base); }
};

// x of the lane's columns 32 j + lane of a tile (j < 4: tiles up to 128 wide), BF16 -> float, for
// batch columns b < nb of x (K, ld); 0 past the tile's width or nb.
template <uint32_t kB>
__device__ __forceinline__ void load_x(float (&xr)[4][kB], const uint16_t* x_dev, const WarpTile& t, uint32_t ld,
                                       uint32_t nb, uint32_t lane) {
#pragma unroll
  for (uint32_t j = 0; j < 4; ++j) {
#pragma unroll
    for (uint32_t b = 0; b < kB; ++b) {
      const uint32_t c = 32 * j + lane;
      xr[j][b] = c < t.cols && b < nb ? bf16_bits_to_float(x_dev[uint64_t{t.col0 + c} * ld + b]) : 0.f;
    }
  }
}

// The warp-per-tile GEMVs' batch-16 passes multiply on tensor cores: a group of kStageRows decoded
// tile rows (BF16) is staged in the warp's shared memory, rows kStagePitch elements apart (272
// bytes: ldmatrix reads 8 rows without bank conflicts), and becomes the B operand of m16n8k16 MMAs
// whose A is x (16 batch columns). The row group's output: D (16 batch columns x 8 rows).
constexpr uint32_t kStageRows = 8, kStagePitch = 136, kStageBytes = kStageRows * kStagePitch * 2;

// x of a tile as the A operand of those MMAs (A row m = batch column m, A column = tile column):
// xa[kb] holds a0..a3 of the 16-column block kb, BF16 pairs; zero past the tile's width or nb.
__device__ __forceinline__ void load_x_mma(uint32_t (&xa)[8][4], const uint16_t* x_dev, const WarpTile& t, uint32_t ld,
                                           uint32_t nb, uint32_t lane) {
  const uint32_t g = lane / 4, q = lane % 4;
#pragma unroll
  for (uint32_t kb = 0; kb < 8; ++kb) {
#pragma unroll
    for (uint32_t i = 0; i < 4; ++i) {
      const uint32_t m = g + 8 * (i & 1u), c = 16 * kb + 2 * q + 8 * (i >> 1);  // c even, cols a multiple of 32
      uint32_t v = 0;
      if (c < t.cols && m < nb) {
        const uint16_t* p = x_dev + uint64_t{t.col0 + c} * ld + m;
        v = uint32_t{p[0]} | uint32_t{p[ld]} << 16;
      }
      xa[kb][i] = v;
    }
  }
}

// d += x (columns 32 j .. 32 j + 31) times the stage's rows over the same columns: two MMAs. Lane
// (g, q) holds d[0], d[1] = (batch column g; rows 2q, 2q + 1) and d[2], d[3] = (batch g + 8; the
// same rows). The caller orders the stage's writes before it and its next writes after (__syncwarp).
__device__ __forceinline__ void mma_stage_part(float (&d)[4], const uint32_t (&xa)[8][4], const uint16_t* stage,
                                               uint32_t j, uint32_t lane) {
  uint32_t b[4];  // columns 32 j + 8 i .. + 7 of rows 0..7 (a row past the tile: its D unused)
  ldmatrix_x4(b, stage + (lane & 7u) * kStagePitch + 32 * j + 8 * (lane >> 3));
  mma_bf16_16816(d, xa[2 * j][0], xa[2 * j][1], xa[2 * j][2], xa[2 * j][3], b[0], b[1]);
  mma_bf16_16816(d, xa[2 * j + 1][0], xa[2 * j + 1][1], xa[2 * j + 1][2], xa[2 * j + 1][3], b[2], b[3]);
}

// The partial sums of kGroupRows tile rows x kB batch columns ("virtual rows" k = r kB + b, 4, 8
// or 16 of them), each spread over the 32 lanes, merged by a transposing butterfly: push() them
// in order, then add() leaves lane j with virtual row j % kGroup summed over all lanes and adds it
// to y. A small group keeps the unrolled loop short (32 rows per butterfly overflowed the
// instruction cache of the lossless kernel).
template <uint32_t kB>  // 1, 2, 4, 8 or 16
struct RowMerge {
  static constexpr uint32_t kGroupRows = kB >= 4 ? 1 : 4 / kB;
  static constexpr uint32_t kGroup = kGroupRows * kB, kLevels = kGroup == 16 ? 4 : kGroup == 8 ? 3 : 2;
  float tree[kLevels], total = 0.f;
  // Merges two registers at butterfly level `level`: a holds virtual rows whose bit `level` is 0,
  // b those whose bit is 1; the result holds, in lane j, the row selected by bit `level` of j,
  // summed over lanes j and j ^ (1 << level).
  static __device__ __forceinline__ float merge(float a, float b, uint32_t level, uint32_t lane) {
    const bool upper = (lane >> level) & 1u;
    return (upper ? b : a) + __shfl_xor_sync(0xFFFFFFFFu, upper ? a : b, 1u << level);
  }
  // Row r (< kGroupRows) of the group: acc[b] is this lane's part of (row r, batch column b).
  __device__ __forceinline__ void push(uint32_t r, const float (&acc)[kB], uint32_t lane) {
#pragma unroll
    for (uint32_t b = 0; b < kB; ++b) {
      const uint32_t vk = r * kB + b;
      float carry = acc[b];
      bool placed = false;
#pragma unroll
      for (uint32_t level = 0; level < kLevels; ++level) {
        if (!placed) {
          if (vk & (1u << level)) {
            carry = merge(tree[level], carry, level, lane);
          } else {
            tree[level] = carry;
            placed = true;
          }
        }
      }
      if (!placed) total = carry;
    }
  }
  // After the group's last push: finishes the sum and adds row (group_row0 + j / kB, column
  // j % kB) to y (N, ld), for rows below `rows` (tile-local) and columns below nb.
  __device__ __forceinline__ void add(float* y_dev, uint32_t row0, uint32_t group_row0, uint32_t rows, uint32_t ld,
                                      uint32_t nb, uint32_t lane) {
#pragma unroll
    for (uint32_t level = kLevels; level < 5; ++level) total += __shfl_xor_sync(0xFFFFFFFFu, total, 1u << level);
    const uint32_t row = group_row0 + lane / kB, b = lane % kB;
    if (lane < kGroup && row < rows && b < nb) atomicAdd(y_dev + uint64_t{row0 + row} * ld + b, total);
  }
};

}  // namespace
}  // namespace wpack::gpu::detail
