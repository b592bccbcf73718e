// Quantizers: fast == reference (bit-exact), hand-checked encodings, accuracy against named
// tolerances, clip search never worse than RTN, determinism across thread counts, error paths.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "formats/error.h"
#include "packer/detail/fp.h"
#include "packer/detail/quant_kernels.h"
#include "packer/quantize.h"
#include "test_util.h"

using namespace wpack;

namespace {

// Round-trip rel_error tolerances (||W^ - W|| / ||W||) on outlier_weights(256 x 1024), clip mse,
// default groups. Each bound is about 10% above the value measured when it was set
// (int8 0.0179, int4 0.1157, int3 0.2261, int2 0.4226, fp8 0.0251, fp6 0.0497, fp5 0.0823,
// fp4 0.1188, nf4 0.0982, lut4 0.1056, lut3 0.2291).
constexpr double kInt8RelTol = 0.020;
constexpr double kInt4RelTol = 0.128;
constexpr double kInt3RelTol = 0.25;
constexpr double kInt2RelTol = 0.465;
constexpr double kFp8RelTol = 0.028;
constexpr double kFp6RelTol = 0.055;
constexpr double kFp5RelTol = 0.091;
constexpr double kFp4RelTol = 0.131;
constexpr double kNf4RelTol = 0.108;
constexpr double kLut4RelTol = 0.116;
constexpr double kLut3RelTol = 0.252;
// int3/int2 with clip mse must beat RTN min-max by at least this fraction of squared error.
constexpr double kLowBitMseGain = 0.10;

const Scheme kAllSchemes[] = {Scheme::kInt8, Scheme::kInt4, Scheme::kInt3, Scheme::kInt2, Scheme::kFp8, Scheme::kFp6,
                              Scheme::kFp5,  Scheme::kFp4,  Scheme::kNf4,  Scheme::kLut4, Scheme::kLut3};

std::vector<float> to_floats(const std::vector<uint8_t>& bytes) {
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

// N(0, 0.02^2) with 0.1% of the weights replaced by +-10 sigma outliers.
std::vector<float> outlier_weights(uint64_t n, uint64_t seed) {
  std::vector<float> w = to_floats(test::gaussian_f32(n, 0.02f, seed));
  std::mt19937_64 rng(seed);
  for (uint64_t k = 0; k < n / 1000; ++k) w[rng() % n] = (rng() & 1) ? 0.2f : -0.2f;
  return w;
}

double sq_error(const std::vector<float>& w, const QuantizedMatrix& q) {
  std::vector<float> out(w.size());
  dequantize(q, out.data());
  double e = 0;
  for (size_t i = 0; i < w.size(); ++i) e += (double(out[i]) - w[i]) * (double(out[i]) - w[i]);
  return e;
}

double rel_error(const std::vector<float>& w, const QuantizedMatrix& q) {
  std::vector<float> out(w.size());
  dequantize(q, out.data());
  return error_stats(w.data(), out.data(), w.size()).rel_error;
}

void require_identical(const QuantizedMatrix& a, const QuantizedMatrix& b) {
  REQUIRE(a.rows == b.rows);
  REQUIRE(a.cols == b.cols);
  REQUIRE(a.spec.group == b.spec.group);
  REQUIRE(a.codes == b.codes);
  REQUIRE(a.scales == b.scales);
  REQUIRE(a.zeros == b.zeros);
  REQUIRE(a.tables == b.tables);
}

// Every field, bit for bit (NaN and -0.0 included).
void require_identical(const ErrorStats& a, const ErrorStats& b) {
  REQUIRE(std::memcmp(&a.rel_error, &b.rel_error, sizeof(double)) == 0);
  REQUIRE(std::memcmp(&a.max_abs_error, &b.max_abs_error, sizeof(double)) == 0);
  REQUIRE(std::memcmp(&a.snr_db, &b.snr_db, sizeof(double)) == 0);
  REQUIRE(std::memcmp(&a.sparsity, &b.sparsity, sizeof(double)) == 0);
}

// The fast kernels' two halves (detail::set_kernel_path): the CPU's choice (AVX2 where it has it)
// and the non-AVX2 branches, forced. Tests that hold the fast path against the reference run both.
const detail::KernelPath kKernelPaths[] = {detail::KernelPath::kAuto, detail::KernelPath::kScalar};

// Sets the kernel path for a scope and restores the previous one (also when a REQUIRE throws).
class ScopedKernelPath {
 public:
  explicit ScopedKernelPath(detail::KernelPath path) : saved_(detail::kernel_path()) { detail::set_kernel_path(path); }
  ~ScopedKernelPath() { detail::set_kernel_path(saved_); }
  ScopedKernelPath(const ScopedKernelPath&) = delete;
  ScopedKernelPath& operator=(const ScopedKernelPath&) = delete;

 private:
  detail::KernelPath saved_;
};

// For INFO: the path and the branches it takes here.
const char* kernel_path_name(detail::KernelPath path) {
  ScopedKernelPath scoped(path);
  if (path == detail::KernelPath::kScalar) return "kernels: forced scalar";
  return detail::have_avx2() ? "kernels: auto (AVX2)" : "kernels: auto (scalar: no AVX2 here)";
}

// Inverse standard normal CDF by bisection on erfc (tests only: slow, accurate to ~1e-15).
double normal_ppf(double p) {
  double lo = -40, hi = 40;
  for (int i = 0; i < 200; ++i) {
    double mid = (lo + hi) / 2;
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

}  // namespace

TEST_CASE("scheme names, codes and bits are fixed") {
  const char* names[] = {"lossless", "int8", "int4", "int3", "int2", "fp8", "fp6", "fp5", "fp4", "nf4", "lut4", "lut3"};
  const uint32_t bits[] = {0, 8, 4, 3, 2, 8, 6, 5, 4, 4, 4, 3};
  for (uint8_t code = 0; code < 12; ++code) {
    auto scheme = scheme_from_code(code);
    REQUIRE(scheme.has_value());
    REQUIRE(static_cast<uint8_t>(*scheme) == code);
    REQUIRE(scheme_name(*scheme) == names[code]);
    REQUIRE(parse_scheme(names[code]) == scheme);
    REQUIRE(scheme_bits(*scheme) == bits[code]);
  }
  REQUIRE_FALSE(scheme_from_code(12).has_value());
  REQUIRE_FALSE(parse_scheme("int5").has_value());
}

TEST_CASE("fp16 and bf16 conversions match the compiler's") {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 f;
    uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&f, &bits, 2);
    float expected = static_cast<float>(f), got = detail::f16_bits_to_float(bits);
    if (std::isnan(expected)) {
      REQUIRE(std::isnan(got));
      continue;
    }
    REQUIRE(std::memcmp(&expected, &got, 4) == 0);
    REQUIRE(detail::float_to_f16_bits(got) == bits);  // every fp16 value round-trips
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = rng();
    float x;
    std::memcpy(&x, &u, 4);
    if (std::isnan(x)) continue;
    _Float16 h = static_cast<_Float16>(x);
    uint16_t expected;
    std::memcpy(&expected, &h, 2);
    REQUIRE(detail::float_to_f16_bits(x) == expected);
  }
  REQUIRE(detail::bf16_to_float(0x3F80) == 1.0f);
  REQUIRE(detail::float_to_bf16_bits(1.0f + 1.0f / 256) == 0x3F80);  // tie to even
  REQUIRE(detail::float_to_bf16_bits(1.0f + 3.0f / 256) == 0x3F82);
}

namespace {

// bfloat16 bits -> value, from the format's definition (1 sign, 8 exponent bits of bias 127, 7
// mantissa bits; exponent 0: subnormal m * 2^-133), in double. Exponent 255 with mantissa 0 gives
// 2^128: the value the next magnitude after the largest finite one would have with an unbounded
// exponent, which is what rounding compares against (the caller reads it as infinity).
double bf16_value_by_definition(uint16_t b) {
  const int exponent = (b >> 7) & 0xFF, mantissa = b & 0x7F;
  const double magnitude = exponent == 0 ? std::ldexp(mantissa, -133) : std::ldexp(128 + mantissa, exponent - 134);
  return (b & 0x8000) ? -magnitude : magnitude;
}

// float bits -> bfloat16 bits by IEEE round to nearest, ties to even, from the definition: the two
// bf16 values around x (the one toward zero shares x's top 16 bits; the other is the next magnitude,
// 2^128 above the largest finite one), their exact distances to x compared in double, a tie to the
// even mantissa. Overflow to infinity is then exactly IEEE's: x rounds to 2^128. Finite x only.
uint16_t bf16_round_reference(uint32_t bits) {
  const float x = std::bit_cast<float>(bits);
  const uint16_t down = static_cast<uint16_t>(bits >> 16), up = static_cast<uint16_t>(down + 1);
  const double ax = std::fabs(static_cast<double>(x));
  const double below = ax - std::fabs(bf16_value_by_definition(down));  // exact: both floats, >= 0
  const double above = std::fabs(bf16_value_by_definition(up)) - ax;    // exact, > 0
  if (below < above) return down;
  if (above < below) return up;
  return (down & 1u) == 0 ? down : up;
}

// Empty when float_to_bf16_bits(bits) is right, else what is wrong. NaN: a NaN, quiet (mantissa
// bit 6 set); infinity: itself; finite: bf16_round_reference.
std::string bf16_mismatch(uint32_t bits) {
  const uint16_t got = detail::float_to_bf16_bits(std::bit_cast<float>(bits));
  std::ostringstream why;
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN
    if ((got & 0x7F80u) == 0x7F80u && (got & 0x0040u) != 0) return {};
    why << "not a quiet NaN";
  } else {
    const uint16_t expected = (bits & 0x7FFFFFFFu) == 0x7F800000u ? static_cast<uint16_t>(bits >> 16)
                                                                   : bf16_round_reference(bits);
    if (got == expected) return {};
    why << "expected 0x" << std::hex << expected;
  }
  why << std::hex << " got 0x" << got << " for float bits 0x" << bits;
  return why.str();
}

}  // namespace

