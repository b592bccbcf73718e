// packer/estimate.h: order-0 entropy estimates, against a plain single-histogram entropy computed
// here, written from the definitions in estimate.h and filters.h (not from estimate.cpp's code):
//   order0_entropy_bits(bytes)          H of the byte histogram, bits per byte (0 for no bytes)
//   lossless_entropy_bytes(dtype, b)    sum over the planes of H(plane) * elements / 8, the planes
//                                       those of floatplanes (F16/BF16/F32/F64: element rotated
//                                       left one bit, plane 0 its most significant byte) or of
//                                       byteshuffle (other dtypes: plane p byte p, little-endian)
// at element counts around the implementation's unrolling by 4 and its 65536-element chunks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "packer/estimate.h"
#include "test_util.h"

using namespace wpack;

namespace {

const uint64_t kCounts[] = {0, 1, 3, 4, 5, 65535, 65536, 65537};

// H = log2(n) - (1/n) sum c log2(c), one histogram (a different form of -sum p log2 p, summed in
// long double).
double reference_entropy(const std::vector<uint8_t>& values) {
  if (values.empty()) return 0;
  std::array<uint64_t, 256> hist{};
  for (uint8_t v : values) ++hist[v];
  long double sum = 0;
  for (uint64_t c : hist)
    if (c > 1) sum += static_cast<long double>(c) * std::log2(static_cast<long double>(c));
  const long double n = static_cast<long double>(values.size());
  const long double h = std::log2(n) - sum / n;
  return static_cast<double>(std::max<long double>(h, 0));
}

bool close(double got, double expect) {
  return std::abs(got - expect) <= 1e-9 * std::max(std::abs(expect), std::abs(got)) + 1e-12;
}

// Byte sequences of n bytes of several kinds.
std::vector<std::pair<std::string, std::vector<uint8_t>>> byte_inputs(uint64_t n) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> in;
  in.push_back({"uniform random", test::random_bytes(n, 1000 + n)});
  in.push_back({"constant", std::vector<uint8_t>(n, 0x5A)});
  std::vector<uint8_t> skewed(n);
  const auto r = test::random_bytes(n, 2000 + n);
  for (uint64_t i = 0; i < n; ++i) skewed[i] = static_cast<uint8_t>(__builtin_ctz(r[i] | 0x100) * 7);
  in.push_back({"skewed", skewed});
  std::vector<uint8_t> runs(n);
  for (uint64_t i = 0; i < n; ++i) runs[i] = static_cast<uint8_t>((i / 5) % 3);
  in.push_back({"runs", runs});
  // Zeros, then distinct values in the last three bytes: an element dropped at the end changes H.
  std::vector<uint8_t> tail(n, 0);
  for (uint64_t k = 0; k < std::min<uint64_t>(n, 3); ++k) tail[n - 1 - k] = static_cast<uint8_t>(1 + k);
  in.push_back({"distinct tail", tail});
  return in;
}

// The byte planes of n elements of `dtype` (from the definitions in filters.h), independent of the
// filter code: floats rotated left one bit, most significant byte first; others byte by byte.
std::vector<std::vector<uint8_t>> planes_of(DType dtype, const std::vector<uint8_t>& bytes) {
  const uint32_t esize = dtype_size(dtype);
  const uint64_t n = bytes.size() / esize;
  const bool float_planes = dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F32 || dtype == DType::F64;
  std::vector<std::vector<uint8_t>> planes(esize, std::vector<uint8_t>(n));
  const uint32_t bits = 8 * esize;
  const uint64_t mask = bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t x = 0;
    for (uint32_t b = 0; b < esize; ++b) x |= uint64_t{bytes[i * esize + b]} << (8 * b);
    if (float_planes) {
      const uint64_t rotated = ((x << 1) | (x >> (bits - 1))) & mask;
      for (uint32_t p = 0; p < esize; ++p) planes[p][i] = static_cast<uint8_t>(rotated >> (8 * (esize - 1 - p)));
    } else {
      for (uint32_t p = 0; p < esize; ++p) planes[p][i] = static_cast<uint8_t>(x >> (8 * p));
    }
  }
  return planes;
}

