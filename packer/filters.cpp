// Fast paths of the filters in packer/filters.h.
//
// Every filter here is built from two kernels over a run of n elements of S bytes:
//
//   split_planes<S, kRotate>   elements -> S byte planes   (planes[p][i] = byte p of element i)
//   join_planes<S, kRotate>    S byte planes -> elements   (the inverse)
//
// kRotate rotates each element left by one bit before the split (right by one after the join), as
// kFloatPlanes wants. kByteShuffle passes planes in order; kFloatPlanes passes them most
// significant byte first. kBitShuffle splits into byte planes in an L1-sized block, then
// transposes each byte plane into 8 bit planes.
//
// On x86-64 the kernels use SSE2, which every x86-64 CPU has, so there is no runtime dispatch and
// no -march dependency; on other targets the scalar loops below do all the work (and they also
// handle the last few elements of every run on x86-64). The scalar references these are tested
// against bit-exactly are in detail/filters_ref.cpp.
#include "packer/filters.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "formats/error.h"

#if defined(__SSE2__)
#include <emmintrin.h>  // SSE2: baseline on x86-64
#define WPACK_FILTERS_SSE2 1
#else
#define WPACK_FILTERS_SSE2 0
#endif

namespace wpack {

std::string_view filter_name(Filter filter) {
  switch (filter) {
    case Filter::kNone: return "none";
    case Filter::kByteShuffle: return "byteshuffle";
    case Filter::kBitShuffle: return "bitshuffle";
    case Filter::kFloatPlanes: return "floatplanes";
  }
  return "unknown";
}

std::optional<Filter> parse_filter(std::string_view name) {
  for (Filter filter : {Filter::kNone, Filter::kByteShuffle, Filter::kBitShuffle, Filter::kFloatPlanes})
    if (filter_name(filter) == name) return filter;
  return std::nullopt;
}

std::optional<Filter> filter_from_code(uint8_t code) {
  if (code > static_cast<uint8_t>(Filter::kFloatPlanes)) return std::nullopt;
  return static_cast<Filter>(code);
}

uint32_t filter_plane_count(Filter filter, uint32_t elem_size) {
  return (filter == Filter::kByteShuffle || filter == Filter::kFloatPlanes) ? elem_size : 1;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Scalar helpers (portable; element bytes are little-endian whatever the host order).

template <int S>
uint64_t load_elem(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int b = 0; b < S; ++b) value |= uint64_t{bytes[b]} << (8 * b);
  return value;
}

template <int S>
uint64_t rotate_left_1(uint64_t value) {
  constexpr int kBits = 8 * S;
  constexpr uint64_t kMask = kBits == 64 ? ~uint64_t{0} : ((uint64_t{1} << (kBits % 64)) - 1);
  return ((value << 1) | (value >> (kBits - 1))) & kMask;
}

template <int S>
uint64_t rotate_right_1(uint64_t value) {
  constexpr int kBits = 8 * S;
  constexpr uint64_t kMask = kBits == 64 ? ~uint64_t{0} : ((uint64_t{1} << (kBits % 64)) - 1);
  return ((value >> 1) | (value << (kBits - 1))) & kMask;
}

// Transposes an 8x8 bit matrix held in a uint64: row r is byte r, column c is bit c of it; on
// return bit (8c + r) holds what bit (8r + c) held. Three rounds of swapping the off-diagonal
// halves of 2x2, then 4x4, then 8x8 blocks (each swap is the xor-swap `t = (x ^ (x >> d)) & m`).
uint64_t transpose_8x8_bits(uint64_t x) {
  uint64_t t;
  t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;   // 1x1 blocks inside 2x2: bit (r, c+1) <-> (r+1, c)
  x = x ^ t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;  // 2x2 blocks inside 4x4
  x = x ^ t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;  // 4x4 blocks inside 8x8
  x = x ^ t ^ (t << 28);
  return x;
}

// ---------------------------------------------------------------------------------------------
// SSE2 kernels: 16 elements per call. Unaligned loads and stores throughout (tiles come from
// anywhere); on current x86 they cost the same as aligned ones when the data happens to be aligned.
#if WPACK_FILTERS_SSE2

inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline void store16(uint8_t* p, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }

// The even and odd bytes of the 32 bytes x:y (x first):
//   even = x0 x2 .. x14 y0 y2 .. y14     odd = x1 x3 .. x15 y1 y3 .. y15
// packus saturates signed 16-bit lanes to 0..255; the lanes here are already 0..255.
inline void split_even_odd(__m128i x, __m128i y, __m128i& even, __m128i& odd) {
  const __m128i low_byte = _mm_set1_epi16(0x00FF);
  even = _mm_packus_epi16(_mm_and_si128(x, low_byte), _mm_and_si128(y, low_byte));
  odd = _mm_packus_epi16(_mm_srli_epi16(x, 8), _mm_srli_epi16(y, 8));
}

template <int S>
inline __m128i rotate_left_1_lanes(__m128i v) {
  if constexpr (S == 2) return _mm_or_si128(_mm_slli_epi16(v, 1), _mm_srli_epi16(v, 15));
  if constexpr (S == 4) return _mm_or_si128(_mm_slli_epi32(v, 1), _mm_srli_epi32(v, 31));
  if constexpr (S == 8) return _mm_or_si128(_mm_slli_epi64(v, 1), _mm_srli_epi64(v, 63));
  return v;
}

template <int S>
inline __m128i rotate_right_1_lanes(__m128i v) {
  if constexpr (S == 2) return _mm_or_si128(_mm_srli_epi16(v, 1), _mm_slli_epi16(v, 15));
  if constexpr (S == 4) return _mm_or_si128(_mm_srli_epi32(v, 1), _mm_slli_epi32(v, 31));
  if constexpr (S == 8) return _mm_or_si128(_mm_srli_epi64(v, 1), _mm_slli_epi64(v, 63));
  return v;
}

// 16 elements (16*S bytes at `in`) -> 16 bytes in each of the S planes, by log2(S) rounds of
// split_even_odd: a round splits 16-bit lanes into their low and high bytes, so after round r the
// vectors hold bytes whose index in the element agrees in its low r bits.
template <int S, bool kRotate>
inline void split_16(const uint8_t* in, uint8_t* const (&planes)[S], size_t i) {
  __m128i v[S];
  for (int k = 0; k < S; ++k) {
    v[k] = load16(in + 16 * k);
    if constexpr (kRotate) v[k] = rotate_left_1_lanes<S>(v[k]);
  }
  if constexpr (S == 2) {
    __m128i b0, b1;
    split_even_odd(v[0], v[1], b0, b1);
    store16(planes[0] + i, b0);
    store16(planes[1] + i, b1);
  } else if constexpr (S == 4) {
    __m128i even[2], odd[2];  // even[h]: bytes 0,2 of elements 8h..8h+7; odd[h]: bytes 1,3
    split_even_odd(v[0], v[1], even[0], odd[0]);
    split_even_odd(v[2], v[3], even[1], odd[1]);
    __m128i b0, b1, b2, b3;
    split_even_odd(even[0], even[1], b0, b2);
    split_even_odd(odd[0], odd[1], b1, b3);
    store16(planes[0] + i, b0);
    store16(planes[1] + i, b1);
    store16(planes[2] + i, b2);
    store16(planes[3] + i, b3);
  } else if constexpr (S == 8) {
    __m128i even[4], odd[4];  // even[q]: bytes 0,2,4,6 of elements 4q..4q+3; odd[q]: bytes 1,3,5,7
    for (int q = 0; q < 4; ++q) split_even_odd(v[2 * q], v[2 * q + 1], even[q], odd[q]);
    __m128i b04[2], b26[2], b15[2], b37[2];  // [h]: elements 8h..8h+7, the two named bytes each
    split_even_odd(even[0], even[1], b04[0], b26[0]);
    split_even_odd(even[2], even[3], b04[1], b26[1]);
    split_even_odd(odd[0], odd[1], b15[0], b37[0]);
    split_even_odd(odd[2], odd[3], b15[1], b37[1]);
    __m128i b[8];
    split_even_odd(b04[0], b04[1], b[0], b[4]);
    split_even_odd(b26[0], b26[1], b[2], b[6]);
    split_even_odd(b15[0], b15[1], b[1], b[5]);
    split_even_odd(b37[0], b37[1], b[3], b[7]);
    for (int p = 0; p < 8; ++p) store16(planes[p] + i, b[p]);
  }
}

// 16 bytes from each of the S planes -> 16 elements (16*S bytes at `out`), by log2(S) rounds of
// interleaving (unpack 8-bit, then 16-bit, then 32-bit lanes).
template <int S, bool kRotate>
inline void join_16(const uint8_t* const (&planes)[S], size_t i, uint8_t* out) {
  __m128i o[S];
  if constexpr (S == 2) {
    const __m128i b0 = load16(planes[0] + i), b1 = load16(planes[1] + i);
    o[0] = _mm_unpacklo_epi8(b0, b1);
    o[1] = _mm_unpackhi_epi8(b0, b1);
  } else if constexpr (S == 4) {
    const __m128i b0 = load16(planes[0] + i), b1 = load16(planes[1] + i);
    const __m128i b2 = load16(planes[2] + i), b3 = load16(planes[3] + i);
    const __m128i b01_lo = _mm_unpacklo_epi8(b0, b1), b01_hi = _mm_unpackhi_epi8(b0, b1);  // elements 0-7, 8-15
    const __m128i b23_lo = _mm_unpacklo_epi8(b2, b3), b23_hi = _mm_unpackhi_epi8(b2, b3);
    o[0] = _mm_unpacklo_epi16(b01_lo, b23_lo);  // elements 0-3
    o[1] = _mm_unpackhi_epi16(b01_lo, b23_lo);  // 4-7
    o[2] = _mm_unpacklo_epi16(b01_hi, b23_hi);  // 8-11
    o[3] = _mm_unpackhi_epi16(b01_hi, b23_hi);  // 12-15
  } else if constexpr (S == 8) {
    __m128i pair_lo[4], pair_hi[4];  // bytes 2k,2k+1 of elements 0-7 / 8-15
    for (int k = 0; k < 4; ++k) {
      const __m128i even = load16(planes[2 * k] + i), odd = load16(planes[2 * k + 1] + i);
      pair_lo[k] = _mm_unpacklo_epi8(even, odd);
      pair_hi[k] = _mm_unpackhi_epi8(even, odd);
    }
    __m128i quad_low[4], quad_high[4];  // [q]: elements 4q..4q+3; bytes 0-3 / bytes 4-7
    quad_low[0] = _mm_unpacklo_epi16(pair_lo[0], pair_lo[1]);
    quad_low[1] = _mm_unpackhi_epi16(pair_lo[0], pair_lo[1]);
    quad_low[2] = _mm_unpacklo_epi16(pair_hi[0], pair_hi[1]);
    quad_low[3] = _mm_unpackhi_epi16(pair_hi[0], pair_hi[1]);
    quad_high[0] = _mm_unpacklo_epi16(pair_lo[2], pair_lo[3]);
    quad_high[1] = _mm_unpackhi_epi16(pair_lo[2], pair_lo[3]);
    quad_high[2] = _mm_unpacklo_epi16(pair_hi[2], pair_hi[3]);
    quad_high[3] = _mm_unpackhi_epi16(pair_hi[2], pair_hi[3]);
    for (int q = 0; q < 4; ++q) {
      o[2 * q] = _mm_unpacklo_epi32(quad_low[q], quad_high[q]);      // elements 4q, 4q+1
      o[2 * q + 1] = _mm_unpackhi_epi32(quad_low[q], quad_high[q]);  // elements 4q+2, 4q+3
    }
  }
  for (int k = 0; k < S; ++k) {
    if constexpr (kRotate) o[k] = rotate_right_1_lanes<S>(o[k]);
    store16(out + 16 * k, o[k]);
  }
}

// Transposes the 8x8 bit matrix in each 64-bit lane, as transpose_8x8_bits does.
inline __m128i transpose_8x8_bits_lanes(__m128i x) {
  __m128i t;
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 7)), _mm_set1_epi64x(0x00AA00AA00AA00AAll));
  x = _mm_xor_si128(x, _mm_xor_si128(t, _mm_slli_epi64(t, 7)));
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 14)), _mm_set1_epi64x(0x0000CCCC0000CCCCll));
  x = _mm_xor_si128(x, _mm_xor_si128(t, _mm_slli_epi64(t, 14)));
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 28)), _mm_set1_epi64x(0x00000000F0F0F0F0ll));
  x = _mm_xor_si128(x, _mm_xor_si128(t, _mm_slli_epi64(t, 28)));
  return x;
}

