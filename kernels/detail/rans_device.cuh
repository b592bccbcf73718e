// Internal to kernels/ (CUDA only): the device side of the rANS stream format of
// docs/FORMAT-rans.md, shared by every kernel that decodes rANS planes in shared memory.
// The scalar reference is packer/rans.cpp rans_decode(); these functions must match it bit for bit.
#pragma once

#include <cstdint>

namespace wpack::gpu::detail {
namespace {

// docs/FORMAT-rans.md "Constants" and "Modes 1 and 3"
constexpr uint32_t kStateLower = 1u << 16;  // L
constexpr uint32_t kStateLowerBits = 16;
constexpr uint32_t kMinPrecision = 8;
constexpr uint32_t kMaxPrecision = 12;      // the slot table entry below has 12-bit fields
constexpr uint32_t kPrecisionFieldBits = 3, kDeltaFieldBits = 2, kTailFieldBits = 6;
constexpr uint32_t kMainLengthBits = 4, kTailLengthBits = 6;  // lane state length fields

// TileStatus values (kernels/tile_decode.h)
constexpr uint32_t kOk = 0, kUnsupportedCodec = 1, kUnsupportedFilter = 2, kCorrupt = 3, kTooLarge = 4;

__device__ __forceinline__ uint32_t load_u32_le(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// Bits [pos, pos + count) of `data` (size_bits bits, LSB-first within each byte, bytes in order),
// count <= 32, as an integer whose bit 0 is the bit at `pos`. Past the end: sets *bad, returns 0.
__device__ __forceinline__ uint32_t read_bits(const uint8_t* data, uint64_t size_bits, uint64_t pos, uint32_t count,
                                              bool* bad) {
  if (pos > size_bits || count > size_bits - pos) {
    *bad = true;
    return 0;
  }
  if (count == 0) return 0;
  // At most 5 bytes hold the bits (pos % 8 + count <= 39), all inside `data` by the check above.
  const uint64_t first = pos >> 3, last = (pos + count - 1) >> 3;
  uint64_t window = 0;
  for (uint64_t b = last + 1; b-- > first;) window = (window << 8) | data[b];
  return static_cast<uint32_t>((window >> (pos & 7u)) & ((uint64_t{1} << count) - 1u));
}

// ---- the frequency table (docs/FORMAT-rans.md "Frequency table"), parsed by one lane ----
struct BitReader {
  const uint8_t* data;
  uint64_t size_bits;
  uint64_t pos = 0;
  bool bad = false;
  __device__ uint32_t get(uint32_t count) {  // count <= 32
    const uint32_t v = read_bits(data, size_bits, pos, count, &bad);
    if (!bad) pos += count;
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

// Reads the table of `symbol_bits`-bit symbols (8, 4, 3 or 2) at precision p from r's position
// into freq[256] (0 = absent; entries at and above 2^symbol_bits stay 0). Returns false (or sets
// r.bad) when the table is malformed.
__device__ bool read_table(BitReader& r, uint32_t precision, uint32_t* freq, uint32_t symbol_bits) {
  for (uint32_t s = 0; s < 256; ++s) freq[s] = 0;
  const uint32_t alphabet = 1u << symbol_bits;
  uint32_t pos = 0, present_count = 0;
  bool first = true;
  while (!r.bad) {
    const uint32_t code = r.gamma();
    if (r.bad) return false;
    if (code == 1 && !first) break;
    const uint32_t gap = code - 1;
    if (gap >= alphabet - pos) return false;
    pos += gap;
    first = false;
    const uint32_t run = r.gamma();
    if (r.bad || run > alphabet - pos) return false;
    for (uint32_t i = 0; i < run; ++i) freq[pos + i] = 1;  // present marker
    present_count += run;
    pos += run;
    if (pos == alphabet) break;
  }
  if (r.bad || present_count == 0) return false;
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
      if (++zz > 24) return false;
    if (r.bad) return false;
    const int delta = (zz & 1) ? -static_cast<int>((zz + 1) / 2) : static_cast<int>(zz / 2);
    const int len = prev_len + delta;
    if (len < 0 || len > static_cast<int>(precision)) return false;
    uint32_t v = 0;
    if (len == 1) v = 1;
    if (len >= 2) v = (1u << (len - 1)) | r.get(len - 1);
    if (r.bad) return false;
    freq[s] = v + 1;
    sum += v + 1;
    if (sum >= total) return false;
    prev_len = len;
  }
  freq[last] = total - sum;
  return true;
}

// Exclusive prefix sum of v over lanes 0 .. lane - 1 of a full warp; *total receives the sum over
// all 32 lanes.
__device__ __forceinline__ uint32_t warp_exclusive_sum(uint32_t v, uint32_t lane, uint32_t* total) {
  uint32_t inclusive = v;
  for (uint32_t d = 1; d < 32; d <<= 1) {
    const uint32_t up = __shfl_up_sync(0xFFFFFFFFu, inclusive, d);
    if (lane >= d) inclusive += up;
  }
  *total = __shfl_sync(0xFFFFFFFFu, inclusive, 31);
  return inclusive - v;
}

// ---- one rANS plane stream, decoded by one warp (docs/FORMAT-rans.md "Lanes and phases") ----
// n symbols of `symbol_bits` bits (8, 4, 3 or 2). Returns kOk or kCorrupt (warp-uniform). `out`
// receives n bytes, one symbol per byte (symbols narrower than 8 bits are unpacked).
// Shared memory: table[2^precision_cap] (the slot table), freq[256] and cum[256], all u32.
__device__ uint32_t decode_stream_warp(const uint8_t* stream, uint32_t size, uint32_t n, uint8_t* out,
                                       uint32_t* table, uint32_t* freq, uint32_t* cum, uint32_t precision_cap,
                                       uint32_t symbol_bits = 8) {
  const uint32_t lane = threadIdx.x & 31;
  if (size == 0) return kCorrupt;
  const uint8_t mode = stream[0];
  if (mode == 0) {  // stored: exactly 1 + P packed bytes, P = ceil(n * b / 8), padding bits zero
    const uint32_t packed = static_cast<uint32_t>((uint64_t{n} * symbol_bits + 7) / 8);
    if (size != 1 + packed) return kCorrupt;
    if (symbol_bits == 8) {
      for (uint32_t i = lane; i < n; i += 32) out[i] = stream[1 + i];
      return kOk;
    }
    const uint32_t used_bits = n * symbol_bits;  // n * b < 2^32: the stream fits in shared memory
    const bool bad_padding = packed > 0 && (used_bits & 7u) && lane == 0 &&
                             (stream[packed] >> (used_bits & 7u)) != 0;
    if (__any_sync(0xFFFFFFFFu, bad_padding)) return kCorrupt;
    for (uint32_t i = lane; i < n; i += 32) {
      const uint32_t bit = i * symbol_bits;  // b <= 4: a symbol never straddles more than 2 bytes
      const uint32_t lo = stream[1 + (bit >> 3)];
      const uint32_t hi = (bit >> 3) + 1 < packed ? stream[2 + (bit >> 3)] : 0u;
      out[i] = static_cast<uint8_t>(((lo | (hi << 8)) >> (bit & 7u)) & ((1u << symbol_bits) - 1u));
    }
    return kOk;
  }
  if (n == 0) return kCorrupt;
  if (mode == 2) {  // constant run
    if (size != 2) return kCorrupt;
    const uint8_t s = stream[1];
    if (s >> symbol_bits) return kCorrupt;
    for (uint32_t i = lane; i < n; i += 32) out[i] = s;
    return kOk;
  }
  // Mode 3 (shared table) is never written by the packer (tile_codec.cpp passes no table) and a
  // tile carries no shared table: corrupt, as for the CPU reference without a table.
  if (mode != 1) return kCorrupt;

  // Header bits after the mode byte (every lane reads them): p - 8, D, K0, then D bits per lane.
  const uint8_t* bits = stream + 1;
  const uint64_t size_bits = uint64_t{size - 1} * 8;
  bool bad = false;
  const uint32_t precision = kMinPrecision + read_bits(bits, size_bits, 0, kPrecisionFieldBits, &bad);
  const uint32_t delta_bits = read_bits(bits, size_bits, kPrecisionFieldBits, kDeltaFieldBits, &bad);
  const uint32_t tail_base = read_bits(bits, size_bits, kPrecisionFieldBits + kDeltaFieldBits, kTailFieldBits, &bad);
  if (bad || precision > kMaxPrecision || precision > precision_cap) return kCorrupt;  // warp-uniform
  const uint32_t used = n < 32 ? n : 32;
  uint64_t pos = kPrecisionFieldBits + kDeltaFieldBits + kTailFieldBits;
  const uint32_t tail = tail_base + (lane < used ? read_bits(bits, size_bits, pos + delta_bits * lane, delta_bits, &bad) : 0u);
  pos += uint64_t{delta_bits} * used;

  // Table: lane 0 parses it (a few hundred bits, serial by nature), then the warp builds the
  // slot table: slot -> symbol (bits 0-7), slot - cum (bits 8-19), f - 1 (bits 20-31).
  uint32_t table_end = 0;  // bit position after the table; 0: malformed
  if (lane == 0) {
    BitReader r{bits, size_bits, pos};
    if (read_table(r, precision, freq, symbol_bits) && !r.bad) {
      table_end = static_cast<uint32_t>(r.pos);  // < 2^32: a stream in shared memory is far smaller
      uint32_t c = 0;
      for (uint32_t s = 0; s < 256; ++s) {
        cum[s] = c;
        c += freq[s];
      }
    }
  }
  table_end = __shfl_sync(0xFFFFFFFFu, table_end, 0);
  if (table_end == 0 || __any_sync(0xFFFFFFFFu, bad)) return kCorrupt;
  pos = table_end;
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

  // Lane states: U length fields (4 bits in a lane with a main phase, 6 in an all-tail lane), then
  // each state's bits below its leading one. Offsets by warp prefix sums.
  const uint32_t count = n > lane ? (n - 1 - lane) / 32 + 1 : 0;  // symbols of this lane
  const uint32_t main_len = count - (tail < count ? tail : count);
  const uint32_t field_bits = lane < used ? (main_len > 0 ? kMainLengthBits : kTailLengthBits) : 0u;
  uint32_t fields_total = 0;
  const uint32_t field_at = warp_exclusive_sum(field_bits, lane, &fields_total);
  const uint32_t field = read_bits(bits, size_bits, pos + field_at, field_bits, &bad);
  const uint32_t width = lane < used ? (main_len > 0 ? field + kStateLowerBits + 1 : field) : 0u;
  if (width > 32) bad = true;
  const uint32_t mantissa_bits = width > 1 && width <= 32 ? width - 1 : 0u;
  uint32_t mantissas_total = 0;
  const uint32_t mantissa_at = warp_exclusive_sum(mantissa_bits, lane, &mantissas_total);
  uint32_t x = read_bits(bits, size_bits, pos + fields_total + mantissa_at, mantissa_bits, &bad);
  if (width >= 1 && width <= 32) x |= 1u << (width - 1);
  pos += uint64_t{fields_total} + mantissas_total;
  // Zero padding to the byte boundary, then the words.
  const uint32_t pad = static_cast<uint32_t>((8 - (pos & 7u)) & 7u);
  if (lane == 0 && read_bits(bits, size_bits, pos, pad, &bad) != 0) bad = true;
  if (__any_sync(0xFFFFFFFFu, bad)) return kCorrupt;
  const uint32_t body = 1 + static_cast<uint32_t>((pos + pad) / 8);  // <= size: read_bits checked
  if ((size - body) & 1u) return kCorrupt;
  const uint8_t* words = stream + body;
  const uint32_t word_count = (size - body) / 2;

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
  const uint32_t initial = tail ? 0u : kStateLower;  // where this lane's encoder started
  const bool wrong_end = overrun || (lane < used && x != initial);
  if (__any_sync(0xFFFFFFFFu, wrong_end) || next != word_count) return kCorrupt;
  return kOk;
}

}  // namespace
}  // namespace wpack::gpu::detail
