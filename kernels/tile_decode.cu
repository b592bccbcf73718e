// CUDA decode of lossless .wpk tiles in shared memory, and the fused BF16 decode + GEMV.
// Byte layouts: docs/FORMAT.md ("Tile payload") and docs/FORMAT-rans.md; the scalar references
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
//                        lane 0 atomicAdd into y[row0 + r]
//
// Why atomics for the GEMV: a tile row's partial sum is one float per (row, tile column); with
// 128-column tiles an 8192-wide row has 64 partials. atomicAdd of 64 floats per output row is
// ~0.4% of the weight traffic and needs no second launch or workspace; the price is that the
// summation order (and so the last bits of y) can differ between runs.
#include <cstdint>

#include "kernels/detail/tile_kernels.h"

namespace wpack::gpu::detail {
namespace {

constexpr uint32_t kThreads = 128;
constexpr uint32_t kWarps = kThreads / 32;
constexpr uint32_t kMaxPlanes = 8;  // byte planes of an 8-byte element

// docs/FORMAT-rans.md "Constants"
constexpr uint32_t kStateLower = 1u << 16;  // L
constexpr uint32_t kMinPrecision = 10;
constexpr uint32_t kRawPlaneBit = 0x80000000u;  // plane directory: plane stored raw

// TileStatus values (kernels/tile_decode.h)
constexpr uint32_t kOk = 0, kUnsupportedCodec = 1, kUnsupportedFilter = 2, kCorrupt = 3, kTooLarge = 4;
// Codec / filter codes (packer/codec.h, packer/filters.h)
constexpr uint8_t kCodecNone = 0, kCodecZstd = 1, kCodecRans = 2;
constexpr uint8_t kFilterNone = 0, kFilterByteShuffle = 1, kFilterBitShuffle = 2, kFilterFloatPlanes = 3;

__host__ __device__ constexpr uint32_t align16(uint32_t v) { return (v + 15u) & ~15u; }

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

__device__ __forceinline__ uint32_t load_u32_le(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
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

// ---- the frequency table (docs/FORMAT-rans.md "Frequency table"), parsed by one lane ----
struct BitReader {
  const uint8_t* data;
  uint32_t size_bits;
  uint32_t pos = 0;
  bool bad = false;
  __device__ uint32_t get(uint32_t count) {  // count <= 25
    if (count > size_bits - pos) {
      bad = true;
      return 0;
    }
    uint32_t v = 0;
    for (uint32_t i = 0; i < count; ++i, ++pos) v |= uint32_t{(data[pos >> 3] >> (pos & 7)) & 1u} << i;
    return v;
  }
  __device__ uint32_t gamma() {
    uint32_t z = 0;
    while (!bad && get(1) == 0)
      if (++z > 24) bad = true;
    if (bad) return 1;
    return (1u << z) | get(z);
  }
};

// Reads the table of 8-bit symbols at precision p into freq[256] (0 = absent). Returns the bytes
// consumed (padding checked) or 0 when the table is malformed.
__device__ uint32_t read_table(const uint8_t* data, uint32_t size, uint32_t precision, uint32_t* freq) {
  for (uint32_t s = 0; s < 256; ++s) freq[s] = 0;
  BitReader r{data, size * 8};
  constexpr uint32_t alphabet = 256;
  uint32_t pos = 0, present_count = 0;
  bool first = true;
  while (!r.bad) {
    const uint32_t code = r.gamma();
    if (r.bad) return 0;
    if (code == 1 && !first) break;
    const uint32_t gap = code - 1;
    if (gap >= alphabet - pos) return 0;
    pos += gap;
    first = false;
    const uint32_t run = r.gamma();
    if (r.bad || run > alphabet - pos) return 0;
    for (uint32_t i = 0; i < run; ++i) freq[pos + i] = 1;  // present marker
    present_count += run;
    pos += run;
    if (pos == alphabet) break;
  }
  if (r.bad || present_count == 0) return 0;
  const uint32_t total = 1u << precision;
  uint32_t last = 0;
  for (uint32_t s = 0; s < alphabet; ++s)
    if (freq[s]) last = s;
  uint32_t sum = 0;
  int prev_len = 0;
  for (uint32_t s = 0; s < last; ++s) {
    if (!freq[s]) continue;
    uint32_t zz = 0;
    while (r.get(1) == 1 && !r.bad)
      if (++zz > 24) return 0;
    if (r.bad) return 0;
    const int delta = (zz & 1) ? -static_cast<int>((zz + 1) / 2) : static_cast<int>(zz / 2);
    const int len = prev_len + delta;
    if (len < 0 || len > static_cast<int>(precision)) return 0;
    uint32_t v = 0;
    if (len == 1) v = 1;
    if (len >= 2) v = (1u << (len - 1)) | r.get(len - 1);
    if (r.bad) return 0;
    freq[s] = v + 1;
    sum += v + 1;
    if (sum >= total) return 0;
    prev_len = len;
  }
  freq[last] = total - sum;
  const uint32_t bytes = (r.pos + 7) / 8;
  while (r.pos < bytes * 8)
    if (r.get(1) != 0) return 0;
  return bytes;
}

// ---- one rANS plane stream, decoded by one warp (docs/FORMAT-rans.md "Lanes and phases") ----
// Returns kOk or kCorrupt (warp-uniform). `out` receives n bytes.
__device__ uint32_t decode_stream_warp(const uint8_t* stream, uint32_t size, uint32_t n, uint8_t* out,
                                       uint32_t* table, uint32_t* freq, uint32_t* cum, uint32_t precision_cap) {
  const uint32_t lane = threadIdx.x & 31;
  if (size == 0) return kCorrupt;
  const uint8_t mode = stream[0];
  if (mode == 0) {  // stored: exactly 1 + n bytes (8-bit symbols: no padding bits)
    if (size != 1 + n) return kCorrupt;
    for (uint32_t i = lane; i < n; i += 32) out[i] = stream[1 + i];
    return kOk;
  }
  if (n == 0) return kCorrupt;
  if (mode == 2) {  // constant run
    if (size != 2) return kCorrupt;
    const uint8_t s = stream[1];
    for (uint32_t i = lane; i < n; i += 32) out[i] = s;
    return kOk;
  }
  // Mode 3 (shared table) is never written by the packer (tile_codec.cpp passes no table) and a
  // tile carries no shared table: corrupt, as for the CPU reference without a table.
  if (mode != 1 || size < 2) return kCorrupt;
  const uint32_t precision = kMinPrecision + (stream[1] & 3u);
  const uint32_t tail = stream[1] >> 2;
  if (precision > precision_cap) return kCorrupt;  // also catches the reserved value 3 (p = 13)

  // Table: lane 0 parses it (a few hundred bits, serial by nature), then the warp builds the
  // slot table: slot -> symbol (bits 0-7), slot - cum (bits 8-19), f - 1 (bits 20-31).
  uint32_t table_bytes = 0;
  if (lane == 0) {
    table_bytes = read_table(stream + 2, size - 2, precision, freq);
    if (table_bytes) {
      uint32_t c = 0;
      for (uint32_t s = 0; s < 256; ++s) {
        cum[s] = c;
        c += freq[s];
      }
    }
  }
  table_bytes = __shfl_sync(0xFFFFFFFFu, table_bytes, 0);
  if (table_bytes == 0) return kCorrupt;
  __syncwarp();
  const uint32_t slots = 1u << precision;
  for (uint32_t slot = lane; slot < slots; slot += 32) {
    // Largest s with cum[s] <= slot: it is present (an absent s has cum[s] == cum[s + 1]).
    uint32_t lo = 0, hi = 256;  // invariant: cum[lo] <= slot, and s >= hi has cum[s] > slot
    while (hi - lo > 1) {
      const uint32_t mid = (lo + hi) / 2;
      if (cum[mid] <= slot) lo = mid; else hi = mid;
    }
    table[slot] = lo | ((slot - cum[lo]) << 8) | ((freq[lo] - 1) << 20);
  }
  __syncwarp();

  // Body: U lane states, then R 16-bit words.
  const uint32_t body = 2 + table_bytes;
  const uint32_t used = n < 32 ? n : 32;
  if (size < body + 4 * used || ((size - body - 4 * used) & 1u)) return kCorrupt;
  const uint8_t* words = stream + body + 4 * used;
  const uint32_t word_count = (size - body - 4 * used) / 2;

  const uint32_t count = n > lane ? (n - 1 - lane) / 32 + 1 : 0;  // symbols of this lane
  const uint32_t main_len = count - (tail < count ? tail : count);
  uint32_t x = lane < used ? load_u32_le(stream + body + 4 * lane) : 0;
  const uint32_t mask = slots - 1;
  const uint32_t steps = (n - 1) / 32 + 1;  // lane 0's count
  const uint32_t lanes_below = (1u << lane) - 1;
  uint32_t next = 0;  // words consumed (warp-uniform)
  bool overrun = false;
  for (uint32_t t = 0; t < steps; ++t) {
    bool need = false;
    uint32_t v = 0;
    if (t < count) {
      const uint32_t e = table[x & mask];
      out[32 * t + lane] = static_cast<uint8_t>(e);
      v = ((e >> 20) + 1) * (x >> precision) + ((e >> 8) & 0xFFFu);
      need = (t < main_len) && (v < kStateLower);
      x = v;
    }
    // Lanes needing a word read consecutive words in lane order (the encoder wrote them so).
    const uint32_t ballot = __ballot_sync(0xFFFFFFFFu, need);
    if (need) {
      const uint32_t at = next + __popc(ballot & lanes_below);
      if (at < word_count) {
        x = (v << 16) | uint32_t{words[2 * at]} | (uint32_t{words[2 * at + 1]} << 8);
      } else {
        overrun = true;
      }
    }
    next += __popc(ballot);
  }
  const uint32_t initial = tail ? 0u : kStateLower;
  const bool bad = overrun || (lane < used && x != initial);
  if (__any_sync(0xFFFFFFFFu, bad) || next != word_count) return kCorrupt;
  return kOk;
}

// Element e (0-based, in the tile) assembled from the planes, the filter undone; little-endian bits.
__device__ __forceinline__ uint64_t tile_element(const uint8_t* const* planes, uint32_t e, uint32_t elem_size,
                                                 uint8_t filter) {
  uint64_t v = 0;
  if (filter == kFilterNone) {
    const uint8_t* p = planes[0] + static_cast<uint64_t>(e) * elem_size;
    for (uint32_t b = 0; b < elem_size; ++b) v |= uint64_t{p[b]} << (8 * b);
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
  if (tile.codec == kCodecZstd) return kUnsupportedCodec;
  if (tile.codec != kCodecNone && tile.codec != kCodecRans) return kCorrupt;
  if (tile.filter == kFilterBitShuffle) return kUnsupportedFilter;
  if (tile.filter > kFilterFloatPlanes) return kCorrupt;
  if (tile.filter == kFilterFloatPlanes && elem_size == 1) return kUnsupportedFilter;
  if (static_cast<uint64_t>(tile.rows) * tile.cols * elem_size != tile.raw_size || tile.raw_size == 0) return kCorrupt;
  if (tile.stored_size > plan.stored_cap || tile.raw_size > plan.raw_cap) return kTooLarge;

  uint8_t* stored = smem + layout.stored;
  load_stored(stored, bytes_dev + tile.offset, tile.stored_size);
  __syncthreads();

  const uint32_t planes = tile.filter == kFilterNone ? 1 : elem_size;
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
    uint32_t elem_size,                     // bytes per element: 1, 2, 4 or 8
    uint64_t tensor_cols,                   // elements per row of the output
    SmemPlan plan,
    uint8_t* __restrict__ out_dev,          // (rows, tensor_cols) elements, row-major
    uint32_t* __restrict__ status_dev) {    // (tile_count)
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ const uint8_t* plane_ptr[kMaxPlanes];
  __shared__ uint32_t status_shared;
  const DevTile tile = tiles_dev[blockIdx.x];
  const uint32_t status = decode_tile_smem(bytes_dev, tile, elem_size, plan, smem, plane_ptr, &status_shared);
  if (threadIdx.x == 0) status_dev[blockIdx.x] = status;
  if (status != kOk) return;

  const uint32_t elements = tile.rows * tile.cols;
  for (uint32_t e = threadIdx.x; e < elements; e += kThreads) {
    const uint64_t v = tile_element(plane_ptr, e, elem_size, tile.filter);
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

template <uint32_t kBatch>
__global__ void __launch_bounds__(kThreads) gemv_bf16_kernel(
    const uint8_t* __restrict__ bytes_dev,  // stored bytes of all tiles, each 16-aligned
    const DevTile* __restrict__ tiles_dev,  // (tile_count), W is (N, K) BF16
    SmemPlan plan,
    const uint16_t* __restrict__ x_dev,     // (K, kBatch) BF16 bits
    float* __restrict__ y_dev,              // (N, kBatch), zeroed before the launch
    uint32_t* __restrict__ status_dev) {    // (tile_count)
  static_assert(kBatch >= 1 && kBatch <= 8, "batch 1..8");
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ const uint8_t* plane_ptr[kMaxPlanes];
  __shared__ uint32_t status_shared;
  const DevTile tile = tiles_dev[blockIdx.x];
  const SmemLayout layout(plan);
  float* xs = reinterpret_cast<float*>(smem + layout.x);  // (tile.cols, kBatch)
  // x for this tile's columns, read before the decode so its latency overlaps the cp.async.
  for (uint32_t i = threadIdx.x; i < tile.cols * kBatch; i += kThreads)
    xs[i] = __uint_as_float(uint32_t{x_dev[uint64_t{tile.col0} * kBatch + i]} << 16);
  const uint32_t status = decode_tile_smem(bytes_dev, tile, 2, plan, smem, plane_ptr, &status_shared);
  if (threadIdx.x == 0) status_dev[blockIdx.x] = status;
  if (status != kOk) return;

  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  for (uint32_t r = warp; r < tile.rows; r += kWarps) {
    float acc[kBatch];
#pragma unroll
    for (uint32_t b = 0; b < kBatch; ++b) acc[b] = 0.f;
    for (uint32_t c = lane; c < tile.cols; c += 32) {
      const float w = __uint_as_float(static_cast<uint32_t>(tile_element(plane_ptr, r * tile.cols + c, 2, tile.filter)) << 16);
#pragma unroll
      for (uint32_t b = 0; b < kBatch; ++b) acc[b] = fmaf(w, xs[c * kBatch + b], acc[b]);
    }
#pragma unroll
    for (uint32_t b = 0; b < kBatch; ++b) {
#pragma unroll
      for (int off = 16; off > 0; off /= 2) acc[b] += __shfl_xor_sync(0xFFFFFFFFu, acc[b], off);
    }
    if (lane == 0) {
#pragma unroll
      for (uint32_t b = 0; b < kBatch; ++b) atomicAdd(&y_dev[(tile.row0 + uint64_t{r}) * kBatch + b], acc[b]);
    }
  }
}

template <uint32_t kBatch>
cudaError_t launch_gemv_batch(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                              const SmemPlan& plan, const uint16_t* x_dev, float* y_dev, uint32_t* status_dev,
                              cudaStream_t stream) {
  const uint64_t smem = gemv_smem_bytes(plan, kBatch);
  cudaError_t err = cudaFuncSetAttribute(gemv_bf16_kernel<kBatch>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  gemv_bf16_kernel<kBatch><<<static_cast<unsigned>(tile_count), kThreads, smem, stream>>>(
      bytes_dev, tiles_dev, plan, x_dev, y_dev, status_dev);
  return cudaGetLastError();
}

}  // namespace

uint64_t decode_smem_bytes(const SmemPlan& plan) { return SmemLayout(plan).total; }
uint64_t gemv_smem_bytes(const SmemPlan& plan, uint32_t batch) { return SmemLayout(plan, plan.cols_cap * batch).total; }

cudaError_t launch_decode(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                          uint32_t elem_size, uint64_t tensor_cols, const SmemPlan& plan, void* out_dev,
                          uint32_t* status_dev, cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  const uint64_t smem = decode_smem_bytes(plan);
  cudaError_t err = cudaFuncSetAttribute(decode_tiles_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  decode_tiles_kernel<<<static_cast<unsigned>(tile_count), kThreads, smem, stream>>>(
      bytes_dev, tiles_dev, elem_size, tensor_cols, plan, static_cast<uint8_t*>(out_dev), status_dev);
  return cudaGetLastError();
}

cudaError_t launch_gemv_bf16(const uint8_t* bytes_dev, const DevTile* tiles_dev, uint64_t tile_count,
                             const SmemPlan& plan, const uint16_t* x_dev, float* y_dev, uint32_t batch,
                             uint32_t* status_dev, cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  switch (batch) {
    case 1: return launch_gemv_batch<1>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    case 2: return launch_gemv_batch<2>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    case 3: return launch_gemv_batch<3>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    case 4: return launch_gemv_batch<4>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    case 5: return launch_gemv_batch<5>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    case 6: return launch_gemv_batch<6>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    case 7: return launch_gemv_batch<7>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    case 8: return launch_gemv_batch<8>(bytes_dev, tiles_dev, tile_count, plan, x_dev, y_dev, status_dev, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace wpack::gpu::detail
