// zstd plane codec: round trips, determinism, and malformed frames that must fail with kCorrupt.
#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "formats/error.h"
#include "packer/zstd_codec.h"
#include "test_util.h"

using namespace wpack;

namespace {

template <typename Fn>
ErrorCode error_code_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  FAIL("expected a wpack::Error");
  return ErrorCode::kIo;
}

std::vector<uint8_t> decompress(const std::vector<uint8_t>& frame, size_t size) {
  std::vector<uint8_t> out(size, 0xCD);
  zstd_decompress(frame, out);
  return out;
}

}  // namespace

TEST_CASE("zstd round-trips") {
  const std::vector<std::vector<uint8_t>> inputs = {
      {},
      {42},
      test::random_bytes(1000, 1),
      test::gaussian_bf16(100000, 0.02f, 2),
      std::vector<uint8_t>(1 << 20, 7),
  };
  for (const auto& in : inputs) {
    for (int level : {-5, 1, 3, 19}) {
      INFO(in.size() << " bytes at level " << level);
      const std::vector<uint8_t> frame = zstd_compress(in, level);
      REQUIRE(decompress(frame, in.size()) == in);
      REQUIRE(zstd_compress(in, level) == frame);  // deterministic on a reused thread context
    }
  }
  // Highly compressible input really compresses.
  REQUIRE(zstd_compress(std::vector<uint8_t>(1 << 20, 7), 3).size() < 1000);
}

// The float planes' tuning (ZstdTuning::kMemoryless) at every level: the exponent plane of a
// BF16 tile codes to about its entropy. Every level but 1..3 stored it raw (zstd leaves literals
// uncompressed for the fast strategy with a level's acceleration step).
TEST_CASE("zstd: the memoryless tuning codes an exponent plane at every level") {
  const std::vector<uint8_t> bf16 = test::gaussian_bf16(16384, 0.02f, 9);
  std::vector<uint8_t> exponents(bf16.size() / 2);
  for (size_t i = 0; i < exponents.size(); ++i)  // high byte of each value, sign shifted out
    exponents[i] = static_cast<uint8_t>((bf16[2 * i + 1] << 1) | (bf16[2 * i] >> 7));
  for (int level : {-7, -1, 1, 3, 4, 5, 9, 19}) {
    INFO("level " << level);
    const std::vector<uint8_t> frame = zstd_compress(exponents, level, ZstdTuning::kMemoryless);
    CHECK(frame.size() < exponents.size() / 2);  // ~2.7 bits of entropy a byte
    REQUIRE(decompress(frame, exponents.size()) == exponents);
    REQUIRE(zstd_compress(exponents, level, ZstdTuning::kMemoryless) == frame);
  }
}

TEST_CASE("zstd output does not depend on the thread") {
  const std::vector<uint8_t> in = test::gaussian_bf16(50000, 0.02f, 3);
  const std::vector<uint8_t> here = zstd_compress(in, 5);
  std::vector<uint8_t> there;
  std::thread([&] { there = zstd_compress(in, 5); }).join();
  REQUIRE(here == there);
}

TEST_CASE("zstd refuses levels outside its range") {
  const std::vector<uint8_t> in(10, 1);
  REQUIRE(error_code_of([&] { zstd_compress(in, 0); }) == ErrorCode::kInvalidArgument);
  REQUIRE(error_code_of([&] { zstd_compress(in, 20); }) == ErrorCode::kInvalidArgument);
  REQUIRE(error_code_of([&] { zstd_compress(in, -1000000000); }) == ErrorCode::kInvalidArgument);
}

