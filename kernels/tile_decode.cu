// CUDA decode of lossless .wpk tiles in shared memory, and the fused BF16 decode + GEMV, for any
// lossless tile (every codec/filter the GPU decodes, any element size and tile shape). BF16 tiles
// of the default shape take the faster warp-per-tile kernel of kernels/lossless_gemv.cu instead;
// these kernels then get the remaining tiles as a tile-id list. Byte layouts: docs/FORMAT.md ("Tile payload") and docs/FORMAT-rans.md; the scalar references
// are packer/tile_codec.cpp decode_tile() and packer/rans.cpp rans_decode(), which these kernels
// must match bit for bit (tests/gpu_tile_decode.cpp).
//
// Partitioning (both kernels): one thread block of kThreads = 128 threads (4 warps) per tile.
//
//   global: [tile 0 stored][pad to 16][tile 1 stored]...        tiles_dev[k] = offset, sizes, origin
//              |  cp.async 16 B per thread, one commit group
//              v
//   shared: [ stored bytes (stored_cap) | decoded planes (raw_cap) | 4 rANS tables | 4 freq arrays ]
//              plane p of the directory -> warp p % 4:
//                raw plane   : used in place (pointer into the stored bytes)
//                rANS stream : 32 lanes = 32 interleaved states -> decoded plane region
//              then every thread: element e = combine(plane 0..P-1 at e), undo the filter
//                decode: store to out[(row0 + e / cols) * tensor_cols + col0 + e % cols]
//                gemv  : warp w takes tile rows w, w+4, ...; lanes stride the row; warp sum;
//                        lane 0 atomicAdd into y[row0 + r]; x in shared memory in slices of up
//                        to kGemvXCols tile columns
//
// Why atomics for the GEMV: a tile row's partial sum is one float per (row, tile column); with
// 128-column tiles an 8192-wide row has 64 partials. atomicAdd of 64 floats per output row is
// ~0.4% of the weight traffic and needs no second launch or workspace; the price is that the
// summation order (and so the last bits of y) can differ between runs.
#include <cstdint>

#include <cuda_fp16.h>

#include "kernels/detail/align.h"
#include "kernels/detail/bf16.cuh"
#include "kernels/detail/rans_device.cuh"
#include "kernels/detail/smem_limit.cuh"  // allow_max_dynamic_smem
#include "kernels/detail/tile_kernels.h"

namespace wpack::gpu::detail {
namespace {

constexpr uint32_t kThreads = 128;
constexpr uint32_t kWarps = kThreads / 32;
constexpr uint32_t kMaxPlanes = 8;  // byte planes of an 8-byte element
// Widest slice of x, in tile columns, that the GEMV holds in shared memory (16 KiB for a pass of 8
// batch columns): a wider tile, such as a one-tile [1, 8192] matrix, is multiplied a slice at a
// time, so x's share no longer grows with the tile's width. 16 KiB fits beside the decode of the
// largest 1-D tile the packer writes (64 KiB raw, F32 in 4 rANS planes: about 200 KiB) at every
// batch. A multiple of 32: each lane then sums the same columns in the same order as with x whole,
// and y is the same to the bit.
constexpr uint32_t kGemvXCols = 512;


// Codec / filter codes (packer/codec.h, packer/filters.h)

// Shared memory, carved from one dynamic allocation (offsets in bytes).
struct SmemLayout {
  uint32_t stored, decoded, tables, freqs, x, total;
  __host__ __device__ explicit SmemLayout(const SmemPlan& plan, uint32_t x_floats = 0) {
    stored = 0;
    decoded = stored + plan.stored_cap;
    tables = decoded + plan.raw_cap;
    freqs = tables + plan.table_warps * (4u << plan.precision_cap);
    x = freqs + plan.table_warps * 2u * 256u * 4u;  // per decoding warp: freq[256], cum[256] as u32
    total = x + 4u * x_floats;
  }
};


// Tile columns of x the GEMV stages at once for this plan: the widest tile, at most kGemvXCols
// (gemv_smem_bytes and the kernel both take it from here).
__host__ __device__ __forceinline__ uint32_t gemv_x_cols(const SmemPlan& plan) {
  if (plan.x_cols != 0) return plan.x_cols;  // the whole width (the host found it fits)
  return plan.cols_cap == 0 ? 1u : plan.cols_cap < kGemvXCols ? plan.cols_cap : kGemvXCols;
}

// ---- tile loading ----

// Copies the tile's stored bytes (rounded up to 16: the source is 16-aligned and padded) from
// global to shared memory with cp.async, 16 bytes per thread and step. One commit group; the
// caller waits and syncs. cp.async.cg bypasses L1: the bytes are read once, by this block only.
__device__ __forceinline__ void load_stored(uint8_t* smem_dst, const uint8_t* global_src, uint32_t bytes) {
  const uint32_t chunks = align16(bytes) / 16;
  for (uint32_t i = threadIdx.x; i < chunks; i += kThreads) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst + 16 * i));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src + 16 * i));
  }
  asm volatile("cp.async.commit_group;\n" ::);
  asm volatile("cp.async.wait_group 0;\n" ::);
}

