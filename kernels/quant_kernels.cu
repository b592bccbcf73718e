// CUDA decode of lossy (quantized) .wpk tiles in shared memory, fused with GEMV.
// Byte layouts: docs/FORMAT.md "Lossy tensors"; the scalar reference is packer/quant_tile.cpp
// decode_quant_tile_ref(), which the decode kernel matches bit for bit (tests/gpu_tile_decode.cpp).
//
// Two kernel families:
//
// 1. Generic (one block of 256 threads per tile; any tile the packer writes):
//      global stored bytes --cp.async--> shared [stored | side | codes (1 B each) | scratch | prefix | rANS]
//      plane A (side data, bitmap): raw in place, or rANS-decoded by warp 0
//      bitmap (sparse): per 32-element chunk an exclusive prefix of set bits (block scan)
//      plane B (codes): raw packed -> unpacked to one byte per code; or rANS-decoded by warp 1
//      then per element: value = decode(code, scale, zero | table); decode writes float32,
//      gemv multiplies (warp per tile row, lanes along the row, one atomicAdd per row and batch;
//      x in shared memory in slices of up to kGenericXCols tile columns).
//
// 2. Streaming GEMV (tensors whose tiles are all dense with raw planes, batch 1..8): a persistent
//    grid; block b walks tiles [b*T/grid, (b+1)*T/grid) in row-major tile order, so consecutive
//    tiles share a tile row and the block keeps that row's partial sums in shared memory, writing
//    them to y (atomicAdd) only when the tile row changes or its range ends (stream-K over tiles:
//    every block gets the same number of tiles whatever the shape).
//
//      tiles t, t+1, ..., t+S-2 in flight (cp.async ring of S stages: stored bytes + the x slice)
//      stage (t % S):  [dir 8 B][scales fp16 (h,G)][zeros u8 (h,G)][codes, kBits each, row-major]
//      thread -> spans of 32 codes: span s = (tile row r = s / spr, span column j = s % spr),
//                spr = ceil(w / 32); s = threadIdx.x + 256 k
//      span: kBits words -> 32 codes -> sum_i v(code_i) * x[c_i][b]      (v: float(code) or table)
//            int:   scale * (sum_i code_i x_i - zero * sum_i x_i)         (sum x per span precomputed)
//            table: scale * sum_i values[code_i] x_i ;  lut: sum_i table[code_i] x_i
//      the spr spans of a row sit in adjacent lanes: shuffle-reduce, one lane adds to acc[r][b].
//
// Precision: float32 products and sums (the packer's dequantized weights are float32 values of the
// same formulas); the GEMV groups the per-span scale outside the sum, which changes rounding only.
#include <algorithm>
#include <cstdint>

#include <cuda_fp16.h>

#include "kernels/detail/align.h"
#include "kernels/detail/bf16.cuh"
#include "kernels/detail/mma_codes.cuh"  // bf16x2_sub, bf16x2_splat_int, mma_bf16_16816
#include "kernels/detail/rans_device.cuh"
#include "kernels/detail/smem_limit.cuh"  // allow_max_dynamic_smem, max_blocks_per_sm
#include "kernels/detail/tile_kernels.h"

namespace wpack::gpu::detail {
namespace {

constexpr uint32_t kThreads = 256;
constexpr uint32_t kWarps = kThreads / 32;
constexpr uint32_t kGenericBatch = 8;                    // batch columns per pass of the generic gemv
// Widest slice of x, in tile columns, that the generic gemv holds in shared memory (16 KiB at
// kGenericBatch columns): a wider tile, such as a one-tile [1, 16384] matrix, is multiplied a slice
// at a time, so x's share no longer grows with the tile's width. A multiple of 32: each lane then
// sums the same columns in the same order as with x whole, and y is the same to the bit.
constexpr uint32_t kGenericXCols = 512;

__device__ __forceinline__ float f16_bits_to_float(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

// Issues 16-byte cp.async copies of `bytes` (rounded up to 16) from global to shared; no commit.
// cp.async.cg bypasses L1: tile bytes are read once, by one block.
__device__ __forceinline__ void issue_copy(uint8_t* smem_dst, const uint8_t* global_src, uint32_t bytes) {
  const uint32_t chunks = align16(bytes) / 16;
  for (uint32_t i = threadIdx.x; i < chunks; i += kThreads) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst + 16 * i));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src + 16 * i));
  }
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void wait_copies() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

// Copies one 16-byte chunk of x into shared memory: cp.async when all 16 bytes are inside x; the
// last, partial chunk (valid < 16 bytes) with plain loads and zeros, so that nothing past the end
// of x is read. The caller's wait + __syncthreads makes both kinds visible.
__device__ __forceinline__ void copy_x_chunk(uint8_t* smem_dst, const uint8_t* global_src, uint32_t valid) {
  if (valid == 16) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src));
    return;
  }
  for (uint32_t k = 0; k < 16; ++k) smem_dst[k] = k < valid ? global_src[k] : uint8_t{0};
}

// In a ring of `stages` buffers with one commit group per tile and stages - 1 tiles in flight:
// waits until the oldest group (the tile about to be used) has landed. wait_group takes an immediate.
__device__ __forceinline__ void wait_oldest_stage(uint32_t stages) {
  switch (stages) {
    case 2: wait_copies<0>(); break;
    case 3: wait_copies<1>(); break;
    case 4: wait_copies<2>(); break;
    case 5: wait_copies<3>(); break;
    case 6: wait_copies<4>(); break;
    case 7: wait_copies<5>(); break;
    default: wait_copies<6>(); break;
  }
}

// Issues the copy of x bytes [start, start + bytes) into smem_dst, from the 16-byte boundary at or
// below `start` (smem_dst then holds the slice at offset start % 16). x holds x_total_bytes; no
// byte past it is read (copy_x_chunk). No commit.
__device__ __forceinline__ void issue_x_slice(uint8_t* smem_dst, const uint8_t* x_bytes, uint64_t x_total_bytes,
                                              uint64_t start, uint64_t bytes) {
  const uint64_t aligned = start & ~uint64_t{15};
  const uint32_t chunks = static_cast<uint32_t>((start + bytes - aligned + 15) / 16);
  for (uint32_t i = threadIdx.x; i < chunks; i += kThreads) {
    const uint64_t from = aligned + 16ull * i;
    const uint32_t valid =
        from >= x_total_bytes ? 0u : static_cast<uint32_t>(x_total_bytes - from < 16 ? x_total_bytes - from : 16);
    copy_x_chunk(smem_dst + 16 * i, x_bytes + from, valid);
  }
}

// Exclusive prefix sum over the block (every thread calls it); returns the thread's prefix and
// writes the block total to *total. `scratch`: kWarps + 1 uint32 of shared memory.
__device__ uint32_t block_exclusive_scan(uint32_t v, uint32_t* scratch, uint32_t* total) {
  const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  uint32_t inclusive = v;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const uint32_t n = __shfl_up_sync(0xFFFFFFFFu, inclusive, off);
    if (lane >= static_cast<uint32_t>(off)) inclusive += n;
  }
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t sum = 0;
    for (uint32_t w = 0; w < kWarps; ++w) {
      const uint32_t s = scratch[w];
      scratch[w] = sum;
      sum += s;
    }
    scratch[kWarps] = sum;
  }
  __syncthreads();
  const uint32_t result = scratch[warp] + inclusive - v;
  *total = scratch[kWarps];
  __syncthreads();
  return result;
}

// ---- the per-tile geometry of plane A (docs/FORMAT.md "Quantized tiles") ----
struct SideGeometry {
  uint32_t groups;        // G: groups per tile row (grouped schemes), else 0
  uint32_t scale_bytes;   // 2 h G
  uint32_t zero_bytes;    // h G (zero points), else 0
  uint32_t bitmap_bytes;  // ceil(h w / 8) (sparse), else 0
  __device__ uint32_t a_bytes() const { return scale_bytes + zero_bytes + bitmap_bytes; }
};
__device__ __forceinline__ SideGeometry side_geometry(const QuantDevParams& p, uint32_t h, uint32_t w, bool sparse) {
  SideGeometry g{};
  if (p.grouped) {
    g.groups = (w + p.group - 1) / p.group;
    g.scale_bytes = 2 * h * g.groups;
    if (p.zero_points) g.zero_bytes = h * g.groups;
  }
  if (sparse) g.bitmap_bytes = (h * w + 7) / 8;
  return g;
}