TEST_CASE("malformed zstd frames fail with kCorrupt") {
  const std::vector<uint8_t> in = test::random_bytes(5000, 4);
  const std::vector<uint8_t> frame = zstd_compress(in, 3);

  SECTION("truncated frame") {
    for (size_t keep : {size_t{0}, size_t{1}, size_t{3}, size_t{4}, size_t{6}, frame.size() / 2, frame.size() - 1}) {
      INFO("kept " << keep << " of " << frame.size() << " bytes");
      const std::vector<uint8_t> truncated(frame.begin(), frame.begin() + keep);
      REQUIRE(error_code_of([&] { decompress(truncated, in.size()); }) == ErrorCode::kCorrupt);
    }
  }
  SECTION("wrong expected size") {
    REQUIRE(error_code_of([&] { decompress(frame, in.size() - 1); }) == ErrorCode::kCorrupt);
    REQUIRE(error_code_of([&] { decompress(frame, in.size() + 1); }) == ErrorCode::kCorrupt);
    REQUIRE(error_code_of([&] { decompress(frame, 0); }) == ErrorCode::kCorrupt);
    const std::vector<uint8_t> empty_frame = zstd_compress({}, 3);
    REQUIRE(error_code_of([&] { decompress(empty_frame, 1); }) == ErrorCode::kCorrupt);
  }
  SECTION("trailing garbage") {
    std::vector<uint8_t> padded = frame;
    padded.push_back(0);
    REQUIRE(error_code_of([&] { decompress(padded, in.size()); }) == ErrorCode::kCorrupt);
    // A second, valid frame after the first is trailing garbage too.
    std::vector<uint8_t> two_frames = frame;
    two_frames.insert(two_frames.end(), frame.begin(), frame.end());
    REQUIRE(error_code_of([&] { decompress(two_frames, in.size()); }) == ErrorCode::kCorrupt);
    REQUIRE(error_code_of([&] { decompress(two_frames, 2 * in.size()); }) == ErrorCode::kCorrupt);
  }
  SECTION("skippable frame is not an empty plane") {
    // Magic 0x184D2A50 (little-endian), then a 4-byte length of 0.
    const std::vector<uint8_t> skippable = {0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0};
    REQUIRE(error_code_of([&] { decompress(skippable, 0); }) == ErrorCode::kCorrupt);
  }
  SECTION("bad magic") {
    std::vector<uint8_t> bad = frame;
    bad[0] ^= 0xFF;
    REQUIRE(error_code_of([&] { decompress(bad, in.size()); }) == ErrorCode::kCorrupt);
  }
}

TEST_CASE("random and mutated frames never crash the decoder") {
  // Each attempt either decodes into exactly the buffer or throws kCorrupt; any other exception
  // or a crash (ASan in WPACK_SANITIZE builds) fails the test.
  const std::vector<uint8_t> in = test::gaussian_bf16(4000, 0.02f, 5);
  const std::vector<uint8_t> frame = zstd_compress(in, 3);
  uint64_t seed = 100;
  auto attempt = [](const std::vector<uint8_t>& bytes, size_t out_size) {
    std::vector<uint8_t> out(out_size);
    try {
      zstd_decompress(bytes, out);
    } catch (const Error& e) {
      REQUIRE(e.code() == ErrorCode::kCorrupt);
    }
  };
  for (int i = 0; i < 2000; ++i) {
    const std::vector<uint8_t> noise = test::random_bytes(seed % 300, seed);
    ++seed;
    attempt(noise, seed % 1000);
    // Noise behind a valid magic number reaches the frame header and block parsers.
    std::vector<uint8_t> with_magic = {0x28, 0xB5, 0x2F, 0xFD};
    with_magic.insert(with_magic.end(), noise.begin(), noise.end());
    attempt(with_magic, seed % 1000);
  }
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> mutated = frame;
    const std::vector<uint8_t> r = test::random_bytes(16, seed++);
    for (int k = 0; k < 1 + r[0] % 4; ++k) {
      const size_t pos = (size_t{r[1 + 3 * k]} << 8 | r[2 + 3 * k]) % mutated.size();
      mutated[pos] ^= static_cast<uint8_t>(r[3 + 3 * k] | 1);
    }
    attempt(mutated, in.size());
  }
}
