// Encode / error kernels of the quantizers: scalar references and AVX2 fast forms.
// The rules that keep the two forms bit-exact are in quant_kernels.h.
#include "packer/detail/quant_kernels.h"

#include <cmath>  // std::fabs
#include <cstring>  // std::memcpy
#include <algorithm>  // std::max
#include <atomic>     // the kernel path override

#include <cpuid.h>      // __get_cpuid, for F16C
#include <immintrin.h>  // AVX2 intrinsics, used only in functions compiled with target("avx2")

// No contraction of a * b + c into fused multiply-adds (rule 1 of quant_kernels.h): g++ contracts by
// default in C++ mode wherever the target has FMA, which the target("avx2,fma") kernels below do.
// Their fused multiply-adds are written out, where they provably round as the reference does.
// clang (the fuzz build) contracts by default too and ignores the GCC pragma: it has its own.
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

namespace wpack::detail {

// F16C from CPUID leaf 1, ECX bit 29: clang 14's __builtin_cpu_supports does not take "f16c".
static bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

// The test hook's setting (quant_kernels.h). Relaxed: it orders nothing else; a test sets it on its
// own thread before the quantizer it calls starts any others.
static std::atomic<KernelPath> g_kernel_path{KernelPath::kAuto};

void set_kernel_path(KernelPath path) { g_kernel_path.store(path, std::memory_order_relaxed); }
KernelPath kernel_path() { return g_kernel_path.load(std::memory_order_relaxed); }

bool have_avx2() {
  // AVX2 with FMA and F16C, which every AVX2 CPU has (some kernels use all three).
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  return avx2 && kernel_path() == KernelPath::kAuto;
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

float fp_value_fast(const SmallFloatFormat& fmt, float t) {
  const float clamped = fmt.max_value < t ? fmt.max_value : t;
  const uint32_t min_exponent = static_cast<uint32_t>(127 + 1 - fmt.bias) << 23;
  const uint32_t exponent = std::max(std::bit_cast<uint32_t>(clamped) & 0x7F800000u, min_exponent);
  const float magic = std::bit_cast<float>(exponent + ((23u - fmt.mantissa_bits) << 23));
  return (clamped + magic) - magic;
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

// Vector forms of std::min(a, b) = (b < a) ? b : a and std::max(a, b) = (a < b) ? b : a, operand
// order included, so that signed zeros come out as in the scalar reference.
__attribute__((target("avx2"))) inline __m256 std_min(__m256 a, __m256 b) { return _mm256_min_ps(b, a); }
__attribute__((target("avx2"))) inline __m256 std_max(__m256 a, __m256 b) { return _mm256_max_ps(b, a); }

// Up to `steps` pending terms of an ErrorChain, one pair per advance() (null chain: none). A kernel
// calls advance() once per loop iteration: the dependent double additions then overlap the
// iteration's own work instead of running at the adder's latency on their own. Both sums live in one
// register and advance with one two-lane addition (each lane rounds as a scalar addition would).
struct ChainStep {
  ErrorChain* chain;
  const double* terms = nullptr;
  uint64_t i = 0, end = 0;
  __m128d sums = _mm_setzero_pd();  // (ref_sq, err_sq)

  ChainStep(ErrorChain* c, uint64_t steps) : chain(c) {
    if (chain == nullptr) return;
    terms = chain->terms;
    i = chain->next, end = std::min(chain->count, chain->next + steps);
    sums = _mm_set_pd(chain->err_sq, chain->ref_sq);
  }
  void advance() {
    if (i < end) {
      sums = _mm_add_pd(sums, _mm_loadu_pd(terms + 2 * i));
      ++i;
    }
  }
  void finish() {
    if (chain == nullptr) return;
    chain->next = i;
    chain->ref_sq = _mm_cvtsd_f64(sums);
    chain->err_sq = _mm_cvtsd_f64(_mm_unpackhi_pd(sums, sums));
  }
};

// encode_scale on 8 lanes: fp16 of min(s, 65504) rounded to nearest even (F16C rounds exactly as
// float_to_f16_bits does, subnormals included), 0 -> 1, and 0 where !(s > 0). Stores the 8 fp16
// values at bits_out; returns them as floats.
__attribute__((target("avx2,f16c"))) inline __m256 encode_scale_avx2(__m256 s, uint16_t* bits_out) {
  const __m128i h = _mm256_cvtps_ph(std_min(s, _mm256_set1_ps(kF16Max)), _MM_FROUND_TO_NEAREST_INT);
  const __m256 positive = _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_GT_OQ);
  const __m128i positive16 = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(positive)),
                                             _mm256_extractf128_si256(_mm256_castps_si256(positive), 1));
  const __m128i bits16 = _mm_and_si128(_mm_max_epu16(h, _mm_set1_epi16(1)), positive16);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(bits_out), bits16);
  return _mm256_cvtph_ps(bits16);
}