double reference_lossless_bytes(DType dtype, const std::vector<uint8_t>& bytes) {
  const uint64_t n = bytes.size() / dtype_size(dtype);
  double total = 0;
  for (const auto& plane : planes_of(dtype, bytes)) total += reference_entropy(plane) * double(n) / 8.0;
  return total;
}

}  // namespace

TEST_CASE("estimate: order0_entropy_bits is the entropy of the byte histogram") {
  for (uint64_t n : kCounts) {
    for (const auto& [kind, bytes] : byte_inputs(n)) {
      INFO(n << " bytes, " << kind);
      const double got = order0_entropy_bits(bytes);
      const double expect = reference_entropy(bytes);
      INFO("got " << got << ", expected " << expect);
      CHECK(close(got, expect));
    }
  }
}

TEST_CASE("estimate: order0_entropy_bits on inputs whose entropy is known exactly") {
  CHECK(order0_entropy_bits({}) == 0.0);
  CHECK(order0_entropy_bits(std::vector<uint8_t>(1000, 7)) == 0.0);
  std::vector<uint8_t> all(256 * 300);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i * 13);  // 13 is odd: every value 300 times
  CHECK(order0_entropy_bits(all) == Approx(8.0).epsilon(1e-12));
  const std::vector<uint8_t> two = {1, 2, 1, 2, 2, 1, 1, 2};
  CHECK(order0_entropy_bits(two) == Approx(1.0).epsilon(1e-12));
  // p = 1/2, 1/4, 1/4: 1.5 bits (and with 7 bytes, 3 past the unrolled loop: 4/7, 2/7, 1/7).
  const std::vector<uint8_t> three = {9, 9, 4, 5, 9, 9, 4, 5, 9, 9, 4, 5, 9, 9, 4, 5, 9, 9, 4, 5};
  CHECK(order0_entropy_bits(three) == Approx(1.5).epsilon(1e-12));
  const double a = 4.0 / 7, b = 2.0 / 7, c = 1.0 / 7;
  CHECK(order0_entropy_bits(std::span<const uint8_t>(three).first(7)) ==
        Approx(-(a * std::log2(a) + b * std::log2(b) + c * std::log2(c))).epsilon(1e-12));
  const std::vector<uint8_t> odd = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};  // 15 zeros, then a 1
  const double p = 1.0 / 16;
  CHECK(order0_entropy_bits(odd) == Approx(-(p * std::log2(p) + (1 - p) * std::log2(1 - p))).epsilon(1e-12));
}

TEST_CASE("estimate: lossless_entropy_bytes is the order-0 entropy of each byte plane, for every dtype") {
  for (uint8_t code = 1; code <= 15; ++code) {
    const DType dtype = *dtype_from_code(code);
    const uint32_t esize = dtype_size(dtype);
    for (uint64_t n : kCounts) {
      std::vector<std::pair<std::string, std::vector<uint8_t>>> inputs;
      inputs.push_back({"random", test::random_bytes(n * esize, 31 * code + n)});
      if (dtype == DType::BF16) inputs.push_back({"gaussian", test::gaussian_bf16(n, 0.02f, 7 + n)});
      if (dtype == DType::F16) inputs.push_back({"gaussian", test::gaussian_f16(n, 0.02f, 7 + n)});
      if (dtype == DType::F32) inputs.push_back({"gaussian", test::gaussian_f32(n, 0.02f, 7 + n)});
      if (dtype == DType::F64) {  // gaussian F32 values widened to F64
        const auto f = test::gaussian_f32(n, 0.02f, 7 + n);
        std::vector<uint8_t> d(n * 8);
        for (uint64_t i = 0; i < n; ++i) {
          float v;
          std::memcpy(&v, f.data() + 4 * i, 4);
          const double w = v;
          std::memcpy(d.data() + 8 * i, &w, 8);
        }
        inputs.push_back({"gaussian", d});
      }
      // Small integers, the high bytes zero (what integer tensors mostly hold).
      std::vector<uint8_t> small(n * esize, 0);
      const auto r = test::random_bytes(n, 55 + n);
      for (uint64_t i = 0; i < n; ++i) small[i * esize] = r[i] % 17;
      inputs.push_back({"small values", small});
      for (const auto& [kind, bytes] : inputs) {
        INFO(dtype_name(dtype) << ", " << n << " elements, " << kind);
        REQUIRE(bytes.size() == n * esize);
        const double got = lossless_entropy_bytes(dtype, bytes);
        const double expect = reference_lossless_bytes(dtype, bytes);
        INFO("got " << got << ", expected " << expect);
        CHECK(close(got, expect));
        if (n == 0 || n == 1) CHECK(got == 0.0);
      }
    }
  }
}

