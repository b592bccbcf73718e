// Internals of packer/quantize.cpp: the per-group encode / error kernels, in a scalar reference form
// and a fast form (AVX2 when the CPU has it, else a scalar loop with the same arithmetic; tests can
// force the latter: set_kernel_path at the end).
//
// Bit-exactness between the two forms rests on three rules, kept by every kernel here:
//  1. The same float operations in the same order per element: no contraction into fused
//     multiply-adds (quant_kernels.cpp switches it off; g++ would contract in C++ mode wherever the
//     target has FMA), and a fused multiply-add written out only where its single rounding provably
//     equals the reference's two (an exact product, see int_error_pair_fast).
//  2. Squared errors are summed in 8 lanes, element j of the group into lane j % 8, and the lanes are
//     reduced as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) (lane_reduce). Zero padding adds exactly +0.
//  3. Skipping (fast form only): float addition of non-negative terms is monotone, so a partial sum
//     (the nf4 kernel's early exit) or the sum of a subset of the terms (ClipCandidates::lower_bound)
//     that already exceeds the best error found shows that a candidate cannot win.
#pragma once

#include <algorithm>  // std::min, std::max: the grid formulas use them (their exact tie behaviour matters)
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

// ---- small-float and table grids: a scale (and its inverse) only ----
struct FpParams {
  float scale = 0, inv_scale = 0;
};

// fp16 bits of a positive scale: clamped to the fp16 range, never rounded to zero (a nonzero range
// keeps a nonzero scale). 0 for s <= 0.
inline uint16_t encode_scale(float s) {
  if (!(s > 0.0f)) return 0;
  uint16_t h = float_to_f16_bits(std::min(s, kF16Max));
  return h == 0 ? uint16_t{1} : h;
}
inline float inverse_scale(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }

// The integer grid of one clip ratio for a group with min = min(x, 0), max = max(x, 0) and
// absmax = max(-min, max): symmetric scale = absmax * ratio / (2^(b-1) - 1) with the fixed zero
// 2^(b-1); asymmetric scale = (hi - lo) / (2^b - 1) over [min, max] * ratio with zero = round(-lo /
// scale) clamped to the code range. The scale is rounded to fp16 (*scale_bits) before it is used.
inline IntParams int_candidate(float min, float max, float absmax, float ratio, uint32_t bits, bool symmetric,
                               uint16_t* scale_bits, uint8_t* zero_code) {
  IntParams p;
  p.qmax = static_cast<float>((1u << bits) - 1u);
  float lo = 0;
  if (symmetric) {
    *scale_bits = encode_scale(absmax * ratio / static_cast<float>((1u << (bits - 1)) - 1u));
  } else {
    lo = std::min(min, 0.0f) * ratio;
    float hi = std::max(max, 0.0f) * ratio;
    *scale_bits = encode_scale((hi - lo) / p.qmax);
  }
  p.scale = f16_bits_to_float(*scale_bits);
  p.inv_scale = inverse_scale(p.scale);
  if (symmetric) {
    p.zero = static_cast<float>(1u << (bits - 1));
  } else {
    float z = -lo * p.inv_scale;
    z = std::min(std::max(z, 0.0f), p.qmax);
    p.zero = round_half_even_small(z);
  }
  *zero_code = static_cast<uint8_t>(p.zero);
  p.lo = -p.zero;
  p.hi = p.qmax - p.zero;
  return p;
}

// Sum of squared errors of one group of n elements (rules 1-2). Reference form; the fast form is
// int_error_pair_fast below.
float int_error_ref(const float* x, uint64_t n, const IntParams& p);

// ---- error_stats' two sums, advanced inside other kernels ----
// The sums of ref^2 and (approx - ref)^2 in double, one term at a time in index order. Each addition
// waits for the previous one, so a loop of them runs at the adder's latency; the pair kernels below
// take pending terms along with their own, independent work, which hides that latency.
struct ErrorChain {
  const double* terms = nullptr;  // pairs (ref^2, (approx - ref)^2); the pending ones are [next, count)
  uint64_t next = 0, count = 0;
  double ref_sq = 0, err_sq = 0;  // the sums so far

  void drain() {
    double r = ref_sq, e = err_sq;
    for (; next < count; ++next) r += terms[2 * next], e += terms[2 * next + 1];
    ref_sq = r, err_sq = e;
  }
};

// The terms of error_stats for n elements: terms[2i] = double(ref[i])^2, terms[2i+1] = d^2 with
// d = double(approx[i]) - double(ref[i]) (exactly error_stats' values); *max_abs = the largest of
// *max_abs and every |d| (as error_stats' running maximum: the maximum of a set does not depend on the
// order); *zeros += the count of approx[i] == 0. AVX2 where the CPU has it.
void error_terms_fast(const float* ref, const float* approx, uint64_t n, double* terms, double* max_abs,
                      uint64_t* zeros);

// ---- the fast clip search: every candidate's grid at once, a lower bound per candidate, and exact
// errors two candidates at a time ----
inline constexpr uint32_t kCandidateSlots = 24;  // kClipCandidates rounded up to whole 8-lane vectors