// fp_value_fast on 8 lanes of t >= 0.
__attribute__((target("avx2"))) inline __m256 fp_value_avx2(__m256 t, const SmallFloatFormat& fmt) {
  const __m256 clamped = _mm256_min_ps(_mm256_set1_ps(fmt.max_value), t);  // max < t ? max : t
  const __m256i min_exponent = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(127 + 1 - fmt.bias) << 23));
  const __m256i exponent = _mm256_max_epi32(
      _mm256_and_si256(_mm256_castps_si256(clamped), _mm256_set1_epi32(0x7F800000)), min_exponent);
  const __m256 magic = _mm256_castsi256_ps(
      _mm256_add_epi32(exponent, _mm256_set1_epi32(static_cast<int>((23u - fmt.mantissa_bits) << 23))));
  return _mm256_sub_ps(_mm256_add_ps(clamped, magic), magic);
}

__attribute__((target("avx2,f16c"))) void int_candidates_avx2(float min, float max, float absmax, uint32_t bits,
                                                             bool symmetric, uint32_t count, ClipCandidates* out) {
  const float qmax_scalar = static_cast<float>((1u << bits) - 1u);
  out->count = count;
  out->qmax = qmax_scalar;
  const __m256 qmax = _mm256_set1_ps(qmax_scalar), zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 magic = _mm256_set1_ps(kRoundMagic), sign = _mm256_set1_ps(-0.0f);
  const __m256 x_min = _mm256_set1_ps(min), x_max = _mm256_set1_ps(max);
  // int_candidate's lo/hi inputs: min(min, 0) and max(max, 0), then scaled per candidate.
  const __m256 lo_base = _mm256_set1_ps(std::min(min, 0.0f)), hi_base = _mm256_set1_ps(std::max(max, 0.0f));
  for (uint32_t v = 0; v < kCandidateSlots / 8; ++v) {
    const __m256 c = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(8 * v)),
                                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 ratio = _mm256_sub_ps(one, _mm256_mul_ps(_mm256_set1_ps(0.025f), c));  // clip_ratio
    __m256 lo = zero, s;
    if (symmetric) {
      s = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(absmax), ratio),
                        _mm256_set1_ps(static_cast<float>((1u << (bits - 1)) - 1u)));
    } else {
      lo = _mm256_mul_ps(lo_base, ratio);
      s = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(hi_base, ratio), lo), qmax);
    }
    const __m256 scale = encode_scale_avx2(s, out->scale_bits + 8 * v);
    const __m256 inv = _mm256_and_ps(_mm256_div_ps(one, scale), _mm256_cmp_ps(scale, zero, _CMP_GT_OQ));
    __m256 zero_point;
    if (symmetric) {
      zero_point = _mm256_set1_ps(static_cast<float>(1u << (bits - 1)));
    } else {
      __m256 z = _mm256_mul_ps(_mm256_xor_ps(lo, sign), inv);  // -lo * inv
      z = std_min(std_max(z, zero), qmax);
      zero_point = _mm256_sub_ps(_mm256_add_ps(z, magic), magic);
    }
    _mm256_store_ps(out->scale + 8 * v, scale);
    _mm256_store_ps(out->inv_scale + 8 * v, inv);
    _mm256_store_ps(out->zero + 8 * v, zero_point);
    // The extreme elements' terms, with int_level's operations: t = x * inv clamped to [-zero,
    // qmax - zero] ((t < lo) ? lo : t, then (t > hi) ? hi : t), rounded; error q * scale - x.
    const __m256 q_lo = _mm256_xor_ps(zero_point, sign), q_hi = _mm256_sub_ps(qmax, zero_point);
    __m256 bound = zero;
    for (__m256 x : {x_min, x_max}) {
      __m256 t = _mm256_mul_ps(x, inv);
      t = _mm256_max_ps(q_lo, t);  // (t < lo) ? lo : t
      t = _mm256_min_ps(q_hi, t);  // (t > hi) ? hi : t
      const __m256 q = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
      const __m256 e = _mm256_sub_ps(_mm256_mul_ps(q, scale), x);
      bound = _mm256_add_ps(bound, _mm256_mul_ps(e, e));
    }
    _mm256_store_ps(out->lower_bound + 8 * v, bound);
  }
}