TEST_CASE("estimate: lossless_entropy_bytes on tensors whose plane entropies are known exactly") {
  // U16 0..65535 each once: both byte planes uniform over 256 values, 8 bits each: 2 bytes/element.
  std::vector<uint8_t> u16(65536 * 2);
  for (uint32_t i = 0; i < 65536; ++i) {
    u16[2 * i] = static_cast<uint8_t>(i);
    u16[2 * i + 1] = static_cast<uint8_t>(i >> 8);
  }
  CHECK(lossless_entropy_bytes(DType::U16, u16) == Approx(65536.0 * 2).epsilon(1e-12));
  // The same bytes as BF16: the rotation maps the 2^16 patterns one to one, so the planes are still
  // uniform (it is the plane split, not the values, that the estimate sees).
  CHECK(lossless_entropy_bytes(DType::BF16, u16) == Approx(65536.0 * 2).epsilon(1e-12));
  // I32 values 0..255 each 257 times (257 * 256 = 65792 elements, past one 65536-element chunk):
  // plane 0 uniform (8 bits), the other three constant (0 bits): 1 byte per element.
  std::vector<uint8_t> i32(65792 * 4, 0);
  for (uint32_t i = 0; i < 65792; ++i) i32[4 * i] = static_cast<uint8_t>(i % 256);
  CHECK(lossless_entropy_bytes(DType::I32, i32) == Approx(65792.0).epsilon(1e-12));
  // BF16 +1.0 and -1.0 (0x3F80, 0xBF80) alternating: rotated left, 0x7F00 and 0x7F01; the exponent
  // plane is constant and the other holds the sign: 1 bit per element. Byteshuffle would also see
  // the sign in the high byte (0x3F vs 0xBF), floatplanes moves it to the low plane: both 1 bit.
  // +1.0 and +2.0 (0x3F80, 0x4000): rotated 0x7F00 and 0x8000, the exponent plane 1 bit, the other
  // constant: 1 bit per element (byteshuffle would give 2: 0x80/0x00 and 0x3F/0x40).
  std::vector<uint8_t> pm(4000), twos(4000);
  for (size_t i = 0; i < 2000; ++i) {
    pm[2 * i] = 0x80, pm[2 * i + 1] = i % 2 ? 0xBF : 0x3F;
    twos[2 * i] = i % 2 ? 0x00 : 0x80, twos[2 * i + 1] = i % 2 ? 0x40 : 0x3F;
  }
  CHECK(lossless_entropy_bytes(DType::BF16, pm) == Approx(2000.0 / 8).epsilon(1e-12));
  CHECK(lossless_entropy_bytes(DType::BF16, twos) == Approx(2000.0 / 8).epsilon(1e-12));
  CHECK(lossless_entropy_bytes(DType::U16, twos) == Approx(2 * 2000.0 / 8).epsilon(1e-12));
  // The floatplanes split differs from byteshuffle's: F16 values whose sign and top mantissa bit vary
  // together with nothing else. 0x0000 and 0x8200: rotated 0x0000 and 0x0401: plane 0 holds 0x00 and
  // 0x04, plane 1 0x00 and 0x01: 2 bits per element (byteshuffle would give 1 bit: 0x00 vs 0x82).
  std::vector<uint8_t> f16(4000);
  for (size_t i = 0; i < 2000; ++i) f16[2 * i] = 0x00, f16[2 * i + 1] = i % 2 ? 0x82 : 0x00;
  CHECK(lossless_entropy_bytes(DType::F16, f16) == Approx(2 * 2000.0 / 8).epsilon(1e-12));
  CHECK(lossless_entropy_bytes(DType::I16, f16) == Approx(2000.0 / 8).epsilon(1e-12));
}