TEST_CASE("float_to_bf16_bits rounds to nearest even: ties, near-ties, subnormals, overflow, NaN") {
  // Spot checks of the reference itself.
  REQUIRE(bf16_round_reference(0x3F808000u) == 0x3F80);  // 1 + 2^-8: tie, to even 1.0
  REQUIRE(bf16_round_reference(0x3F818000u) == 0x3F82);  // 1 + 3 * 2^-8: tie, to even 0x3F82
  REQUIRE(bf16_round_reference(0x7F7F7FFFu) == 0x7F7F);  // just below the midpoint: the largest finite
  REQUIRE(bf16_round_reference(0x7F7F8000u) == 0x7F80);  // the midpoint to 2^128: overflows to inf
  REQUIRE(bf16_round_reference(0x80008000u) == 0x8000);  // -(2^-134): tie between -0 and -2^-133, to -0
  REQUIRE(bf16_round_reference(0x00018000u) == 0x0002);  // subnormal tie 1.5 * 2^-133, to even 2 * 2^-133
  uint64_t checked = 0, failures = 0;
  std::string first;
  auto check = [&](uint32_t bits) {
    ++checked;
    std::string why = bf16_mismatch(bits);
    if (!why.empty() && failures++ == 0) first = why;
  };
  // Every high half with the low halves that decide ties and near-ties: exactly a tie (0x8000),
  // one ulp either side of it, exact (0x0000) and the largest below the next value (0xFFFF).
  for (uint32_t high = 0; high < 65536; ++high)
    for (uint32_t low : {0x0000u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) check((high << 16) | low);
  // Random patterns: uniform bits, and as many again with the exponent forced to 0 (subnormals) and
  // to 255 (infinities and NaNs with random payloads, signalling and quiet).
  std::mt19937 rng(20240613);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t u = rng();
    check(u);
    check(i % 2 ? (u & 0x807FFFFFu) : (u | 0x7F800000u));
  }
  INFO(checked << " patterns checked, " << failures << " wrong; first: " << first);
  REQUIRE(failures == 0);
  REQUIRE(checked == 65536 * 5 + 4000000);
}