// The scale and zero of tile-local row r and group g (zero unused for table kinds).
struct ScaleZero {
  float scale, zero;
};
__device__ __forceinline__ ScaleZero scale_zero(const QuantDevParams& p, const uint8_t* side, const SideGeometry& sg,
                                                uint32_t r, uint32_t g, uint64_t tensor_row) {
  ScaleZero sz{1.0f, p.symmetric_zero};
  if (p.kind == kQuantLut) return sz;
  if (p.grouped) {
    const uint32_t i = r * sg.groups + g;
    sz.scale = f16_bits_to_float(static_cast<uint16_t>(side[2 * i] | (side[2 * i + 1] << 8)));
    if (p.zero_points) sz.zero = static_cast<float>(side[sg.scale_bytes + i]);
  } else {
    sz.scale = p.row_scales_dev[tensor_row];
  }
  return sz;
}

// The dequantized value of `code`, exactly as packer/quantize.cpp RowDecoder::decode computes it.
__device__ __forceinline__ float dequantize_value(const QuantDevParams& p, const ScaleZero& sz, uint32_t code,
                                                  uint64_t tensor_row) {
  if (p.kind == kQuantInt) return __fmul_rn(__fsub_rn(static_cast<float>(code), sz.zero), sz.scale);
  if (p.kind == kQuantTable) return __fmul_rn(p.values_dev[code], sz.scale);
  const uint64_t table = p.lut_rows ? tensor_row / p.lut_rows : 0;
  return p.values_dev[(table << p.bits) + code];
}

// Code k of a packed plane (LSB-first, `bits` <= 8 bits each: at most two bytes). `bytes` = size.
__device__ __forceinline__ uint32_t packed_code(const uint8_t* packed, uint32_t bytes, uint32_t k, uint32_t bits) {
  const uint32_t bit = k * bits;
  const uint32_t lo = packed[bit >> 3];
  const uint32_t hi = (bit >> 3) + 1 < bytes ? packed[(bit >> 3) + 1] : 0u;
  return ((lo | (hi << 8)) >> (bit & 7u)) & ((1u << bits) - 1u);
}

// ---- generic kernels: one tile per block ----

// Tile columns of x the generic gemv stages at once for this plan: the widest tile, at most
// kGenericXCols (the host's quant_generic_smem_bytes and the kernel both take it from here).
__host__ __device__ __forceinline__ uint32_t generic_x_cols(const QuantSmemPlan& plan) {
  if (plan.x_cols != 0) return plan.x_cols;  // the whole width (the host found it fits)
  return plan.cols_cap == 0 ? 1u : plan.cols_cap < kGenericXCols ? plan.cols_cap : kGenericXCols;
}

struct GenericLayout {
  uint32_t stored, side, codes, scratch, prefix, tables, freqs, x, total;
  __host__ __device__ GenericLayout(const QuantSmemPlan& plan, uint32_t x_floats) {
    stored = 0;
    side = stored + plan.stored_cap;
    codes = side + plan.side_cap;
    scratch = codes + align16(plan.elements_cap);
    prefix = scratch + align16(plan.elements_cap);
    tables = prefix + align16(plan.elements_cap / 32 * 4 + 4);
    freqs = tables + 2 * (4u << plan.precision_cap);  // warps 0 and 1 decode rANS planes
    x = freqs + 2 * 2 * 256 * 4;
    total = x + 4 * x_floats;
  }
};

// What a decoded tile looks like in shared memory.
struct TileView {
  const uint8_t* side;      // plane A: scales, zeros, bitmap
  const uint8_t* codes;     // one code per byte: every element (dense) or the occupied ones (sparse)
  const uint32_t* prefix;   // sparse: set bits before chunk q of 32 elements
  SideGeometry geometry;
  bool sparse;
};

// Loads tile `tile` into shared memory and decodes both planes (codes unpacked to bytes). Returns
// the tile's status (block-uniform); on kOk, *view describes the tile. Every thread must call it.
__device__ uint32_t decode_quant_tile_smem(const uint8_t* bytes_dev, const DevTile& tile, const QuantDevParams& p,
                                           const QuantSmemPlan& plan, uint8_t* smem, TileView* view,
                                           uint32_t* block_shared /* kWarps + 3 */) {
  const GenericLayout layout(plan, 0);
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  // Block-uniform checks from the tile record (nothing loaded yet).
  if (tile.codec == kCodecZstd) return kUnsupportedCodec;
  if (tile.codec != kCodecNone && tile.codec != kCodecRans) return kCorrupt;
  if (tile.filter != kLayoutDense && tile.filter != kLayoutSparse && tile.filter != kLayoutDenseZeroRel) return kCorrupt;
  const bool sparse = tile.filter == kLayoutSparse;
  const bool zero_rel = tile.filter == kLayoutDenseZeroRel;
  if (zero_rel && (tile.codec != kCodecRans || !p.zero_points)) return kCorrupt;
  const uint32_t h = tile.rows, w = tile.cols;
  const uint64_t n64 = uint64_t{h} * w;
  if (n64 == 0) return kCorrupt;
  if (n64 > plan.elements_cap || tile.stored_size > plan.stored_cap) return kTooLarge;
  const uint32_t n = static_cast<uint32_t>(n64);
  const SideGeometry sg = side_geometry(p, h, w, sparse);
  const uint32_t a_bytes = sg.a_bytes();
  if (tile.raw_size < a_bytes) return kCorrupt;
  if (a_bytes > plan.side_cap) return kTooLarge;
  const uint32_t b_bytes = tile.raw_size - a_bytes;
  if (tile.stored_size < 8) return kCorrupt;

  uint8_t* stored = smem + layout.stored;
  issue_copy(stored, bytes_dev + tile.offset, tile.stored_size);
  commit_copies();
  wait_copies<0>();
  __syncthreads();

  // Plane directory: 2 words (size, bit 31 raw); the planes end exactly at the stored end.
  const uint32_t word_a = load_u32_le(stored), word_b = load_u32_le(stored + 4);
  const uint32_t size_a = word_a & ~kRawPlaneBit, size_b = word_b & ~kRawPlaneBit;
  const bool raw_a = (word_a & kRawPlaneBit) != 0, raw_b = (word_b & kRawPlaneBit) != 0;
  if (size_a > tile.stored_size - 8 || size_b != tile.stored_size - 8 - size_a) return kCorrupt;
  if (tile.codec == kCodecNone && (!raw_a || !raw_b)) return kCorrupt;
  if (raw_a && size_a != a_bytes) return kCorrupt;
  // an empty plane is stored raw (packer/quant_tile.cpp decode_plane refuses a coded one)
  if ((!raw_a && a_bytes == 0) || (!raw_b && b_bytes == 0)) return kCorrupt;
  const uint8_t* plane_a = stored + 8;
  const uint8_t* plane_b = stored + 8 + size_a;

  // The planes' decode statuses, one word each: plane B's is written while some threads may still
  // be reading plane A's (the scan uses [0, kWarps]).
  uint32_t* status_a = block_shared + kWarps + 1;
  uint32_t* status_b = block_shared + kWarps + 2;
  if (threadIdx.x == 0) *status_a = *status_b = kOk;
  uint32_t* table = reinterpret_cast<uint32_t*>(smem + layout.tables);
  uint32_t* freq = reinterpret_cast<uint32_t*>(smem + layout.freqs);
  __syncthreads();
  const uint8_t* side = plane_a;
  if (!raw_a) {
    uint8_t* side_out = smem + layout.side;
    if (warp == 0) {
      const uint32_t st = decode_stream_warp(plane_a, size_a, a_bytes, side_out, table, freq, freq + 256,
                                             plan.precision_cap, 8);
      if (st != kOk && lane == 0) *status_a = st;
    }
    side = side_out;
    __syncthreads();
    if (*status_a != kOk) return *status_a;
  }
  // Scales that are infinity or NaN (the quantizer writes finite ones only) make the tile corrupt,
  // as in the CPU reference: the high byte of each scale holds its exponent field.
  bool bad_scale = false;
  for (uint32_t i = threadIdx.x; i < sg.scale_bytes / 2; i += kThreads)
    bad_scale |= (side[2 * i + 1] & 0x7Cu) == 0x7Cu;
  if (__syncthreads_or(bad_scale)) return kCorrupt;

  // Occupied elements: a block scan of the bitmap's 32-element chunks.
  uint32_t count = n;
  uint32_t* prefix = reinterpret_cast<uint32_t*>(smem + layout.prefix);
  if (sparse) {
    const uint8_t* bitmap = side + sg.scale_bytes + sg.zero_bytes;
    const uint32_t chunks = (n + 31) / 32;
    const uint32_t per_thread = (chunks + kThreads - 1) / kThreads;
    const uint32_t first = threadIdx.x * per_thread;
    uint32_t mine = 0;
    for (uint32_t q = first; q < first + per_thread && q < chunks; ++q) {
      uint32_t bits = 0;
      for (uint32_t b = 0; b < 4 && 4 * q + b < sg.bitmap_bytes; ++b) bits |= uint32_t{bitmap[4 * q + b]} << (8 * b);
      mine += __popc(bits);
    }
    uint32_t running = block_exclusive_scan(mine, block_shared, &count);
    for (uint32_t q = first; q < first + per_thread && q < chunks; ++q) {
      prefix[q] = running;
      uint32_t bits = 0;
      for (uint32_t b = 0; b < 4 && 4 * q + b < sg.bitmap_bytes; ++b) bits |= uint32_t{bitmap[4 * q + b]} << (8 * b);
      running += __popc(bits);
    }
    if ((n & 7u) && (bitmap[sg.bitmap_bytes - 1] >> (n & 7u)) != 0) return kCorrupt;  // padding bits must be 0
  }
  if (uint64_t{b_bytes} != (uint64_t{count} * p.bits + 7) / 8) return kCorrupt;
  if (raw_b && size_b != b_bytes) return kCorrupt;
  if (zero_rel && raw_b) return kCorrupt;  // zero-relative symbols are only ever rANS-coded

  // Plane B -> one code per byte.
  uint8_t* codes = smem + layout.codes;
  const uint8_t* packed = plane_b;
  if (!raw_b) {
    const bool direct = p.code_symbol_bits == p.bits;  // rANS symbols are the codes themselves
    uint8_t* out = direct ? codes : smem + layout.scratch;
    if (!direct && b_bytes > plan.elements_cap) return kTooLarge;  // uniform
    if (warp == 1) {
      const uint32_t st = decode_stream_warp(plane_b, size_b, direct ? count : b_bytes, out, table + (1u << plan.precision_cap),
                                             freq + 512, freq + 768, plan.precision_cap, direct ? p.bits : 8);
      if (st != kOk && lane == 0) *status_b = st;
    }
    __syncthreads();
    if (*status_b != kOk) return *status_b;
    if (direct) {
      packed = nullptr;
    } else {
      packed = out;
    }
  }
  if (packed) {
    const uint32_t tail_bits = (count * p.bits) & 7u;  // the last byte's padding bits must be 0, as on the CPU
    if (tail_bits && (packed[b_bytes - 1] >> tail_bits) != 0) return kCorrupt;  // uniform: one byte, read by all
    for (uint32_t k = threadIdx.x; k < count; k += kThreads) codes[k] = static_cast<uint8_t>(packed_code(packed, b_bytes, k, p.bits));
  }
  __syncthreads();
  if (p.nan_codes) {  // a code whose value in the table is NaN is corrupt, as on the CPU
    bool nan_code = false;
    for (uint32_t k = threadIdx.x; k < count; k += kThreads) nan_code |= isnan(p.values_dev[codes[k]]);
    if (__syncthreads_or(nan_code)) return kCorrupt;
  }
  if (zero_rel) {  // dense (count == n): code = (s + zero[r][c / group]) mod 2^bits, as decode_quant_tile_ref
    for (uint32_t k = threadIdx.x; k < n; k += kThreads) {
      const uint32_t r = k / w, c = k - r * w;
      const uint32_t zero = side[sg.scale_bytes + r * sg.groups + c / p.group];
      codes[k] = static_cast<uint8_t>((codes[k] + zero) & ((1u << p.bits) - 1u));
    }
    __syncthreads();
  }
  view->side = side;
  view->codes = codes;
  view->prefix = prefix;
  view->geometry = sg;
  view->sparse = sparse;
  return kOk;
}

