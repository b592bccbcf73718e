// The lossless BF16 GEMV: a warp per tile, the rANS exponent plane decoded in registers and
// multiplied at once. Byte layouts: docs/FORMAT.md ("Tile payload": floatplanes, plane
// directory) and docs/FORMAT-rans.md; the scalar references are packer/tile_codec.cpp
// decode_tile() and packer/rans.cpp rans_decode(), which this kernel matches bit for bit
// (tests/gpu_tile_decode.cpp compares its y with a float64 GEMV of the source to 1e-5).
//
// Which tiles (the host picks them, lossless_fast_tile in tile_decode_host.cpp): BF16,
// floatplanes, codec rans, plane 0 (the exponents) a mode-1 rANS stream of precision <= 11,
// plane 1 (sign and mantissa) raw, tile width 32, 64 or 128. That is nearly every full tile
// that `wpack compress` writes by default; the other tiles go to the block-per-tile kernel in
// tile_decode.cu, in the same gemv() call.
//
// Why a warp per tile: a tile's exponents are one stream of 32 interleaved rANS lanes, so one
// warp is all the parallelism a tile has, and the block-per-tile kernel (125 KiB of shared
// memory: one block per multiprocessor, three warps idle) reached 1.4% of the copy bandwidth.
// Here each warp owns about 10.5 KiB of shared memory (20 warps per multiprocessor) and a
// contiguous range of tiles:
//
//   global: [dir 8 B][exponent stream][mantissa plane, raw]   (one tile's stored bytes)
//             |  one copy, whole            |  copies of 512 B (+ 16 B mirror for every fourth)
//             v                             v  into a ring of 4 slots, 3 ahead
//   shared: exp[]                          ring[]         (per warp; an mbarrier per copy)
//   (a copy: one bulk copy, or with CUDA 11.8 the lanes' 16-byte cp.async copies: warp_copy in
//   kernels/detail/bulk_copy.cuh)
//           -> header, frequency table (parsed by all lanes in step from 32-bit windows: count
//              trailing zeros for gamma and unary codes), slot table tab[2^p] (slot -> symbol),
//              info[256] (f << 16 | cum), lane states; the renormalisation words are moved to a
//              4-byte boundary once so that a word is one 16-bit load
//   step t (element 32 t + lane, tile row t / (w / 32)):
//           s = tab[x & (M - 1)]; x = f(s) (x >> p) + slot - cum(s); renormalise: every lane
//           loads word next + lane before the state is known, a lane that needs a word takes
//           its rank's (ballot, popc) by shuffle; m = ring[...]; w = the BF16 of (s, m) with the
//           floatplanes rotation undone (PRMT, shift, mask). A row group whose steps all lie in
//           every lane's main phase (nearly all of a 128-wide tile's) runs the steps without their
//           tests (row, width, phase) and reads its mantissa bytes at constant offsets; then
//   batch 1: acc += w x (x in registers); groups of 4 rows are merged by a transposing butterfly
//           (lane j ends with row j % 4), plain shuffles finish the sum, and one atomicAdd per
//           row writes it;
//   batch 2..64 (passes of 16 columns): w goes to a stage of 8 rows in shared memory; per group
//           of 8 rows, ldmatrix gives the rows as the B operand of m16n8k16 BF16 MMAs whose A is
//           x (16 batch columns x the tile's columns, in registers), and each lane adds its 4
//           outputs to y. The tensor cores take the batch: per element the warp spends the decode
//           step, a shared store and 1/16 of an MMA, where 16 FMAs and a 16-row butterfly cost
//           about as much as the decode step itself.
//
// Measured (H200, docs/BENCHMARKS.md): 518 us for 28672x8192 at batch 1, 0.21x cuBLAS BF16 (644 us
// before the untested row groups: 38-40 SASS instructions a step, now 25-28); batch 16 on tensor
// cores 624 us (816 before the untested groups, 1442 with FMAs). The
// stream's header, table and steps are kernels/detail/rans_warp.cuh's, shared with the quantized
// rANS GEMV. The profile (before the untested groups): about 40 instructions per decode step,
// issue-bound at 5 warps per scheduler and waiting on the step's dependency chain (two dependent
// shared loads for the table, ballot, shuffle): per stream a step costs ~400 cycles, and a stream is
// the only parallelism there is. What was measured and
// dropped: u32 slot entries (one shared load per step instead of two) need 8 KiB per warp at
// p = 11, 12 warps per multiprocessor instead of 20: 857 against 706 us; 32-row butterflies
// unrolled the step 32 times and overflowed the instruction cache (stall "no instruction" first).
//
// y is accumulated with float atomicAdd across tile columns (as in tile_decode.cu). A tile found
// corrupt at the end of its stream (final states, word count) may already have added to y; its
// status says so, and y is then unspecified (kernels/tile_decode.h).
#include <cstdint>
#include <type_traits>