TEST_CASE("small float formats: hand-checked values and encodings") {
  // e2m1: +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}
  std::vector<float> fp4 = scheme_code_values(Scheme::kFp4);
  const float fp4_expected[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  REQUIRE(fp4.size() == 16);
  for (int i = 0; i < 8; ++i) {
    REQUIRE(fp4[i] == fp4_expected[i]);
    REQUIRE(fp4[8 + i] == -fp4_expected[i]);
  }
  // e3m2, bias 3: smallest subnormal 2^-4, 1.0 = 0b0'011'00, max 28 = 0b0'111'11.
  std::vector<float> fp6 = scheme_code_values(Scheme::kFp6);
  REQUIRE(fp6[0x01] == 0.0625f);
  REQUIRE(fp6[0x0C] == 1.0f);
  REQUIRE(fp6[0x0D] == 1.25f);
  REQUIRE(fp6[0x1F] == 28.0f);
  REQUIRE(fp6[0x20 | 0x0C] == -1.0f);
  const auto& e3m2 = detail::kFp6E3M2;
  REQUIRE(detail::fp_magnitude_code_fast(e3m2, 1.0f) == 0x0C);
  REQUIRE(detail::fp_magnitude_code_fast(e3m2, 1.125f) == 0x0C);   // tie 1.0 | 1.25 -> even mantissa
  REQUIRE(detail::fp_magnitude_code_fast(e3m2, 1.375f) == 0x0E);   // tie 1.25 | 1.5 -> even
  REQUIRE(detail::fp_magnitude_code_fast(e3m2, 0.03125f) == 0x00); // tie 0 | 2^-4 -> 0
  REQUIRE(detail::fp_magnitude_code_fast(e3m2, 0.09375f) == 0x02); // tie 1 | 2 subnormal steps -> 2
  REQUIRE(detail::fp_magnitude_code_fast(e3m2, 100.0f) == 0x1F);   // saturates at 28
  // e2m2, bias 1: max 7; e4m3fn: 1.0 = 0x38, max 448 = 0x7E, smallest subnormal 2^-9.
  REQUIRE(scheme_code_values(Scheme::kFp5)[0x0F] == 7.0f);
  std::vector<float> fp8 = scheme_code_values(Scheme::kFp8);
  REQUIRE(fp8[0x38] == 1.0f);
  REQUIRE(fp8[0x7E] == 448.0f);
  REQUIRE(fp8[0x01] == 0.001953125f);
  REQUIRE(std::isnan(fp8[0x7F]));
  REQUIRE(detail::fp_magnitude_code_fast(detail::kFp8E4M3, 440.0f) == 0x7E);
  REQUIRE(detail::fp_magnitude_code_fast(detail::kFp8E4M3, 1e6f) == 0x7E);
}

TEST_CASE("fp bit-arithmetic encoder equals the table search on every midpoint and around it") {
  for (const auto* fmt : {&detail::kFp8E4M3, &detail::kFp6E3M2, &detail::kFp5E2M2, &detail::kFp4E2M1}) {
    detail::SortedTable table = detail::small_float_table(*fmt);
    std::vector<float> probes = {0.0f, 1e-30f, 1e30f};
    for (uint32_t i = 0; i < table.size; ++i) {
      for (float v : {table.values[i], i + 1 < table.size ? table.mids[i] : table.values[i] * 1.5f}) {
        probes.push_back(v);
        probes.push_back(std::nextafter(v, 0.0f));
        probes.push_back(std::nextafter(v, 1e38f));
      }
    }
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(0.0f, fmt->max_value * 1.2f);
    for (int i = 0; i < 20000; ++i) probes.push_back(u(rng));
    for (float t : {1e-40f, 1e-45f, std::nextafter(fmt->max_value, 0.0f), 3e38f}) probes.push_back(t);
    for (float t : probes) {
      INFO("format max " << fmt->max_value << ", t = " << t);
      const uint32_t code = detail::table_index_ref(table, t);
      REQUIRE(detail::fp_magnitude_code_fast(*fmt, t) == code);
      // The pair kernel's form: the value without the code.
      REQUIRE(detail::fp_value_fast(*fmt, t) == detail::small_float_magnitude(*fmt, code));
    }
  }
}

TEST_CASE("nf4 table: the published constants follow the QLoRA definition") {
  // offset = (1 - 1/(2*15) + 1 - 1/(2*16)) / 2; positives: ppf(linspace(offset, 0.5, 9)[:-1]);
  // negatives: -ppf(linspace(offset, 0.5, 8)[:-1]); plus 0; normalised by the maximum.
  const double offset = (1 - 1.0 / 30 + 1 - 1.0 / 32) / 2;
  std::vector<double> v;
  for (int i = 0; i < 8; ++i) v.push_back(normal_ppf(offset + (0.5 - offset) * i / 8.0));
  for (int i = 0; i < 7; ++i) v.push_back(-normal_ppf(offset + (0.5 - offset) * i / 7.0));
  v.push_back(0.0);
  std::sort(v.begin(), v.end());
  const double max = v.back();
  for (int i = 0; i < 16; ++i) REQUIRE(kNf4Table[i] == Approx(v[i] / max).margin(1e-6));
  REQUIRE(kNf4Table[7] == 0.0f);
  REQUIRE(scheme_code_values(Scheme::kNf4)[15] == 1.0f);
}

TEST_CASE("hand-checked integer encodings") {
  SECTION("int4 asymmetric min-max") {
    // range [-1, 2]: scale = fp16(3/15) = 0.199951171875, zero = round(1 / scale) = 5.
    const float w[4] = {-1.0f, 0.0f, 0.5f, 2.0f};
    QuantizedMatrix q = quantize_ref(w, 1, 4, QuantSpec{Scheme::kInt4, 32, false, Clip::kMinMax, 0});
    REQUIRE(q.scales == std::vector<uint16_t>{detail::float_to_f16_bits(0.2f)});
    REQUIRE(detail::f16_bits_to_float(q.scales[0]) == 0.199951171875f);
    REQUIRE(q.zeros == std::vector<uint8_t>{5});
    REQUIRE(q.codes == std::vector<uint8_t>{0, 5, 8, 15});
    REQUIRE(dequantize_code(q, 0, 1) == 0.0f);
    REQUIRE(dequantize_code(q, 0, 3) == 10 * 0.199951171875f);
  }
  SECTION("int8 per-row symmetric, code = q + 128") {
    const float w[4] = {1.0f, -0.25f, 0.0f, -1.0f};
    QuantizedMatrix q = quantize_ref(w, 1, 4, QuantSpec{Scheme::kInt8, 0, false, Clip::kMinMax, 0});
    REQUIRE(q.zeros.empty());
    REQUIRE(q.scales == std::vector<uint16_t>{detail::float_to_f16_bits(1.0f / 127)});
    REQUIRE(q.codes == std::vector<uint8_t>{255, 128 - 32, 128, 1});
  }
  SECTION("int2 symmetric: levels -2..1 times absmax") {
    const float w[4] = {1.2f, -1.2f, 0.4f, -2.0f};
    QuantizedMatrix q = quantize_ref(w, 1, 4, QuantSpec{Scheme::kInt2, 32, true, Clip::kMinMax, 0});
    REQUIRE(detail::f16_bits_to_float(q.scales[0]) == 2.0f);
    REQUIRE(q.codes == std::vector<uint8_t>{3, 1, 2, 1});  // levels 0.6, -0.6, 0.2, -1 round to 1, -1, 0, -1
  }
  SECTION("fp4 group scale = absmax / 6") {
    const float w[4] = {6.0f, -3.0f, 0.7f, 0.2f};
    QuantizedMatrix q = quantize_ref(w, 1, 4, QuantSpec{Scheme::kFp4, 32, false, Clip::kMinMax, 0});
    REQUIRE(detail::f16_bits_to_float(q.scales[0]) == 1.0f);
    REQUIRE(q.codes == std::vector<uint8_t>{0x7, 0x8 | 0x5, 0x1, 0x0});
  }
  SECTION("nf4 block absmax") {
    const float w[3] = {-2.0f, 2.0f, 0.0f};
    QuantizedMatrix q = quantize_ref(w, 1, 3, QuantSpec{Scheme::kNf4, 0, false, Clip::kMinMax, 0});
    REQUIRE(q.spec.group == 64);
    REQUIRE(q.codes == std::vector<uint8_t>{0, 15, 7});
  }
}

TEST_CASE("fast path equals the reference bit for bit") {
  struct Shape { uint64_t rows, cols; uint32_t group; };
  const Shape shapes[] = {{1, 1, 0}, {7, 13, 32}, {7, 13, 0}, {3, 300, 128}, {5, 200, 64}, {2, 600, 256}, {64, 4096, 0}};
  for (const Shape& shape : shapes) {
    std::vector<float> w = outlier_weights(shape.rows * shape.cols, shape.rows * 1000 + shape.cols);
    for (Scheme scheme : kAllSchemes) {
      for (Clip clip : {Clip::kMse, Clip::kMinMax}) {
        for (bool symmetric : {false, true}) {
          if (symmetric && !(scheme == Scheme::kInt4 || scheme == Scheme::kInt3 || scheme == Scheme::kInt2)) continue;
          bool lut = scheme == Scheme::kLut4 || scheme == Scheme::kLut3;
          if (lut && clip == Clip::kMinMax) continue;  // the clip does not apply
          for (uint32_t lut_rows : {0u, 3u}) {
            if (!lut && lut_rows != 0) continue;
            QuantSpec spec{scheme, shape.group, symmetric, clip, lut_rows};
            INFO(scheme_name(scheme) << " " << shape.rows << "x" << shape.cols << " group " << shape.group
                                     << " clip " << int(clip) << " symmetric " << symmetric << " lut_rows " << lut_rows);
            const QuantizedMatrix ref = quantize_ref(w.data(), shape.rows, shape.cols, spec);
            std::vector<float> a(w.size()), b(w.size());
            dequantize_ref(ref, b.data());
            for (detail::KernelPath path : kKernelPaths) {
              INFO(kernel_path_name(path));
              ScopedKernelPath scoped(path);
              QuantizedMatrix fast = quantize(w.data(), shape.rows, shape.cols, spec);
              require_identical(fast, ref);
              dequantize(fast, a.data());
              REQUIRE(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
              for (uint64_t i = 0; i < w.size(); i += 1 + w.size() / 50)
                REQUIRE(dequantize_code(fast, i / shape.cols, i % shape.cols) == a[i]);
            }
          }
        }
      }
    }
  }
}

// The packer's band path for one-table LUT tensors (packer/pack.cpp fit_lut_by_bands): the table
// from pieces, then quantize_with_table per piece, must be quantize()'s for the whole tensor, both
// where the fit counts the values (BF16, F16) and where it keeps them (float32 bits: more than the
// bucketed sort's threshold of 2^18 values; a piece fewer than the histogram's buckets).
TEST_CASE("LUT table fitted over pieces (LutPiecewiseFit) and quantize_with_table equal quantize() of the whole") {
  const uint64_t rows = 9, cols = 61000;  // 549000 values: above the F16 histogram's 2^19 buckets
  std::vector<float> gauss = outlier_weights(rows * cols, 78);
  std::vector<std::pair<const char*, std::vector<float>>> inputs;
  std::vector<float> bf16(gauss.size()), f16(gauss.size());
  for (size_t i = 0; i < gauss.size(); ++i) {
    bf16[i] = detail::bf16_to_float(detail::float_to_bf16_bits(gauss[i]));
    f16[i] = detail::f16_bits_to_float(detail::float_to_f16_bits(gauss[i]));
    if (i % 101 == 0) bf16[i] = f16[i] = (i / 101) % 2 ? -0.0f : 0.0f;
  }
  std::vector<float> f32 = outlier_weights(rows * cols, 79);
  for (size_t i = 0; i < f32.size(); i += 97) f32[i] = (i / 97) % 2 ? -0.0f : 0.0f;
  for (size_t i = 50; i < f32.size(); i += 89) f32[i] = f32[i - 50];  // repeated values
  inputs.emplace_back("bf16", std::move(bf16));
  inputs.emplace_back("f16", std::move(f16));
  inputs.emplace_back("f32", std::move(f32));
  const int saved = omp_get_max_threads();
  for (const auto& [name, w] : inputs)
    for (Scheme scheme : {Scheme::kLut4, Scheme::kLut3})
      for (int threads : {1, 2}) {
        INFO(name << " " << scheme_name(scheme) << " threads " << threads);
        omp_set_num_threads(threads);
        const QuantSpec spec{scheme, 0, false, Clip::kMse, 0};
        const QuantizedMatrix whole = quantize(w.data(), rows, cols, spec);
        // pieces of 1, 4 and 4 rows, as bands of tile rows arrive
        const uint64_t piece_rows[] = {1, 4, 4};
        LutPiecewiseFit fit(scheme, rows * cols);
        for (uint64_t r0 = 0, i = 0; r0 < rows; r0 += piece_rows[i++]) fit.add_first(w.data() + r0 * cols, piece_rows[i], cols, r0);
        REQUIRE(fit.histogram_applies() == (std::string(name) != "f32"));
        for (uint64_t r0 = 0, i = 0; r0 < rows; r0 += piece_rows[i++]) fit.add_second(w.data() + r0 * cols, piece_rows[i] * cols);
        const std::vector<uint16_t> table = fit.table();
        REQUIRE(table == whole.tables);
        ErrorAccumulator errors;
        QuantizedMatrix piece;
        std::vector<uint8_t> codes;
        for (uint64_t r0 = 0, i = 0; r0 < rows; r0 += piece_rows[i++]) {
          quantize_with_table(w.data() + r0 * cols, piece_rows[i], cols, spec, table.data(), &piece, r0, &errors);
          REQUIRE(piece.tables == whole.tables);
          codes.insert(codes.end(), piece.codes.begin(), piece.codes.end());
        }
        REQUIRE(codes == whole.codes);
        const ErrorStats a = errors.stats(), b = dequantized_error_stats(w.data(), whole, nullptr);
        CHECK(a.rel_error == b.rel_error);
        CHECK(a.max_abs_error == b.max_abs_error);
        CHECK(a.snr_db == b.snr_db);
        CHECK(a.sparsity == b.sparsity);
      }
  omp_set_num_threads(saved);
  // Fewer BF16 values than the histogram's buckets: kept, sorted, the same table.
  LutPiecewiseFit few(Scheme::kLut4, 1000);
  few.add_first(inputs[0].second.data(), 1, 1000, 0);
  CHECK_FALSE(few.histogram_applies());
  few.add_second(inputs[0].second.data(), 600);
  few.add_second(inputs[0].second.data() + 600, 400);
  CHECK(few.table() == quantize(inputs[0].second.data(), 1, 1000, QuantSpec{Scheme::kLut4, 0, false, Clip::kMse, 0}).tables);
  // Pieces that do not add up to the tensor: an error, not a table of part of it.
  for (const auto& [name, w] : inputs) {
    INFO(name);
    LutPiecewiseFit part(Scheme::kLut4, rows * cols);
    part.add_first(w.data(), rows, cols, 0);
    part.add_second(w.data(), (rows - 1) * cols);
    REQUIRE_THROWS_WITH(part.table(), Catch::Contains("LutPiecewiseFit: values missing"));
  }
  // A NaN is reported as quantize() reports it, by its row in the whole matrix.
  std::vector<float> bad = inputs[0].second;
  bad[7 * cols + 5] = std::numeric_limits<float>::quiet_NaN();
  LutPiecewiseFit nan_fit(Scheme::kLut4, rows * cols);
  nan_fit.add_first(bad.data(), 5, cols, 0);
  REQUIRE_THROWS_WITH(nan_fit.add_first(bad.data() + 5 * cols, 4, cols, 5),
                      Catch::Contains("weight at row 7, col 5 is not finite"));
  REQUIRE_THROWS_WITH(quantize(bad.data(), rows, cols, QuantSpec{Scheme::kLut4, 0, false, Clip::kMse, 0}),
                      Catch::Contains("weight at row 7, col 5 is not finite"));
  // quantize_with_table takes only a one-table LUT spec and its table.
  const std::vector<uint16_t> table(16, 0x3F80);
  QuantizedMatrix out;
  const std::vector<float>& good = inputs[0].second;
  for (const QuantSpec& wrong : {QuantSpec{Scheme::kInt4, 128, false, Clip::kMse, 0},
                                 QuantSpec{Scheme::kLut4, 0, false, Clip::kMse, 2}}) {
    REQUIRE_THROWS_WITH(quantize_with_table(good.data(), rows, cols, wrong, table.data(), &out),
                        Catch::Contains("quantize_with_table: a LUT scheme with one table"));
  }
  REQUIRE_THROWS_WITH(quantize_with_table(good.data(), rows, cols, QuantSpec{Scheme::kLut4, 0, false, Clip::kMse, 0},
                                          nullptr, &out),
                      Catch::Contains("quantize_with_table: a LUT scheme with one table"));
}

// The LUT fit's fast path counts values into a histogram of their bit patterns when these end in at
// least 13 zero bits (BF16 and F16 sources) and a table has at least as many values as buckets
// (2^16 for BF16, 2^19 for F16), and sorts a copy otherwise (outlier_weights above: float32 values;
// from 2^18 values on in buckets of the top 16 key bits, then bucket by bucket); either way its
// tables equal the reference's, which sorts every element. Here: BF16- and F16-exact weights with
// -0 and +0, float subnormals (as BF16), a constant and an all-zero tensor, and a pattern with 12
// trailing zeros (the bucketed sort again); one table of 576000 values (the histogram for all but
// the last; F16 on one thread, as a thread takes at least 2 * 2^19) and tables of 5 rows, 360000
// values (BF16: the histogram; F16: the bucketed sort), on 1 and 2 threads.
namespace {

// The least squared error any k values reach on v: 1-D k-means solved exactly (dynamic programming
// over the sorted values, clusters contiguous), in double.
double optimal_kmeans_sse(std::vector<double> v, uint32_t k) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  std::vector<double> p(n + 1, 0.0), p2(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) p[i + 1] = p[i] + v[i], p2[i + 1] = p2[i] + v[i] * v[i];
  auto cost = [&](size_t i, size_t j) {  // elements [i, j)
    const double s = p[j] - p[i];
    return std::max(0.0, p2[j] - p2[i] - s * s / static_cast<double>(j - i));
  };
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> prev(n + 1, inf), cur(n + 1, inf);
  prev[0] = 0;
  for (uint32_t m = 1; m <= k; ++m) {
    std::fill(cur.begin(), cur.end(), inf);
    cur[0] = 0;
    for (size_t j = 1; j <= n; ++j)
      for (size_t i = 0; i < j; ++i)
        if (prev[i] < inf) cur[j] = std::min(cur[j], prev[i] + cost(i, j));
    std::swap(prev, cur);
  }
  return prev[n];
}

}  // namespace

// Lloyd's algorithm alone stopped in local optima: two equal table entries (a code wasted: 15
// values that fit 16 entries kept an error), or most entries spent on a few outliers. With the
// local search after it, a one-table LUT's squared error is within 6% of the exact optimum (plus
// the tables' fp16 rounding; Lloyd alone was 3x above it with outliers), on the fast path and the
// reference alike, and exact where the values fit the table.
TEST_CASE("LUT tables: within 6% of the optimal 1-D k-means, no entry wasted") {
  std::mt19937_64 rng(91);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto gauss = [&](size_t n) {
    std::vector<float> w(n);
    for (float& x : w) x = normal(rng);
    return w;
  };
  std::vector<std::pair<const char*, std::vector<float>>> cases;
  {  // 15 distinct values, each exact in fp16: 16 entries hold them all
    const float levels[15] = {-5, -3.5f, -2.5f, -1.75f, -1.25f, -0.75f, -0.25f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5, 6};
    std::vector<float> w(1500);
    for (size_t i = 0; i < w.size(); ++i) w[i] = levels[(i * 7 + i / 15) % 15];
    cases.emplace_back("15 levels", w);
  }
  {
    std::vector<float> w = gauss(2000);
    for (size_t i = 0; i < w.size(); i += 97) w[i] *= 40.0f;  // ~21 outliers
    cases.emplace_back("gaussian with outliers", w);
  }
  cases.emplace_back("gaussian", gauss(1800));
  {
    std::vector<float> w = gauss(1600);
    for (size_t i = 0; i < w.size(); ++i) w[i] = w[i] * 0.1f + (i % 3 == 0 ? -2.0f : 1.0f);  // two modes
    cases.emplace_back("bimodal", w);
  }
  for (const auto& [name, w] : cases) {
    for (Scheme scheme : {Scheme::kLut4, Scheme::kLut3}) {
      INFO(name << ", " << scheme_name(scheme));
      const uint32_t k = scheme == Scheme::kLut4 ? 16 : 8;
      QuantSpec spec;
      spec.scheme = scheme;
      const QuantizedMatrix q = quantize(w.data(), 1, w.size(), spec);
      const QuantizedMatrix r = quantize_ref(w.data(), 1, w.size(), spec);
      REQUIRE(q.tables == r.tables);
      REQUIRE(q.codes == r.codes);
      std::vector<float> d(w.size());
      dequantize(q, d.data());
      double sse = 0;
      for (size_t i = 0; i < w.size(); ++i) sse += (double{d[i]} - double{w[i]}) * (double{d[i]} - double{w[i]});
      const double best = optimal_kmeans_sse(std::vector<double>(w.begin(), w.end()), k);
      CHECK(sse <= best * 1.06 + 1e-6 * static_cast<double>(w.size()));
      if (best == 0) CHECK(sse == 0);
    }
  }
}

TEST_CASE("LUT fit on BF16 and F16 values (the histogram path) equals the reference bit for bit") {
  const uint64_t rows = 8, cols = 72000;
  std::vector<float> gauss = outlier_weights(rows * cols, 77);
  auto rounded = [&](auto round) {
    std::vector<float> w(gauss.size());
    for (size_t i = 0; i < w.size(); ++i) w[i] = round(gauss[i]);
    for (size_t i = 0; i < w.size(); i += 97) w[i] = (i / 97) % 2 ? -0.0f : 0.0f;
    return w;
  };
  std::vector<std::pair<const char*, std::vector<float>>> inputs;
  inputs.emplace_back("bf16", rounded([](float v) { return detail::bf16_to_float(detail::float_to_bf16_bits(v)); }));
  inputs.emplace_back("f16", rounded([](float v) { return detail::f16_bits_to_float(detail::float_to_f16_bits(v)); }));
  std::vector<float> tiny = inputs[0].second;  // subnormal floats that BF16 can hold: 1..127 * 2^-133
  for (size_t i = 5; i < tiny.size(); i += 13) tiny[i] = std::ldexp(static_cast<float>(1 + i % 127), -133) * (i % 2 ? -1 : 1);
  inputs.emplace_back("bf16 with subnormals", std::move(tiny));
  inputs.emplace_back("constant", std::vector<float>(rows * cols, -0.03125f));
  std::vector<float> zeros(rows * cols, 0.0f);
  for (size_t i = 0; i < zeros.size(); i += 3) zeros[i] = -0.0f;
  inputs.emplace_back("zeros", std::move(zeros));
  std::vector<float> twelve = inputs[0].second;  // one value with 12 trailing zero bits
  uint32_t bits = 0x3C801000u;
  std::memcpy(&twelve[11], &bits, 4);
  inputs.emplace_back("12 trailing zeros", std::move(twelve));
  const int saved = omp_get_max_threads();
  for (const auto& [name, w] : inputs)
    for (Scheme scheme : {Scheme::kLut4, Scheme::kLut3})
      for (uint32_t lut_rows : {0u, 5u}) {
        const QuantSpec spec{scheme, 0, false, Clip::kMse, lut_rows};
        const QuantizedMatrix ref = quantize_ref(w.data(), rows, cols, spec);
        for (int threads : {1, 2}) {
          INFO(name << " " << scheme_name(scheme) << " lut_rows " << lut_rows << " threads " << threads);
          omp_set_num_threads(threads);
          const QuantizedMatrix fast = quantize(w.data(), rows, cols, spec);
          require_identical(fast, ref);
          if (std::string(name) == "constant")
            REQUIRE(static_cast<uint64_t>(std::count(fast.codes.begin(), fast.codes.end(), fast.codes[0])) == rows * cols);
        }
      }
  omp_set_num_threads(saved);
}

TEST_CASE("round-trip error within the named tolerances, clip mse never worse than RTN") {
  const uint64_t rows = 256, cols = 1024;
  std::vector<float> w = outlier_weights(rows * cols, 42);
  const std::pair<Scheme, double> tolerances[] = {
      {Scheme::kInt8, kInt8RelTol}, {Scheme::kInt4, kInt4RelTol}, {Scheme::kInt3, kInt3RelTol},
      {Scheme::kInt2, kInt2RelTol}, {Scheme::kFp8, kFp8RelTol},   {Scheme::kFp6, kFp6RelTol},
      {Scheme::kFp5, kFp5RelTol},   {Scheme::kFp4, kFp4RelTol},   {Scheme::kNf4, kNf4RelTol},
      {Scheme::kLut4, kLut4RelTol}, {Scheme::kLut3, kLut3RelTol}};
  for (auto [scheme, tolerance] : tolerances) {
    QuantizedMatrix mse = quantize(w.data(), rows, cols, QuantSpec{scheme, 0, false, Clip::kMse, 0});
    QuantizedMatrix rtn = quantize(w.data(), rows, cols, QuantSpec{scheme, 0, false, Clip::kMinMax, 0});
    const double e_mse = sq_error(w, mse), e_rtn = sq_error(w, rtn);
    INFO(scheme_name(scheme) << ": rel_error mse " << rel_error(w, mse) << ", RTN " << rel_error(w, rtn));
    REQUIRE(rel_error(w, mse) < tolerance);
    REQUIRE(e_mse <= e_rtn);
    if (scheme == Scheme::kInt3 || scheme == Scheme::kInt2) REQUIRE(e_mse <= (1.0 - kLowBitMseGain) * e_rtn);
  }
  for (Scheme scheme : {Scheme::kInt4, Scheme::kInt3, Scheme::kInt2}) {  // symmetric too
    QuantizedMatrix mse = quantize(w.data(), rows, cols, QuantSpec{scheme, 0, true, Clip::kMse, 0});
    QuantizedMatrix rtn = quantize(w.data(), rows, cols, QuantSpec{scheme, 0, true, Clip::kMinMax, 0});
    REQUIRE(sq_error(w, mse) <= sq_error(w, rtn));
  }
  // A learned 16-entry table for the whole tensor beats int4 g128 min-max on this data.
  QuantizedMatrix lut4 = quantize(w.data(), rows, cols, QuantSpec{Scheme::kLut4, 0, false, Clip::kMse, 0});
  QuantizedMatrix int4 = quantize(w.data(), rows, cols, QuantSpec{Scheme::kInt4, 128, false, Clip::kMinMax, 0});
  REQUIRE(sq_error(w, lut4) < sq_error(w, int4));
  REQUIRE(lut4.tables.size() == 16);
  for (size_t i = 1; i < 16; ++i)
    REQUIRE(detail::f16_bits_to_float(lut4.tables[i - 1]) <= detail::f16_bits_to_float(lut4.tables[i]));
}

TEST_CASE("results do not depend on the thread count") {
  const uint64_t rows = 96, cols = 520;
  std::vector<float> w = outlier_weights(rows * cols, 5);
  const int saved = omp_get_max_threads();
  for (Scheme scheme : kAllSchemes) {
    QuantSpec spec{scheme, 0, false, Clip::kMse, scheme == Scheme::kLut4 ? 16u : 0u};
    omp_set_num_threads(1);
    QuantizedMatrix one = quantize(w.data(), rows, cols, spec);
    omp_set_num_threads(2);
    QuantizedMatrix two = quantize(w.data(), rows, cols, spec);
    INFO(scheme_name(scheme));
    require_identical(one, two);
  }
  omp_set_num_threads(saved);
}

TEST_CASE("zeros stay exact zeros (pruned weights survive quantization) for grid schemes") {
  std::vector<float> w = outlier_weights(4 * 256, 9);
  for (size_t i = 0; i < w.size(); i += 2) w[i] = 0.0f;
  for (Scheme scheme : {Scheme::kInt8, Scheme::kInt4, Scheme::kInt3, Scheme::kInt2, Scheme::kFp8, Scheme::kFp6,
                        Scheme::kFp5, Scheme::kFp4, Scheme::kNf4}) {
    QuantizedMatrix q = quantize(w.data(), 4, 256, QuantSpec{scheme, 0, false, Clip::kMse, 0});
    std::vector<float> out(w.size());
    dequantize(q, out.data());
    INFO(scheme_name(scheme));
    REQUIRE(error_stats(w.data(), out.data(), w.size()).sparsity >= 0.5);
  }
}

TEST_CASE("bad input fails cleanly") {
  const float w[4] = {1, 2, 3, 4};
  auto code_of = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kIo;  // "did not throw"
  };
  REQUIRE(code_of([&] { quantize(w, 1, 4, QuantSpec{Scheme::kLossless}); }) == ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] { quantize(w, 1, 4, QuantSpec{Scheme::kInt4, 100}); }) == ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] { quantize(w, 1, 4, QuantSpec{static_cast<Scheme>(40)}); }) == ErrorCode::kInvalidArgument);
  const float nan_w[2] = {1.0f, std::nanf("")};
  REQUIRE(code_of([&] { quantize_ref(nan_w, 1, 2, QuantSpec{}); }) == ErrorCode::kUnsupported);
  const float inf_w[2] = {INFINITY, 1.0f};
  REQUIRE(code_of([&] { quantize(inf_w, 2, 1, QuantSpec{}); }) == ErrorCode::kUnsupported);
  REQUIRE(code_of([&] { quantize(w, uint64_t{1} << 40, uint64_t{1} << 40, QuantSpec{}); }) == ErrorCode::kFormat);

  QuantizedMatrix q = quantize(w, 1, 4, QuantSpec{Scheme::kInt4, 32});
  float out[4];
  QuantizedMatrix bad = q;
  bad.codes.pop_back();
  REQUIRE(code_of([&] { dequantize(bad, out); }) == ErrorCode::kInvalidArgument);
  bad = q;
  bad.codes[0] = 16;
  REQUIRE(code_of([&] { dequantize(bad, out); }) == ErrorCode::kInvalidArgument);
  bad = q;
  bad.zeros.clear();
  REQUIRE(code_of([&] { dequantize_ref(bad, out); }) == ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] { dequantize_code(q, 1, 0); }) == ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] {
            uint8_t bytes[4] = {};
            convert_to_f32(DType::I32, bytes, 1, out);
          }) == ErrorCode::kUnsupported);
}