#endif  // WPACK_FILTERS_SSE2

// ---------------------------------------------------------------------------------------------
// Byte planes.

// n elements of S bytes at `in` -> planes[p][0..n) = byte p of each (rotated, if kRotate) element.
template <int S, bool kRotate>
void split_planes(const uint8_t* in, size_t n, uint8_t* const (&planes)[S]) {
  size_t i = 0;
#if WPACK_FILTERS_SSE2
  if constexpr (S > 1) {
    for (; i + 16 <= n; i += 16) split_16<S, kRotate>(in + i * S, planes, i);
  }
#endif
  for (; i < n; ++i) {
    uint64_t value = load_elem<S>(in + i * S);
    if constexpr (kRotate) value = rotate_left_1<S>(value);
    for (int p = 0; p < S; ++p) planes[p][i] = static_cast<uint8_t>(value >> (8 * p));
  }
}

// The inverse of split_planes.
template <int S, bool kRotate>
void join_planes(const uint8_t* const (&planes)[S], size_t n, uint8_t* out) {
  size_t i = 0;
#if WPACK_FILTERS_SSE2
  if constexpr (S > 1) {
    for (; i + 16 <= n; i += 16) join_16<S, kRotate>(planes, i, out + i * S);
  }
#endif
  for (; i < n; ++i) {
    uint64_t value = 0;
    for (int p = 0; p < S; ++p) value |= uint64_t{planes[p][i]} << (8 * p);
    if constexpr (kRotate) value = rotate_right_1<S>(value);
    for (int b = 0; b < S; ++b) out[i * S + b] = static_cast<uint8_t>(value >> (8 * b));
  }
}