#include "kernels/detail/align.h"
#include "kernels/detail/bulk_copy.cuh"
#include "kernels/detail/rans_device.cuh"
#include "kernels/detail/rans_warp.cuh"
#include "kernels/detail/smem_limit.cuh"
#include "kernels/detail/tile_kernels.h"
#include "kernels/detail/warp_tiles.cuh"

namespace wpack::gpu::detail {
#if WPACK_HAVE_MBAR_RING
namespace {

constexpr uint32_t kWarps = 4;      // warps per block; each works alone on its own tiles
constexpr uint32_t kChunk = 512;    // mantissa bytes per ring slot: 16 decode steps of 32 lanes
constexpr uint32_t kSlots = 4;      // ring slots; a slot is refilled 3 chunks ahead of its use
constexpr uint32_t kRing = kChunk * kSlots;

// The batch-16 pass multiplies on tensor cores through a stage of 8 rows (warp_tiles.cuh). The
// stage's 2 KiB leave 4 blocks of 4 warps on a multiprocessor where the batch-1 kernel has 5, and
// the pass runs that much slower (the decode's dependency chain wants warps). Tried: a stage of 2
// rows (5 blocks; B's other 6 columns repeating them) ran 26% slower still, its 8 dependent MMAs
// per 8 decode steps instead of per 32 (H200, 28672x8192: 1023 against 809 us).
// The pass width of a batch: batch 1 multiplies on CUDA cores (FMAs into a butterfly), wider
// batches in passes of 16 on tensor cores (batch 2 too: 28672x8192 832 us with FMAs, 804 at batch
// 3 on tensor cores); 0: decode only.
__host__ __device__ constexpr uint32_t lossless_pass(uint32_t batch) { return batch >= 2 ? 16u : batch; }

// One warp's shared memory, offsets in bytes from the warp's base (128-aligned).
struct WarpLayout {
  uint32_t info, tab, ring, stage, exp, total;
  __host__ __device__ WarpLayout(uint32_t exp_cap, uint32_t precision_cap, bool mma) {
    // [0, 64): the mbarriers (exponent stream, then one per ring slot)
    info = 64;           // 256 u32: f << 16 | cum, per symbol
    tab = info + 1024;   // 2^p u8: slot -> symbol
    ring = tab + (1u << precision_cap);  // mantissa bytes: chunk c at 512 (c % 4), + 16 bytes (mirror)
    stage = ring + kRing + 16;               // the MMA pass's staged rows (16-aligned)
    exp = stage + (mma ? kStageBytes : 0u);  // directory + exponent stream
    total = (exp + exp_cap + 16 + 127) & ~127u;  // + 16: the bit reader looks up to 8 bytes past the stream
  }
};

// Status of a tile's directory as the kernel reads it (the host chose tiles where it holds).
__device__ __forceinline__ uint32_t directory_status(uint32_t d0, uint32_t d1, uint32_t n, uint32_t stored,
                                                     uint32_t exp_cap) {
  const uint32_t size0 = d0 & ~kRawPlaneBit;
  if ((d0 & kRawPlaneBit) || d1 != (kRawPlaneBit | n) || size0 < 2 || uint64_t{8} + size0 + n != stored) return kCorrupt;
  if (align16(8 + size0) > exp_cap) return kTooLarge;
  return kOk;
}

// kB: batch columns per pass (lossless_pass): 1 (FMAs), 16 (MMAs); 0: decode only (out_dev (N, ld) BF16)
template <uint32_t kB>
__global__ void __launch_bounds__(32 * kWarps) lossless_gemv_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // the tensor's tiles
    const uint32_t* __restrict__ ids_dev,   // (count) the tiles this kernel takes
    uint32_t count, uint32_t exp_cap, uint32_t precision_cap,
    const uint16_t* __restrict__ x_dev,     // (K, ld) BF16 bits, columns [0, nb) of this pass
    void* __restrict__ out_dev,             // y: (N, ld) float, columns [0, nb) of this pass
    uint32_t ld, uint32_t nb,
    uint32_t* __restrict__ status_dev) {    // (tile_count), indexed by tile id
  static_assert(kB <= 1 || kB == 16, "batch per pass");
  constexpr bool kDecode = kB == 0, kMma = kB == 16;
  float* y_dev = static_cast<float*>(out_dev);
  // Batch 1 reduces tile rows in groups of Merge::kGroupRows (4) rows; the decode-only kernel walks
  // the same groups.
  using Merge = RowMerge<1>;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const WarpLayout layout(exp_cap, precision_cap, kMma);
  uint8_t* base = smem + warp * layout.total;
  uint64_t* exp_bar = reinterpret_cast<uint64_t*>(base);
  uint64_t* ring_bar = exp_bar + 1;
  uint32_t* info = reinterpret_cast<uint32_t*>(base + layout.info);
  uint8_t* tab = base + layout.tab;
  uint8_t* ring = base + layout.ring;
  uint16_t* stage = reinterpret_cast<uint16_t*>(base + layout.stage);
  uint8_t* exp = base + layout.exp;

  const WarpRange range = warp_range(count, kWarps, warp);
  if (range.first == range.last) return;
  warp_copy_init(exp_bar, kSlots + 1);
  __syncwarp();
  const uint64_t policy = evict_first_policy();

  TileRecords records(tiles_dev, ids_dev, range, lane);
  struct Tile : WarpTile {
    uint32_t d0, d1, status;
  };
  auto tile_at = [&](uint32_t k) {
    Tile t;
    static_cast<WarpTile&>(t) = records.at(k);
    const uint2 dir = *reinterpret_cast<const uint2*>(bytes_dev + t.offset);  // the plane directory
    t.d0 = dir.x, t.d1 = dir.y;
    t.status = directory_status(t.d0, t.d1, t.rows * t.cols, t.stored, exp_cap);
    return t;
  };
  // Mantissa chunk c of a tile: the plane's bytes from its first 16-aligned address ms16 on, 512 a
  // chunk, at ring[512 (c % 4)]; the plane's byte e (element e) is at ring offset (ms % 16 + e) mod
  // kRing. A row group of 16 steps reads 512 bytes from ((32 t) mod kRing) + ms % 16: chunk t / 16
  // and up to 15 bytes of the next, which for a chunk c = 3 (mod 4) lie past the ring's end, so
  // that chunk's copy takes 16 bytes more (to the mirror, ring[kRing, kRing + 16)): no read wraps.
  // Copies end at the plane's end rounded up to 16 bytes (inside the tile's 16-aligned allocation).
  // (Offsets within the tile: its stored bytes start 16-aligned.)
  auto mantissa_lead = [](const Tile& t) { return 8 + (t.d0 & ~kRawPlaneBit); };  // the plane's offset
  auto chunks_of = [&](const Tile& t) { return (mantissa_lead(t) % 16 + t.rows * t.cols + kChunk - 1) / kChunk; };
  auto issue_chunk = [&](const Tile& t, uint32_t c) {  // the lanes of warp_copy_lane
    const uint32_t lead = mantissa_lead(t), from = (lead & ~15u) + kChunk * c;
    const uint32_t end = (lead + t.rows * t.cols + 15) & ~15u;
    const uint32_t bytes = min(kChunk + (c % kSlots == kSlots - 1 ? 16u : 0u), end - from);
    warp_copy(ring + kChunk * (c % kSlots), bytes_dev + t.offset + from, bytes, ring_bar + c % kSlots, policy);
  };
  // Starts a tile's copies: the directory and exponent stream whole, the first 3 mantissa chunks.
  auto issue_tile = [&](const Tile& t) {
    if (t.status != kOk || !warp_copy_lane(lane)) return;
    warp_copy(exp, bytes_dev + t.offset, align16(8 + (t.d0 & ~kRawPlaneBit)), exp_bar, policy);
    const uint32_t chunks = chunks_of(t);
    for (uint32_t c = 0; c < chunks && c < kSlots - 1; ++c) issue_chunk(t, c);
  };

  uint32_t exp_phase = 0, ring_phase = 0;  // parity per barrier (bit i: ring slot i)
  auto wait_chunk = [&](uint32_t c) {
    const uint32_t slot = c % kSlots;
    mbar_wait(ring_bar + slot, (ring_phase >> slot) & 1u);
    ring_phase ^= 1u << slot;
  };

  Tile cur = tile_at(range.first);
  issue_tile(cur);
  for (uint32_t k = range.first; k < range.last; ++k) {
    Tile nxt{};
    if (k + 1 < range.last) nxt = tile_at(k + 1);  // its records and directory, latency hidden by this tile
    uint32_t status = cur.status;
    const uint32_t n = cur.rows * cur.cols;
    float xr[4][1];       // (batch 1) loaded while the copies are in flight
    uint32_t xa[8][4];    // (MMA pass) the same as A operands
    if constexpr (kMma) load_x_mma(xa, x_dev, cur, ld, nb, lane);
    else if constexpr (!kDecode) load_x(xr, x_dev, cur, ld, nb, lane);
    uint32_t chunks = 0;
    if (status == kOk) {
      chunks = chunks_of(cur);
      mbar_wait(exp_bar, exp_phase);
      exp_phase ^= 1;
    }

    // ---- the stream's header, table and lane states (docs/FORMAT-rans.md "Modes 1 and 3") ----
    LaneStream ls;
    if (status == kOk &&
        !open_stream(exp, 8, cur.d0 & ~kRawPlaneBit, n, 8, min(precision_cap, kLosslessMaxPrecision), info, tab,
                     nullptr, lane, ls))
      status = kCorrupt;

    // ---- decode + multiply: step t is element 32 t + lane, tile row t / steps_per_row ----
    if (status == kOk) {
      // Tile widths are 32, 64 or 128: a row group's steps divide the 16 steps of a mantissa chunk,
      // so chunks are managed between groups.
      const uint32_t steps_per_row = cur.cols / 32, mask = (1u << ls.precision) - 1u;
      const uint32_t below = (1u << lane) - 1u;
      const uint8_t* ring_lane = ring + mantissa_lead(cur) % 16 + lane;  // + (32 t) mod kRing: step t's byte
      uint32_t t = 0;
      // Called where a row starts (t a multiple of the row's steps, which divide 16): at a new chunk
      // of 512 elements, chunks t/16 and t/16 + 1 hold it.
      auto next_chunk = [&]() {
        if ((t & 15u) == 0) {
          const uint32_t s = t / 16;
          if (s == 0) wait_chunk(0);
          if (s + 1 < chunks) wait_chunk(s + 1);
          __syncwarp();  // every lane is past chunk s - 1: its slot takes chunk s + 3
          if (warp_copy_lane(lane) && s + kSlots - 1 < chunks) issue_chunk(cur, s + kSlots - 1);
        }
      };
      // The element of step t as BF16 bits: (symbol << 8 | m) rotated right by one within 16 bits.
      // kMain: every lane is in its main phase at step t (decode_step).
      // m: the step's sign and mantissa byte.
      auto step_bf16 = [&](auto main_phase, uint32_t m) {
        const uint32_t symbol = decode_step<false, decltype(main_phase)::value>(ls, t, true, mask, below, lane, info, tab);
        ++t;
        return (__byte_perm(symbol, m, 0x0404) << 15) >> 16;
      };
      auto mantissa = [&]() { return uint32_t{ring_lane[(32 * t) & (kRing - 1)]}; };
      // decode_step's main-phase flag: untested (whole groups, every lane in its main phase) or tested.
      constexpr std::true_type kUntested{};
      constexpr std::false_type kTested{};
      // Row groups before it that are whole run without a test per step (group_untested).
      const uint32_t main_steps = warp_main_steps(ls);
      if constexpr (kMma) {
        // Groups of 8 rows: decoded into the stage (row r, column 32 j + lane), then each 32-column
        // part j is two MMAs: D (16 batch columns x 8 rows) += x (A) * rows (B, by ldmatrix).
        const uint32_t g = lane / 4, q = lane % 4;
        for (uint32_t rg = 0; rg < cur.rows; rg += kStageRows) {
          if (group_untested(steps_per_row, rg, kStageRows, cur.rows, t, main_steps)) {
            // Whole rows in every lane's main phase: 16 steps at a time without their tests, the
            // mantissa bytes at constant offsets (t a multiple of 16), as the batch-1 groups.
#pragma unroll 1
            for (uint32_t r0 = 0; r0 < kStageRows; r0 += 4) {
              next_chunk();
              const uint8_t* group_m = ring_lane + ((32 * t) & (kRing - 1));
#pragma unroll
              for (uint32_t r = 0; r < 4; ++r) {
#pragma unroll
                for (uint32_t j = 0; j < 4; ++j)
                  stage[(r0 + r) * kStagePitch + 32 * j + lane] =
                      static_cast<uint16_t>(step_bf16(kUntested, group_m[32 * (4 * r + j)]));
              }
            }
          } else {
#pragma unroll 1
            for (uint32_t r = 0; r < kStageRows && rg + r < cur.rows; ++r) {
              next_chunk();
#pragma unroll
              for (uint32_t j = 0; j < 4; ++j)
                if (j < steps_per_row)
                  stage[r * kStagePitch + 32 * j + lane] = static_cast<uint16_t>(step_bf16(kTested, mantissa()));
            }
          }
          __syncwarp();
          float d[4] = {0.f, 0.f, 0.f, 0.f};  // batch g: rows 2q, 2q + 1; batch g + 8: the same
#pragma unroll
          for (uint32_t j = 0; j < 4; ++j)
            if (j < steps_per_row) mma_stage_part(d, xa, stage, j, lane);
          __syncwarp();  // every lane's ldmatrix is done before the next group's rows land
#pragma unroll
          for (uint32_t i = 0; i < 4; ++i) {
            const uint32_t row = rg + 2 * q + (i & 1u), b = g + 8 * (i >> 1);
            if (row < cur.rows && b < nb) atomicAdd(y_dev + uint64_t{cur.row0 + row} * ld + b, d[i]);
          }
        }
      }
      for (uint32_t rg = 0; !kMma && rg < cur.rows; rg += Merge::kGroupRows) {
        next_chunk();  // a group's steps divide 16 too
        Merge merge;
        // Step j of row r: the element's product with x into acc (decode: its BF16 to out_dev).
        auto element = [&](uint32_t r, uint32_t j, uint32_t bits, float (&acc)[1]) {
          if constexpr (kDecode) {
            static_cast<uint16_t*>(out_dev)[uint64_t{cur.row0 + rg + r} * ld + cur.col0 + 32 * j + lane] =
                static_cast<uint16_t>(bits);
          } else {
            acc[0] = fmaf(bf16_bits_to_float(bits), xr[j][0], acc[0]);
          }
        };
        // The group's steps. Untested: a whole group in every lane's main phase, the steps without
        // their tests and the mantissa bytes at constant offsets (t is a multiple of 16 here).
        auto group_steps = [&](auto main_phase) {
          constexpr bool kWhole = decltype(main_phase)::value;
          const uint8_t* group_m = ring_lane + ((32 * t) & (kRing - 1));
#pragma unroll
          for (uint32_t r = 0; r < Merge::kGroupRows; ++r) {
            float acc[1] = {0.f};
#pragma unroll
            for (uint32_t j = 0; j < 4; ++j) {
              if constexpr (kWhole)
                element(r, j, step_bf16(main_phase, group_m[32 * (4 * r + j)]), acc);
              else if (rg + r < cur.rows && j < steps_per_row)
                element(r, j, step_bf16(main_phase, mantissa()), acc);
            }
            if constexpr (!kDecode) merge.push(r, acc, lane);
          }
        };
        if (group_untested(steps_per_row, rg, Merge::kGroupRows, cur.rows, t, main_steps))
          group_steps(kUntested);
        else
          group_steps(kTested);
        if constexpr (!kDecode) merge.add(y_dev, cur.row0, rg, cur.rows, ld, nb, lane);
      }
      if (!ls.ended_ok()) status = kCorrupt;
    } else if (cur.status == kOk) {
      // Corrupt stream: drain the mantissa copies already issued, so the barriers stay in step.
      for (uint32_t c = 0; c < chunks && c < kSlots - 1; ++c) wait_chunk(c);
    }
    // Every lane is done with exp and ring: the next tile's copies may land (after the lanes' own
    // writes to exp, the word move).
    warp_copy_fence();
    __syncwarp();
    if (k + 1 < range.last) issue_tile(nxt);
    if (lane == 0) status_dev[cur.id] = status;
    cur = nxt;
  }
}

template <uint32_t kB>
struct LosslessKernel {
  static constexpr auto kernel = lossless_gemv_kernel<kB>;
};

// Calls f(LosslessKernel<pass>{}) for a pass width of the kernel (0: decode); false for another.
template <typename F>
bool with_pass_kernel(uint32_t pass, F&& f) {
  switch (pass) {
    case 0: f(LosslessKernel<0>{}); return true;
    case 1: f(LosslessKernel<1>{}); return true;
    case 16: f(LosslessKernel<16>{}); return true;
    default: return false;
  }
}

}  // namespace