TEST_CASE("convert_to_f32 reads F32, F16, BF16 and F64") {
  const float f32[2] = {1.5f, -2.25f};
  float out[2];
  convert_to_f32(DType::F32, reinterpret_cast<const uint8_t*>(f32), 2, out);
  REQUIRE((out[0] == 1.5f && out[1] == -2.25f));
  const uint16_t f16[2] = {0x3E00, 0xC080};  // 1.5, -2.25
  convert_to_f32(DType::F16, reinterpret_cast<const uint8_t*>(f16), 2, out);
  REQUIRE((out[0] == 1.5f && out[1] == -2.25f));
  const uint16_t bf16[2] = {0x3FC0, 0xC010};  // 1.5, -2.25
  convert_to_f32(DType::BF16, reinterpret_cast<const uint8_t*>(bf16), 2, out);
  REQUIRE((out[0] == 1.5f && out[1] == -2.25f));
  const double f64[2] = {1.5, 0.1};
  convert_to_f32(DType::F64, reinterpret_cast<const uint8_t*>(f64), 2, out);
  REQUIRE((out[0] == 1.5f && out[1] == 0.1f));
}

TEST_CASE("error_stats") {
  const float ref[4] = {3, 0, 4, 0};
  ErrorStats same = error_stats(ref, ref, 4);
  REQUIRE(same.rel_error == 0);
  REQUIRE(same.snr_db == kSnrCapDb);
  REQUIRE(same.sparsity == 0.5);
  const float approx[4] = {3, 0, 3.5f, 0};  // error 0.5, ||ref|| = 5
  ErrorStats s = error_stats(ref, approx, 4);
  REQUIRE(s.rel_error == Approx(0.1));
  REQUIRE(s.max_abs_error == Approx(0.5));
  REQUIRE(s.snr_db == Approx(20.0));
}