// Value of tile element (r, c) of a decoded tile; +0.0f for an unoccupied element of a sparse tile.
__device__ __forceinline__ float tile_value(const QuantDevParams& p, const TileView& v, const DevTile& tile, uint32_t r,
                                            uint32_t c) {
  const uint32_t e = r * tile.cols + c;
  uint32_t k = e;
  if (v.sparse) {
    const uint8_t* bitmap = v.side + v.geometry.scale_bytes + v.geometry.zero_bytes;
    if (!((bitmap[e >> 3] >> (e & 7u)) & 1u)) return 0.0f;
    const uint32_t q = e / 32;
    uint32_t bits = 0;
    for (uint32_t b = 0; b < 4 && 4 * q + b < v.geometry.bitmap_bytes; ++b) bits |= uint32_t{bitmap[4 * q + b]} << (8 * b);
    k = v.prefix[q] + __popc(bits & ((1u << (e & 31u)) - 1u));
  }
  const uint64_t tensor_row = uint64_t{tile.row0} + r;
  const uint32_t g = p.grouped ? c / p.group : 0;
  return dequantize_value(p, scale_zero(p, v.side, v.geometry, r, g, tensor_row), v.codes[k], tensor_row);
}

__global__ void __launch_bounds__(kThreads) quant_decode_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // (tile_count)
    QuantDevParams params, QuantSmemPlan plan,
    uint64_t tensor_cols,                   // elements per row of the output
    float* __restrict__ out_dev,            // (rows, tensor_cols) float32
    uint32_t* __restrict__ status_dev) {    // (tile_count)
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ uint32_t block_shared[kWarps + 3];
  TileView view;  // each thread's own copy (the same values): a shared one was written by every thread
  const DevTile tile = tiles_dev[blockIdx.x];
  const uint32_t status = decode_quant_tile_smem(bytes_dev, tile, params, plan, smem, &view, block_shared);
  if (threadIdx.x == 0) status_dev[blockIdx.x] = status;
  if (status != kOk) return;
  const uint32_t n = tile.rows * tile.cols;
  for (uint32_t e = threadIdx.x; e < n; e += kThreads) {
    const uint32_t r = e / tile.cols, c = e - r * tile.cols;
    out_dev[(uint64_t{tile.row0} + r) * tensor_cols + tile.col0 + c] = tile_value(params, view, tile, r, c);
  }
}

// Stages x rows [col0, col0 + cols) (tensor columns), batch columns [b0, b0 + nb), as float
// xs[c * kGenericBatch + b] (0 for b >= nb: the pass's unused columns). Every thread calls it.
__device__ __forceinline__ void stage_generic_x(float* xs, const uint16_t* x_dev, uint64_t col0, uint32_t cols,
                                                uint32_t batch, uint32_t b0, uint32_t nb) {
  for (uint32_t i = threadIdx.x; i < cols * kGenericBatch; i += kThreads) {
    const uint32_t c = i / kGenericBatch, b = i % kGenericBatch;
    xs[i] = b < nb ? bf16_bits_to_float(x_dev[(col0 + c) * batch + b0 + b]) : 0.0f;
  }
}

// Adds tile row r's products with the x slice xs (tile columns [c0, c0 + cols)) to the lane's
// acc: lane l takes columns c0 + l, c0 + l + 32, ... in order (c0 a multiple of 32 across slices,
// so a lane's fmaf chain is the one it would be with x whole).
__device__ __forceinline__ void accumulate_generic_row(const QuantDevParams& p, const TileView& view,
                                                       const DevTile& tile, uint32_t r, uint32_t c0, uint32_t cols,
                                                       const float* xs, float (&acc)[kGenericBatch]) {
  for (uint32_t c = threadIdx.x & 31; c < cols; c += 32) {
    const float v = tile_value(p, view, tile, r, c0 + c);
#pragma unroll
    for (uint32_t b = 0; b < kGenericBatch; ++b) acc[b] = fmaf(v, xs[c * kGenericBatch + b], acc[b]);
  }
}

// Sums acc over the warp and adds batch column b0 + b of the row's total to y[row][b0 + b] (lane b,
// b < nb). The whole warp calls it.
__device__ __forceinline__ void add_generic_row(float (&acc)[kGenericBatch], float* y_dev, uint64_t row,
                                                uint32_t batch, uint32_t b0, uint32_t nb) {
  const uint32_t lane = threadIdx.x & 31;
#pragma unroll
  for (uint32_t b = 0; b < kGenericBatch; ++b) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc[b] += __shfl_xor_sync(0xFFFFFFFFu, acc[b], off);
  }
  if (lane < nb) {
    float mine = 0.f;
#pragma unroll
    for (uint32_t b = 0; b < kGenericBatch; ++b)
      if (b == lane) mine = acc[b];
    atomicAdd(&y_dev[row * batch + b0 + lane], mine);
  }
}