bool lossless_fast_built() { return true; }

LosslessPlan lossless_plan(uint32_t exp_cap, uint32_t precision_cap, uint32_t batch) {
  LosslessPlan plan{};
  plan.exp_cap = align16(exp_cap);
  plan.precision_cap = precision_cap;
  plan.pass = lossless_pass(batch);
  plan.smem_bytes = kWarps * WarpLayout(plan.exp_cap, precision_cap, plan.pass == 16).total;
  with_pass_kernel(plan.pass, [&](auto kernel_type) {
    plan.blocks_per_sm = max_blocks_per_sm<decltype(kernel_type)::kernel>(32 * kWarps, plan.smem_bytes);
  });
  return plan;
}

cudaError_t launch_decode_bf16_fast(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                    uint32_t count, const LosslessPlan& plan, uint32_t grid, uint16_t* out_dev,
                                    uint64_t tensor_cols, uint32_t* status_dev, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (plan.pass != 0 || tensor_cols > UINT32_MAX) return cudaErrorInvalidValue;
  LosslessKernel<0>::kernel<<<grid, 32 * kWarps, plan.smem_bytes, stream>>>(
      bytes_dev, tiles_dev, ids_dev, count, plan.exp_cap, plan.precision_cap, nullptr, out_dev,
      static_cast<uint32_t>(tensor_cols), 0, status_dev);
  return cudaGetLastError();
}