TEST_CASE("dequantized_error_stats equals error_stats of the dequantized, pruned tensor") {
  const uint64_t rows = 37, cols = 300;
  std::vector<float> w = outlier_weights(rows * cols, 21);
  std::vector<uint8_t> keep(w.size());
  std::mt19937_64 rng(3);
  for (auto& k : keep) k = (rng() % 3) != 0;
  for (Scheme scheme : kAllSchemes) {
    QuantizedMatrix q = quantize(w.data(), rows, cols, QuantSpec{scheme, 32, false, Clip::kMse, 5});
    std::vector<float> d(w.size());
    dequantize_ref(q, d.data());
    INFO(scheme_name(scheme));
    for (const uint8_t* mask : {static_cast<const uint8_t*>(nullptr), static_cast<const uint8_t*>(keep.data())}) {
      std::vector<float> expected = d;
      if (mask != nullptr)
        for (size_t i = 0; i < expected.size(); ++i) expected[i] = mask[i] ? expected[i] : 0.0f;
      const ErrorStats a = error_stats(w.data(), expected.data(), w.size());
      const ErrorStats b = dequantized_error_stats(w.data(), q, mask);
      require_identical(a, b);
    }
  }
}

TEST_CASE("quantize into a reused QuantizedMatrix equals a fresh quantize") {
  std::vector<float> big = outlier_weights(64 * 512, 31), small = outlier_weights(9 * 70, 32);
  QuantizedMatrix reused;
  // Alternate sizes and schemes so that every vector is shrunk, grown and emptied in turn.
  const QuantSpec specs[] = {QuantSpec{Scheme::kLut4, 0, false, Clip::kMse, 3}, QuantSpec{Scheme::kInt4, 64},
                             QuantSpec{Scheme::kFp6}, QuantSpec{Scheme::kInt3, 32, true},
                             QuantSpec{Scheme::kNf4}, QuantSpec{Scheme::kInt8}};
  for (int round = 0; round < 2; ++round)
    for (const QuantSpec& spec : specs) {
      const std::vector<float>& w = round == 0 ? big : small;
      const uint64_t rows = round == 0 ? 64 : 9, cols = w.size() / rows;
      quantize(w.data(), rows, cols, spec, &reused);
      INFO(scheme_name(spec.scheme) << " round " << round);
      require_identical(reused, quantize(w.data(), rows, cols, spec));
      REQUIRE(reused.spec.scheme == spec.scheme);
    }
}