__global__ void __launch_bounds__(kThreads) quant_gemv_generic_kernel(
    const uint8_t* __restrict__ bytes_dev, const DevTile* __restrict__ tiles_dev,
    const uint32_t* __restrict__ ids_dev,  // nullptr: block k takes tile k
    QuantDevParams params, QuantSmemPlan plan,
    const uint16_t* __restrict__ x_dev,  // (K, batch) BF16 bits
    float* __restrict__ y_dev,           // (N, batch), zeroed before the launch
    uint32_t batch,                      // 1..64
    uint32_t* __restrict__ status_dev) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ uint32_t block_shared[kWarps + 3];
  TileView view;  // each thread's own copy (the same values): a shared one was written by every thread
  const uint32_t id = ids_dev ? ids_dev[blockIdx.x] : blockIdx.x;
  const DevTile tile = tiles_dev[id];
  const uint32_t status = decode_quant_tile_smem(bytes_dev, tile, params, plan, smem, &view, block_shared);
  if (threadIdx.x == 0) status_dev[id] = status;
  if (status != kOk) return;
  float* xs = reinterpret_cast<float*>(smem + GenericLayout(plan, 0).x);  // (x_cols, kGenericBatch)
  const uint32_t x_cols = generic_x_cols(plan);
  // A tile no wider than x_cols has its x staged once per pass. A wider one is staged a slice of
  // x_cols columns at a time, for each round of kWarps rows: x is read rounds times over (from
  // L2), the price of holding 16 KiB of it rather than the whole width's.
  const bool whole = tile.cols <= x_cols;
  const uint32_t warp = threadIdx.x / 32;
  for (uint32_t b0 = 0; b0 < batch; b0 += kGenericBatch) {
    const uint32_t nb = min(kGenericBatch, batch - b0);
    if (whole) {
      __syncthreads();  // the previous pass is done with xs
      stage_generic_x(xs, x_dev, tile.col0, tile.cols, batch, b0, nb);
      __syncthreads();
    }
    // Round r0: warp w takes row r0 + w (the rows r = w, w + kWarps, ... of a warp, in order). Every
    // thread runs every round and slice, for the slices' __syncthreads.
    for (uint32_t r0 = 0; r0 < tile.rows; r0 += kWarps) {
      const uint32_t r = r0 + warp;
      float acc[kGenericBatch];
#pragma unroll
      for (uint32_t b = 0; b < kGenericBatch; ++b) acc[b] = 0.f;
      for (uint32_t c0 = 0; c0 < tile.cols; c0 += x_cols) {
        const uint32_t cols = min(x_cols, tile.cols - c0);
        if (!whole) {
          __syncthreads();  // every warp is done with the previous slice (or pass)
          stage_generic_x(xs, x_dev, uint64_t{tile.col0} + c0, cols, batch, b0, nb);
          __syncthreads();
        }
        if (r < tile.rows) accumulate_generic_row(params, view, tile, r, c0, cols, xs, acc);
      }
      if (r < tile.rows) add_generic_row(acc, y_dev, uint64_t{tile.row0} + r, batch, b0, nb);
    }
  }
}

// ---- the streaming GEMV ----

struct StreamLayout {
  uint32_t stage_bytes, x_stage, xs, xsum, acc, values, total;
  __host__ __device__ StreamLayout(const QuantStreamPlan& plan, uint32_t batch) {
    x_stage = plan.stored_cap;                                   // x slice of the tile, BF16, from a 16-aligned start
    stage_bytes = plan.stored_cap + align16(plan.tile_cols * batch * 2) + 16;
    const uint32_t spans = (plan.tile_cols + 31) / 32;
    xs = plan.stages * stage_bytes;                              // float [spans][32 * batch + 4] (skewed: no bank conflicts)
    xsum = xs + align16(spans * (32 * batch + 4) * 4);           // float [spans][batch]
    acc = xsum + align16(spans * batch * 4);                     // float [tile_rows][batch]
    values = acc + align16(plan.tile_rows * batch * 4);          // float [256]: code values (table kinds)
    total = values + 256 * 4;
  }
};

// Issues the copies of tile `t` (stored bytes and its x slice) into `stage`; no commit.
template <uint32_t kBatch>
__device__ __forceinline__ void issue_stream_tile(const uint8_t* bytes_dev, const DevTile& tile, const uint8_t* x_bytes,
                                                  uint64_t x_total_bytes, uint8_t* stage, uint32_t x_stage) {
  issue_copy(stage, bytes_dev + tile.offset, tile.stored_size);
  issue_x_slice(stage + x_stage, x_bytes, x_total_bytes, uint64_t{tile.col0} * kBatch * 2,
                uint64_t{tile.cols} * kBatch * 2);
}

// Code i (0..31) of a span held in kBits words: bits [i*kBits, (i+1)*kBits) of the word array.
template <uint32_t kBits>
__device__ __forceinline__ uint32_t span_code(const uint32_t (&words)[kBits], uint32_t i) {
  const uint32_t bit = i * kBits, word = bit / 32, off = bit % 32;  // constants after unrolling
  uint32_t v;
  if (off + kBits <= 32 || word + 1 >= kBits) {
    v = words[word] >> off;
  } else {
    v = __funnelshift_r(words[word], words[word + 1], off);
  }
  return v & ((1u << kBits) - 1u);
}