// Element e (0-based, in the tile) assembled from the planes, the filter undone; little-endian bits.
__device__ __forceinline__ uint64_t tile_element(const uint8_t* const* planes, uint32_t e, uint32_t n,
                                                 uint32_t elem_size, uint8_t filter) {
  uint64_t v = 0;
  if (filter == kFilterNone) {
    const uint8_t* p = planes[0] + static_cast<uint64_t>(e) * elem_size;
    for (uint32_t b = 0; b < elem_size; ++b) v |= uint64_t{p[b]} << (8 * b);
    return v;
  }
  if (filter == kFilterBitShuffle) {  // one plane: 8e bit planes of the first n8 elements, then the rest as they are
    const uint32_t n8 = n & ~7u;
    const uint8_t* p = planes[0];
    if (e >= n8) {
      p += static_cast<uint64_t>(e) * elem_size;
      for (uint32_t b = 0; b < elem_size; ++b) v |= uint64_t{p[b]} << (8 * b);
      return v;
    }
    const uint32_t plane_bytes = n8 / 8, j = e / 8, i = e % 8;
    for (uint32_t b = 0; b < 8 * elem_size; ++b) v |= uint64_t{(p[b * plane_bytes + j] >> i) & 1u} << b;
    return v;
  }
  if (filter == kFilterByteShuffle) {
    for (uint32_t b = 0; b < elem_size; ++b) v |= uint64_t{planes[b][e]} << (8 * b);
    return v;
  }
  // floatplanes: plane 0 = most significant byte of the element rotated left by one bit.
  const uint32_t bits = 8 * elem_size;
  for (uint32_t b = 0; b < elem_size; ++b) v |= uint64_t{planes[b][e]} << (8 * (elem_size - 1 - b));
  v = (v >> 1) | ((v & 1u) << (bits - 1));  // rotate right by one within `bits`
  return v;
}