cudaError_t launch_gemv_bf16_fast(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                  uint32_t count, const LosslessPlan& plan, uint32_t grid, const uint16_t* x_dev,
                                  float* y_dev, uint32_t batch, uint32_t* status_dev, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (plan.pass == 0) return cudaErrorInvalidValue;
  for (uint32_t b0 = 0; b0 < batch; b0 += plan.pass) {
    const uint32_t nb = min(plan.pass, batch - b0);
    const bool launched = with_pass_kernel(plan.pass, [&](auto kernel_type) {
      using K = decltype(kernel_type);
      K::kernel<<<grid, 32 * kWarps, plan.smem_bytes, stream>>>(bytes_dev, tiles_dev, ids_dev, count, plan.exp_cap,
                                                               plan.precision_cap, x_dev + b0, y_dev + b0, batch, nb,
                                                               status_dev);
    });
    if (!launched) return cudaErrorInvalidValue;
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

#else  // no mbarriers in this toolkit: the host keeps every tile on the block-per-tile kernel

bool lossless_fast_built() { return false; }
LosslessPlan lossless_plan(uint32_t, uint32_t, uint32_t) { return LosslessPlan{}; }
cudaError_t launch_gemv_bf16_fast(const uint8_t*, const DevTile*, const uint32_t*, uint32_t, const LosslessPlan&,
                                  uint32_t, const uint16_t*, float*, uint32_t, uint32_t*, cudaStream_t) {
  return cudaErrorNotSupported;
}
cudaError_t launch_decode_bf16_fast(const uint8_t*, const DevTile*, const uint32_t*, uint32_t, const LosslessPlan&,
                                    uint32_t, uint16_t*, uint64_t, uint32_t*, cudaStream_t) {
  return cudaErrorNotSupported;
}

#endif  // WPACK_HAVE_MBAR_RING
}  // namespace wpack::gpu::detail