template <uint32_t kBits, uint32_t kBatch>
__global__ void __launch_bounds__(kThreads) quant_gemv_stream_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // (tile_count), row-major over the tile grid
    uint64_t tile_count, QuantDevParams params, QuantStreamPlan plan,
    const uint16_t* __restrict__ x_dev,     // (K, kBatch) BF16 bits
    uint64_t x_elements,                    // K * kBatch
    float* __restrict__ y_dev,              // (N, y_stride): columns [y_col0, y_col0 + kBatch) added to
    uint32_t y_stride, uint32_t y_col0,     // (zeroed before the launch)
    uint32_t* __restrict__ status_dev) {    // (tile_count)
  static_assert(kBits >= 2 && kBits <= 8, "codes of 2..8 bits");
  static_assert(kBatch >= 1 && kBatch <= 8, "batch 1..8");
  static_assert(kThreads % 32 == 0 && 256 % kThreads == 0, "span mapping assumes 256 threads");
  extern __shared__ __align__(16) uint8_t smem[];
  const StreamLayout layout(plan, kBatch);
  const uint32_t lane = threadIdx.x & 31;
  const uint64_t t_begin = blockIdx.x * tile_count / gridDim.x, t_end = (blockIdx.x + 1ull) * tile_count / gridDim.x;
  const uint32_t x_row = 32 * kBatch + 4;  // floats per span in xs (4 floats of skew)
  float* xs = reinterpret_cast<float*>(smem + layout.xs);
  float* xsum = reinterpret_cast<float*>(smem + layout.xsum);
  float* acc = reinterpret_cast<float*>(smem + layout.acc);
  float* values = reinterpret_cast<float*>(smem + layout.values);
  const uint8_t* x_bytes = reinterpret_cast<const uint8_t*>(x_dev);
  const uint64_t x_total_bytes = x_elements * 2;

  for (uint32_t i = threadIdx.x; i < plan.tile_rows * kBatch; i += kThreads) acc[i] = 0.f;
  if (params.kind == kQuantTable || (params.kind == kQuantLut && params.lut_rows == 0))
    for (uint32_t i = threadIdx.x; i < (1u << kBits); i += kThreads) values[i] = params.values_dev[i];

  // Prologue: tiles t_begin .. t_begin + S - 2 in flight (one commit group each, empty past the end).
  for (uint32_t s = 0; s + 1 < plan.stages; ++s) {
    if (t_begin + s < t_end)
      issue_stream_tile<kBatch>(bytes_dev, tiles_dev[t_begin + s], x_bytes, x_total_bytes,
                                smem + s * layout.stage_bytes, layout.x_stage);
    commit_copies();
  }

  for (uint64_t t = t_begin; t < t_end; ++t) {
    const uint32_t i = static_cast<uint32_t>(t - t_begin);
    // Groups committed so far: tiles up to t + S - 2; all but the newest S - 2 are complete.
    wait_oldest_stage(plan.stages);
    __syncthreads();  // tile t visible to all; every thread is done with tile t - 1 (its stage is free)
    {
      const uint64_t next = t + plan.stages - 1;
      if (next < t_end)
        issue_stream_tile<kBatch>(bytes_dev, tiles_dev[next], x_bytes, x_total_bytes,
                                  smem + ((i + plan.stages - 1) % plan.stages) * layout.stage_bytes, layout.x_stage);
      commit_copies();
    }
    const DevTile tile = tiles_dev[t];
    const uint8_t* stage = smem + (i % plan.stages) * layout.stage_bytes;
    const uint32_t h = tile.rows, w = tile.cols;
    const uint32_t spr = (w + 31) / 32;
    if (h > plan.tile_rows || w > plan.tile_cols || tile.stored_size > plan.stored_cap) {
      if (threadIdx.x == 0) status_dev[t] = kTooLarge;  // the host validated every tile; never taken
      continue;
    }

    // x slice -> float, skewed per span; sum of x per (span, batch) for the int kinds.
    const uint16_t* xb = reinterpret_cast<const uint16_t*>(stage + layout.x_stage) + ((tile.col0 * kBatch) & 7u);
    for (uint32_t e = threadIdx.x; e < w * kBatch; e += kThreads) {
      const uint32_t c = e / kBatch, b = e % kBatch;
      xs[(c / 32) * x_row + (c % 32) * kBatch + b] = bf16_bits_to_float(xb[e]);
    }
    // A stride loop: a tile wider than 32 * kThreads / kBatch columns has more sums than threads.
    for (uint32_t e = threadIdx.x; params.kind == kQuantInt && e < spr * kBatch; e += kThreads) {
      const uint32_t j = e / kBatch, b = e % kBatch;
      float s = 0.f;
      for (uint32_t c = 32 * j; c < min(w, 32 * j + 32); ++c) s += bf16_bits_to_float(xb[c * kBatch + b]);
      xsum[j * kBatch + b] = s;
    }
    __syncthreads();

    const SideGeometry sg = side_geometry(params, h, w, false);
    const uint8_t* side = stage + 8;
    const uint32_t codes_at = 8 + sg.a_bytes();
    const uint8_t* codes = stage + codes_at;
    const uint32_t code_bytes = tile.stored_size - codes_at;
    const bool word_path = (w % 32 == 0) && (codes_at % 4 == 0);  // spans start on word boundaries
    const bool shuffle_reduce = spr <= 32 && (spr & (spr - 1)) == 0;  // a row's spans fill adjacent lanes
    const uint32_t spans = h * spr;
    for (uint32_t base = threadIdx.x & ~31u; base < spans; base += kThreads) {
      const uint32_t s = base + lane;
      const bool active = s < spans;
      const uint32_t r = active ? s / spr : 0, j = active ? s % spr : 0;
      const uint64_t tensor_row = uint64_t{tile.row0} + r;
      float part[kBatch];
#pragma unroll
      for (uint32_t b = 0; b < kBatch; ++b) part[b] = 0.f;
      if (active) {
        const float* xj = xs + j * x_row;
        const float* table = values;
        if (params.kind == kQuantLut && params.lut_rows)
          table = params.values_dev + ((tensor_row / params.lut_rows) << kBits);
        if (word_path) {
          uint32_t words[kBits];
          const uint32_t* src = reinterpret_cast<const uint32_t*>(codes + (r * w + 32 * j) / 32 * 4 * kBits);
#pragma unroll
          for (uint32_t k = 0; k < kBits; ++k) words[k] = src[k];
#pragma unroll
          for (uint32_t c = 0; c < 32; ++c) {
            const uint32_t code = span_code<kBits>(words, c);
            const float v = params.kind == kQuantInt ? static_cast<float>(code) : table[code];
#pragma unroll
            for (uint32_t b = 0; b < kBatch; ++b) part[b] = fmaf(v, xj[c * kBatch + b], part[b]);
          }
        } else {
          const uint32_t cols = min(32u, w - 32 * j);
          for (uint32_t c = 0; c < cols; ++c) {
            const uint32_t code = packed_code(codes, code_bytes, r * w + 32 * j + c, kBits);
            const float v = params.kind == kQuantInt ? static_cast<float>(code) : table[code];
#pragma unroll
            for (uint32_t b = 0; b < kBatch; ++b) part[b] = fmaf(v, xj[c * kBatch + b], part[b]);
          }
        }
        const ScaleZero sz = scale_zero(params, side, sg, r, params.grouped ? (32 * j) / params.group : 0, tensor_row);
#pragma unroll
        for (uint32_t b = 0; b < kBatch; ++b) {
          if (params.kind == kQuantInt) part[b] = sz.scale * (part[b] - sz.zero * xsum[j * kBatch + b]);
          else part[b] *= sz.scale;
        }
      }
      if (shuffle_reduce) {
#pragma unroll
        for (uint32_t b = 0; b < kBatch; ++b)
          for (uint32_t off = 1; off < spr; off *= 2) part[b] += __shfl_xor_sync(0xFFFFFFFFu, part[b], off);
        if (active && j == 0) {
#pragma unroll
          for (uint32_t b = 0; b < kBatch; ++b) acc[r * kBatch + b] += part[b];
        }
      } else if (active) {
#pragma unroll
        for (uint32_t b = 0; b < kBatch; ++b) atomicAdd(&acc[r * kBatch + b], part[b]);
      }
    }
    if (threadIdx.x == 0) status_dev[t] = kOk;

    // Flush the row partials when the next tile starts another tile row (or the range ends).
    const bool last = t + 1 == t_end || tiles_dev[t + 1].row0 != tile.row0;
    if (last) {
      __syncthreads();
      for (uint32_t e = threadIdx.x; e < h * kBatch; e += kThreads) {
        atomicAdd(&y_dev[(uint64_t{tile.row0} + e / kBatch) * y_stride + y_col0 + e % kBatch], acc[e]);
        acc[e] = 0.f;
      }
    }
  }
  wait_copies<0>();  // leave no copy in flight into shared memory at exit
}

template <uint32_t kBits, uint32_t kBatch>
cudaError_t launch_stream(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                          const QuantDevParams& params, const QuantStreamPlan& plan, uint32_t grid,
                          const uint16_t* x_dev, uint64_t x_elements, float* y_dev, uint32_t y_stride,
                          uint32_t y_col0, uint32_t* status_dev, cudaStream_t stream) {
  const uint64_t smem = StreamLayout(plan, kBatch).total;
  const cudaError_t err = allow_max_dynamic_smem<&quant_gemv_stream_kernel<kBits, kBatch>>();
  if (err != cudaSuccess) return err;
  quant_gemv_stream_kernel<kBits, kBatch><<<grid, kThreads, smem, stream>>>(
      bytes_dev, tiles_dev, tile_count, params, plan, x_dev, x_elements, y_dev, y_stride, y_col0, status_dev);
  return cudaGetLastError();
}

template <uint32_t kBits, uint32_t kBatch>
int stream_occupancy(const QuantStreamPlan& plan) {
  return max_blocks_per_sm<&quant_gemv_stream_kernel<kBits, kBatch>>(kThreads, StreamLayout(plan, kBatch).total);
}

// ---- the tensor-core streaming GEMV (int8, int4; batch 1..64) ----
//
// Same tile walk and cp.async ring as above; the multiply runs on mma.sync m16n8k16 (BF16 in,
// float32 accumulate). Warp w takes tile rows [16w, 16w + 16) (clamped at the tile edge), lane
// (g = lane / 4, t = lane % 4) holds A rows g and g + 8 and B batch column n = g (+ 8 per n-tile).
// One MMA per 256 codes; unused batch columns cost nothing (the kernel is bound by memory).
//
// Codes become BF16 without conversion instructions (the PRMT/LOP3 tricks of FasterTransformer
// and Marlin, adapted to BF16 and to wpack's plain row-major LSB-first packing):
//   int4 word w = codes c0..c7 of columns 8j..8j+7 (nibble i = c_i)
//     E = w & 0x0F0F0F0F = [c0 c2 c4 c6], O = (w >> 4) & 0x0F0F0F0F = [c1 c3 c5 c7]   (bytes)
//     I = prmt(E, O) = [c0 c1 c2 c3] (and [c4 c5 c6 c7]); pair(c0, c1) = prmt(I, 0x43434343)
//       = bytes [c0 0x43 c1 0x43] = bf16x2 (128 + c0, 128 + c1)     (0x4300 = 128.0; exact, c < 128)
//     then one HSUB2 of bf16x2 (128 + zero) gives (c - zero) exactly.
//   int8 word = codes c0..c3, split into nibbles: lo pairs use 0x43 (128 + lo), hi pairs 0x45
//     (2048 + 16 hi); subtracting 128 and 2176 leaves lo and 16 hi - 128, which sum to c - 128.
// Lane t's word j covers 8 (int4) or 4 (int8) consecutive columns; the MMA's k-slots are those
// columns in order, so B is the plain x row: b = x[n][8j .. 8j + 7] (one 16-byte load; int8: 8 bytes).
// Each k-step (4 lanes x kV words) stays inside one scale group; the group's MMA sum is scaled into
// float32 row partials held in registers across the tiles of a tile row.
//
//   x in shared memory: batch 1 uses the staged slice as is (it is already "x[n][col]"); a larger
//   batch is transposed from (col, n) to xt (n, col) once per tile.