// A tile of codec exp4 (docs/FORMAT.md "Codec 3, exp4"): plane 0 (the exponents) decoded into the
// decoded region as base + code, the escapes written over it; planes 1.. used in place. Every rule
// of the format is checked (the CPU reference: packer/exp4.h); as decode_tile_smem otherwise.
__device__ uint32_t decode_exp4_smem(const uint8_t* bytes_dev, const DevTile& tile, uint32_t elem_size,
                                     const SmemPlan& plan, uint8_t* smem, const uint8_t** plane_ptr,
                                     uint32_t* status_shared) {
  const SmemLayout layout(plan);
  if (tile.filter != kFilterFloatPlanes || (elem_size != 2 && elem_size != 4)) return kCorrupt;
  if (static_cast<uint64_t>(tile.rows) * tile.cols * elem_size != tile.raw_size || tile.raw_size == 0) return kCorrupt;
  const uint32_t n = tile.raw_size / elem_size;
  const uint64_t fixed = 16 + uint64_t{elem_size - 1} * n + (n + 1) / 2;  // header, planes 1.., codes
  if (tile.stored_size < fixed || (tile.stored_size - fixed) % 5) return kCorrupt;
  if (tile.stored_size > plan.stored_cap || tile.raw_size > plan.raw_cap) return kTooLarge;
  uint8_t* stored = smem + layout.stored;
  load_stored(stored, bytes_dev + tile.offset, tile.stored_size);
  __syncthreads();
  const uint32_t base = stored[0], count = load_u32_le(stored + 4);
  bool header_ok = base <= 240 && count == (tile.stored_size - fixed) / 5;
  for (uint32_t i = 1; i < 16; ++i) header_ok = header_ok && (i >= 4 && i < 8 ? true : stored[i] == 0);
  if (!header_ok) return kCorrupt;  // uniform: every thread read the same bytes
  const uint8_t* codes = stored + 16 + (elem_size - 1) * n;
  if ((n & 1) && (codes[n / 2] >> 4) != 0) return kCorrupt;  // the last high nibble of an odd n
  uint8_t* plane0 = smem + layout.decoded;
  for (uint32_t i = threadIdx.x; i < n; i += kThreads)
    plane0[i] = static_cast<uint8_t>(base + ((codes[i / 2] >> (4 * (i & 1))) & 15));
  __syncthreads();
  const uint8_t* index = codes + (n + 1) / 2;  // u32 little-endian, not aligned in general
  const uint8_t* value = index + 4 * uint64_t{count};
  bool ok = true;
  for (uint32_t j = threadIdx.x; j < count; j += kThreads) {
    const uint32_t i = load_u32_le(index + 4 * j), v = value[j];
    ok = ok && i < n && (j == 0 || i > load_u32_le(index + 4 * (j - 1))) &&
         ((codes[i / 2] >> (4 * (i & 1))) & 15) == 0 && (v < base || v > base + 15);
    if (ok) plane0[i] = static_cast<uint8_t>(v);  // indices are distinct when valid; a bad tile is not used
  }
  if (!ok) atomicMax(status_shared, kCorrupt);
  if (threadIdx.x == 0) plane_ptr[0] = plane0;
  if (threadIdx.x >= 1 && threadIdx.x < elem_size) plane_ptr[threadIdx.x] = stored + 16 + (threadIdx.x - 1) * n;
  __syncthreads();
  return *status_shared;
}