__attribute__((target("avx2,fma"))) void int_error_pair_avx2(const float* x, uint64_t n8, const IntParams& a,
                                                            const IntParams& b, float* error_a, float* error_b,
                                                            ErrorChain* chain) {
  ChainStep step(chain, n8 / 8);
  const __m256 inv_a = _mm256_set1_ps(a.inv_scale), scale_a = _mm256_set1_ps(a.scale);
  const __m256 lo_a = _mm256_set1_ps(a.lo), hi_a = _mm256_set1_ps(a.hi);
  const __m256 inv_b = _mm256_set1_ps(b.inv_scale), scale_b = _mm256_set1_ps(b.scale);
  const __m256 lo_b = _mm256_set1_ps(b.lo), hi_b = _mm256_set1_ps(b.hi);
  __m256 acc_a = _mm256_setzero_ps(), acc_b = _mm256_setzero_ps();
  for (uint64_t j = 0; j < n8; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    // int_level: clamp x * inv to [lo, hi], round half to even (vroundps: the same integer as
    // round_half_even_small, possibly -0 for +0, which the product below does not distinguish).
    const __m256 t_a = _mm256_min_ps(hi_a, _mm256_max_ps(lo_a, _mm256_mul_ps(v, inv_a)));
    const __m256 t_b = _mm256_min_ps(hi_b, _mm256_max_ps(lo_b, _mm256_mul_ps(v, inv_b)));
    const __m256 q_a = _mm256_round_ps(t_a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 q_b = _mm256_round_ps(t_b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 e_a = _mm256_fmsub_ps(q_a, scale_a, v);  // exact product: see the header
    const __m256 e_b = _mm256_fmsub_ps(q_b, scale_b, v);
    acc_a = _mm256_add_ps(acc_a, _mm256_mul_ps(e_a, e_a));
    acc_b = _mm256_add_ps(acc_b, _mm256_mul_ps(e_b, e_b));
    step.advance();
  }
  step.finish();
  *error_a = reduce8(acc_a);
  *error_b = reduce8(acc_b);
}

__attribute__((target("avx2,f16c"))) void fp_candidates_avx2(float absmax, const SmallFloatFormat& fmt,
                                                            uint32_t count, ClipCandidates* out) {
  out->count = count;
  out->qmax = 0;
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), ax = _mm256_set1_ps(absmax);
  for (uint32_t v = 0; v < kCandidateSlots / 8; ++v) {
    const __m256 c = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(8 * v)),
                                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 ratio = _mm256_sub_ps(one, _mm256_mul_ps(_mm256_set1_ps(0.025f), c));  // clip_ratio
    const __m256 s = _mm256_div_ps(_mm256_mul_ps(ax, ratio), _mm256_set1_ps(fmt.max_value));
    const __m256 scale = encode_scale_avx2(s, out->scale_bits + 8 * v);
    const __m256 inv = _mm256_and_ps(_mm256_div_ps(one, scale), _mm256_cmp_ps(scale, zero, _CMP_GT_OQ));
    _mm256_store_ps(out->scale + 8 * v, scale);
    _mm256_store_ps(out->inv_scale + 8 * v, inv);
    _mm256_store_ps(out->zero + 8 * v, zero);
    const __m256 e = _mm256_sub_ps(_mm256_mul_ps(fp_value_avx2(_mm256_mul_ps(ax, inv), fmt), scale), ax);
    _mm256_store_ps(out->lower_bound + 8 * v, _mm256_mul_ps(e, e));
  }
}