// kByteShuffle: plane p (n bytes at out + p*n) is byte p of every element.
// kFloatPlanes: plane p is byte S-1-p of every element rotated left by one bit.
template <int S, bool kFloat>
void apply_byte_planes(const uint8_t* in, size_t n, uint8_t* out) {
  uint8_t* planes[S];
  for (int p = 0; p < S; ++p) planes[p] = out + (kFloat ? (S - 1 - p) : p) * n;
  split_planes<S, kFloat>(in, n, planes);
}

template <int S, bool kFloat>
void undo_byte_planes(const uint8_t* in, size_t n, uint8_t* out) {
  const uint8_t* planes[S];
  for (int p = 0; p < S; ++p) planes[p] = in + (kFloat ? (S - 1 - p) : p) * n;
  join_planes<S, kFloat>(planes, n, out);
}

// ---------------------------------------------------------------------------------------------
// Bit shuffle. Output: 8*S bit planes of n8/8 bytes each (n8 = n rounded down to a multiple of 8),
// then the last n % 8 elements unchanged. Bit i of byte j of plane b = bit b of element 8j+i.

// Elements per block: the block's byte planes (S * kBitBlock bytes, at most 8 KiB) stay in L1.
constexpr size_t kBitBlock = 1024;

// Scalar, 8 elements [first, first+8): byte plane p of them as an 8x8 bit matrix, transposed, is
// byte first/8 of bit planes 8p .. 8p+7.
template <int S>
void bitshuffle_apply_group8(const uint8_t* in, size_t first, size_t plane_bytes, uint8_t* out) {
  for (int p = 0; p < S; ++p) {
    uint64_t matrix = 0;  // byte i = byte p of element first+i
    for (int i = 0; i < 8; ++i) matrix |= uint64_t{in[(first + i) * S + p]} << (8 * i);
    matrix = transpose_8x8_bits(matrix);  // byte k = bit 8p+k of the 8 elements
    for (int k = 0; k < 8; ++k) out[(8 * p + k) * plane_bytes + first / 8] = static_cast<uint8_t>(matrix >> (8 * k));
  }
}