// Loads tile `tile` into shared memory and decodes its planes. On return (after a __syncthreads)
// plane_ptr[0..planes) point at the filtered planes in shared memory (n = elements each, or for
// filter none one plane of raw_size bytes) and the tile's status is returned (block-uniform).
__device__ uint32_t decode_tile_smem(const uint8_t* bytes_dev, const DevTile& tile, uint32_t elem_size,
                                     const SmemPlan& plan, uint8_t* smem, const uint8_t** plane_ptr,
                                     uint32_t* status_shared) {
  const SmemLayout layout(plan);
  const uint32_t warp = threadIdx.x / 32;
  if (threadIdx.x == 0) *status_shared = kOk;

  // Block-uniform checks from the tile record (no shared memory touched yet).
  if (tile.codec == kCodecExp4)
    return decode_exp4_smem(bytes_dev, tile, elem_size, plan, smem, plane_ptr, status_shared);
  if (tile.codec == kCodecZstd) return kUnsupportedCodec;
  if (tile.codec != kCodecNone && tile.codec != kCodecRans) return kCorrupt;
  if (tile.filter > kFilterFloatPlanes) return kCorrupt;
  if (tile.filter == kFilterFloatPlanes && elem_size == 1) return kUnsupportedFilter;
  if (static_cast<uint64_t>(tile.rows) * tile.cols * elem_size != tile.raw_size || tile.raw_size == 0) return kCorrupt;
  if (tile.stored_size > plan.stored_cap || tile.raw_size > plan.raw_cap) return kTooLarge;

  uint8_t* stored = smem + layout.stored;
  load_stored(stored, bytes_dev + tile.offset, tile.stored_size);
  __syncthreads();

  const uint32_t planes = tile.filter == kFilterNone || tile.filter == kFilterBitShuffle ? 1 : elem_size;
  const uint32_t n = tile.raw_size / planes;  // bytes per plane
  if (tile.codec == kCodecNone) {
    if (tile.stored_size != tile.raw_size) return kCorrupt;
    if (threadIdx.x < planes) plane_ptr[threadIdx.x] = stored + threadIdx.x * n;
    __syncthreads();
    return kOk;
  }

  // Plane directory: P u32 words, then the planes, which must end exactly at the stored end.
  if (tile.stored_size < 4 * planes) return kCorrupt;
  uint32_t start = 4 * planes;
  bool directory_ok = true;
  uint32_t my_start = 0;
  bool my_raw = false;
  const uint32_t my_plane = threadIdx.x;  // threads 0..P-1 each take one directory word
  for (uint32_t p = 0; p < planes; ++p) {
    const uint32_t word = load_u32_le(stored + 4 * p);
    const uint32_t size = word & ~kRawPlaneBit;
    if (size > tile.stored_size - start) directory_ok = false;
    if ((word & kRawPlaneBit) && size != n) directory_ok = false;
    if (p == my_plane) {
      my_start = start;
      my_raw = (word & kRawPlaneBit) != 0;
    }
    if (directory_ok) start += size;
  }
  if (!directory_ok || start != tile.stored_size) return kCorrupt;  // uniform: every thread read the same words
  uint8_t* decoded = smem + layout.decoded;
  if (threadIdx.x < planes) plane_ptr[threadIdx.x] = my_raw ? stored + my_start : decoded + my_plane * n;
  __syncthreads();

  // Warp w < table_warps decodes the coded planes w, w + table_warps, ...
  if (plan.table_warps == 0 || plan.table_warps > kWarps) return kCorrupt;  // host bug guard, uniform
  uint32_t* table = reinterpret_cast<uint32_t*>(smem + layout.tables) + warp * (1u << plan.precision_cap);
  uint32_t* freq = reinterpret_cast<uint32_t*>(smem + layout.freqs) + warp * 512;
  uint32_t* cum = freq + 256;
  for (uint32_t p = warp; warp < plan.table_warps && p < planes; p += plan.table_warps) {
    const uint32_t word = load_u32_le(stored + 4 * p);
    if (word & kRawPlaneBit) continue;
    uint32_t plane_start = 4 * planes;
    for (uint32_t q = 0; q < p; ++q) plane_start += load_u32_le(stored + 4 * q) & ~kRawPlaneBit;
    const uint32_t st = decode_stream_warp(stored + plane_start, word, n, decoded + p * n, table, freq, cum,
                                           plan.precision_cap);
    if (st != kOk && (threadIdx.x & 31) == 0) atomicMax(status_shared, st);
    __syncwarp();
  }
  __syncthreads();
  return *status_shared;
}

// ---- kernels ----

__global__ void __launch_bounds__(kThreads) decode_tiles_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // (tile_count)
    const uint32_t* __restrict__ ids_dev,   // (grid) the tiles to take; nullptr: tile = block
    uint32_t elem_size,                     // bytes per element: 1, 2, 4 or 8
    uint64_t tensor_cols,                   // elements per row of the output
    SmemPlan plan,
    uint8_t* __restrict__ out_dev,          // (rows, tensor_cols) elements, row-major
    uint32_t* __restrict__ status_dev) {    // (tile_count)
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ const uint8_t* plane_ptr[kMaxPlanes];
  __shared__ uint32_t status_shared;
  const uint32_t id = ids_dev ? ids_dev[blockIdx.x] : blockIdx.x;
  const DevTile tile = tiles_dev[id];
  const uint32_t status = decode_tile_smem(bytes_dev, tile, elem_size, plan, smem, plane_ptr, &status_shared);
  if (threadIdx.x == 0) status_dev[id] = status;
  if (status != kOk) return;

  const uint32_t elements = tile.rows * tile.cols;
  for (uint32_t e = threadIdx.x; e < elements; e += kThreads) {
    const uint64_t v = tile_element(plane_ptr, e, elements, elem_size, tile.filter);
    const uint32_t r = e / tile.cols, c = e - r * tile.cols;
    uint8_t* dst = out_dev + ((tile.row0 + uint64_t{r}) * tensor_cols + tile.col0 + c) * elem_size;
    switch (elem_size) {  // element-aligned: the output is cudaMalloc'ed and elements are naturally aligned
      case 1: *dst = static_cast<uint8_t>(v); break;
      case 2: *reinterpret_cast<uint16_t*>(dst) = static_cast<uint16_t>(v); break;
      case 4: *reinterpret_cast<uint32_t*>(dst) = static_cast<uint32_t>(v); break;
      default: *reinterpret_cast<uint64_t*>(dst) = v; break;
    }
  }
}

