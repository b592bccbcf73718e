// Internals of packer/quantize.cpp: the per-group encode / error kernels, in a scalar reference form
// and a fast form (AVX2 when the CPU has it, else a scalar loop with the same arithmetic).
//
// Bit-exactness between the two forms rests on three rules, kept by every kernel here:
//  1. The same float operations in the same order per element (no FMA: the library is built with
//     ISO C++, i.e. -ffp-contract=off, and the intrinsics use separate mul and add).
//  2. Squared errors are summed in 8 lanes, element j of the group into lane j % 8, and the lanes are
//     reduced as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) (lane_reduce). Zero padding adds exactly +0.
//  3. Early exit (fast form only) stops a candidate once its partial sum exceeds the best so far;
//     float addition of non-negative terms is monotone, so that candidate could not have won.
#pragma once

#include <cstdint>

#include "packer/detail/fp.h"  // SmallFloatFormat, round_half_even_small

namespace wpack::detail {

inline constexpr uint32_t kClipCandidates = 21;  // ratios 1.0, 0.975, ..., 0.5
inline float clip_ratio(uint32_t i) { return 1.0f - 0.025f * static_cast<float>(i); }

inline float lane_reduce(const float lane[8]) {
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

// ---- integer grid: q = round(clamp(x * inv_scale, -zero, qmax - zero)), code = q + zero,
// value q * scale = (code - zero) * scale ----
struct IntParams {
  float scale = 0, inv_scale = 0;  // scale is an exact fp16 value; inv_scale = 1 / scale (0 if scale 0)
  float zero = 0, qmax = 0;        // integers held in float
  float lo = 0, hi = 0;            // -zero and qmax - zero: the clamp range of q
};

inline float int_level(float x, const IntParams& p) {
  float t = x * p.inv_scale;
  t = t < p.lo ? p.lo : t;
  t = t > p.hi ? p.hi : t;
  return round_half_even_small(t);
}
inline uint32_t int_encode_one(float x, const IntParams& p) {
  return static_cast<uint32_t>(int_level(x, p) + p.zero);
}
inline float int_decode_one(uint32_t code, const IntParams& p) {
  return (static_cast<float>(code) - p.zero) * p.scale;
}

// Sum of squared errors of one group of n elements (rules 1-2). Reference form.
float int_error_ref(const float* x, uint64_t n, const IntParams& p);
// Fast form: x padded with zeros to n8 (a multiple of 8) elements; returns a value > bound when it
// stops early.
float int_error_fast(const float* x, uint64_t n8, const IntParams& p, float bound);

// ---- sorted value tables (fp magnitudes, nf4, lut): index = #{i : x > mid[i], or x == mid[i] and tie_up[i]} ----
struct SortedTable {
  uint32_t size = 0;
  float values[256] = {};
  float mids[256] = {};     // mids[i] = (values[i] + values[i+1]) / 2, in float
  uint8_t tie_up[256] = {};  // 1: a value exactly at mids[i] goes to i+1
};

inline uint32_t table_index_ref(const SortedTable& table, float x) {
  uint32_t index = 0;
  for (uint32_t i = 0; i + 1 < table.size; ++i)
    index += (x > table.mids[i] || (x == table.mids[i] && table.tie_up[i])) ? 1u : 0u;
  return index;
}
// Same result by binary search (the predicate is monotone in i).
inline uint32_t table_index_fast(const SortedTable& table, float x) {
  uint32_t lo = 0, hi = table.size - 1;  // answer in [lo, hi]
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (x > table.mids[mid] || (x == table.mids[mid] && table.tie_up[mid])) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Magnitude table of a small float format: values[code] for codes 0..max_magnitude_code, ties to the
// even code (round to nearest even, as the format specifications round).
SortedTable small_float_table(const SmallFloatFormat& fmt);
// A signed table of ascending values (nf4, lut), ties to the lower index.
SortedTable value_table(const float* ascending, uint32_t size);

// ---- small float grid: t = |x| * inv_scale, magnitude code = nearest (RNE, saturating), sign bit on top
// (never on a zero magnitude) ----
struct FpParams {
  float scale = 0, inv_scale = 0;
};
float fp_error_ref(const float* x, uint64_t n, const SortedTable& magnitudes, const FpParams& p);
// Fast form (bit arithmetic on the float instead of a table search); same padding rule as int_error_fast.
float fp_error_fast(const float* x, uint64_t n8, const SmallFloatFormat& fmt, const FpParams& p, float bound);
// Magnitude code of t >= 0 by bit arithmetic (round to nearest even, saturating at the max).
uint32_t fp_magnitude_code_fast(const SmallFloatFormat& fmt, float t);

// ---- signed table grid (nf4): t = x * inv_scale, code = table index, value table[code] * scale ----
float table_error_ref(const float* x, uint64_t n, const SortedTable& table, const FpParams& p);
float table_error_fast(const float* x, uint64_t n8, const SortedTable& table, const FpParams& p, float bound);

// ---- fast encoders over a zero-padded group of n8 elements (a multiple of 8), one code per byte ----
// Same codes as the per-element forms the reference uses (int_encode_one; table_index_ref on
// |x| * inv_scale plus the sign bit for fp; table_index_ref on x * inv_scale for tables).
void int_encode_fast(const float* x, uint64_t n8, const IntParams& p, uint8_t* codes);
void fp_encode_fast(const float* x, uint64_t n8, const SmallFloatFormat& fmt, float inv_scale, uint8_t* codes);
void table_encode_fast(const float* x, uint64_t n8, const SortedTable& table, float inv_scale, uint8_t* codes);

// min(0, x...) and max(0, x...) of a zero-padded group (the padding cannot change them).
void minmax_with_zero_fast(const float* x, uint64_t n8, float* min_out, float* max_out);

// True when the AVX2 kernels are used (CPU check, done once).
bool have_avx2();

}  // namespace wpack::detail