template <int S>
void bitshuffle_undo_group8(const uint8_t* in, size_t first, size_t plane_bytes, uint8_t* out) {
  for (int p = 0; p < S; ++p) {
    uint64_t matrix = 0;  // byte k = byte first/8 of bit plane 8p+k
    for (int k = 0; k < 8; ++k) matrix |= uint64_t{in[(8 * p + k) * plane_bytes + first / 8]} << (8 * k);
    matrix = transpose_8x8_bits(matrix);  // byte i = byte p of element first+i
    for (int i = 0; i < 8; ++i) out[(first + i) * S + p] = static_cast<uint8_t>(matrix >> (8 * i));
  }
}

template <int S>
void apply_bitshuffle(const uint8_t* in, size_t n, uint8_t* out) {
  const size_t n8 = n - n % 8;
  const size_t plane_bytes = n8 / 8;
  size_t done = 0;
#if WPACK_FILTERS_SSE2
  // Blocks of whole 16-element groups: split the block into byte planes (in L1), then peel each
  // byte plane's bits off from the top with movemask (bit i of the mask = top bit of byte i, i.e.
  // of element i of the 16) and shift the bytes left by one (add to itself) for the next bit.
  alignas(16) uint8_t byte_planes_storage[S * kBitBlock];
  const size_t n16 = n8 - n8 % 16;
  for (; done < n16;) {
    const size_t count = std::min(kBitBlock, n16 - done);
    const uint8_t* byte_planes[S];
    if constexpr (S == 1) {
      byte_planes[0] = in + done;
    } else {
      uint8_t* planes[S];
      for (int p = 0; p < S; ++p) planes[p] = byte_planes_storage + p * kBitBlock;
      split_planes<S, false>(in + done * S, count, planes);
      for (int p = 0; p < S; ++p) byte_planes[p] = planes[p];
    }
    for (int p = 0; p < S; ++p) {
      uint8_t* plane_out = out + (8 * p) * plane_bytes + done / 8;  // bit plane 8p, this block
      for (size_t c = 0; c < count; c += 16) {
        __m128i bytes = load16(byte_planes[p] + c);
        for (int k = 7; k >= 0; --k) {
          const uint16_t mask = static_cast<uint16_t>(_mm_movemask_epi8(bytes));
          std::memcpy(plane_out + k * plane_bytes + c / 8, &mask, 2);  // x86: little-endian
          bytes = _mm_add_epi8(bytes, bytes);
        }
      }
    }
    done += count;
  }
#endif
  for (; done < n8; done += 8) bitshuffle_apply_group8<S>(in, done, plane_bytes, out);
  std::memcpy(out + n8 * S, in + n8 * S, (n - n8) * S);
}