TEST_CASE("code packing: the word-at-a-time packer equals the reference for every width and length") {
  std::mt19937_64 rng(17);
  for (uint32_t bits = 1; bits <= 8; ++bits) {
    for (uint64_t n : {0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 1000, 16384, 16387}) {
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      const uint64_t bytes = (n * bits + 7) / 8;
      std::vector<uint8_t> ref(bytes + 8, 0xAB), fast(bytes + 8, 0xCD);
      detail::pack_codes_ref(codes.data(), n, bits, ref.data());
      detail::pack_codes_fast(codes.data(), n, bits, fast.data());
      INFO("bits " << bits << " n " << n);
      REQUIRE(std::equal(ref.begin(), ref.begin() + bytes, fast.begin()));
      REQUIRE(std::all_of(ref.begin() + bytes, ref.end(), [](uint8_t b) { return b == 0xAB; }));  // ref stays in bounds
    }
  }
  // One hand-checked stream: 3-bit codes 1..8 mod 8 -> bits 001 010 011 100 101 110 111 000, LSB first.
  const uint8_t codes[8] = {1, 2, 3, 4, 5, 6, 7, 0};
  uint8_t out[3 + 8] = {};
  detail::pack_codes_fast(codes, 8, 3, out);
  REQUIRE((out[0] == 0xD1 && out[1] == 0x58 && out[2] == 0x1F));
}