// A weight element's bits (tile_element) as float, exactly: BF16, F16, F32, or FP8 (OCP E4M3 "fn":
// no infinities, S.1111.111 NaN; E5M2: binary16 without its low byte).
template <WeightKind kKind>
__device__ __forceinline__ float weight_to_float(uint64_t bits) {
  if constexpr (kKind == WeightKind::kBf16) {
    return bf16_bits_to_float(static_cast<uint32_t>(bits));
  } else if constexpr (kKind == WeightKind::kF16) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  } else if constexpr (kKind == WeightKind::kF8E5M2) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits << 8)));
  } else if constexpr (kKind == WeightKind::kF8E4M3) {
    const uint32_t b = static_cast<uint32_t>(bits), sign = (b & 0x80u) << 24, e = (b >> 3) & 15u, m = b & 7u;
    if (e == 15 && m == 7) return __uint_as_float(sign | 0x7FC00000u);
    const float v = e == 0 ? static_cast<float>(m) * 0.001953125f : __uint_as_float(((e + 120u) << 23) | (m << 20));
    return __uint_as_float(__float_as_uint(v) | sign);
  } else {
    return __uint_as_float(static_cast<uint32_t>(bits));
  }
}

// Stages x rows [col0, col0 + cols) (tensor columns), batch columns [0, kBatch) of rows of ld, as
// float xs[c * kBatch + b]. Every thread calls it; the caller syncs.
template <uint32_t kBatch>
__device__ __forceinline__ void stage_x(float* xs, const uint16_t* x_dev, uint64_t col0, uint32_t cols, uint32_t ld) {
  for (uint32_t i = threadIdx.x; i < cols * kBatch; i += kThreads)
    xs[i] = bf16_bits_to_float(x_dev[(col0 + i / kBatch) * ld + i % kBatch]);
}

// Adds tile row r's products with the x slice xs (tile columns [c0, c0 + cols)) to the lane's
// acc: lane l takes columns c0 + l, c0 + l + 32, ... in order (c0 a multiple of 32 across slices,
// so a lane's fmaf chain is the one it would be with x whole).
template <uint32_t kBatch, WeightKind kKind, uint32_t kElemSize>
__device__ __forceinline__ void accumulate_row(const uint8_t* const* plane_ptr, const DevTile& tile, uint32_t r,
                                               uint32_t c0, uint32_t cols, const float* xs, float (&acc)[kBatch]) {
  for (uint32_t c = threadIdx.x & 31; c < cols; c += 32) {
    const float w = weight_to_float<kKind>(
        tile_element(plane_ptr, r * tile.cols + c0 + c, tile.rows * tile.cols, kElemSize, tile.filter));
#pragma unroll
    for (uint32_t b = 0; b < kBatch; ++b) acc[b] = fmaf(w, xs[c * kBatch + b], acc[b]);
  }
}

