// Encode / error kernels of the quantizers: scalar references and AVX2 fast forms.
// The rules that keep the two forms bit-exact are in quant_kernels.h.
#include "packer/detail/quant_kernels.h"

#include <cmath>  // std::fabs

#include <immintrin.h>  // AVX2 intrinsics, used only in functions compiled with target("avx2")

namespace wpack::detail {

bool have_avx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
}

// ---- tables ----

SortedTable small_float_table(const SmallFloatFormat& fmt) {
  SortedTable table;
  table.size = fmt.max_magnitude_code + 1;
  for (uint32_t code = 0; code < table.size; ++code) table.values[code] = small_float_magnitude(fmt, code);
  for (uint32_t i = 0; i + 1 < table.size; ++i) {
    table.mids[i] = (table.values[i] + table.values[i + 1]) * 0.5f;  // exact: few mantissa bits
    table.tie_up[i] = ((i + 1) & 1u) == 0 ? 1 : 0;                    // round half to the even code
  }
  return table;
}

SortedTable value_table(const float* ascending, uint32_t size) {
  SortedTable table;
  table.size = size;
  for (uint32_t i = 0; i < size; ++i) table.values[i] = ascending[i];
  for (uint32_t i = 0; i + 1 < size; ++i) table.mids[i] = (ascending[i] + ascending[i + 1]) * 0.5f;
  return table;
}

// ---- scalar references ----

float int_error_ref(const float* x, uint64_t n, const IntParams& p) {
  float lane[8] = {};
  for (uint64_t j = 0; j < n; ++j) {
    float e = int_decode_one(int_encode_one(x[j], p), p) - x[j];  // = int_level * scale - x
    lane[j & 7] += e * e;
  }
  return lane_reduce(lane);
}

float fp_error_ref(const float* x, uint64_t n, const SortedTable& magnitudes, const FpParams& p) {
  float lane[8] = {};
  for (uint64_t j = 0; j < n; ++j) {
    uint32_t index = table_index_ref(magnitudes, std::fabs(x[j]) * p.inv_scale);
    float v = magnitudes.values[index];
    float e = (x[j] < 0.0f ? -v : v) * p.scale - x[j];
    lane[j & 7] += e * e;
  }
  return lane_reduce(lane);
}

float table_error_ref(const float* x, uint64_t n, const SortedTable& table, const FpParams& p) {
  float lane[8] = {};
  for (uint64_t j = 0; j < n; ++j) {
    uint32_t index = table_index_ref(table, x[j] * p.inv_scale);
    float e = table.values[index] * p.scale - x[j];
    lane[j & 7] += e * e;
  }
  return lane_reduce(lane);
}

// ---- fp bit arithmetic ----

namespace {

struct FpBitConstants {
  uint32_t shift;         // 23 - mantissa_bits: float mantissa bits dropped
  uint32_t round_add;     // 2^(shift-1) - 1: with the kept lsb, rounds half to even
  uint32_t code_offset;   // (127 - bias) << mantissa_bits: float exponent rebias, in code units
  float min_normal;       // 2^(1 - bias)
  float subnormal_mul;    // 2^(bias - 1 + mantissa_bits): t * this = subnormal mantissa
  float subnormal_step;   // 2^(1 - bias - mantissa_bits)
};

float pow2(int32_t e) { return std::bit_cast<float>(static_cast<uint32_t>(127 + e) << 23); }

FpBitConstants fp_bit_constants(const SmallFloatFormat& fmt) {
  int32_t m = static_cast<int32_t>(fmt.mantissa_bits);
  FpBitConstants k;
  k.shift = 23u - fmt.mantissa_bits;
  k.round_add = (1u << (k.shift - 1)) - 1u;
  k.code_offset = static_cast<uint32_t>(127 - fmt.bias) << fmt.mantissa_bits;
  k.min_normal = pow2(1 - fmt.bias);
  k.subnormal_mul = pow2(fmt.bias - 1 + m);
  k.subnormal_step = pow2(1 - fmt.bias - m);
  return k;
}

}  // namespace

uint32_t fp_magnitude_code_fast(const SmallFloatFormat& fmt, float t) {
  FpBitConstants k = fp_bit_constants(fmt);
  if (t >= fmt.max_value) return fmt.max_magnitude_code;
  if (t < k.min_normal) return static_cast<uint32_t>(round_half_even_small(t * k.subnormal_mul));
  uint32_t bits = std::bit_cast<uint32_t>(t);
  uint32_t rounded = bits + k.round_add + ((bits >> k.shift) & 1u);
  return (rounded >> k.shift) - k.code_offset;
}

// ---- AVX2 fast forms ----

