// Small floating-point helpers shared by the quantizers: IEEE half (fp16) and bfloat16 conversions,
// the tiny FP8/FP6/FP5/FP4 formats the quantizers emit, and exact round-to-nearest-even.
// Header-only and scalar; every function is exact and deterministic (no dependence on the FPU
// rounding mode beyond the default round-to-nearest-even, no -ffast-math assumptions).
#pragma once

#include <bit>      // std::bit_cast
#include <cmath>    // std::fabs, std::nextafter
#include <cstdint>

namespace wpack::detail {

// ---- fp16 / bf16 ----

// float -> IEEE binary16 bits, round to nearest even; overflow gives +-inf, NaN stays a (quiet) NaN.
inline uint16_t float_to_f16_bits(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) return static_cast<uint16_t>(sign | (ax > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {
    // Below 2^-14: fp16 subnormal or zero. Adding 0.5f puts the value where the float ulp is 2^-24,
    // the fp16 subnormal step, so the FPU does the round-to-nearest-even for us.
    float sum = std::bit_cast<float>(ax) + 0.5f;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(sum) - 0x3F000000u));
  }
  uint32_t mant_odd = (ax >> 13) & 1u;
  ax += (static_cast<uint32_t>(15 - 127) << 23) + 0xFFFu + mant_odd;  // rebias, round half to even
  return static_cast<uint16_t>(sign | (ax >> 13));
}

// IEEE binary16 bits -> float (exact).
inline float f16_bits_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    float v = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// Round a float to the nearest fp16 value (as float).
inline float round_to_f16(float f) { return f16_bits_to_float(float_to_f16_bits(f)); }

inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// float -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN.
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

// double -> float rounded to odd: the float toward zero, its last bit set when that is inexact.
// Rounded on to nearest even in a format of at most 22 significant bits (fp16, bf16), it gives the
// double's nearest-even value there, as one rounding would (a plain double -> float -> fp16 rounds
// twice: 1 + 2^-11 + 2^-40 became 1, and 65519.99999 infinity). NaN stays NaN.
inline float double_to_float_round_to_odd(double d) {
  float f = static_cast<float>(d);
  if (d != d || static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);  // inf -> the largest float
  return std::bit_cast<float>(std::bit_cast<uint32_t>(f) | 1u);
}

// Largest finite fp16 value and the smallest positive (subnormal) one.
inline constexpr float kF16Max = 65504.0f;
inline constexpr float kF16MinSubnormal = 5.9604644775390625e-8f;  // 2^-24

// Round to nearest integer, ties to even, for |x| < 2^22 (adding 1.5 * 2^23 moves the binary point
// to bit 0; the FPU rounds). Written out so the scalar reference and the SIMD path round identically.
inline constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
inline float round_half_even_small(float x) { return (x + kRoundMagic) - kRoundMagic; }

// ---- the small float formats of the fp quantizers ----
//
// Code layout (bits = 1 + exponent_bits + mantissa_bits), as in the format definitions:
//   [sign | exponent | mantissa], the magnitude code is the low bits - 1 bits.
// No inf and no NaN except e4m3fn's S.1111.111, which the quantizer never emits (it saturates at 448).
// Subnormals: exponent 0 means mantissa * 2^(1 - bias - mantissa_bits).
struct SmallFloatFormat {
  uint32_t exponent_bits;
  uint32_t mantissa_bits;
  int32_t bias;
  uint32_t max_magnitude_code;  // largest finite magnitude code
  float max_value;
};

// OCP FP8 E4M3 ("e4m3fn"): bias 7, max 448 (code 0x7E), 0x7F is NaN.
inline constexpr SmallFloatFormat kFp8E4M3{4, 3, 7, 0x7E, 448.0f};
// FP6-LLM E3M2: bias 3, max 28, all codes finite.
inline constexpr SmallFloatFormat kFp6E3M2{3, 2, 3, 0x1F, 28.0f};
// FP5 E2M2: bias 1, max 7.
inline constexpr SmallFloatFormat kFp5E2M2{2, 2, 1, 0xF, 7.0f};
// FP4 E2M1 (OCP MX): bias 1, values +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}.
inline constexpr SmallFloatFormat kFp4E2M1{2, 1, 1, 0x7, 6.0f};

// Value of a magnitude code (exact in float).
inline float small_float_magnitude(const SmallFloatFormat& fmt, uint32_t magnitude_code) {
  uint32_t exponent = magnitude_code >> fmt.mantissa_bits;
  uint32_t mantissa = magnitude_code & ((1u << fmt.mantissa_bits) - 1u);
  if (exponent == 0) {
    // mantissa * 2^(1 - bias - mantissa_bits)
    int32_t e = 1 - fmt.bias - static_cast<int32_t>(fmt.mantissa_bits);
    return static_cast<float>(mantissa) * std::bit_cast<float>(static_cast<uint32_t>(127 + e) << 23);
  }
  int32_t e = static_cast<int32_t>(exponent) - fmt.bias;
  float one_plus = 1.0f + static_cast<float>(mantissa) / static_cast<float>(1u << fmt.mantissa_bits);
  return one_plus * std::bit_cast<float>(static_cast<uint32_t>(127 + e) << 23);
}

// Storage FP8 bits -> float (exact). E4M3 is OCP's "e4m3fn" (kFp8E4M3): no infinities, S.1111.111
// is NaN. E5M2 is binary16 without its low 8 bits (infinities and NaNs as there).
inline float f8e4m3_bits_to_float(uint8_t b) {
  const uint32_t magnitude = b & 0x7Fu;
  const float v = magnitude == 0x7F ? std::bit_cast<float>(0x7FC00000u) : small_float_magnitude(kFp8E4M3, magnitude);
  return (b & 0x80u) ? -v : v;
}
inline float f8e5m2_bits_to_float(uint8_t b) { return f16_bits_to_float(static_cast<uint16_t>(b << 8)); }

}  // namespace wpack::detail