namespace {

// Groups that stress the clip search: zeros, one-sided ranges, constants, exact grid midpoints,
// subnormal and huge magnitudes, fp16 scale overflow and underflow.
std::vector<std::vector<float>> adversarial_groups(uint64_t len) {
  std::vector<std::vector<float>> groups;
  std::mt19937_64 rng(77);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto make = [&](auto&& value) {
    std::vector<float> g(len);
    for (uint64_t j = 0; j < len; ++j) g[j] = value(j);
    groups.push_back(g);
  };
  make([](uint64_t) { return 0.0f; });
  make([](uint64_t j) { return j == 3 ? 0.5f : 0.0f; });
  make([](uint64_t j) { return j == 5 ? -2.0f : 0.0f; });
  make([](uint64_t) { return 0.125f; });
  make([](uint64_t) { return -3.0f; });
  make([&](uint64_t) { return std::fabs(normal(rng)); });
  make([&](uint64_t) { return -std::fabs(normal(rng)) * 1e-3f; });
  make([](uint64_t j) { return static_cast<float>(j % 16) - 7.5f; });   // every value on a rounding midpoint
  make([](uint64_t j) { return static_cast<float>(j % 9) * 0.25f; });
  make([&](uint64_t) { return normal(rng) * 1e-40f; });                 // subnormal weights: scale underflows
  make([&](uint64_t) { return normal(rng) * 1e30f; });                  // scale overflows fp16
  make([&](uint64_t j) { return j == 0 ? 3e38f : normal(rng); });       // squared errors overflow to inf
  make([&](uint64_t j) { return j % 2 ? -3e38f : 3e38f; });
  make([&](uint64_t j) { return j % 17 == 0 ? normal(rng) * 40.0f : normal(rng); });
  return groups;
}

}  // namespace

TEST_CASE("fast path equals the reference on adversarial groups") {
  for (uint64_t cols : {uint64_t{64}, uint64_t{200}}) {
    std::vector<float> w;
    for (const auto& g : adversarial_groups(cols)) w.insert(w.end(), g.begin(), g.end());
    const uint64_t rows = w.size() / cols;
    for (Scheme scheme : kAllSchemes) {
      for (bool symmetric : {false, true}) {
        const bool int_grid = scheme == Scheme::kInt4 || scheme == Scheme::kInt3 || scheme == Scheme::kInt2;
        if (symmetric && !int_grid) continue;
        for (uint32_t group : {32u, 64u}) {
          if (scheme == Scheme::kLut4 || scheme == Scheme::kLut3) continue;  // k-means: covered above
          QuantSpec spec{scheme, group, symmetric, Clip::kMse, 0};
          INFO(scheme_name(scheme) << " cols " << cols << " group " << group << " symmetric " << symmetric);
          const QuantizedMatrix ref = quantize_ref(w.data(), rows, cols, spec);
          for (detail::KernelPath path : kKernelPaths) {
            INFO(kernel_path_name(path));
            ScopedKernelPath scoped(path);
            require_identical(quantize(w.data(), rows, cols, spec), ref);
          }
        }
      }
    }
  }
}

namespace {

// candidates_alive against its definition -- bit c (c < count) set when !(lower_bound[c] > best) --
// for bests at and just below every bound (the boundaries), 0, -1, inf and NaN.
void require_alive_as_defined(const detail::ClipCandidates& cand) {
  std::vector<float> bests = {0.0f, -1.0f, std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN()};
  for (uint32_t c = 0; c < cand.count; ++c) {
    bests.push_back(cand.lower_bound[c]);
    bests.push_back(std::nextafter(cand.lower_bound[c], -std::numeric_limits<float>::infinity()));
  }
  for (float best : bests) {
    uint32_t expected = 0;
    for (uint32_t c = 0; c < cand.count; ++c) expected |= (!(cand.lower_bound[c] > best) ? 1u : 0u) << c;
    const uint32_t alive = detail::candidates_alive(cand, best);
    if (alive != expected) {  // (a REQUIRE per best would cost more than the check)
      INFO("best " << best);
      REQUIRE(alive == expected);
    }
  }
}

}  // namespace

TEST_CASE("clip candidates: the vectorised grids and bounds equal the scalar ones") {
  std::mt19937_64 rng(5);
  std::vector<std::pair<float, float>> ranges = {{0, 0}, {0, 1}, {-1, 0}, {-0.0f, 0.0f}, {-1e-40f, 2e-40f},
                                                 {-3e38f, 3e38f}, {-1e30f, 1e-3f}, {-6e-8f, 6e-8f}, {-7.5f, 7.5f}};
  std::uniform_real_distribution<float> exponent(-30.0f, 30.0f);
  for (int i = 0; i < 2000; ++i)
    ranges.push_back({-std::exp2(exponent(rng)) * (rng() % 4 == 0 ? 0.0f : 1.0f), std::exp2(exponent(rng))});
  for (detail::KernelPath path : kKernelPaths) {
    INFO(kernel_path_name(path));
    ScopedKernelPath scoped(path);
    for (auto [min, max] : ranges) {
      const float absmax = std::max(-min, max);
      for (uint32_t bits : {2u, 3u, 4u, 8u}) {
        for (bool symmetric : {false, true}) {
          detail::ClipCandidates cand;
          detail::int_candidates_fast(min, max, absmax, bits, symmetric, detail::kClipCandidates, &cand);
          INFO("min " << min << " max " << max << " bits " << bits << " symmetric " << symmetric);
          for (uint32_t c = 0; c < detail::kClipCandidates; ++c) {
            uint16_t scale_bits;
            uint8_t zero_code;
            const detail::IntParams p =
                detail::int_candidate(min, max, absmax, detail::clip_ratio(c), bits, symmetric, &scale_bits, &zero_code);
            const detail::IntParams q = cand.int_params(c);
            INFO("c " << c);
            REQUIRE(cand.scale_bits[c] == scale_bits);
            REQUIRE(std::memcmp(&q, &p, sizeof p) == 0);
            float bound = 0;
            for (float x : {min, max}) {
              const float e = detail::int_decode_one(detail::int_encode_one(x, p), p) - x;
              bound += e * e;
            }
            REQUIRE(std::memcmp(&cand.lower_bound[c], &bound, 4) == 0);
          }
          require_alive_as_defined(cand);
        }
      }
      for (const auto* fmt : {&detail::kFp8E4M3, &detail::kFp6E3M2, &detail::kFp5E2M2, &detail::kFp4E2M1}) {
        const detail::SortedTable table = detail::small_float_table(*fmt);
        detail::ClipCandidates cand;
        detail::fp_candidates_fast(absmax, *fmt, detail::kClipCandidates, &cand);
        INFO("absmax " << absmax << " format max " << fmt->max_value);
        for (uint32_t c = 0; c < detail::kClipCandidates; ++c) {
          const uint16_t scale_bits = detail::encode_scale(absmax * detail::clip_ratio(c) / fmt->max_value);
          detail::FpParams p;
          p.scale = detail::f16_bits_to_float(scale_bits);
          p.inv_scale = detail::inverse_scale(p.scale);
          INFO("c " << c);
          REQUIRE(cand.scale_bits[c] == scale_bits);
          REQUIRE(std::memcmp(&cand.scale[c], &p.scale, 4) == 0);
          REQUIRE(std::memcmp(&cand.inv_scale[c], &p.inv_scale, 4) == 0);
          const float bound = detail::fp_error_ref(&absmax, 1, table, p);
          REQUIRE(std::memcmp(&cand.lower_bound[c], &bound, 4) == 0);
        }
        require_alive_as_defined(cand);
      }
    }
  }
}

namespace {

// Groups for the kernel tests: the adversarial ones and 200 with outliers, each a multiple of 8 long.
std::vector<std::vector<float>> kernel_test_groups() {
  std::vector<std::vector<float>> groups = adversarial_groups(128);
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> g(96 + 8 * (i % 8));
    for (float& v : g) v = normal(rng) * (rng() % 50 == 0 ? 20.0f : 1.0f);
    groups.push_back(g);
  }
  return groups;
}