template <uint32_t kBits>
struct TcCodes {
  static constexpr uint32_t kPerWord = 32 / kBits;        // codes per 32-bit word: 8 or 4
  // The four bf16x2 A registers of a word (k-slot order), after subtracting `offset` (bf16x2).
  __device__ static __forceinline__ void pairs(uint32_t w, uint32_t offset_lo, uint32_t offset_hi, uint32_t (&a)[4]) {
    if (kBits == 4) {
      const uint32_t e = w & 0x0F0F0F0Fu, o = (w >> 4) & 0x0F0F0F0Fu;
      const uint32_t i0 = __byte_perm(e, o, 0x5140), i1 = __byte_perm(e, o, 0x7362);  // [c0 c1 c2 c3], [c4 c5 c6 c7]
      a[0] = __byte_perm(i0, 0x43434343u, 0x4140);  // (c0, c1)
      a[1] = __byte_perm(i0, 0x43434343u, 0x4342);  // (c2, c3)
      a[2] = __byte_perm(i1, 0x43434343u, 0x4140);  // (c4, c5)
      a[3] = __byte_perm(i1, 0x43434343u, 0x4342);  // (c6, c7)
#pragma unroll
      for (int k = 0; k < 4; ++k) a[k] = bf16x2_sub(a[k], offset_lo);
    } else {
      const uint32_t lo = w & 0x0F0F0F0Fu, hi = (w >> 4) & 0x0F0F0F0Fu;
      a[0] = bf16x2_sub(__byte_perm(lo, 0x43434343u, 0x4140), offset_lo);  // (lo c0, lo c1)
      a[1] = bf16x2_sub(__byte_perm(lo, 0x43434343u, 0x4342), offset_lo);  // (lo c2, lo c3)
      a[2] = bf16x2_sub(__byte_perm(hi, 0x45454545u, 0x4140), offset_hi);  // (hi c0, hi c1)
      a[3] = bf16x2_sub(__byte_perm(hi, 0x45454545u, 0x4342), offset_hi);  // (hi c2, hi c3)
    }
  }
};

struct TcLayout {
  uint32_t stage_bytes, x_stage, xt, xt_row, total;
  __host__ __device__ TcLayout(const QuantStreamPlan& plan, uint32_t batch) {
    const uint32_t nb = 8 * ((batch + 7) / 8);
    x_stage = plan.stored_cap;
    stage_bytes = plan.stored_cap + align16(plan.tile_cols * batch * 2) + 16;
    xt = plan.stages * stage_bytes;        // bf16 [nb][xt_row] (batch > 1 only)
    xt_row = align16(plan.tile_cols * 2) + 16;  // bytes; the +16 staggers rows across banks
    total = xt + (batch > 1 ? nb * xt_row : 0);
  }
};

// kShifted: the code plane starts off a word boundary (an edge tile row whose plane A is not a
// multiple of 4 bytes, e.g. asymmetric int4 with h odd or 2 mod 4); each word is then a funnel
// shift of the two aligned words it spans (kV 1). The last word of the last row reads up to 3 bytes
// past the plane, inside the stage.
template <uint32_t kBits, uint32_t kNT, uint32_t kV, bool kShifted = false>
__device__ __forceinline__ void tc_tile(const QuantDevParams& p, uint32_t h, uint32_t w, uint64_t row0,
                                        const uint8_t* stage, const SideGeometry& sg, uint32_t codes_at,
                                        const uint8_t* xrows, uint32_t xrow_bytes, uint32_t batch,
                                        float (&yacc)[kNT][4]) {
  using T = TcCodes<kBits>;
  constexpr float kOffsetLo = 128.0f, kOffsetHi = 2176.0f;
  const uint32_t lane = threadIdx.x & 31, g = lane / 4, t = lane % 4;
  const uint32_t r0 = (threadIdx.x / 32) * 16 + g;
  const uint32_t r0c = min(r0, h - 1), r1c = min(r0 + 8, h - 1);  // rows past the tile: loads clamped, results dropped
  const uint32_t words_per_row = w / T::kPerWord;
  const uint32_t step_words = 4 * kV;                   // words of a row per k-step (4 lanes x kV)
  const uint32_t steps = (words_per_row + step_words - 1) / step_words;
  const uint32_t group_cols = p.grouped ? p.group : w;
  const uint32_t steps_per_group = max(1u, group_cols / (step_words * T::kPerWord));
  static_assert(!kShifted || kV == 1, "shifted words one at a time");
  const uint32_t shift = kShifted ? 8 * (codes_at % 4) : 0;
  const uint32_t* plane = reinterpret_cast<const uint32_t*>(stage + (kShifted ? codes_at & ~3u : codes_at));
  const uint32_t* row0_words = plane + r0c * words_per_row;
  const uint32_t* row1_words = plane + r1c * words_per_row;
  float c[kNT][4];
  uint32_t off0_lo = 0, off1_lo = 0, off_hi = bf16x2_splat_int(kOffsetHi);
  uint32_t gi = 0, in_group = 0;  // group index and step within it (no division per step)
  for (uint32_t q = 0; q < steps; ++q) {
    if (in_group == 0) {
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
      if (kBits == 4) {
        const float z0 = p.zero_points ? static_cast<float>(stage[8 + sg.scale_bytes + r0c * sg.groups + gi]) : p.symmetric_zero;
        const float z1 = p.zero_points ? static_cast<float>(stage[8 + sg.scale_bytes + r1c * sg.groups + gi]) : p.symmetric_zero;
        off0_lo = bf16x2_splat_int(kOffsetLo + z0);
        off1_lo = bf16x2_splat_int(kOffsetLo + z1);
      } else {
        off0_lo = off1_lo = bf16x2_splat_int(kOffsetLo);
      }
    }
    const uint32_t first = step_words * q + kV * t;  // this lane's first word of the step
    uint32_t w0[kV], w1[kV];
    const bool in_row = first < words_per_row;      // a partial last step: lanes past the row use zeros
    if (kV == 2 && in_row) {
      const uint2 a = *reinterpret_cast<const uint2*>(row0_words + first);
      const uint2 b = *reinterpret_cast<const uint2*>(row1_words + first);
      w0[0] = a.x, w0[1 % kV] = a.y;
      w1[0] = b.x, w1[1 % kV] = b.y;
    } else if (kShifted && in_row) {
      w0[0] = __funnelshift_r(row0_words[first], row0_words[first + 1], shift);
      w1[0] = __funnelshift_r(row1_words[first], row1_words[first + 1], shift);
    } else if (in_row) {
      w0[0] = row0_words[first];
      w1[0] = row1_words[first];
    }
#pragma unroll
    for (uint32_t v = 0; v < kV; ++v) {
      uint32_t a0[4] = {0, 0, 0, 0}, a1[4] = {0, 0, 0, 0};
      const uint32_t j = first + v;
      const bool valid = in_row && j < words_per_row;
      if (valid) {
        T::pairs(w0[v], off0_lo, off_hi, a0);
        T::pairs(w1[v], off1_lo, off_hi, a1);
      }
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) {
        const uint32_t n = 8 * nt + g;
        uint32_t b[4] = {0, 0, 0, 0};
        if (valid && n < batch) {
          const uint8_t* xr = xrows + n * xrow_bytes + j * T::kPerWord * 2;
          if (kBits == 4) {
            const uint4 x4 = *reinterpret_cast<const uint4*>(xr);
            b[0] = x4.x, b[1] = x4.y, b[2] = x4.z, b[3] = x4.w;
          } else {
            const uint2 x2 = *reinterpret_cast<const uint2*>(xr);
            b[0] = b[2] = x2.x, b[1] = b[3] = x2.y;  // hi nibbles meet the same x as lo
          }
        }
        mma_bf16_16816(c[nt], a0[0], a1[0], a0[1], a1[1], b[0], b[1]);
        mma_bf16_16816(c[nt], a0[2], a1[2], a0[3], a1[3], b[2], b[3]);
      }
    }
    if (++in_group == steps_per_group || q + 1 == steps) {
      const ScaleZero s0 = scale_zero(p, stage + 8, sg, r0c, gi, row0 + r0c);
      const ScaleZero s1 = scale_zero(p, stage + 8, sg, r1c, gi, row0 + r1c);
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) {
        yacc[nt][0] = fmaf(s0.scale, c[nt][0], yacc[nt][0]);
        yacc[nt][1] = fmaf(s0.scale, c[nt][1], yacc[nt][1]);
        yacc[nt][2] = fmaf(s1.scale, c[nt][2], yacc[nt][2]);
        yacc[nt][3] = fmaf(s1.scale, c[nt][3], yacc[nt][3]);
      }
      in_group = 0;
      gi += p.grouped ? 1 : 0;
    }
  }
}