namespace {

__attribute__((target("avx2"))) inline float reduce8(__m256 acc) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));  // l0+l4 .. l3+l7
  __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));  // (l0+l4)+(l2+l6), (l1+l5)+(l3+l7)
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

// Early-exit check interval in elements: a horizontal sum every 32 elements.
constexpr uint64_t kCheckEvery = 32;

__attribute__((target("avx2"))) float int_error_avx2(const float* x, uint64_t n8, const IntParams& p,
                                                     float bound) {
  const __m256 inv = _mm256_set1_ps(p.inv_scale), scale = _mm256_set1_ps(p.scale);
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi), magic = _mm256_set1_ps(kRoundMagic);
  __m256 acc = _mm256_setzero_ps();
  // One 8-element step (a macro: a lambda would not inherit target("avx2")).
#define WPACK_INT_ERROR_STEP(j)                                                        \
  do {                                                                                 \
    __m256 v = _mm256_loadu_ps(x + (j));                                               \
    __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, inv), lo), hi);            \
    __m256 q = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);                          \
    /* q * scale is exactly (code - zero) * scale: q and zero are small integers. */   \
    __m256 e = _mm256_sub_ps(_mm256_mul_ps(q, scale), v);                              \
    acc = _mm256_add_ps(acc, _mm256_mul_ps(e, e));                                     \
  } while (0)
  uint64_t j = 0;
  for (; j + kCheckEvery <= n8; j += kCheckEvery) {
    WPACK_INT_ERROR_STEP(j);
    WPACK_INT_ERROR_STEP(j + 8);
    WPACK_INT_ERROR_STEP(j + 16);
    WPACK_INT_ERROR_STEP(j + 24);
    if (j + kCheckEvery < n8) {
      float partial = reduce8(acc);
      if (partial > bound) return partial;
    }
  }
  for (; j < n8; j += 8) WPACK_INT_ERROR_STEP(j);
#undef WPACK_INT_ERROR_STEP
  return reduce8(acc);
}

__attribute__((target("avx2"))) void minmax_avx2(const float* x, uint64_t n8, float* min_out, float* max_out) {
  __m256 mn = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
  for (uint64_t j = 0; j < n8; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
  }
  float a[8], b[8];
  _mm256_storeu_ps(a, mn);
  _mm256_storeu_ps(b, mx);
  float lo = 0, hi = 0;
  for (int i = 0; i < 8; ++i) lo = a[i] < lo ? a[i] : lo, hi = b[i] > hi ? b[i] : hi;
  *min_out = lo, *max_out = hi;
}

__attribute__((target("avx2"))) float fp_error_avx2(const float* x, uint64_t n8, const SmallFloatFormat& fmt,
                                                    const FpParams& p, float bound) {
  const FpBitConstants k = fp_bit_constants(fmt);
  const __m256 inv = _mm256_set1_ps(p.inv_scale), scale = _mm256_set1_ps(p.scale);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i round_add = _mm256_set1_epi32(static_cast<int>(k.round_add)), one = _mm256_set1_epi32(1);
  const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(k.shift));
  const __m256 magic = _mm256_set1_ps(kRoundMagic), min_normal = _mm256_set1_ps(k.min_normal);
  const __m256 sub_mul = _mm256_set1_ps(k.subnormal_mul), sub_step = _mm256_set1_ps(k.subnormal_step);
  const __m256 max_value = _mm256_set1_ps(fmt.max_value);
  __m256 acc = _mm256_setzero_ps();
  for (uint64_t j = 0; j < n8; j += 8) {
    __m256 ax = _mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask);
    __m256 t = _mm256_mul_ps(ax, inv);
    // Normal range: round the float mantissa to mantissa_bits (half to even); the truncated bits are
    // the decoded value itself.
    __m256i bits = _mm256_castps_si256(t);
    __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(bits, shift), one);
    __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(bits, round_add), lsb);
    __m256 value_normal = _mm256_castsi256_ps(_mm256_sll_epi32(_mm256_srl_epi32(rounded, shift), shift));
    // Subnormal range: integer multiple of the subnormal step.
    __m256 q = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(t, sub_mul), magic), magic);
    __m256 value_sub = _mm256_mul_ps(q, sub_step);
    __m256 value = _mm256_blendv_ps(value_normal, value_sub, _mm256_cmp_ps(t, min_normal, _CMP_LT_OQ));
    value = _mm256_blendv_ps(value, max_value, _mm256_cmp_ps(t, max_value, _CMP_GE_OQ));
    __m256 e = _mm256_sub_ps(_mm256_mul_ps(value, scale), ax);  // |error|: the sign cancels in e*e
    acc = _mm256_add_ps(acc, _mm256_mul_ps(e, e));
    if (((j + 8) % kCheckEvery) == 0 && j + 8 < n8) {
      float partial = reduce8(acc);
      if (partial > bound) return partial;
    }
  }
  return reduce8(acc);
}