template <int S>
void undo_bitshuffle(const uint8_t* in, size_t n, uint8_t* out) {
  const size_t n8 = n - n % 8;
  const size_t plane_bytes = n8 / 8;
  size_t done = 0;
#if WPACK_FILTERS_SSE2
  // Blocks of whole 128-element groups. For byte plane p and 128 elements, load 16 bytes of each
  // bit plane 8p..8p+7 (P0..P7), interleave them so each 64-bit lane holds P0[j] .. P7[j] for one
  // j (an 8x8 bit matrix: row k = bit 8p+k of elements 8j..8j+7), transpose each lane; lane j then
  // holds byte p of elements 8j..8j+7. Finally join the byte planes into elements.
  alignas(16) uint8_t byte_planes_storage[S * kBitBlock];
  const size_t n128 = n8 - n8 % 128;
  for (; done < n128;) {
    const size_t count = std::min(kBitBlock, n128 - done);
    uint8_t* byte_planes[S];
    if constexpr (S == 1) {
      byte_planes[0] = out + done;
    } else {
      for (int p = 0; p < S; ++p) byte_planes[p] = byte_planes_storage + p * kBitBlock;
    }
    for (int p = 0; p < S; ++p) {
      const uint8_t* plane_in = in + (8 * p) * plane_bytes + done / 8;  // bit plane 8p, this block
      for (size_t c = 0; c < count; c += 128) {
        __m128i bits[8];  // bits[k] byte j: bit 8p+k of elements c+8j .. c+8j+7
        for (int k = 0; k < 8; ++k) bits[k] = load16(plane_in + k * plane_bytes + c / 8);
        __m128i pair_lo[4], pair_hi[4];  // [m]: bit planes 2m, 2m+1 for j = 0-7 / 8-15
        for (int m = 0; m < 4; ++m) {
          pair_lo[m] = _mm_unpacklo_epi8(bits[2 * m], bits[2 * m + 1]);
          pair_hi[m] = _mm_unpackhi_epi8(bits[2 * m], bits[2 * m + 1]);
        }
        __m128i quad_low[4], quad_high[4];  // [q]: j = 4q..4q+3; bit planes 0-3 / 4-7
        quad_low[0] = _mm_unpacklo_epi16(pair_lo[0], pair_lo[1]);
        quad_low[1] = _mm_unpackhi_epi16(pair_lo[0], pair_lo[1]);
        quad_low[2] = _mm_unpacklo_epi16(pair_hi[0], pair_hi[1]);
        quad_low[3] = _mm_unpackhi_epi16(pair_hi[0], pair_hi[1]);
        quad_high[0] = _mm_unpacklo_epi16(pair_lo[2], pair_lo[3]);
        quad_high[1] = _mm_unpackhi_epi16(pair_lo[2], pair_lo[3]);
        quad_high[2] = _mm_unpacklo_epi16(pair_hi[2], pair_hi[3]);
        quad_high[3] = _mm_unpackhi_epi16(pair_hi[2], pair_hi[3]);
        uint8_t* dst = byte_planes[p] + c;
        for (int q = 0; q < 4; ++q) {
          const __m128i j01 = _mm_unpacklo_epi32(quad_low[q], quad_high[q]);  // j = 4q, 4q+1
          const __m128i j23 = _mm_unpackhi_epi32(quad_low[q], quad_high[q]);  // j = 4q+2, 4q+3
          store16(dst + 32 * q, transpose_8x8_bits_lanes(j01));
          store16(dst + 32 * q + 16, transpose_8x8_bits_lanes(j23));
        }
      }
    }
    if constexpr (S > 1) {
      const uint8_t* planes[S];
      for (int p = 0; p < S; ++p) planes[p] = byte_planes[p];
      join_planes<S, false>(planes, count, out + done * S);
    }
    done += count;
  }
#endif
  for (; done < n8; done += 8) bitshuffle_undo_group8<S>(in, done, plane_bytes, out);
  std::memcpy(out + n8 * S, in + n8 * S, (n - n8) * S);
}