// Preconditions (checked by the host, launch_quant_gemv_tc): int4 or int8 codes; tile_cols and K
// multiples of 8; x_dev 16-byte aligned; tiles row-major over a grid of grid_cols tile columns.
template <uint32_t kBits, uint32_t kNT>
__global__ void __launch_bounds__(kThreads) quant_gemv_tc_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // (tile_count), row-major over the tile grid
    uint64_t tile_count, uint32_t grid_cols, uint64_t tensor_rows, uint64_t tensor_cols,
    QuantDevParams params, QuantStreamPlan plan,
    const uint16_t* __restrict__ x_dev,     // (K, batch) BF16 bits
    uint32_t batch,                         // 1 .. 8 * kNT
    float* __restrict__ y_dev,              // (N, batch), zeroed before the launch
    uint32_t* __restrict__ status_dev) {    // (tile_count)
  static_assert(kBits == 4 || kBits == 8, "int4 and int8 codes");
  static_assert(kNT >= 1 && kNT <= 8, "1..8 n-tiles of 8 batch columns");
  using T = TcCodes<kBits>;
  extern __shared__ __align__(16) uint8_t smem[];
  const TcLayout layout(plan, batch);
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const uint64_t t_begin = blockIdx.x * tile_count / gridDim.x, t_end = (blockIdx.x + 1ull) * tile_count / gridDim.x;
  const uint8_t* x_bytes = reinterpret_cast<const uint8_t*>(x_dev);
  const uint64_t x_total_bytes = tensor_cols * batch * 2;
  float yacc[kNT][4];
#pragma unroll
  for (uint32_t nt = 0; nt < kNT; ++nt) yacc[nt][0] = yacc[nt][1] = yacc[nt][2] = yacc[nt][3] = 0.f;

  // Tile origins from the index (row-major grid), advanced by counters: one 64-bit division per
  // block, none per tile. (issue_row, issue_col): the next tile to issue; (row, col): tile t.
  uint64_t issue_row = t_begin / grid_cols;
  uint32_t issue_col = static_cast<uint32_t>(t_begin - issue_row * grid_cols);
  uint64_t grid_row = issue_row;
  uint32_t grid_col = issue_col;
  auto issue = [&](uint64_t ti, uint32_t slot) {
    uint8_t* stage = smem + slot * layout.stage_bytes;
    issue_copy(stage, bytes_dev + tiles_dev[ti].offset, tiles_dev[ti].stored_size);
    const uint32_t col0 = issue_col * plan.tile_cols;
    if (++issue_col == grid_cols) issue_col = 0, ++issue_row;
    const uint32_t cols = static_cast<uint32_t>(tensor_cols - col0 < plan.tile_cols ? tensor_cols - col0 : plan.tile_cols);
    // 16-aligned start (col0 % 8 == 0): the slice sits at the start of the stage's x area.
    issue_x_slice(stage + layout.x_stage, x_bytes, x_total_bytes, uint64_t{col0} * batch * 2, uint64_t{cols} * batch * 2);
  };
  for (uint32_t s = 0; s + 1 < plan.stages; ++s) {
    if (t_begin + s < t_end) issue(t_begin + s, s);
    commit_copies();
  }

  for (uint64_t t = t_begin; t < t_end; ++t) {
    const uint32_t i = static_cast<uint32_t>(t - t_begin);
    wait_oldest_stage(plan.stages);
    __syncthreads();  // tile t visible; every thread is done with tile t - 1, its stage and xt
    {
      const uint64_t next = t + plan.stages - 1;
      if (next < t_end) issue(next, (i + plan.stages - 1) % plan.stages);
      commit_copies();
    }
    const uint8_t* stage = smem + (i % plan.stages) * layout.stage_bytes;
    const uint64_t row0 = grid_row * plan.tile_rows;
    const uint32_t col0 = grid_col * plan.tile_cols;
    const bool row_ends = grid_col + 1 == grid_cols;
    if (++grid_col == grid_cols) grid_col = 0, ++grid_row;
    const uint32_t h = static_cast<uint32_t>(tensor_rows - row0 < plan.tile_rows ? tensor_rows - row0 : plan.tile_rows);
    const uint32_t w = static_cast<uint32_t>(tensor_cols - col0 < plan.tile_cols ? tensor_cols - col0 : plan.tile_cols);
    const uint32_t stored_size = tiles_dev[t].stored_size;
    const SideGeometry sg = side_geometry(params, h, w, false);
    const uint32_t codes_at = 8 + sg.a_bytes();
    const uint8_t* xs = stage + layout.x_stage;  // (w, batch) BF16
    // Words per lane and k-step: 2 when 8-byte loads are aligned and a step (4 lanes x 2 words)
    // stays inside a group; else 1 (3: one, from a code plane off a word boundary). 0: the MMA
    // layout does not fit this tile (exact fallback).
    uint32_t v = 0;
    if (h <= 16 * kWarps && w % T::kPerWord == 0) {
      const uint32_t group_cols = params.grouped ? params.group : 0;
      const bool two = codes_at % 8 == 0 && (w / T::kPerWord) % 2 == 0 &&
                       (group_cols == 0 || group_cols % (8 * T::kPerWord) == 0);
      const bool one = group_cols == 0 || group_cols % (4 * T::kPerWord) == 0;
      v = two ? 2 : !one ? 0 : codes_at % 4 ? 3 : 1;
    }
    const uint8_t* xrows = xs;
    uint32_t xrow_bytes = 0;
    if (v && batch > 1) {
      uint16_t* xt = reinterpret_cast<uint16_t*>(smem + layout.xt);
      const uint16_t* xin = reinterpret_cast<const uint16_t*>(xs);
      for (uint32_t e = threadIdx.x; e < w * batch; e += kThreads) {
        const uint32_t col = e / batch, n = e - col * batch;
        xt[n * (layout.xt_row / 2) + col] = xin[e];
      }
      xrows = smem + layout.xt;
      xrow_bytes = layout.xt_row;
      __syncthreads();
    }
    if (v == 2) tc_tile<kBits, kNT, 2>(params, h, w, row0, stage, sg, codes_at, xrows, xrow_bytes, batch, yacc);
    else if (v == 1) tc_tile<kBits, kNT, 1>(params, h, w, row0, stage, sg, codes_at, xrows, xrow_bytes, batch, yacc);
    else if (kBits == 4 && v == 3)  // int8 has no plane A
      tc_tile<kBits, kNT, 1, true>(params, h, w, row0, stage, sg, codes_at, xrows, xrow_bytes, batch, yacc);
    else {
      // Tiles the MMA layout does not fit: exact dequantization, warp per row, global atomics.
      const uint16_t* xin = reinterpret_cast<const uint16_t*>(xs);
      const uint32_t code_bytes = stored_size - codes_at;
      for (uint32_t r = warp; r < h; r += kWarps) {
        for (uint32_t b = 0; b < batch; ++b) {
          float sum = 0.f;
          for (uint32_t col = lane; col < w; col += 32) {
            const uint32_t code = packed_code(stage + codes_at, code_bytes, r * w + col, kBits);
            const ScaleZero sz = scale_zero(params, stage + 8, sg, r, params.grouped ? col / params.group : 0, row0 + r);
            sum = fmaf(dequantize_value(params, sz, code, row0 + r), bf16_bits_to_float(xin[col * batch + b]), sum);
          }
#pragma unroll
          for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, off);
          if (lane == 0) atomicAdd(&y_dev[(row0 + r) * batch + b], sum);
        }
      }
    }
    if (threadIdx.x == 0) status_dev[t] = kOk;
    // Flush the register partials when the next tile starts another tile row (or the range ends).
    if (t + 1 == t_end || row_ends) {
      const uint32_t g = lane / 4, tq = lane % 4;
      const uint32_t rows[2] = {warp * 16 + g, warp * 16 + g + 8};
#pragma unroll
      for (uint32_t half = 0; half < 2; ++half) {
        if (rows[half] >= h) continue;
#pragma unroll
        for (uint32_t nt = 0; nt < kNT; ++nt) {
#pragma unroll
          for (uint32_t k = 0; k < 2; ++k) {
            const uint32_t n = 8 * nt + 2 * tq + k;
            if (n < batch) atomicAdd(&y_dev[(row0 + rows[half]) * batch + n], yacc[nt][2 * half + k]);
          }
        }
      }
#pragma unroll
      for (uint32_t nt = 0; nt < kNT; ++nt) yacc[nt][0] = yacc[nt][1] = yacc[nt][2] = yacc[nt][3] = 0.f;
    }
  }
  wait_copies<0>();
}

template <uint32_t kBits, uint32_t kNT>
cudaError_t launch_tc(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count, uint32_t grid_cols,
                      uint64_t tensor_rows, uint64_t tensor_cols, const QuantDevParams& params,
                      const QuantStreamPlan& plan, uint32_t grid, const uint16_t* x_dev, uint32_t batch, float* y_dev,
                      uint32_t* status_dev, cudaStream_t stream) {
  const uint64_t smem = TcLayout(plan, batch).total;
  const cudaError_t err = allow_max_dynamic_smem<&quant_gemv_tc_kernel<kBits, kNT>>();
  if (err != cudaSuccess) return err;
  quant_gemv_tc_kernel<kBits, kNT><<<grid, kThreads, smem, stream>>>(
      bytes_dev, tiles_dev, tile_count, grid_cols, tensor_rows, tensor_cols, params, plan, x_dev, batch, y_dev, status_dev);
  return cudaGetLastError();
}

template <uint32_t kBits, uint32_t kNT>
int tc_occupancy(const QuantStreamPlan& plan, uint32_t batch) {
  return max_blocks_per_sm<&quant_gemv_tc_kernel<kBits, kNT>>(kThreads, TcLayout(plan, batch).total);
}

