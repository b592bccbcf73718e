// Internal to kernels/ (CUDA only): a rANS plane stream (docs/FORMAT-rans.md) decoded by one
// warp whose lanes are the stream's 32 interleaved states, in the warp-per-tile GEMVs
// (lossless_gemv.cu, quant_rans_gemv.cu). The table is parsed by every lane in step from 32-bit
// windows of the bit string; the scalar reference is packer/rans.cpp rans_decode(), which these
// functions match bit for bit.
#pragma once

#include <cstdint>

#include "kernels/detail/rans_device.cuh"  // the format's constants, warp_exclusive_sum

namespace wpack::gpu::detail {
namespace {

// Fields of the stream's bit string (docs/FORMAT-rans.md, LSB first) read from shared memory by
// aligned 32-bit loads and a funnel shift. Reads are checked against the stream's size, never
// read past it by more than 8 bytes, and set `bad` instead.
struct BitString {
  const uint32_t* words;  // the buffer holding the stream, 4-aligned
  uint32_t base;          // bit position of the bit string in the buffer (after the mode byte)
  uint32_t size_bits;     // bits of the bit string
  __device__ uint32_t peek(uint32_t pos) const {  // 32 bits from pos; caller: pos < size_bits
    const uint32_t a = base + pos;
    return __funnelshift_r(words[a >> 5], words[(a >> 5) + 1], a & 31);
  }
  __device__ uint32_t get(uint32_t& pos, uint32_t count, bool& bad) const {  // count <= 32
    if (count > size_bits || pos > size_bits - count) {
      bad = true;
      return 0;
    }
    if (count == 0) return 0;
    const uint32_t v = peek(pos) & (count == 32 ? ~0u : (1u << count) - 1u);
    pos += count;
    return v;
  }
  // gamma(v): z zero bits, a one, z bits of v below its leading one (z <= 24), from one 32-bit
  // window when z <= 15 (a second one otherwise). Needs size_bits >= 1.
  __device__ uint32_t gamma(uint32_t& pos, bool& bad) const {
    const uint32_t window = peek(min(pos, size_bits - 1));
    const uint32_t z = __ffs(window) - 1;  // window == 0: z = ~0u, caught below
    if (pos >= size_bits || z > 24 || 2 * z + 1 > size_bits - pos) {
      bad = true;
      return 1;
    }
    const uint32_t rest = z <= 15 ? window >> (z + 1) : peek(pos + z + 1);
    pos += 2 * z + 1;
    return (1u << z) | (rest & ((1u << z) - 1u));
  }
};

// Parses the frequency table at `pos` (docs/FORMAT-rans.md "Frequency table") of symbols of
// `symbol_bits` bits (8, 4, 3 or 2: an alphabet of 2^symbol_bits) into info[256] = f << 16 | cum
// and the slot table tab[2^p] (slot -> symbol). Every lane runs the parse in step (the same
// instructions and values: no divergence); lane 0 writes the frequencies. tab nullptr: no slot
// table (decode_step<true> then searches info's cum column instead). Returns false when the table
// is malformed. Ends with the warp synchronised.
__device__ bool build_tables(const BitString& bits, uint32_t& pos, uint32_t precision, uint32_t symbol_bits,
                             uint32_t* info, uint8_t* tab, uint32_t lane) {
  const uint32_t alphabet = 1u << symbol_bits;
  reinterpret_cast<uint4*>(info)[lane] = make_uint4(0, 0, 0, 0);
  reinterpret_cast<uint4*>(info)[lane + 32] = make_uint4(0, 0, 0, 0);
  // 1. Present symbols as runs; lane l < 8 keeps the presence bits of symbols [32 l, 32 l + 32).
  bool bad = false;
  uint32_t present = 0, at = 0, present_count = 0;
  for (bool first = true;; first = false) {
    const uint32_t code = bits.gamma(pos, bad);
    if (code == 1 && !first && !bad) break;
    const uint32_t gap = code - 1;
    const uint32_t run = bits.gamma(pos, bad);
    if (bad || gap >= alphabet - at || run > alphabet - at - gap) return false;
    at += gap;
    const uint32_t lo = max(at, 32 * lane), hi = min(at + run, 32 * lane + 32);
    if (lane < 8 && lo < hi) present |= (hi - lo == 32 ? ~0u : ((1u << (hi - lo)) - 1u)) << (lo - 32 * lane);
    present_count += run;
    at += run;
    if (at == alphabet) break;
  }
  if (present_count == 0) return false;
  // 2. Frequencies of the present symbols but the last, in symbol order.
  const uint32_t top = present ? 32 * lane + 31 - __clz(present) : 0u;
  const uint32_t last = __reduce_max_sync(0xFFFFFFFFu, top);
  const uint32_t total = 1u << precision;
  uint32_t sum = 0;
  int prev_len = 0;
  __syncwarp();  // the zeroed info before lane 0's writes
  for (uint32_t word = 0; word <= last / 32; ++word) {
    uint32_t m = __shfl_sync(0xFFFFFFFFu, present, word);
    for (; m; m &= m - 1) {
      const uint32_t s = 32 * word + __ffs(m) - 1;
      if (s == last) break;
      // The symbol's entry: zz one bits and a zero (the zigzagged length delta), then the len - 1
      // bits of v below its leading one, read from one 32-bit window (a second one only when the
      // entry is longer). One test of every condition, so that the loop has one exit for a bad table.
      const uint32_t window = bits.peek(min(pos, bits.size_bits - 1));
      const uint32_t zz = __ffs(~window) - 1;  // 32 one bits: ~0u, caught below
      const int len = prev_len + ((zz & 1) ? -static_cast<int>((zz + 1) / 2) : static_cast<int>(zz / 2));
      const bool len_ok = zz <= 24 && len >= 0 && len <= static_cast<int>(precision);
      const uint32_t low_bits = len_ok && len >= 2 ? len - 1 : 0u, entry = zz + 1 + low_bits;
      if (pos >= bits.size_bits || !len_ok || entry > bits.size_bits - pos) return false;
      const uint32_t rest = entry <= 32 ? window >> (zz + 1) : bits.peek(pos + zz + 1);
      const uint32_t v = len >= 2 ? (1u << low_bits) | (rest & ((1u << low_bits) - 1u)) : len == 1 ? 1u : 0u;
      pos += entry;
      sum += v + 1;
      if (sum >= total) return false;
      if (lane == 0) info[s] = v + 1;
      prev_len = len;
    }
  }
  if (lane == 0) info[last] = total - sum;
  __syncwarp();
  // 3. cum by a warp prefix sum (lane l: symbols 8 l .. 8 l + 7), info = f << 16 | cum.
  uint4 f0 = reinterpret_cast<const uint4*>(info)[2 * lane], f1 = reinterpret_cast<const uint4*>(info)[2 * lane + 1];
  const uint32_t mine = f0.x + f0.y + f0.z + f0.w + f1.x + f1.y + f1.z + f1.w;
  uint32_t all = 0;
  uint32_t c = warp_exclusive_sum(mine, lane, &all);
  uint32_t f[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
#pragma unroll
  for (uint32_t i = 0; i < 8; ++i) {
    const uint32_t fi = f[i];
    f[i] = (fi << 16) | c;
    c += fi;
  }
  reinterpret_cast<uint4*>(info)[2 * lane] = make_uint4(f[0], f[1], f[2], f[3]);
  reinterpret_cast<uint4*>(info)[2 * lane + 1] = make_uint4(f[4], f[5], f[6], f[7]);
  __syncwarp();
  // 4. The slot table: symbol by symbol, the warp fills its f slots (none without a table).
  for (uint32_t word = 0; tab != nullptr && word <= last / 32; ++word) {
    for (uint32_t m = __shfl_sync(0xFFFFFFFFu, present, word); m; m &= m - 1) {
      const uint32_t s = 32 * word + __ffs(m) - 1;
      const uint32_t e = info[s], f = e >> 16;
      for (uint32_t j = lane; j < f; j += 32) tab[(e & 0xFFFFu) + j] = static_cast<uint8_t>(s);
    }
  }
  __syncwarp();
  return true;
}

// One lane's share of an open mode-1 stream (docs/FORMAT-rans.md "Lanes and phases").
struct LaneStream {
  uint32_t x = 0;          // the lane's state
  uint32_t steps = 0;      // c_l: the lane's symbols, one per step t < steps (0: a lane past U)
  uint32_t main_len = 0;   // m_l: steps t < main_len renormalise
  uint32_t tail = 0;       // k_l: the final state is 0 when k_l >= 1, L otherwise
  uint32_t precision = 0;  // p, warp-uniform
  uint32_t word_count = 0;           // R
  uint32_t last_word = 0;            // max(R - 1, 0): word reads are clamped to it
  const uint16_t* words = nullptr;   // the renormalisation words, 4-byte aligned in shared memory
  uint32_t next = 0;                 // words read so far (warp-uniform)
  // After the last step: the lane ended in its encoder's initial state.
  __device__ bool final_ok() const { return steps == 0 || x == (tail ? 0u : kStateLower); }
  // After the last step, warp-uniform: every lane ended in its initial state and every word was read
  // (docs/FORMAT-rans.md: otherwise the stream is corrupt).
  __device__ bool ended_ok() const { return !__any_sync(0xFFFFFFFFu, !final_ok()) && next == word_count; }
};

// Opens the mode-1 stream of `size` bytes at byte `at` of `buf` (shared memory, 4-aligned, readable
// 8 bytes past the stream) that codes n >= 1 symbols of `symbol_bits` bits: the header, the table
// (into info, and the slot table into tab unless tab is nullptr: build_tables) and the lane
// states, and moves the renormalisation words to a 4-byte boundary: to `word_dst` when given (room
// for size bytes), else in place (over the stream's own bytes, up to 3 bytes past its end).
// Returns false, warp-uniform, when the stream is malformed or its precision exceeds
// precision_cap. Every lane calls it; ends synchronised.
__device__ bool open_stream(uint8_t* buf, uint32_t at, uint32_t size, uint32_t n, uint32_t symbol_bits,
                            uint32_t precision_cap, uint32_t* info, uint8_t* tab, uint32_t* word_dst, uint32_t lane,
                            LaneStream& s) {
  if (size < 2 || n == 0 || buf[at] != 1) return false;  // mode 1: rANS with an inline table
  const BitString bits{reinterpret_cast<const uint32_t*>(buf), 8 * at + 8, (size - 1) * 8};
  const uint32_t lanes = n < 32 ? n : 32u;  // U
  const bool active = lane < lanes;
  bool bad = false;
  uint32_t pos = 0;
  s.precision = kMinPrecision + bits.get(pos, kPrecisionFieldBits, bad);
  const uint32_t delta_bits = bits.get(pos, kDeltaFieldBits, bad);
  const uint32_t tail_base = bits.get(pos, kTailFieldBits, bad);
  if (bad || s.precision > kMaxPrecision || s.precision > precision_cap) return false;  // uniform
  uint32_t lane_pos = pos + delta_bits * lane;
  s.tail = tail_base + (active ? bits.get(lane_pos, delta_bits, bad) : 0u);
  pos += delta_bits * lanes;
  if (__any_sync(0xFFFFFFFFu, bad) || !build_tables(bits, pos, s.precision, symbol_bits, info, tab, lane)) return false;
  s.steps = active ? (n - lane + 31) / 32 : 0u;
  s.main_len = s.steps - min(s.tail, s.steps);
  const uint32_t field_bits = !active ? 0u : s.main_len > 0 ? kMainLengthBits : kTailLengthBits;
  uint32_t fields_total = 0;
  uint32_t field_at = pos + warp_exclusive_sum(field_bits, lane, &fields_total);
  const uint32_t field = bits.get(field_at, field_bits, bad);
  const uint32_t width = !active ? 0u : s.main_len > 0 ? field + kStateLowerBits + 1 : field;
  if (width > 32) bad = true;
  const uint32_t mantissa_bits = width > 1 && width <= 32 ? width - 1 : 0u;
  uint32_t mantissas_total = 0;
  field_at = pos + fields_total + warp_exclusive_sum(mantissa_bits, lane, &mantissas_total);
  s.x = bits.get(field_at, mantissa_bits, bad);
  if (width >= 1 && width <= 32) s.x |= 1u << (width - 1);
  pos += fields_total + mantissas_total;
  const uint32_t pad = (8 - (pos & 7u)) & 7u;
  if (bits.get(pos, pad, bad) != 0) bad = true;
  if (__any_sync(0xFFFFFFFFu, bad)) return false;
  const uint32_t body = 1 + pos / 8;  // bytes of mode, header, table and states
  if (body > size || ((size - body) & 1u)) return false;
  s.word_count = (size - body) / 2;
  s.last_word = s.word_count > 0 ? s.word_count - 1 : 0u;
  s.next = 0;
  // Move the words to a 4-byte boundary (they start anywhere): out[i] = bytes [w_at + 4 i, + 4).
  const uint32_t w_at = at + body, shift = w_at & 3u;
  uint32_t* src = reinterpret_cast<uint32_t*>(buf + (w_at & ~3u));
  uint32_t* dst = word_dst ? word_dst : src;
  if (shift || dst != src) {
    const uint32_t n32 = (2 * s.word_count + 3) / 4;
    for (uint32_t i0 = 0; i0 < n32; i0 += 32) {
      const uint32_t i = i0 + lane;
      const uint32_t v = i < n32 ? __funnelshift_r(src[i], src[i + 1], 8 * shift) : 0u;
      __syncwarp();
      if (i < n32) dst[i] = v;
      __syncwarp();
    }
  }
  s.words = reinterpret_cast<const uint16_t*>(dst);
  return true;
}

// base[i] of a 4-aligned shared buffer (the slot table's symbol, a buffered code). CUDA 11.8's ptxas
// miscompiles the plain byte load for sm_90 in some instances: in quant_rans_gemv_kernel<2, false,
// true, false> the slot table's byte, held as a 16-bit value, was merged into the low half of a
// register whose high half held a rANS state, and the index into info[] took all 32 bits
// (mul.wide.u16 as a 32-bit IMAD): an out-of-bounds shared load and an illegal-instruction error on
// the H200 (compute-sanitizer). There the byte is taken from its 32-bit word by a PRMT, so no
// 16-bit value exists; CUDA 12+ builds keep the byte load.
__device__ __forceinline__ uint32_t smem_byte(const uint8_t* base, uint32_t i) {
#if defined(__CUDACC_VER_MAJOR__) && __CUDACC_VER_MAJOR__ < 12
  const uint32_t word = reinterpret_cast<const uint32_t*>(base)[i >> 2];
  return __byte_perm(word, 0u, 0x4440u | (i & 3u));  // byte i % 4, upper bytes from 0
#else
  return base[i];
#endif
}

// One decode step of an open stream: the lane's symbol of step t (its state advanced), for a lane
// that holds one (`active`, the caller knows t < s.steps). Renormalisation words: every lane loads
// word next + lane before its state is known (off the state's dependency chain); a lane that needs
// one takes its rank's by shuffle (ballot, popc). Reads are clamped to the stream's words: a corrupt
// stream that wants more ends with next > word_count. below = lanes under this one, as a mask.
// kSearch: no slot table; the symbol is found in info's cum column. kMain: the caller knows that every
// lane of the warp holds step t in its main phase (active, t < s.main_len), so neither is tested.
template <bool kSearch = false, bool kMain = false>
__device__ __forceinline__ uint32_t decode_step(LaneStream& s, uint32_t t, bool active, uint32_t mask,
                                                uint32_t below, uint32_t lane, const uint32_t* info,
                                                const uint8_t* tab) {
  const uint32_t ahead = s.words[min(s.next + lane, s.last_word)];
  const uint32_t slot = s.x & mask;
  uint32_t symbol = 0;
  if constexpr (kSearch) {
    // The largest s with cum(s) <= slot: a present symbol (absent ones share the next present
    // symbol's cum, or lie past the last one at cum 2^p).
#pragma unroll
    for (uint32_t half = 128; half > 0; half >>= 1)
      if ((info[symbol + half] & 0xFFFFu) <= slot) symbol += half;
  } else {
    symbol = smem_byte(tab, slot);
  }
  const uint32_t fc = info[symbol];
  const uint32_t v = (fc >> 16) * (s.x >> s.precision) + slot - (fc & 0xFFFFu);
  const bool need = kMain ? v < kStateLower : active && t < s.main_len && v < kStateLower;
  const uint32_t ballot = __ballot_sync(0xFFFFFFFFu, need);
  const uint32_t word = __shfl_sync(0xFFFFFFFFu, ahead, __popc(ballot & below));
  s.next += __popc(ballot);
  if (kMain || active) s.x = need ? __byte_perm(v, word, 0x1054) : v;  // (v << 16) | word
  return symbol;
}

// The first step at which some lane of the warp leaves its main phase (warp-uniform): every step
// before it may run with decode_step's kMain.
__device__ __forceinline__ uint32_t warp_main_steps(const LaneStream& s) {
  return __reduce_min_sync(0xFFFFFFFFu, s.main_len);
}

// Whether a row group of a tile (`group_rows` rows from row rg of `rows`; steps_per_row steps of 32
// columns a row; its first step t) runs its steps untested: whole (128 columns, every row in the
// tile) and before main_steps (warp_main_steps), so no row, width or phase test is needed.
__device__ __forceinline__ bool group_untested(uint32_t steps_per_row, uint32_t rg, uint32_t group_rows,
                                               uint32_t rows, uint32_t t, uint32_t main_steps) {
  return steps_per_row == 4 && rg + group_rows <= rows && t + 4 * group_rows <= main_steps;
}

}  // namespace
}  // namespace wpack::gpu::detail