// ---------------------------------------------------------------------------------------------
// Argument checks and dispatch.

void check_args(const char* function, Filter filter, uint32_t elem_size, std::span<const uint8_t> in,
                std::span<uint8_t> out) {
  const std::string where = std::string(function) + "(" + std::string(filter_name(filter)) + "): ";
  if (!filter_from_code(static_cast<uint8_t>(filter)))
    throw Error(ErrorCode::kInvalidArgument,
                where + "unknown filter code " + std::to_string(static_cast<unsigned>(filter)));
  if (elem_size != 1 && elem_size != 2 && elem_size != 4 && elem_size != 8)
    throw Error(ErrorCode::kInvalidArgument, where + "element size " + std::to_string(elem_size) +
                                                 " is not 1, 2, 4 or 8");
  if (filter == Filter::kFloatPlanes && elem_size == 1)
    throw Error(ErrorCode::kInvalidArgument, where + "needs an element size of 2, 4 or 8, not 1");
  if (in.size() != out.size())
    throw Error(ErrorCode::kInvalidArgument, where + "input is " + std::to_string(in.size()) +
                                                 " bytes but output is " + std::to_string(out.size()));
  if (in.size() % elem_size != 0)
    throw Error(ErrorCode::kInvalidArgument, where + std::to_string(in.size()) +
                                                 " bytes is not a multiple of the element size " +
                                                 std::to_string(elem_size));
  const auto in_begin = reinterpret_cast<uintptr_t>(in.data());
  const auto out_begin = reinterpret_cast<uintptr_t>(out.data());
  if (!in.empty() && in_begin < out_begin + out.size() && out_begin < in_begin + in.size())
    throw Error(ErrorCode::kInvalidArgument, where + "input and output overlap");
}