#define WPACK_TC_NT_CASES(BITS, CALL) \
  case 1: return CALL(BITS, 1);        \
  case 2: return CALL(BITS, 2);        \
  case 4: return CALL(BITS, 4);        \
  case 8: return CALL(BITS, 8);
#define WPACK_TC_DISPATCH(bits, nt, CALL, FAIL)                  \
  switch (bits) {                                                \
    case 4: switch (nt) { WPACK_TC_NT_CASES(4, CALL) } break;    \
    case 8: switch (nt) { WPACK_TC_NT_CASES(8, CALL) } break;    \
    default: break;                                              \
  }                                                              \
  return FAIL;

// n-tiles for a batch: 1, 2, 4 or 8 (batch 1..8, 9..16, 17..32, 33..64).
uint32_t tc_n_tiles(uint32_t batch) { return batch <= 8 ? 1 : batch <= 16 ? 2 : batch <= 32 ? 4 : 8; }

// Dispatch over (bits, batch) to a template instance: CALL(kBits, kBatch) is an expression.
#define WPACK_QUANT_BATCH_CASES(BITS, CALL) \
  case 1: return CALL(BITS, 1);              \
  case 2: return CALL(BITS, 2);              \
  case 3: return CALL(BITS, 3);              \
  case 4: return CALL(BITS, 4);              \
  case 5: return CALL(BITS, 5);              \
  case 6: return CALL(BITS, 6);              \
  case 7: return CALL(BITS, 7);              \
  case 8: return CALL(BITS, 8);
#define WPACK_QUANT_DISPATCH(bits, batch, CALL, FAIL)                       \
  switch (bits) {                                                            \
    case 2: switch (batch) { WPACK_QUANT_BATCH_CASES(2, CALL) } break;       \
    case 3: switch (batch) { WPACK_QUANT_BATCH_CASES(3, CALL) } break;       \
    case 4: switch (batch) { WPACK_QUANT_BATCH_CASES(4, CALL) } break;       \
    case 5: switch (batch) { WPACK_QUANT_BATCH_CASES(5, CALL) } break;       \
    case 6: switch (batch) { WPACK_QUANT_BATCH_CASES(6, CALL) } break;       \
    case 8: switch (batch) { WPACK_QUANT_BATCH_CASES(8, CALL) } break;       \
    default: break;                                                          \
  }                                                                          \
  return FAIL;

}  // namespace

// x's share: a slice of generic_x_cols(plan) columns for a pass of kGenericBatch, whatever the
// batch (the kernel stages x in slices; formerly cols_cap * kGenericBatch floats, which a one-tile
// [1, 16384] matrix could not fit beside its decode).
uint64_t quant_generic_smem_bytes(const QuantSmemPlan& plan) {
  return GenericLayout(plan, generic_x_cols(plan) * kGenericBatch).total;
}

uint64_t quant_decode_smem_bytes(const QuantSmemPlan& plan) { return GenericLayout(plan, 0).total; }

cudaError_t launch_quant_decode(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                const QuantDevParams& params, const QuantSmemPlan& plan, uint64_t tensor_cols,
                                float* out_dev, uint32_t* status_dev, cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  const uint64_t smem = quant_decode_smem_bytes(plan);
  const cudaError_t err = allow_max_dynamic_smem<&quant_decode_kernel>();  // once per device
  if (err != cudaSuccess) return err;
  quant_decode_kernel<<<static_cast<unsigned>(tile_count), kThreads, smem, stream>>>(bytes_dev, tiles_dev, params, plan,
                                                                                     tensor_cols, out_dev, status_dev);
  return cudaGetLastError();
}

cudaError_t launch_quant_gemv_generic(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                                      uint64_t tile_count, const QuantDevParams& params, const QuantSmemPlan& plan,
                                      const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev,
                                      cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  const uint64_t smem = quant_generic_smem_bytes(plan);
  const cudaError_t err = allow_max_dynamic_smem<&quant_gemv_generic_kernel>();  // once per device
  if (err != cudaSuccess) return err;
  quant_gemv_generic_kernel<<<static_cast<unsigned>(tile_count), kThreads, smem, stream>>>(
      bytes_dev, tiles_dev, ids_dev, params, plan, x_dev, y_dev, batch, status_dev);
  return cudaGetLastError();
}

uint64_t quant_stream_smem_bytes(const QuantStreamPlan& plan, uint32_t batch) { return StreamLayout(plan, batch).total; }

bool quant_tc_supported(const QuantDevParams& params, const QuantStreamPlan& plan, uint64_t tensor_cols,
                        const void* x_dev) {
  return params.kind == kQuantInt && (params.bits == 4 || params.bits == 8) && plan.tile_cols % 8 == 0 &&
         tensor_cols % 8 == 0 && reinterpret_cast<uintptr_t>(x_dev) % 16 == 0;
}

int quant_tc_blocks_per_sm(const QuantStreamPlan& plan, uint32_t bits, uint32_t batch) {
  const uint32_t nt = tc_n_tiles(batch);
#define WPACK_TC_OCC(B, N) tc_occupancy<B, N>(plan, batch)
  WPACK_TC_DISPATCH(bits, nt, WPACK_TC_OCC, 0)
#undef WPACK_TC_OCC
}

cudaError_t launch_quant_gemv_tc(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                 uint32_t grid_cols, uint64_t tensor_rows, uint64_t tensor_cols,
                                 const QuantDevParams& params, const QuantStreamPlan& plan, uint32_t grid,
                                 const uint16_t* x_dev, float* y_dev, uint32_t batch, uint32_t* status_dev,
                                 cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  if (plan.stages < 2 || plan.stages > 8 || grid == 0 || batch == 0 || batch > 64 ||
      !quant_tc_supported(params, plan, tensor_cols, x_dev))
    return cudaErrorInvalidValue;
  const uint32_t nt = tc_n_tiles(batch);
#define WPACK_LAUNCH_TC(B, N)                                                                                  \
  launch_tc<B, N>(bytes_dev, tiles_dev, tile_count, grid_cols, tensor_rows, tensor_cols, params, plan, grid, x_dev, \
                  batch, y_dev, status_dev, stream)
  WPACK_TC_DISPATCH(params.bits, nt, WPACK_LAUNCH_TC, cudaErrorInvalidValue)
#undef WPACK_LAUNCH_TC
}

int quant_stream_blocks_per_sm(const QuantStreamPlan& plan, uint32_t bits, uint32_t batch) {
#define WPACK_OCCUPANCY(B, N) stream_occupancy<B, N>(plan)
  WPACK_QUANT_DISPATCH(bits, batch, WPACK_OCCUPANCY, 0)
#undef WPACK_OCCUPANCY
}

cudaError_t launch_quant_gemv_stream(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                                     const QuantDevParams& params, const QuantStreamPlan& plan, uint32_t grid,
                                     const uint16_t* x_dev, uint64_t x_elements, float* y_dev, uint32_t batch,
                                     uint32_t y_stride, uint32_t y_col0, uint32_t* status_dev, cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  if (plan.stages < 2 || plan.stages > 8 || grid == 0 || y_col0 + batch > y_stride) return cudaErrorInvalidValue;
#define WPACK_LAUNCH_STREAM(B, N)                                                                              \
  launch_stream<B, N>(bytes_dev, tiles_dev, tile_count, params, plan, grid, x_dev, x_elements, y_dev, y_stride, \
                      y_col0, status_dev, stream)
  WPACK_QUANT_DISPATCH(params.bits, batch, WPACK_LAUNCH_STREAM, cudaErrorInvalidValue)
#undef WPACK_LAUNCH_STREAM
}

namespace {
__global__ void gather_x_columns_kernel(const uint16_t* __restrict__ x_dev, uint32_t batch, uint32_t col0,
                                        uint32_t count, uint64_t total, uint16_t* __restrict__ out_dev) {
  for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < total; i += uint64_t{gridDim.x} * blockDim.x)
    out_dev[i] = x_dev[(i / count) * batch + col0 + i % count];
}
}  // namespace

cudaError_t launch_gather_x_columns(const uint16_t* x_dev, uint64_t k_cols, uint32_t batch, uint32_t col0,
                                    uint32_t count, uint16_t* out_dev, cudaStream_t stream) {
  if (count == 0 || col0 + count > batch) return cudaErrorInvalidValue;
  const uint64_t total = k_cols * count;
  if (total == 0) return cudaSuccess;
  const uint32_t blocks = static_cast<uint32_t>(std::min<uint64_t>((total + 255) / 256, 1024));
  gather_x_columns_kernel<<<blocks, 256, 0, stream>>>(x_dev, batch, col0, count, total, out_dev);
  return cudaGetLastError();
}

}  // namespace wpack::gpu::detail
