// formats/dtype.h: the on-disk dtype codes (docs/FORMAT.md, "code | dtype | bytes"), names, sizes,
// and the float classification. The expected values below are copied from the specification
// (docs/FORMAT.md's dtype table and the comments of formats/dtype.h), not from the code's output.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "formats/dtype.h"

using namespace wpack;

namespace {

struct Expected {
  uint8_t code;
  DType dtype;
  const char* name;
  uint32_t size;
  bool is_float;           // dtype.h: F64/F32/F16/BF16 only
  uint32_t exponent_bits;  // dtype.h: F64 11, F32 8, F16 5, BF16 8, E4M3 4, E5M2 5, else 0
};

const Expected kExpected[] = {
    {1, DType::F64, "F64", 8, true, 11},          {2, DType::F32, "F32", 4, true, 8},
    {3, DType::F16, "F16", 2, true, 5},           {4, DType::BF16, "BF16", 2, true, 8},
    {5, DType::F8_E4M3, "F8_E4M3", 1, false, 4},  {6, DType::F8_E5M2, "F8_E5M2", 1, false, 5},
    {7, DType::I64, "I64", 8, false, 0},          {8, DType::I32, "I32", 4, false, 0},
    {9, DType::I16, "I16", 2, false, 0},          {10, DType::I8, "I8", 1, false, 0},
    {11, DType::U64, "U64", 8, false, 0},         {12, DType::U32, "U32", 4, false, 0},
    {13, DType::U16, "U16", 2, false, 0},         {14, DType::U8, "U8", 1, false, 0},
    {15, DType::BOOL, "BOOL", 1, false, 0},
};

}  // namespace

TEST_CASE("dtype: every on-disk code maps to its dtype, name and size") {
  for (const Expected& e : kExpected) {
    INFO("code " << int{e.code} << " (" << e.name << ")");
    CHECK(static_cast<uint8_t>(e.dtype) == e.code);  // the enum value is the stored byte
    const auto d = dtype_from_code(e.code);
    REQUIRE(d.has_value());
    CHECK(*d == e.dtype);
    CHECK(dtype_name(e.dtype) == e.name);
    CHECK(dtype_size(e.dtype) == e.size);
    CHECK(parse_dtype(e.name) == e.dtype);
  }
  // The names are distinct.
  std::set<std::string> names;
  for (const Expected& e : kExpected) names.insert(e.name);
  CHECK(names.size() == std::size(kExpected));
}

TEST_CASE("dtype: codes that name no dtype give nullopt") {
  for (unsigned code = 0; code < 256; ++code) {
    INFO("code " << code);
    const bool known = code >= 1 && code <= 15;
    CHECK(dtype_from_code(static_cast<uint8_t>(code)).has_value() == known);
  }
}

TEST_CASE("dtype: unknown and mis-spelled names give nullopt") {
  for (const char* name : {"", "F128", "f32", "bf16", "FP32", "BFLOAT16", "F8", "F8_E4M3FN", "U128", "BOOL ", " F32",
                           "INT8"}) {
    INFO("'" << name << "'");
    CHECK_FALSE(parse_dtype(name).has_value());
  }
  CHECK_FALSE(parse_dtype(std::string_view("F32\0", 4)).has_value());  // no prefix match
  CHECK_FALSE(parse_dtype("F3").has_value());
}

TEST_CASE("dtype: dtype_is_float, dtype_holds_floats and dtype_exponent_bits for every dtype") {
  for (const Expected& e : kExpected) {
    INFO(e.name);
    CHECK(dtype_is_float(e.dtype) == e.is_float);
    const std::string_view name = e.name;
    CHECK(dtype_holds_floats(e.dtype) == (e.is_float || name == "F8_E4M3" || name == "F8_E5M2"));
    CHECK(dtype_exponent_bits(e.dtype) == e.exponent_bits);
    // IEEE-like layouts: 1 sign bit + exponent + mantissa fill the element.
    if (e.exponent_bits) CHECK(e.exponent_bits + 1 < 8 * dtype_size(e.dtype));
  }
}
