// Filters: fast paths against the scalar references (bit-exact, both directions), round trips,
// argument checks, and hand-derived byte vectors that pin the on-disk layout of each filter.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "formats/error.h"
#include "packer/detail/filters_ref.h"
#include "packer/filters.h"
#include "test_util.h"

using namespace wpack;

namespace {

const Filter kAllFilters[] = {Filter::kNone, Filter::kByteShuffle, Filter::kBitShuffle, Filter::kFloatPlanes};
const uint32_t kAllElemSizes[] = {1, 2, 4, 8};
const size_t kCounts[] = {0, 1, 7, 8, 9, 15, 16, 17, 127, 128, 129, 1000, 1024 + 136, 16384 + 3};

bool takes(Filter filter, uint32_t elem_size) { return !(filter == Filter::kFloatPlanes && elem_size == 1); }

std::vector<uint8_t> apply_fast(Filter filter, uint32_t elem_size, const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out(in.size(), 0xCD);
  apply_filter(filter, elem_size, in, out);
  return out;
}
std::vector<uint8_t> undo_fast(Filter filter, uint32_t elem_size, const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out(in.size(), 0xCD);
  undo_filter(filter, elem_size, in, out);
  return out;
}
std::vector<uint8_t> apply_ref(Filter filter, uint32_t elem_size, const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out(in.size(), 0xCD);
  ref::apply_filter_ref(filter, elem_size, in, out);
  return out;
}
std::vector<uint8_t> undo_ref(Filter filter, uint32_t elem_size, const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out(in.size(), 0xCD);
  ref::undo_filter_ref(filter, elem_size, in, out);
  return out;
}

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

}  // namespace

TEST_CASE("filter names and codes round-trip") {
  for (Filter filter : kAllFilters) {
    REQUIRE(parse_filter(filter_name(filter)) == filter);
    REQUIRE(filter_from_code(static_cast<uint8_t>(filter)) == filter);
  }
  // The codes are stored in .wpk files: pinned here.
  REQUIRE(filter_from_code(0) == Filter::kNone);
  REQUIRE(filter_from_code(1) == Filter::kByteShuffle);
  REQUIRE(filter_from_code(2) == Filter::kBitShuffle);
  REQUIRE(filter_from_code(3) == Filter::kFloatPlanes);
  REQUIRE_FALSE(filter_from_code(4).has_value());
  REQUIRE_FALSE(filter_from_code(255).has_value());
  REQUIRE(filter_name(Filter::kFloatPlanes) == "floatplanes");
  REQUIRE_FALSE(parse_filter("shuffle").has_value());
  REQUIRE_FALSE(parse_filter("").has_value());
  REQUIRE_FALSE(parse_filter("None").has_value());
}

TEST_CASE("filter plane counts") {
  for (uint32_t elem_size : kAllElemSizes) {
    REQUIRE(filter_plane_count(Filter::kNone, elem_size) == 1);
    REQUIRE(filter_plane_count(Filter::kBitShuffle, elem_size) == 1);
    REQUIRE(filter_plane_count(Filter::kByteShuffle, elem_size) == elem_size);
    if (elem_size > 1) REQUIRE(filter_plane_count(Filter::kFloatPlanes, elem_size) == elem_size);
  }
}

TEST_CASE("fast filters match the scalar references bit-exactly and round-trip") {
  uint64_t seed = 1;
  for (Filter filter : kAllFilters) {
    for (uint32_t elem_size : kAllElemSizes) {
      if (!takes(filter, elem_size)) continue;
      for (size_t count : kCounts) {
        INFO("filter " << filter_name(filter) << ", element size " << elem_size << ", " << count << " elements");
        const std::vector<uint8_t> data = test::random_bytes(count * elem_size, seed++);

        const std::vector<uint8_t> filtered = apply_fast(filter, elem_size, data);
        REQUIRE(filtered == apply_ref(filter, elem_size, data));
        REQUIRE(undo_fast(filter, elem_size, filtered) == data);
        REQUIRE(undo_ref(filter, elem_size, filtered) == data);

        // Undo is a permutation of arbitrary bytes too: compare it on data that was never filtered.
        REQUIRE(undo_fast(filter, elem_size, data) == undo_ref(filter, elem_size, data));

        // Unaligned buffers (the SIMD paths use unaligned loads and stores).
        if (count > 0) {
          std::vector<uint8_t> in_storage(data.size() + 1), out_storage(data.size() + 3, 0);
          std::memcpy(in_storage.data() + 1, data.data(), data.size());
          std::span<const uint8_t> in(in_storage.data() + 1, data.size());
          std::span<uint8_t> out(out_storage.data() + 3, data.size());
          apply_filter(filter, elem_size, in, out);
          REQUIRE(std::equal(out.begin(), out.end(), filtered.begin()));
          undo_filter(filter, elem_size, std::span<const uint8_t>(out.data(), out.size()),
                      std::span<uint8_t>(in_storage.data() + 1, data.size()));
          REQUIRE(std::equal(in.begin(), in.end(), data.begin()));
        }
      }
    }
  }
}