__attribute__((target("avx2,fma"))) void fp_error_pair_avx2(const float* x, uint64_t n8, const SmallFloatFormat& fmt,
                                                           const FpParams& a, const FpParams& b, float* error_a,
                                                           float* error_b, ErrorChain* chain) {
  ChainStep step(chain, n8 / 8);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 inv_a = _mm256_set1_ps(a.inv_scale), scale_a = _mm256_set1_ps(a.scale);
  const __m256 inv_b = _mm256_set1_ps(b.inv_scale), scale_b = _mm256_set1_ps(b.scale);
  __m256 acc_a = _mm256_setzero_ps(), acc_b = _mm256_setzero_ps();
  for (uint64_t j = 0; j < n8; j += 8) {
    // |error|: the reference's signed value and x differ from these only in sign, which e * e drops.
    const __m256 ax = _mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask);
    const __m256 e_a = _mm256_fmsub_ps(fp_value_avx2(_mm256_mul_ps(ax, inv_a), fmt), scale_a, ax);
    const __m256 e_b = _mm256_fmsub_ps(fp_value_avx2(_mm256_mul_ps(ax, inv_b), fmt), scale_b, ax);
    acc_a = _mm256_add_ps(acc_a, _mm256_mul_ps(e_a, e_a));
    acc_b = _mm256_add_ps(acc_b, _mm256_mul_ps(e_b, e_b));
    step.advance();
  }
  step.finish();
  *error_a = reduce8(acc_a);
  *error_b = reduce8(acc_b);
}

__attribute__((target("avx2"))) uint32_t candidates_alive_avx2(const ClipCandidates& cand, float best) {
  const __m256 b = _mm256_set1_ps(best);
  uint32_t alive = 0;
  for (uint32_t v = 0; v < kCandidateSlots / 8; ++v) {  // !(bound > best): "not greater than", unordered true
    const __m256 keep = _mm256_cmp_ps(_mm256_load_ps(cand.lower_bound + 8 * v), b, _CMP_NGT_UQ);
    alive |= static_cast<uint32_t>(_mm256_movemask_ps(keep)) << (8 * v);
  }
  return alive;
}

void error_terms_scalar(const float* ref, const float* approx, uint64_t n, double* terms, double* max_abs,
                        uint64_t* zeros) {
  double m = *max_abs;
  uint64_t z = *zeros;
  for (uint64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(approx[i]) - static_cast<double>(ref[i]);
    terms[2 * i] = static_cast<double>(ref[i]) * ref[i];
    terms[2 * i + 1] = d * d;
    const double abs_d = std::fabs(d);
    m = m < abs_d ? abs_d : m;
    z += approx[i] == 0.0f ? 1 : 0;
  }
  *max_abs = m, *zeros = z;
}