// Tables of at most 16 entries with no tie_up (nf4, lut): index by counting thresholds, value by two
// 8-entry permutes.
__attribute__((target("avx2"))) float table16_error_avx2(const float* x, uint64_t n8, const SortedTable& table,
                                                         const FpParams& p, float bound) {
  const __m256 inv = _mm256_set1_ps(p.inv_scale), scale = _mm256_set1_ps(p.scale);
  const __m256 low8 = _mm256_loadu_ps(table.values), high8 = _mm256_loadu_ps(table.values + 8);
  const __m256i seven = _mm256_set1_epi32(7);
  __m256 mids[15];
  for (uint32_t i = 0; i + 1 < table.size; ++i) mids[i] = _mm256_set1_ps(table.mids[i]);
  __m256 acc = _mm256_setzero_ps();
  for (uint64_t j = 0; j < n8; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    __m256 t = _mm256_mul_ps(v, inv);
    __m256i index = _mm256_setzero_si256();
    for (uint32_t i = 0; i + 1 < table.size; ++i)  // each true compare is -1
      index = _mm256_sub_epi32(index, _mm256_castps_si256(_mm256_cmp_ps(t, mids[i], _CMP_GT_OQ)));
    __m256 value = _mm256_blendv_ps(_mm256_permutevar8x32_ps(low8, index), _mm256_permutevar8x32_ps(high8, index),
                                    _mm256_castsi256_ps(_mm256_cmpgt_epi32(index, seven)));
    __m256 e = _mm256_sub_ps(_mm256_mul_ps(value, scale), v);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(e, e));
    if (((j + 8) % kCheckEvery) == 0 && j + 8 < n8) {
      float partial = reduce8(acc);
      if (partial > bound) return partial;
    }
  }
  return reduce8(acc);
}

// Scalar fast form of fp_error (no AVX2): bit arithmetic instead of the table search.
float fp_error_scalar(const float* x, uint64_t n8, const SmallFloatFormat& fmt, const FpParams& p) {
  float lane[8] = {};
  for (uint64_t j = 0; j < n8; ++j) {
    float ax = std::fabs(x[j]);
    float v = small_float_magnitude(fmt, fp_magnitude_code_fast(fmt, ax * p.inv_scale));
    float e = v * p.scale - ax;
    lane[j & 7] += e * e;
  }
  return lane_reduce(lane);
}

__attribute__((target("avx2"))) inline void store8_codes(__m256i codes32, uint8_t* out) {
  __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(codes32), _mm256_extracti128_si256(codes32, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(words, words));
}

__attribute__((target("avx2"))) void int_encode_avx2(const float* x, uint64_t n8, const IntParams& p, uint8_t* codes) {
  const __m256 inv = _mm256_set1_ps(p.inv_scale), zero = _mm256_set1_ps(p.zero);
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi), magic = _mm256_set1_ps(kRoundMagic);
  for (uint64_t j = 0; j < n8; j += 8) {
    __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), inv), lo), hi);
    __m256 q = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
    store8_codes(_mm256_cvttps_epi32(_mm256_add_ps(q, zero)), codes + j);
  }
}

__attribute__((target("avx2"))) void fp_encode_avx2(const float* x, uint64_t n8, const SmallFloatFormat& fmt,
                                                    float inv_scale, uint8_t* codes) {
  const FpBitConstants k = fp_bit_constants(fmt);
  const uint32_t sign_bit = 1u << (fmt.exponent_bits + fmt.mantissa_bits);
  const __m256 inv = _mm256_set1_ps(inv_scale);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i round_add = _mm256_set1_epi32(static_cast<int>(k.round_add)), one = _mm256_set1_epi32(1);
  const __m256i offset = _mm256_set1_epi32(static_cast<int>(k.code_offset));
  const __m256i max_code = _mm256_set1_epi32(static_cast<int>(fmt.max_magnitude_code));
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(sign_bit)), zero_i = _mm256_setzero_si256();
  const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(k.shift));
  const __m256 magic = _mm256_set1_ps(kRoundMagic), min_normal = _mm256_set1_ps(k.min_normal);
  const __m256 sub_mul = _mm256_set1_ps(k.subnormal_mul), max_value = _mm256_set1_ps(fmt.max_value);
  for (uint64_t j = 0; j < n8; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    __m256 t = _mm256_mul_ps(_mm256_and_ps(v, abs_mask), inv);
    __m256i bits = _mm256_castps_si256(t);
    __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(bits, shift), one);
    __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(bits, round_add), lsb);
    __m256i code_normal = _mm256_sub_epi32(_mm256_srl_epi32(rounded, shift), offset);
    __m256 q = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(t, sub_mul), magic), magic);
    __m256i code_sub = _mm256_cvttps_epi32(q);
    __m256i code = _mm256_blendv_epi8(code_normal, code_sub, _mm256_castps_si256(_mm256_cmp_ps(t, min_normal, _CMP_LT_OQ)));
    code = _mm256_blendv_epi8(code, max_code, _mm256_castps_si256(_mm256_cmp_ps(t, max_value, _CMP_GE_OQ)));
    // Sign bit where x < 0 and the magnitude is not zero.
    __m256i negative = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
    __m256i nonzero = _mm256_xor_si256(_mm256_cmpeq_epi32(code, zero_i), _mm256_set1_epi32(-1));
    code = _mm256_or_si256(code, _mm256_and_si256(_mm256_and_si256(negative, nonzero), sign));
    store8_codes(code, codes + j);
  }
}