TEST_CASE("fast filters match the references on gaussian weights") {
  const size_t count = 4096 + 24;
  const std::vector<uint8_t> bf16 = test::gaussian_bf16(count, 0.02f, 11);
  const std::vector<uint8_t> f32 = test::gaussian_f32(count, 0.02f, 12);
  const std::vector<uint8_t> f16 = test::gaussian_f16(count, 0.02f, 13);
  for (Filter filter : kAllFilters) {
    INFO("filter " << filter_name(filter));
    REQUIRE(apply_fast(filter, 2, bf16) == apply_ref(filter, 2, bf16));
    REQUIRE(apply_fast(filter, 4, f32) == apply_ref(filter, 4, f32));
    REQUIRE(apply_fast(filter, 2, f16) == apply_ref(filter, 2, f16));
    REQUIRE(undo_fast(filter, 2, apply_fast(filter, 2, bf16)) == bf16);
    REQUIRE(undo_fast(filter, 4, apply_fast(filter, 4, f32)) == f32);
  }
}

TEST_CASE("floatplanes plane 0 is the exponent of BF16 and F32") {
  for (size_t count : {size_t{1}, size_t{17}, size_t{1000}, size_t{16384 + 3}}) {
    INFO(count << " elements");
    const std::vector<uint8_t> bf16 = test::gaussian_bf16(count, 1.0f, count);
    const std::vector<uint8_t> bf16_planes = apply_fast(Filter::kFloatPlanes, 2, bf16);
    for (size_t i = 0; i < count; ++i) {
      const uint32_t bits = uint32_t{bf16[2 * i]} | (uint32_t{bf16[2 * i + 1]} << 8);
      REQUIRE(bf16_planes[i] == ((bits >> 7) & 0xFF));
    }
    const std::vector<uint8_t> f32 = test::gaussian_f32(count, 1.0f, count + 1);
    const std::vector<uint8_t> f32_planes = apply_fast(Filter::kFloatPlanes, 4, f32);
    for (size_t i = 0; i < count; ++i) {
      uint32_t bits = 0;
      for (int b = 0; b < 4; ++b) bits |= uint32_t{f32[4 * i + b]} << (8 * b);
      REQUIRE(f32_planes[i] == ((bits >> 23) & 0xFF));
    }
  }
}