__attribute__((target("avx2"))) void error_terms_avx2(const float* ref, const float* approx, uint64_t n,
                                                     double* terms, double* max_abs, uint64_t* zeros) {
  const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFll));
  __m256d m = _mm256_setzero_pd();
  uint64_t z = 0;
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 a4 = _mm_loadu_ps(approx + i);
    const __m256d r = _mm256_cvtps_pd(_mm_loadu_ps(ref + i)), a = _mm256_cvtps_pd(a4);
    const __m256d d = _mm256_sub_pd(a, r);
    const __m256d r2 = _mm256_mul_pd(r, r), d2 = _mm256_mul_pd(d, d);
    // Interleave to (r2_0, d2_0, r2_1, d2_1) and (r2_2, d2_2, r2_3, d2_3).
    const __m256d lo = _mm256_unpacklo_pd(r2, d2), hi = _mm256_unpackhi_pd(r2, d2);
    _mm256_storeu_pd(terms + 2 * i, _mm256_permute2f128_pd(lo, hi, 0x20));
    _mm256_storeu_pd(terms + 2 * i + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
    m = _mm256_max_pd(_mm256_and_pd(d, abs_mask), m);  // (m < |d|) ? |d| : m
    z += static_cast<uint64_t>(__builtin_popcount(
        static_cast<unsigned>(_mm_movemask_ps(_mm_cmpeq_ps(a4, _mm_setzero_ps())))));
  }
  double lanes[4];
  _mm256_storeu_pd(lanes, m);
  double largest = *max_abs;
  for (double v : lanes) largest = largest < v ? v : largest;
  *max_abs = largest, *zeros += z;
  error_terms_scalar(ref + i, approx + i, n - i, terms + 2 * i, max_abs, zeros);
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

void int_candidates_fast(float min, float max, float absmax, uint32_t bits, bool symmetric, uint32_t count,
                         ClipCandidates* out) {
  if (have_avx2()) return int_candidates_avx2(min, max, absmax, bits, symmetric, count, out);
  out->count = count;
  out->qmax = static_cast<float>((1u << bits) - 1u);
  for (uint32_t c = 0; c < kCandidateSlots; ++c) {
    uint8_t zero_code;
    const IntParams p = int_candidate(min, max, absmax, clip_ratio(c), bits, symmetric, &out->scale_bits[c], &zero_code);
    out->scale[c] = p.scale, out->inv_scale[c] = p.inv_scale, out->zero[c] = p.zero;
    float bound = 0;
    for (float x : {min, max}) {
      const float e = int_decode_one(int_encode_one(x, p), p) - x;
      bound += e * e;
    }
    out->lower_bound[c] = bound;
  }
}

void fp_candidates_fast(float absmax, const SmallFloatFormat& fmt, uint32_t count, ClipCandidates* out) {
  if (have_avx2()) return fp_candidates_avx2(absmax, fmt, count, out);
  out->count = count;
  out->qmax = 0;
  for (uint32_t c = 0; c < kCandidateSlots; ++c) {
    out->scale_bits[c] = encode_scale(absmax * clip_ratio(c) / fmt.max_value);
    out->scale[c] = f16_bits_to_float(out->scale_bits[c]);
    out->inv_scale[c] = inverse_scale(out->scale[c]);
    out->zero[c] = 0;
    const float e = fp_value_fast(fmt, absmax * out->inv_scale[c]) * out->scale[c] - absmax;
    out->lower_bound[c] = e * e;
  }
}

void fp_error_pair_fast(const float* x, uint64_t n8, const SmallFloatFormat& fmt, const FpParams& a,
                        const FpParams& b, float* error_a, float* error_b, ErrorChain* chain) {
  if (have_avx2()) return fp_error_pair_avx2(x, n8, fmt, a, b, error_a, error_b, chain);
  *error_a = fp_error_scalar(x, n8, fmt, a);
  *error_b = fp_error_scalar(x, n8, fmt, b);
  if (chain != nullptr) chain->drain();
}

void error_terms_fast(const float* ref, const float* approx, uint64_t n, double* terms, double* max_abs,
                      uint64_t* zeros) {
  if (have_avx2()) return error_terms_avx2(ref, approx, n, terms, max_abs, zeros);
  error_terms_scalar(ref, approx, n, terms, max_abs, zeros);
}