// The clip candidates of one group (integer or small-float grid), structure of arrays.
struct ClipCandidates {
  uint32_t count = 0;  // candidates 0..count-1 are valid
  float qmax = 0;      // integer grids: 2^bits - 1
  alignas(32) float scale[kCandidateSlots] = {};
  alignas(32) float inv_scale[kCandidateSlots] = {};
  alignas(32) float zero[kCandidateSlots] = {};  // integer grids
  // The candidate's squared errors of the group's extreme elements alone, summed: integer grids
  // fl(term(min) + term(max)) of min(x,0) and max(x,0) (each an element or 0, whose term is 0);
  // small-float grids term(absmax). The reference error of the whole group is never smaller -- it
  // adds further non-negative terms, and float addition is monotone -- so a candidate whose bound
  // exceeds an error already found cannot win.
  alignas(32) float lower_bound[kCandidateSlots] = {};
  uint16_t scale_bits[kCandidateSlots] = {};

  IntParams int_params(uint32_t c) const {
    IntParams p;
    p.scale = scale[c], p.inv_scale = inv_scale[c], p.zero = zero[c], p.qmax = qmax;
    p.lo = -zero[c], p.hi = qmax - zero[c];
    return p;
  }
  FpParams fp_params(uint32_t c) const {
    FpParams p;
    p.scale = scale[c], p.inv_scale = inv_scale[c];
    return p;
  }
};
// Candidates 0..count-1 (count <= kClipCandidates) of an integer group, each exactly int_candidate(min,
// max, absmax, clip_ratio(c), ...) (tested), with their lower bounds. AVX2 + F16C where the CPU has them.
void int_candidates_fast(float min, float max, float absmax, uint32_t bits, bool symmetric, uint32_t count,
                         ClipCandidates* out);
// The same for a small-float group: scale bits encode_scale(absmax * clip_ratio(c) / fmt.max_value).
void fp_candidates_fast(float absmax, const SmallFloatFormat& fmt, uint32_t count, ClipCandidates* out);

// Bit c (c < cand.count) set when !(cand.lower_bound[c] > best): the candidates that may still win
// against an error `best` already found.
uint32_t candidates_alive(const ClipCandidates& cand, float best);

// The errors of two candidates over one zero-padded group (n8 a multiple of 8), each exactly the
// reference's sum (int_error_ref / fp_error_ref, rules 1-2), without early exit: the two sums
// interleave, so that neither waits on its own additions. The AVX2 forms compute value * scale - x as
// one fused multiply-add: value is an integer of at most 8 bits (int) or a small-float value of at most
// 4 significant bits (fp), scale an fp16 value, so the product is exact in float and the single
// rounding of the fused form is the rounding of the reference's subtraction (rule 1 holds).
// chain (may be null): some of its pending terms, the next ones in order, are added on the way.
void int_error_pair_fast(const float* x, uint64_t n8, const IntParams& a, const IntParams& b, float* error_a,
                         float* error_b, ErrorChain* chain = nullptr);

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
float fp_error_ref(const float* x, uint64_t n, const SortedTable& magnitudes, const FpParams& p);
// Magnitude code of t >= 0 by bit arithmetic (round to nearest even, saturating at the max).
uint32_t fp_magnitude_code_fast(const SmallFloatFormat& fmt, float t);
// The value of that code, small_float_magnitude(fmt, fp_magnitude_code_fast(fmt, t)), computed
// without the code: t clamped to the max, then rounded to the format's grid around it by adding and
// subtracting 2^(e + 23 - mantissa_bits), e = t's exponent raised to the smallest normal one (so
// that the subnormal step applies below it). The form the fp pair kernel uses (tested).
float fp_value_fast(const SmallFloatFormat& fmt, float t);
// fp_error_pair: see int_error_pair_fast.
void fp_error_pair_fast(const float* x, uint64_t n8, const SmallFloatFormat& fmt, const FpParams& a,
                        const FpParams& b, float* error_a, float* error_b, ErrorChain* chain = nullptr);

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

// ---- code packing (docs/FORMAT.md "Quantized tiles": LSB first, `bits` bits per code) ----
// Packs n codes (each < 2^bits, bits in 1..8) into ceil(n * bits / 8) bytes at out.
// pack_codes_ref: one code at a time (the reference). pack_codes_fast: eight codes per 64-bit word
// (SWAR), same bytes; out must have room for ceil(n * bits / 8) + 8 bytes (it stores whole words).
void pack_codes_ref(const uint8_t* codes, uint64_t n, uint32_t bits, uint8_t* out);
void pack_codes_fast(const uint8_t* codes, uint64_t n, uint32_t bits, uint8_t* out);

// True when the AVX2 kernels are used: the CPU has AVX2, FMA and F16C (checked once) and the
// kernel path is kAuto. Every kernel above with an AVX2 form picks its branch with it, call by call.
bool have_avx2();

// ---- test hook: the kernel path (not part of the public API) ----
// The non-AVX2 branches of the fast kernels run only on CPUs without AVX2; kScalar forces them on
// any CPU, so that tests can hold both halves against the reference (tests/test_quantize.cpp).
// Process-wide (an atomic: reading it in the kernels is no data race). Set it only while no
// quantizer runs -- a quantize() in flight on other threads may see the change part-way, group by
// group (harmless, as both branches give the same results, but not what a test means). The
// quantizers' results do not depend on it.
enum class KernelPath : uint8_t {
  kAuto,    // AVX2 branches where the CPU has them (the default)
  kScalar,  // the non-AVX2 branches, whatever the CPU
};
void set_kernel_path(KernelPath path);
KernelPath kernel_path();

}  // namespace wpack::detail