template <uint32_t kBatch, WeightKind kKind>
__global__ void __launch_bounds__(kThreads) gemv_block_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // (tile_count), W is (N, K) of kKind
    const uint32_t* __restrict__ ids_dev,   // (grid) the tiles to take; nullptr: tile = block
    SmemPlan plan,
    const uint16_t* __restrict__ x_dev,     // (K, ld) BF16 bits: columns [0, kBatch) of rows of ld
    float* __restrict__ y_dev,              // (N, ld), columns [0, kBatch) zeroed before the launch
    uint32_t ld,                            // batch columns per row of x and y (>= kBatch)
    uint32_t* __restrict__ status_dev) {    // (tile_count)
  static_assert(kBatch >= 1 && kBatch <= 8, "batch 1..8");
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ const uint8_t* plane_ptr[kMaxPlanes];
  __shared__ uint32_t status_shared;
  const uint32_t id = ids_dev ? ids_dev[blockIdx.x] : blockIdx.x;
  const DevTile tile = tiles_dev[id];
  const SmemLayout layout(plan);
  float* xs = reinterpret_cast<float*>(smem + layout.x);  // (x_cols, kBatch)
  const uint32_t x_cols = gemv_x_cols(plan);
  // A tile no wider than x_cols has x for its columns read before the decode, so that its latency
  // overlaps the cp.async. A wider one (or a zstd tile wider than plan.cols_cap, which
  // decode_tile_smem reports) is staged after the decode, a slice of x_cols columns at a time for
  // each round of kWarps rows: x is read rounds times over (from L2), the price of holding 16 KiB
  // of it rather than the whole width's.
  const bool whole = tile.cols <= x_cols;
  if (whole) stage_x<kBatch>(xs, x_dev, tile.col0, tile.cols, ld);
  constexpr uint32_t kElemSize = kKind == WeightKind::kF32                                   ? 4
                                 : kKind == WeightKind::kF8E4M3 || kKind == WeightKind::kF8E5M2 ? 1
                                                                                               : 2;
  const uint32_t status = decode_tile_smem(bytes_dev, tile, kElemSize, plan, smem, plane_ptr, &status_shared);
  if (threadIdx.x == 0) status_dev[id] = status;
  if (status != kOk) return;

  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  // Round r0: warp w takes row r0 + w (the rows r = w, w + kWarps, ... of a warp, in order). Every
  // thread runs every round and slice, for the slices' __syncthreads.
  for (uint32_t r0 = 0; r0 < tile.rows; r0 += kWarps) {
    const uint32_t r = r0 + warp;
    float acc[kBatch];
#pragma unroll
    for (uint32_t b = 0; b < kBatch; ++b) acc[b] = 0.f;
    for (uint32_t c0 = 0; c0 < tile.cols; c0 += x_cols) {
      const uint32_t cols = min(x_cols, tile.cols - c0);
      if (!whole) {
        __syncthreads();  // every warp is done with the previous slice
        stage_x<kBatch>(xs, x_dev, uint64_t{tile.col0} + c0, cols, ld);
        __syncthreads();
      }
      if (r < tile.rows) accumulate_row<kBatch, kKind, kElemSize>(plane_ptr, tile, r, c0, cols, xs, acc);
    }
    if (r >= tile.rows) continue;  // warp-uniform
#pragma unroll
    for (uint32_t b = 0; b < kBatch; ++b) {
#pragma unroll
      for (int off = 16; off > 0; off /= 2) acc[b] += __shfl_xor_sync(0xFFFFFFFFu, acc[b], off);
    }
    if (lane == 0) {
#pragma unroll
      for (uint32_t b = 0; b < kBatch; ++b) atomicAdd(&y_dev[(tile.row0 + uint64_t{r}) * ld + b], acc[b]);
    }
  }
}

template <uint32_t kBatch, WeightKind kKind>
cudaError_t launch_gemv_kind(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                             uint64_t tile_count, const SmemPlan& plan, const uint16_t* x_dev, float* y_dev, uint32_t ld,
                             uint32_t* status_dev, cudaStream_t stream) {
  const uint64_t smem = gemv_smem_bytes(plan, kBatch);
  const cudaError_t err = allow_max_dynamic_smem<&gemv_block_kernel<kBatch, kKind>>();  // once per device
  if (err != cudaSuccess) return err;
  gemv_block_kernel<kBatch, kKind><<<static_cast<unsigned>(tile_count), kThreads, smem, stream>>>(
      bytes_dev, tiles_dev, ids_dev, plan, x_dev, y_dev, ld, status_dev);
  return cudaGetLastError();
}

