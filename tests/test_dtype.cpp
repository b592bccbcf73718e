#include <catch2/catch.hpp>

#include "formats/dtype.h"

using namespace wpack;

TEST_CASE("every dtype round-trips through its name and code") {
  for (uint8_t code = 0; code < 32; ++code) {
    auto d = dtype_from_code(code);
    if (!d) continue;
    REQUIRE(parse_dtype(dtype_name(*d)) == d);
    REQUIRE(dtype_size(*d) >= 1);
  }
  REQUIRE(dtype_size(DType::BF16) == 2);
  REQUIRE(dtype_size(DType::F64) == 8);
  REQUIRE(dtype_size(DType::BOOL) == 1);
  REQUIRE_FALSE(parse_dtype("F128").has_value());
  REQUIRE_FALSE(dtype_from_code(0).has_value());
  REQUIRE_FALSE(dtype_from_code(16).has_value());
}