template <int S>
void apply_sized(Filter filter, const uint8_t* in, size_t n, uint8_t* out) {
  switch (filter) {
    case Filter::kNone: std::memcpy(out, in, n * S); return;
    case Filter::kByteShuffle: apply_byte_planes<S, false>(in, n, out); return;
    case Filter::kBitShuffle: apply_bitshuffle<S>(in, n, out); return;
    case Filter::kFloatPlanes:
      if constexpr (S > 1) apply_byte_planes<S, true>(in, n, out);
      return;
  }
}

template <int S>
void undo_sized(Filter filter, const uint8_t* in, size_t n, uint8_t* out) {
  switch (filter) {
    case Filter::kNone: std::memcpy(out, in, n * S); return;
    case Filter::kByteShuffle: undo_byte_planes<S, false>(in, n, out); return;
    case Filter::kBitShuffle: undo_bitshuffle<S>(in, n, out); return;
    case Filter::kFloatPlanes:
      if constexpr (S > 1) undo_byte_planes<S, true>(in, n, out);
      return;
  }
}

}  // namespace

void apply_filter(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out) {
  check_args("apply_filter", filter, elem_size, in, out);
  if (in.empty()) return;
  const size_t n = in.size() / elem_size;
  switch (elem_size) {
    case 1: apply_sized<1>(filter, in.data(), n, out.data()); return;
    case 2: apply_sized<2>(filter, in.data(), n, out.data()); return;
    case 4: apply_sized<4>(filter, in.data(), n, out.data()); return;
    case 8: apply_sized<8>(filter, in.data(), n, out.data()); return;
  }
}

void undo_filter(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out) {
  check_args("undo_filter", filter, elem_size, in, out);
  if (in.empty()) return;
  const size_t n = in.size() / elem_size;
  switch (elem_size) {
    case 1: undo_sized<1>(filter, in.data(), n, out.data()); return;
    case 2: undo_sized<2>(filter, in.data(), n, out.data()); return;
    case 4: undo_sized<4>(filter, in.data(), n, out.data()); return;
    case 8: undo_sized<8>(filter, in.data(), n, out.data()); return;
  }
}

}  // namespace wpack