template <uint32_t kBatch>
cudaError_t launch_gemv_batch(WeightKind kind, const uint8_t* bytes_dev, const DevTile* tiles_dev,
                              const uint32_t* ids_dev, uint64_t tile_count, const SmemPlan& plan, const uint16_t* x_dev,
                              float* y_dev, uint32_t ld, uint32_t* status_dev, cudaStream_t stream) {
  switch (kind) {
    case WeightKind::kBf16:
      return launch_gemv_kind<kBatch, WeightKind::kBf16>(bytes_dev, tiles_dev, ids_dev, tile_count, plan, x_dev, y_dev, ld,
                                                          status_dev, stream);
    case WeightKind::kF16:
      return launch_gemv_kind<kBatch, WeightKind::kF16>(bytes_dev, tiles_dev, ids_dev, tile_count, plan, x_dev, y_dev, ld,
                                                         status_dev, stream);
    case WeightKind::kF32:
      return launch_gemv_kind<kBatch, WeightKind::kF32>(bytes_dev, tiles_dev, ids_dev, tile_count, plan, x_dev, y_dev, ld,
                                                         status_dev, stream);
    case WeightKind::kF8E4M3:
      return launch_gemv_kind<kBatch, WeightKind::kF8E4M3>(bytes_dev, tiles_dev, ids_dev, tile_count, plan, x_dev, y_dev,
                                                            ld, status_dev, stream);
    case WeightKind::kF8E5M2:
      return launch_gemv_kind<kBatch, WeightKind::kF8E5M2>(bytes_dev, tiles_dev, ids_dev, tile_count, plan, x_dev, y_dev,
                                                            ld, status_dev, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

uint64_t decode_smem_bytes(const SmemPlan& plan) { return SmemLayout(plan).total; }
// x's share: a slice of gemv_x_cols(plan) columns of `batch` (the kernel stages x in slices;
// formerly cols_cap * batch floats, which a one-tile [1, 8192] BF16 matrix could fit beside its
// decode only up to 5 batch columns).
uint64_t gemv_smem_bytes(const SmemPlan& plan, uint32_t batch) {
  return SmemLayout(plan, gemv_x_cols(plan) * batch).total;
}

namespace {
__global__ void image_probe_kernel() {}
}  // namespace

cudaError_t kernel_image_status() {
  cudaFuncAttributes attributes;
  return cudaFuncGetAttributes(&attributes, image_probe_kernel);
}

cudaError_t launch_decode(const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                          uint64_t tile_count, uint32_t elem_size, uint64_t tensor_cols, const SmemPlan& plan,
                          void* out_dev, uint32_t* status_dev, cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  const uint64_t smem = decode_smem_bytes(plan);
  const cudaError_t err = allow_max_dynamic_smem<&decode_tiles_kernel>();  // once per device
  if (err != cudaSuccess) return err;
  decode_tiles_kernel<<<static_cast<unsigned>(tile_count), kThreads, smem, stream>>>(
      bytes_dev, tiles_dev, ids_dev, elem_size, tensor_cols, plan, static_cast<uint8_t*>(out_dev), status_dev);
  return cudaGetLastError();
}

cudaError_t launch_gemv_block(WeightKind kind, const uint8_t* bytes_dev, const DevTile* tiles_dev, const uint32_t* ids_dev,
                             uint64_t tile_count, const SmemPlan& plan, const uint16_t* x_dev, float* y_dev, uint32_t batch,
                             uint32_t* status_dev, cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  // Batches above 8 run as passes of up to 8 columns (x and y strided by the full batch).
  for (uint32_t b0 = 0; b0 < batch; b0 += 8) {
    const uint32_t nb = batch - b0 < 8 ? batch - b0 : 8;
    const uint16_t* x = x_dev + b0;
    float* y = y_dev + b0;
    cudaError_t err = cudaErrorInvalidValue;
    switch (nb) {
      case 1: err = launch_gemv_batch<1>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
      case 2: err = launch_gemv_batch<2>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
      case 3: err = launch_gemv_batch<3>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
      case 4: err = launch_gemv_batch<4>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
      case 5: err = launch_gemv_batch<5>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
      case 6: err = launch_gemv_batch<6>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
      case 7: err = launch_gemv_batch<7>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
      default: err = launch_gemv_batch<8>(kind, bytes_dev, tiles_dev, ids_dev, tile_count, plan, x, y, batch, status_dev, stream); break;
    }
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace wpack::gpu::detail