uint32_t candidates_alive(const ClipCandidates& cand, float best) {
  uint32_t alive = 0;
  if (have_avx2()) {
    alive = candidates_alive_avx2(cand, best);
  } else {
    for (uint32_t c = 0; c < kCandidateSlots; ++c) alive |= static_cast<uint32_t>(!(cand.lower_bound[c] > best)) << c;
  }
  return alive & ((1u << cand.count) - 1u);
}

void int_error_pair_fast(const float* x, uint64_t n8, const IntParams& a, const IntParams& b, float* error_a,
                         float* error_b, ErrorChain* chain) {
  if (have_avx2()) return int_error_pair_avx2(x, n8, a, b, error_a, error_b, chain);
  *error_a = int_error_ref(x, n8, a);
  *error_b = int_error_ref(x, n8, b);
  if (chain != nullptr) chain->drain();
}

float table_error_fast(const float* x, uint64_t n8, const SortedTable& table, const FpParams& p, float bound) {
  if (have_avx2() && table16_without_ties(table)) return table16_error_avx2(x, n8, table, p, bound);
  return table_error_ref(x, n8, table, p);
}

void pack_codes_ref(const uint8_t* codes, uint64_t n, uint32_t bits, uint8_t* out) {
  const uint64_t bytes = (n * bits + 7) / 8;
  for (uint64_t i = 0; i < bytes; ++i) out[i] = 0;
  uint64_t bit = 0;
  for (uint64_t k = 0; k < n; ++k) {
    const uint32_t v = codes[k];
    const uint64_t byte = bit >> 3;
    const uint32_t shift = bit & 7;
    out[byte] |= static_cast<uint8_t>(v << shift);
    if (shift + bits > 8) out[byte + 1] |= static_cast<uint8_t>(v >> (8 - shift));
    bit += bits;
  }
}

void pack_codes_fast(const uint8_t* codes, uint64_t n, uint32_t bits, uint8_t* out) {
  if (bits == 8) {
    if (n != 0) std::memcpy(out, codes, n);  // codes may be null when n == 0 (an empty sparse tile)
    return;
  }
  // Eight codes c0..c7, one per byte of a little-endian word, become the 8*bits-bit value
  // sum(c_i << (i * bits)) -- exactly `bits` bytes of the LSB-first stream, starting on a byte
  // boundary because 8 codes fill whole bytes. Three halving steps; each keeps the low half of
  // every 16-, 32-, 64-bit unit in place and moves the high half down to sit right above it:
  //   16-bit units: [c1 in byte 1][c0 in byte 0]     -> c1:c0        (2*bits bits)
  //   32-bit units: [c3:c2 at bit 16][c1:c0 at bit 0] -> c3:c2:c1:c0  (4*bits bits)
  //   64-bit word:  [c7..c4 at bit 32][c3..c0 at bit 0] -> c7..c0     (8*bits bits)
  const uint64_t width1 = (1ull << bits) - 1, width2 = (1ull << (2 * bits)) - 1, width4 = (1ull << (4 * bits)) - 1;
  const uint64_t low1 = 0x0001000100010001ull * width1, high1 = low1 << 8;
  const uint64_t low2 = 0x0000000100000001ull * width2, high2 = low2 << 16;
  const uint64_t low4 = width4, high4 = width4 << 32;
  const uint64_t words = n / 8;
  for (uint64_t w = 0; w < words; ++w) {
    uint64_t v;
    std::memcpy(&v, codes + 8 * w, 8);
    v = (v & low1) | ((v & high1) >> (8 - bits));
    v = (v & low2) | ((v & high2) >> (16 - 2 * bits));
    v = (v & low4) | ((v & high4) >> (32 - 4 * bits));
    std::memcpy(out + w * bits, &v, 8);  // bytes past the first `bits` are zero; the next word overwrites them
  }
  // The last n % 8 codes: the reference on the tail, which starts on a byte boundary.
  pack_codes_ref(codes + 8 * words, n - 8 * words, bits, out + words * bits);
}

}  // namespace wpack::detail