// check(g, min, max) for every kernel_test_groups() group on each kernel path (min and max: the
// group's extremes, 0 included).
template <typename Check>
void for_each_group_and_path(Check&& check) {
  const std::vector<std::vector<float>> groups = kernel_test_groups();
  for (detail::KernelPath path : kKernelPaths) {
    INFO(kernel_path_name(path));
    ScopedKernelPath scoped(path);
    for (const auto& g : groups) {
      float min = 0, max = 0;
      for (float v : g) min = std::min(min, v), max = std::max(max, v);
      check(g, min, max);
    }
  }
}

}  // namespace

TEST_CASE("pair error kernels equal the reference sums") {
  for_each_group_and_path([](const std::vector<float>& g, float min, float max) {
    const uint64_t n8 = g.size();  // a multiple of 8
    float fast_min, fast_max;
    detail::minmax_with_zero_fast(g.data(), n8, &fast_min, &fast_max);
    REQUIRE(std::memcmp(&fast_min, &min, 4) == 0);
    REQUIRE(std::memcmp(&fast_max, &max, 4) == 0);
    for (uint32_t bits : {2u, 4u, 8u}) {
      detail::ClipCandidates cand;
      detail::int_candidates_fast(min, max, std::max(-min, max), bits, false, detail::kClipCandidates, &cand);
      for (uint32_t c = 0; c + 1 < detail::kClipCandidates; ++c) {
        float a, b;
        detail::int_error_pair_fast(g.data(), n8, cand.int_params(c), cand.int_params(c + 1), &a, &b);
        const float ra = detail::int_error_ref(g.data(), n8, cand.int_params(c));
        const float rb = detail::int_error_ref(g.data(), n8, cand.int_params(c + 1));
        INFO("bits " << bits << " c " << c);
        REQUIRE(std::memcmp(&a, &ra, 4) == 0);
        REQUIRE(std::memcmp(&b, &rb, 4) == 0);
      }
    }
    for (const auto* fmt : {&detail::kFp8E4M3, &detail::kFp6E3M2, &detail::kFp4E2M1}) {
      const detail::SortedTable table = detail::small_float_table(*fmt);
      detail::ClipCandidates cand;
      detail::fp_candidates_fast(std::max(-min, max), *fmt, detail::kClipCandidates, &cand);
      for (uint32_t c = 0; c + 1 < detail::kClipCandidates; ++c) {
        float a, b;
        detail::fp_error_pair_fast(g.data(), n8, *fmt, cand.fp_params(c), cand.fp_params(c + 1), &a, &b);
        const float ra = detail::fp_error_ref(g.data(), n8, table, cand.fp_params(c));
        const float rb = detail::fp_error_ref(g.data(), n8, table, cand.fp_params(c + 1));
        INFO("format max " << fmt->max_value << " c " << c);
        REQUIRE(std::memcmp(&a, &ra, 4) == 0);
        REQUIRE(std::memcmp(&b, &rb, 4) == 0);
      }
    }
  });
}

// The group encoders against the per-element forms the reference uses, and nf4's error kernel
// (the AVX2 form for tables of 16 entries without ties) against the reference sum, on every
// candidate grid: without a bound (infinity) it never exits early, so the sums are equal.
TEST_CASE("group encoders and the table error kernel equal the per-element reference") {
  const detail::SortedTable nf4 = detail::value_table(kNf4Table, 16);
  for_each_group_and_path([&](const std::vector<float>& g, float min, float max) {
    const uint64_t n8 = g.size();  // a multiple of 8
    const float absmax = std::max(-min, max);
    std::vector<uint8_t> codes(n8), expected(n8);
    for (uint32_t bits : {2u, 4u, 8u}) {
      for (bool symmetric : {false, true}) {
        detail::ClipCandidates cand;
        detail::int_candidates_fast(min, max, absmax, bits, symmetric, detail::kClipCandidates, &cand);
        for (uint32_t c = 0; c < detail::kClipCandidates; ++c) {
          const detail::IntParams p = cand.int_params(c);
          detail::int_encode_fast(g.data(), n8, p, codes.data());
          for (uint64_t j = 0; j < n8; ++j) expected[j] = static_cast<uint8_t>(detail::int_encode_one(g[j], p));
          INFO("int bits " << bits << " symmetric " << symmetric << " c " << c);
          REQUIRE(codes == expected);
        }
      }
    }
    for (const auto* fmt : {&detail::kFp8E4M3, &detail::kFp6E3M2, &detail::kFp5E2M2, &detail::kFp4E2M1}) {
      const detail::SortedTable table = detail::small_float_table(*fmt);
      const uint32_t sign_bit = 1u << (fmt->exponent_bits + fmt->mantissa_bits);
      detail::ClipCandidates cand;
      detail::fp_candidates_fast(absmax, *fmt, detail::kClipCandidates, &cand);
      for (uint32_t c = 0; c < detail::kClipCandidates; ++c) {
        const float inv = cand.inv_scale[c];
        detail::fp_encode_fast(g.data(), n8, *fmt, inv, codes.data());
        for (uint64_t j = 0; j < n8; ++j) {
          const uint32_t m = detail::table_index_ref(table, std::fabs(g[j]) * inv);
          expected[j] = static_cast<uint8_t>(m | ((g[j] < 0.0f && m != 0) ? sign_bit : 0u));
        }
        INFO("format max " << fmt->max_value << " c " << c);
        REQUIRE(codes == expected);
      }
    }
    for (uint32_t c = 0; c < detail::kClipCandidates; ++c) {
      detail::FpParams p;
      p.scale = detail::f16_bits_to_float(detail::encode_scale(absmax * detail::clip_ratio(c)));
      p.inv_scale = detail::inverse_scale(p.scale);
      detail::table_encode_fast(g.data(), n8, nf4, p.inv_scale, codes.data());
      for (uint64_t j = 0; j < n8; ++j) expected[j] = static_cast<uint8_t>(detail::table_index_ref(nf4, g[j] * p.inv_scale));
      INFO("nf4 c " << c);
      REQUIRE(codes == expected);
      const float fast = detail::table_error_fast(g.data(), n8, nf4, p, std::numeric_limits<float>::infinity());
      const float ref = detail::table_error_ref(g.data(), n8, nf4, p);
      REQUIRE(std::memcmp(&fast, &ref, 4) == 0);
    }
  });
}

TEST_CASE("quantize with error sums equals add_dequantized, in pieces and on any thread count") {
  const uint64_t rows = 40, cols = 300;
  std::vector<float> w = outlier_weights(rows * cols, 41);
  w[7] = 0.0f;  // exact zeros count towards sparsity
  const int saved = omp_get_max_threads();
  for (Scheme scheme : kAllSchemes) {
    for (Clip clip : {Clip::kMse, Clip::kMinMax}) {
      const QuantSpec spec{scheme, 64, false, clip, 0};
      // The reference: quantize the pieces, then add each piece's dequantized error in order.
      ErrorAccumulator expected;
      const uint64_t pieces[] = {0, 13, 14, 40};  // uneven bands, one of a single row
      std::vector<QuantizedMatrix> refs;
      for (size_t p = 0; p + 1 < std::size(pieces); ++p) {
        const uint64_t r0 = pieces[p], r1 = pieces[p + 1];
        refs.push_back(quantize_ref(w.data() + r0 * cols, r1 - r0, cols, spec));
        expected.add_dequantized(w.data() + r0 * cols, refs.back(), nullptr);
      }
      const ErrorStats a = expected.stats();
      for (detail::KernelPath path : kKernelPaths) {
        ScopedKernelPath scoped(path);
        for (int threads : {1, 2}) {
          omp_set_num_threads(threads);
          ErrorAccumulator fused;
          QuantizedMatrix q;
          INFO(scheme_name(scheme) << " clip " << int(clip) << " threads " << threads << " " << kernel_path_name(path));
          for (size_t p = 0; p + 1 < std::size(pieces); ++p) {
            const uint64_t r0 = pieces[p], r1 = pieces[p + 1];
            quantize(w.data() + r0 * cols, r1 - r0, cols, spec, &q, r0, &fused);
            require_identical(q, refs[p]);
          }
          const ErrorStats b = fused.stats();
          require_identical(a, b);
        }
      }
    }
  }
  omp_set_num_threads(saved);
}