__attribute__((target("avx2"))) void table16_encode_avx2(const float* x, uint64_t n8, const SortedTable& table,
                                                         float inv_scale, uint8_t* codes) {
  const __m256 inv = _mm256_set1_ps(inv_scale);
  __m256 mids[15];
  for (uint32_t i = 0; i + 1 < table.size; ++i) mids[i] = _mm256_set1_ps(table.mids[i]);
  for (uint64_t j = 0; j < n8; j += 8) {
    __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + j), inv);
    __m256i index = _mm256_setzero_si256();
    for (uint32_t i = 0; i + 1 < table.size; ++i)
      index = _mm256_sub_epi32(index, _mm256_castps_si256(_mm256_cmp_ps(t, mids[i], _CMP_GT_OQ)));
    store8_codes(index, codes + j);
  }
}

bool table16_without_ties(const SortedTable& table) {
  bool no_ties = table.size <= 16;
  for (uint32_t i = 0; i + 1 < table.size; ++i) no_ties = no_ties && table.tie_up[i] == 0;
  return no_ties;
}

}  // namespace

void int_encode_fast(const float* x, uint64_t n8, const IntParams& p, uint8_t* codes) {
  if (have_avx2()) return int_encode_avx2(x, n8, p, codes);
  for (uint64_t j = 0; j < n8; ++j) codes[j] = static_cast<uint8_t>(int_encode_one(x[j], p));
}

void fp_encode_fast(const float* x, uint64_t n8, const SmallFloatFormat& fmt, float inv_scale, uint8_t* codes) {
  if (have_avx2()) return fp_encode_avx2(x, n8, fmt, inv_scale, codes);
  const uint32_t sign_bit = 1u << (fmt.exponent_bits + fmt.mantissa_bits);
  for (uint64_t j = 0; j < n8; ++j) {
    uint32_t m = fp_magnitude_code_fast(fmt, std::fabs(x[j]) * inv_scale);
    codes[j] = static_cast<uint8_t>(m | ((x[j] < 0.0f && m != 0) ? sign_bit : 0u));
  }
}

void table_encode_fast(const float* x, uint64_t n8, const SortedTable& table, float inv_scale, uint8_t* codes) {
  if (have_avx2() && table16_without_ties(table)) return table16_encode_avx2(x, n8, table, inv_scale, codes);
  for (uint64_t j = 0; j < n8; ++j) codes[j] = static_cast<uint8_t>(table_index_fast(table, x[j] * inv_scale));
}

void minmax_with_zero_fast(const float* x, uint64_t n8, float* min_out, float* max_out) {
  if (have_avx2()) return minmax_avx2(x, n8, min_out, max_out);
  float lo = 0, hi = 0;
  for (uint64_t j = 0; j < n8; ++j) lo = x[j] < lo ? x[j] : lo, hi = x[j] > hi ? x[j] : hi;
  *min_out = lo, *max_out = hi;
}

float int_error_fast(const float* x, uint64_t n8, const IntParams& p, float bound) {
  if (have_avx2()) return int_error_avx2(x, n8, p, bound);
  return int_error_ref(x, n8, p);
}

float fp_error_fast(const float* x, uint64_t n8, const SmallFloatFormat& fmt, const FpParams& p, float bound) {
  if (have_avx2()) return fp_error_avx2(x, n8, fmt, p, bound);
  return fp_error_scalar(x, n8, fmt, p);
}

float table_error_fast(const float* x, uint64_t n8, const SortedTable& table, const FpParams& p, float bound) {
  if (have_avx2() && table16_without_ties(table)) return table16_error_avx2(x, n8, table, p, bound);
  return table_error_ref(x, n8, table, p);
}

}  // namespace wpack::detail