// Expected bytes below are derived by hand from the layout in packer/filters.h.
TEST_CASE("hand-written vectors pin each filter's layout") {
  auto check = [](Filter filter, uint32_t elem_size, const std::vector<uint8_t>& in, const std::vector<uint8_t>& expected) {
    INFO("filter " << filter_name(filter) << ", element size " << elem_size);
    REQUIRE(apply_fast(filter, elem_size, in) == expected);
    REQUIRE(apply_ref(filter, elem_size, in) == expected);
    REQUIRE(undo_fast(filter, elem_size, expected) == in);
    REQUIRE(undo_ref(filter, elem_size, expected) == in);
  };
  // Two BF16 values, 1.0 = 0x3F80 and -2.0 = 0xC000, little-endian.
  const std::vector<uint8_t> bf16 = {0x80, 0x3F, 0x00, 0xC0};
  check(Filter::kNone, 2, bf16, {0x80, 0x3F, 0x00, 0xC0});
  // Plane 0: low bytes 0x80 0x00; plane 1: high bytes 0x3F 0xC0.
  check(Filter::kByteShuffle, 2, bf16, {0x80, 0x00, 0x3F, 0xC0});
  // Rotated left by one: 0x3F80 -> 0x7F00, 0xC000 -> 0x8001. Plane 0 = high bytes (the exponents
  // 127 and 128), plane 1 = low bytes (mantissa bits, then the sign in bit 0).
  check(Filter::kFloatPlanes, 2, bf16, {0x7F, 0x80, 0x00, 0x01});
  // Fewer than 8 elements: bit shuffle leaves them all unchanged.
  check(Filter::kBitShuffle, 2, bf16, {0x80, 0x3F, 0x00, 0xC0});

  // Two F32 values, 1.0f = 0x3F800000 and -0.0f = 0x80000000. Rotated: 0x7F000000, 0x00000001.
  check(Filter::kFloatPlanes, 4, {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x80},
        {0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01});
  // Two F32 byte-shuffled: plane p = byte p of each.
  check(Filter::kByteShuffle, 4, {0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13},
        {0x00, 0x10, 0x01, 0x11, 0x02, 0x12, 0x03, 0x13});

  // Nine bytes; element i (i < 8) has bits 0..i set. Bit plane b (one byte, bit i = bit b of
  // element i) has bits b..7 set. The ninth element is the tail, unchanged.
  check(Filter::kBitShuffle, 1, {0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF, 0xAA},
        {0xFF, 0xFE, 0xFC, 0xF8, 0xF0, 0xE0, 0xC0, 0x80, 0xAA});
  // Eight 16-bit elements: element 0 = 0x8000 (bit 15), element 7 = 0x0001 (bit 0), others 0.
  // 16 bit planes of one byte each: plane 0 has bit 7 (element 7), plane 15 has bit 0 (element 0).
  check(Filter::kBitShuffle, 2,
        {0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00},
        {0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01});
}

TEST_CASE("filters refuse bad sizes and element sizes") {
  using ApplyFn = void (*)(Filter, uint32_t, std::span<const uint8_t>, std::span<uint8_t>);
  const ApplyFn functions[] = {apply_filter, undo_filter, ref::apply_filter_ref, ref::undo_filter_ref};
  std::vector<uint8_t> in(64, 1), out(64, 0), shorter(63, 0);
  for (ApplyFn fn : functions) {
    for (Filter filter : kAllFilters) {
      INFO("filter " << filter_name(filter));
      // Output size differs from input size.
      REQUIRE(error_code_of([&] { fn(filter, 2, in, shorter); }) == ErrorCode::kInvalidArgument);
      REQUIRE(error_code_of([&] { fn(filter, 2, std::span<const uint8_t>(shorter), out); }) ==
              ErrorCode::kInvalidArgument);
      // Size not a multiple of the element size.
      REQUIRE(error_code_of([&] {
                fn(filter, 8, std::span<const uint8_t>(in.data(), 12), std::span<uint8_t>(out.data(), 12));
              }) == ErrorCode::kInvalidArgument);
      // Element sizes outside 1, 2, 4, 8.
      for (uint32_t bad : {0u, 3u, 16u}) REQUIRE(error_code_of([&] { fn(filter, bad, in, out); }) == ErrorCode::kInvalidArgument);
    }
    REQUIRE(error_code_of([&] { fn(Filter::kFloatPlanes, 1, in, out); }) == ErrorCode::kInvalidArgument);
    REQUIRE(error_code_of([&] { fn(static_cast<Filter>(9), 2, in, out); }) == ErrorCode::kInvalidArgument);
  }
  // The fast paths also refuse overlapping buffers.
  std::vector<uint8_t> buffer(128, 0);
  REQUIRE(error_code_of([&] {
            apply_filter(Filter::kByteShuffle, 2, std::span<const uint8_t>(buffer.data(), 64),
                         std::span<uint8_t>(buffer.data() + 32, 64));
          }) == ErrorCode::kInvalidArgument);
  REQUIRE(error_code_of([&] {
            undo_filter(Filter::kBitShuffle, 2, std::span<const uint8_t>(buffer.data(), 64),
                        std::span<uint8_t>(buffer.data(), 64));
          }) == ErrorCode::kInvalidArgument);
  // Adjacent but not overlapping is fine.
  apply_filter(Filter::kByteShuffle, 2, std::span<const uint8_t>(buffer.data(), 64), std::span<uint8_t>(buffer.data() + 64, 64));
}
