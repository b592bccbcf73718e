// Codec 3, exp4 (packer/exp4.h, docs/FORMAT.md "Codec 3, exp4"): round trips on realistic and
// adversarial tiles, the base rule, the exact stored size, a hand-made byte vector, every corrupt
// case refused by the reference decoder, and the tile-level rules (floatplanes, 2- or 4-byte
// elements, quantized tiles never exp4).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "formats/detail/le.h"
#include "formats/error.h"
#include "packer/exp4.h"
#include "packer/filters.h"
#include "packer/quant_tile.h"
#include "packer/tile_codec.h"
#include "test_util.h"

using namespace wpack;

namespace {

struct Outcome {
  bool threw = false;
  ErrorCode code = ErrorCode::kIo;
  std::string message;
};

template <typename Fn>
Outcome outcome_of(Fn&& fn) {
  Outcome o;
  try {
    fn();
  } catch (const Error& e) {
    o.threw = true;
    o.code = e.code();
    o.message = e.what();
  }
  return o;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The floatplanes planes of raw elements (what exp4 codes).
std::vector<uint8_t> planes_of(const std::vector<uint8_t>& raw, uint32_t esize) {
  std::vector<uint8_t> filtered(raw.size());
  apply_filter(Filter::kFloatPlanes, esize, raw, filtered);
  return filtered;
}

// exp4_decode of `stored` for n elements of esize bytes.
std::vector<uint8_t> decode(const std::vector<uint8_t>& stored, uint32_t esize, uint64_t n) {
  std::vector<uint8_t> out(n * esize, 0xA5);
  exp4_decode(stored, esize, out);
  return out;
}

// The base rule by brute force: the count of plane-0 bytes in [b, b + 15] for every b in [0, 240],
// the first maximum.
uint8_t brute_force_base(const std::vector<uint8_t>& plane0, uint64_t* inside = nullptr) {
  uint64_t best = 0;
  uint8_t best_base = 0;
  for (uint32_t b = 0; b <= 240; ++b) {
    uint64_t count = 0;
    for (uint8_t v : plane0) count += (v >= b && v <= b + 15);
    if (b == 0 || count > best) {
      best = count;
      best_base = static_cast<uint8_t>(b);
    }
  }
  if (inside) *inside = best;
  return best_base;
}

// Encodes, checks size, layout invariants and the round trip; returns the stored bytes.
std::vector<uint8_t> check_round_trip(const std::vector<uint8_t>& raw, uint32_t esize) {
  const uint64_t n = raw.size() / esize;
  const std::vector<uint8_t> filtered = planes_of(raw, esize);
  const std::vector<uint8_t> plane0(filtered.begin(), filtered.begin() + static_cast<std::ptrdiff_t>(n));
  const std::vector<uint8_t> stored = exp4_encode(filtered, esize);
  uint64_t inside = 0;
  const uint8_t base = brute_force_base(plane0, &inside);
  const uint64_t escapes = n - inside;
  REQUIRE(stored.size() >= kExp4HeaderBytes);
  CHECK(stored[0] == base);
  CHECK(detail::load_u32(stored.data() + 4) == escapes);
  CHECK(stored.size() == 16 + (esize - 1) * n + (n + 1) / 2 + 5 * escapes);
  CHECK(stored.size() == exp4_stored_bytes(n, esize, escapes));
  CHECK(stored.size() == exp4_encoded_bytes(plane0, esize));
  CHECK(exp4_choose_base(plane0) == base);
  CHECK(decode(stored, esize, n) == filtered);
  // The whole tile: decode_tile undoes the filter too.
  std::vector<uint8_t> back(raw.size(), 0x5A);
  decode_tile(stored, esize, Filter::kFloatPlanes, Codec::kExp4, back);
  CHECK(back == raw);
  CHECK(exp4_encode(filtered, esize) == stored);  // deterministic
  return stored;
}

std::vector<uint8_t> repeat_element(uint32_t bits, uint32_t esize, uint64_t n) {
  std::vector<uint8_t> raw(n * esize);
  for (uint64_t i = 0; i < n; ++i) std::memcpy(raw.data() + i * esize, &bits, esize);  // little-endian low bytes
  return raw;
}

}  // namespace

TEST_CASE("exp4: realistic BF16 and F32 weights (N(0, 0.02^2)) round-trip bit-exactly") {
  for (uint64_t n : {1u, 2u, 3u, 31u, 128u, 1001u, 128u * 128u}) {
    INFO(n << " elements");
    {
      INFO("BF16");
      const auto stored = check_round_trip(test::gaussian_bf16(n, 0.02f, n), 2);
      if (n == 128 * 128) CHECK(stored.size() < 2 * n * 77 / 100);  // about 12 bits per weight
    }
    {
      INFO("F32");
      check_round_trip(test::gaussian_f32(n, 0.02f, n + 7), 4);
    }
  }
  // Whole tiles through encode_tile: exp4 is kept where it is smaller than the raw bytes.
  const auto raw = test::gaussian_bf16(128 * 128, 0.02f, 5);
  const EncodedTile enc = encode_tile(raw, 2, TileCoding{Filter::kFloatPlanes, Codec::kExp4, 3});
  CHECK(enc.codec == Codec::kExp4);
  CHECK(enc.filter == Filter::kFloatPlanes);
  std::vector<uint8_t> back(raw.size());
  decode_tile(enc.stored, 2, enc.filter, enc.codec, back);
  CHECK(back == raw);
}

TEST_CASE("exp4: adversarial tiles round-trip (all escapes, zeros, NaN/Inf, subnormals, odd n, n = 1, n = 0)") {
  SECTION("nearly every element an escape: each of the 256 exponents twice") {
    std::vector<uint8_t> raw;
    for (uint32_t i = 0; i < 512; ++i) {
      const uint16_t bf16 = static_cast<uint16_t>((((i * 37) & 0xFF) << 7) | (i & 0x7F) | ((i & 1) << 15));
      raw.push_back(static_cast<uint8_t>(bf16));
      raw.push_back(static_cast<uint8_t>(bf16 >> 8));
    }
    const auto stored = check_round_trip(raw, 2);
    CHECK(detail::load_u32(stored.data() + 4) == 512 - 32);  // each exponent twice: 16 values in the window
    // Larger than raw: encode_tile stores it raw.
    const EncodedTile enc = encode_tile(raw, 2, TileCoding{Filter::kFloatPlanes, Codec::kExp4, 3});
    CHECK(enc.codec == Codec::kNone);
    CHECK(enc.filter == Filter::kNone);
    CHECK(enc.stored == raw);
  }
  SECTION("two clusters 128 apart: one of them escapes") {
    std::vector<uint8_t> raw;
    for (uint32_t i = 0; i < 301; ++i) {
      const float v = (i % 3 == 0) ? 1e-30f * float(i + 1) : 0.5f + float(i);
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      for (int b = 0; b < 4; ++b) raw.push_back(static_cast<uint8_t>(bits >> (8 * b)));
    }
    check_round_trip(raw, 4);
  }
  SECTION("zeros, negative zeros") {
    check_round_trip(std::vector<uint8_t>(2 * 77, 0), 2);
    check_round_trip(repeat_element(0x8000, 2, 64), 2);
    check_round_trip(repeat_element(0x80000000u, 4, 33), 4);
  }
  SECTION("NaN and Inf (exponent 255: base 240)") {
    for (uint32_t bits : {0x7F80u, 0xFF80u, 0x7FC0u, 0xFFFFu, 0x7F81u}) {
      INFO(bits);
      const auto stored = check_round_trip(repeat_element(bits, 2, 9), 2);
      CHECK(stored[0] == 240);
      CHECK(detail::load_u32(stored.data() + 4) == 0);
    }
    const auto f32 = check_round_trip(repeat_element(0x7FC00000u, 4, 10), 4);
    CHECK(f32[0] == 240);
    // NaN beside ordinary weights: escapes.
    auto raw = test::gaussian_bf16(257, 0.02f, 9);
    for (size_t i : {0u, 100u, 256u}) {
      raw[2 * i] = 0xC0;
      raw[2 * i + 1] = 0x7F;
    }
    const auto mixed = check_round_trip(raw, 2);
    CHECK(detail::load_u32(mixed.data() + 4) >= 3);
  }
  SECTION("subnormals and the largest finite values together") {
    std::vector<uint8_t> raw;
    for (uint32_t i = 0; i < 41; ++i) {
      const uint16_t bf16 = (i % 2) ? static_cast<uint16_t>(0x0001 + i) : static_cast<uint16_t>(0x7F7F - i);
      raw.push_back(static_cast<uint8_t>(bf16));
      raw.push_back(static_cast<uint8_t>(bf16 >> 8));
    }
    check_round_trip(raw, 2);
  }
  SECTION("n = 1, n = 2, odd n, random bytes") {
    check_round_trip({0x80, 0x3F}, 2);
    check_round_trip({0x00, 0x00, 0x80, 0x3F}, 4);
    for (uint64_t n : {1u, 2u, 3u, 5u, 17u, 255u, 1023u}) {
      INFO(n);
      check_round_trip(test::random_bytes(2 * n, n), 2);
      check_round_trip(test::random_bytes(4 * n, n + 100), 4);
    }
  }
  SECTION("n = 0: a header and nothing else") {
    for (uint32_t esize : {2u, 4u}) {
      const std::vector<uint8_t> stored = exp4_encode({}, esize);
      CHECK(stored == std::vector<uint8_t>(16, 0));
      std::vector<uint8_t> out;
      exp4_decode(stored, esize, out);
      decode_tile(stored, esize, Filter::kFloatPlanes, Codec::kExp4, out);
      const EncodedTile enc = encode_tile({}, esize, TileCoding{Filter::kFloatPlanes, Codec::kExp4, 3});
      CHECK(enc.codec == Codec::kNone);  // 16 bytes are not smaller than 0
      CHECK(enc.stored.empty());
    }
  }
}

TEST_CASE("exp4: the base holds the most elements, the smallest base on a tie, never above 240") {
  const auto base_of = [](std::vector<uint8_t> plane0) { return exp4_choose_base(plane0); };
  CHECK(base_of({}) == 0);
  CHECK(base_of({0}) == 0);
  CHECK(base_of({100}) == 85);  // [85, 100] is the first window holding 100
  CHECK(base_of({100, 101, 115}) == 100);
  CHECK(base_of({255}) == 240);
  CHECK(base_of({250, 251, 3}) == 236);
  // A tie between two clusters too far apart for one window: the smaller base.
  CHECK(base_of({10, 10, 10, 60, 60, 60}) == 0);
  CHECK(base_of({60, 60, 60, 10, 10, 10}) == 0);
  CHECK(base_of({30, 30, 60, 60}) == 15);  // [15, 30] ties [45, 60]: 15
  // More elements win over a smaller base.
  CHECK(base_of({10, 60, 60}) == 45);
  // Against brute force on random planes with clustered values.
  for (uint64_t seed = 0; seed < 200; ++seed) {
    std::vector<uint8_t> plane0 = test::random_bytes(1 + seed % 97, seed);
    for (auto& v : plane0) v = static_cast<uint8_t>(seed % 7 == 0 ? v : (v % 40) + 100 + (seed % 3) * 70);
    INFO("seed " << seed);
    CHECK(exp4_choose_base(plane0) == brute_force_base(plane0));
  }
}

TEST_CASE("exp4: a hand-made tile, byte for byte") {
  // BF16 1.0 (0x3F80), -2.0 (0xC000), +Inf (0x7F80). Rotated left by one bit: 0x7F00, 0x8001,
  // 0xFF00, so plane 0 = {0x7F, 0x80, 0xFF}, plane 1 = {0x00, 0x01, 0x00}. The windows holding
  // 0x7F and 0x80 start at 0x71..0x7F: base 0x71; codes 14 and 15; +Inf's 0xFF escapes.
  const std::vector<uint8_t> raw = {0x80, 0x3F, 0x00, 0xC0, 0x80, 0x7F};
  const std::vector<uint8_t> expected = {
      0x71, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  // base, zeros, E = 1, zeros
      0x00, 0x01, 0x00,                                   // plane 1
      0xFE, 0x00,                                         // codes 14, 15 | 0 (escaped), unused nibble 0
      2, 0, 0, 0,                                         // escape index 2
      0xFF,                                               // escape value
  };
  CHECK(exp4_encode(planes_of(raw, 2), 2) == expected);
  std::vector<uint8_t> back(raw.size());
  decode_tile(expected, 2, Filter::kFloatPlanes, Codec::kExp4, back);
  CHECK(back == raw);
}

TEST_CASE("exp4: the stored size is exactly 16 + (e-1)n + ceil(n/2) + 5E") {
  CHECK(exp4_stored_bytes(0, 2, 0) == 16);
  CHECK(exp4_stored_bytes(1, 2, 0) == 16 + 1 + 1);
  CHECK(exp4_stored_bytes(1, 4, 1) == 16 + 3 + 1 + 5);
  CHECK(exp4_stored_bytes(16384, 2, 3) == 16 + 16384 + 8192 + 15);
  CHECK(exp4_stored_bytes(16385, 4, 0) == 16 + 3 * 16385 + 8193);
  CHECK(outcome_of([] { exp4_stored_bytes(4, 8, 0); }).code == ErrorCode::kInvalidArgument);
  CHECK(outcome_of([] { exp4_stored_bytes(4, 1, 0); }).code == ErrorCode::kInvalidArgument);
  CHECK(outcome_of([] { exp4_stored_bytes(4, 2, 5); }).code == ErrorCode::kInvalidArgument);
  CHECK(outcome_of([] { exp4_stored_bytes(uint64_t{1} << 32, 2, 0); }).code == ErrorCode::kInvalidArgument);
}

TEST_CASE("exp4: every rule of the format is checked, corrupt tiles are refused with kCorrupt") {
  // 33 elements (odd), BF16, three escapes at 4, 20 and 32.
  std::vector<uint8_t> raw = test::gaussian_bf16(33, 0.02f, 3);
  for (size_t i : {4u, 20u, 32u}) {
    raw[2 * i] = 0x80;  // +Inf
    raw[2 * i + 1] = 0x7F;
  }
  const uint64_t n = 33;
  const std::vector<uint8_t> good = exp4_encode(planes_of(raw, 2), 2);
  const uint32_t escapes = detail::load_u32(good.data() + 4);
  REQUIRE(escapes >= 3);
  const uint8_t base = good[0];
  const uint64_t codes = 16 + n, indices = codes + (n + 1) / 2, values = indices + 4 * escapes;
  REQUIRE(good.size() == values + escapes);
  REQUIRE(decode(good, 2, n) == planes_of(raw, 2));
  const uint32_t first_escape = detail::load_u32(good.data() + indices);

  struct Case {
    std::string name;
    std::function<void(std::vector<uint8_t>&)> damage;
    std::string mention;
  };
  const std::vector<Case> cases = {
      {"base 241", [](auto& b) { b[0] = 241; }, "base 241 is above 240"},
      {"base 255", [](auto& b) { b[0] = 255; }, "base 255 is above 240"},
      {"reserved byte 1", [](auto& b) { b[1] = 1; }, "reserved header byte 1"},
      {"reserved byte 3", [](auto& b) { b[3] = 0x80; }, "reserved header byte 3"},
      {"reserved byte 8", [](auto& b) { b[8] = 1; }, "reserved header byte 8"},
      {"reserved byte 15", [](auto& b) { b[15] = 0xFF; }, "reserved header byte 15"},
      {"E > n", [&](auto& b) { detail::store_u32(b.data() + 4, n + 1); }, "34 escapes in a tile of 33 elements"},
      {"E = 2^32 - 1", [](auto& b) { detail::store_u32(b.data() + 4, 0xFFFFFFFFu); }, "4294967295 escapes"},
      {"E one more, same size", [&](auto& b) { detail::store_u32(b.data() + 4, escapes + 1); }, "differs from"},
      {"E one less, same size", [&](auto& b) { detail::store_u32(b.data() + 4, escapes - 1); }, "differs from"},
      {"a byte appended", [](auto& b) { b.push_back(0); }, "differs from"},
      {"the last byte removed", [](auto& b) { b.pop_back(); }, "differs from"},
      {"five bytes appended", [](auto& b) { b.insert(b.end(), 5, 0x7F); }, "differs from"},
      {"shorter than the header", [](auto& b) { b.resize(15); }, "shorter than the 16-byte header"},
      {"empty", [](auto& b) { b.clear(); }, "shorter than the 16-byte header"},
      {"indices not increasing (swapped)",
       [&](auto& b) {
         const uint32_t a = detail::load_u32(b.data() + indices), c = detail::load_u32(b.data() + indices + 4);
         detail::store_u32(b.data() + indices, c);
         detail::store_u32(b.data() + indices + 4, a);
       },
       "does not follow the previous escape's"},
      {"an index repeated",
       [&](auto& b) { detail::store_u32(b.data() + indices + 4, detail::load_u32(b.data() + indices)); },
       "escape 1: index"},
      {"index = n", [&](auto& b) { detail::store_u32(b.data() + indices + 4 * (escapes - 1), n); }, "index 33 is not below 33"},
      {"index 2^32 - 1", [&](auto& b) { detail::store_u32(b.data() + indices, 0xFFFFFFFFu); }, "is not below 33"},
      {"escape value inside the window (base)", [&](auto& b) { b[values] = base; }, "lies in the window"},
      {"escape value inside the window (base + 15)", [&](auto& b) { b[values + 1] = base + 15; }, "lies in the window"},
      {"escaped element with a nonzero code",
       [&](auto& b) { b[codes + first_escape / 2] |= static_cast<uint8_t>(1u << (4 * (first_escape % 2))); },
       "element " + std::to_string(first_escape) + " has a nonzero code"},
      {"odd n, last nibble nonzero", [&](auto& b) { b[indices - 1] |= 0x10; }, "unused last nibble"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    std::vector<uint8_t> bad = good;
    c.damage(bad);
    const Outcome o = outcome_of([&] { decode(bad, 2, n); });
    CHECK(o.threw);
    CHECK(o.code == ErrorCode::kCorrupt);
    CHECK(contains(o.message, c.mention));
    CHECK(o.message.rfind("exp4: ", 0) == 0);
    // Through decode_tile, the same error.
    std::vector<uint8_t> out(2 * n);
    const Outcome t = outcome_of([&] { decode_tile(bad, 2, Filter::kFloatPlanes, Codec::kExp4, out); });
    CHECK(t.code == ErrorCode::kCorrupt);
    CHECK(t.message == o.message);
  }
  // Decoded into the wrong number of elements (the record's raw size disagrees).
  CHECK(outcome_of([&] { decode(good, 2, n - 1); }).code == ErrorCode::kCorrupt);
  CHECK(outcome_of([&] { decode(good, 2, n + 1); }).code == ErrorCode::kCorrupt);
  CHECK(outcome_of([&] { decode(good, 4, n); }).code == ErrorCode::kCorrupt);
}

TEST_CASE("exp4: any single damaged byte either decodes or is refused with kCorrupt") {
  // Every byte of a tile with escapes, set to a few values: never another error, never out of
  // bounds (the ASan build checks the latter).
  std::vector<uint8_t> raw = test::gaussian_f32(21, 0.02f, 8);
  raw[4 * 7 + 3] = 0x7F;
  raw[4 * 7 + 2] = 0x80;
  const std::vector<uint8_t> good = exp4_encode(planes_of(raw, 4), 4);
  uint64_t refused = 0;
  for (size_t pos = 0; pos < good.size(); ++pos)
    for (uint8_t value : {uint8_t{0}, uint8_t{1}, uint8_t{0x0F}, uint8_t{0x10}, uint8_t{0xF0}, uint8_t{0xFF}}) {
      std::vector<uint8_t> bad = good;
      bad[pos] = value;
      const Outcome o = outcome_of([&] { decode(bad, 4, 21); });
      if (o.threw) {
        CHECK(o.code == ErrorCode::kCorrupt);
        ++refused;
      }
    }
  CHECK(refused > 0);
}

TEST_CASE("exp4: floatplanes and 2- or 4-byte elements only, quantized tiles never exp4") {
  const auto raw = test::gaussian_bf16(256, 0.02f, 4);
  for (Filter f : {Filter::kNone, Filter::kByteShuffle, Filter::kBitShuffle}) {
    INFO(filter_name(f));
    CHECK(outcome_of([&] { encode_tile(raw, 2, TileCoding{f, Codec::kExp4, 3}); }).code == ErrorCode::kInvalidArgument);
    const std::vector<uint8_t> stored = exp4_encode(planes_of(raw, 2), 2);
    std::vector<uint8_t> out(raw.size());
    const Outcome o = outcome_of([&] { decode_tile(stored, 2, f, Codec::kExp4, out); });
    CHECK(o.code == ErrorCode::kCorrupt);
    CHECK(contains(o.message, "exp4 takes floatplanes only"));
  }
  const auto f64 = test::random_bytes(8 * 64, 5);
  CHECK(outcome_of([&] { encode_tile(f64, 8, TileCoding{Filter::kFloatPlanes, Codec::kExp4, 3}); }).code ==
        ErrorCode::kInvalidArgument);
  CHECK(outcome_of([&] { exp4_encode(f64, 8); }).code == ErrorCode::kInvalidArgument);
  CHECK(outcome_of([&] { exp4_encode(std::vector<uint8_t>(5), 2); }).code == ErrorCode::kInvalidArgument);
  for (uint32_t esize : {1u, 8u}) {
    INFO(esize);
    std::vector<uint8_t> out(8 * 64);
    const Outcome o = outcome_of([&] { decode_tile(std::vector<uint8_t>(600), esize, Filter::kFloatPlanes, Codec::kExp4, out); });
    CHECK(o.code == ErrorCode::kCorrupt);
    CHECK(outcome_of([&] { exp4_decode(std::vector<uint8_t>(600), esize, out); }).code == ErrorCode::kCorrupt);
  }
  // Quantized tiles: the encoders refuse exp4, the reference decoder calls it corrupt.
  QuantTileEncoder encoder;
  CHECK(outcome_of([&] { encoder.code(Codec::kExp4, 1); }).code == ErrorCode::kInvalidArgument);
  float out[4];
  const Outcome q = outcome_of([&] {
    decode_quant_tile_ref(std::vector<uint8_t>(16), kFilterQuantDense, Codec::kExp4, 8, QuantTensorParams{}, TileRect{0, 0, 2, 2}, out);
  });
  CHECK(q.code == ErrorCode::kCorrupt);
  CHECK(contains(q.message, "codec exp4 in a quantized tile"));
}

TEST_CASE("exp4: codec name and code") {
  CHECK(codec_name(Codec::kExp4) == "exp4");
  CHECK(parse_codec("exp4") == Codec::kExp4);
  CHECK(codec_from_code(3) == Codec::kExp4);
  CHECK(!codec_from_code(4).has_value());
  CHECK(static_cast<uint8_t>(Codec::kExp4) == 3);
}
