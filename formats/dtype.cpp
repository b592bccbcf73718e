#include "formats/dtype.h"

#include <array>

namespace wpack {
namespace {

struct DTypeRow {
  DType dtype;
  std::string_view name;
  uint32_t size;
  uint32_t exponent_bits;
};

constexpr std::array<DTypeRow, 15> kRows = {{
    {DType::F64, "F64", 8, 11},     {DType::F32, "F32", 4, 8},       {DType::F16, "F16", 2, 5},
    {DType::BF16, "BF16", 2, 8},    {DType::F8_E4M3, "F8_E4M3", 1, 4}, {DType::F8_E5M2, "F8_E5M2", 1, 5},
    {DType::I64, "I64", 8, 0},      {DType::I32, "I32", 4, 0},       {DType::I16, "I16", 2, 0},
    {DType::I8, "I8", 1, 0},        {DType::U64, "U64", 8, 0},       {DType::U32, "U32", 4, 0},
    {DType::U16, "U16", 2, 0},      {DType::U8, "U8", 1, 0},         {DType::BOOL, "BOOL", 1, 0},
}};

const DTypeRow& row(DType dtype) {
  for (const auto& r : kRows)
    if (r.dtype == dtype) return r;
  return kRows[0];  // unreachable for valid enum values
}

}  // namespace

uint32_t dtype_size(DType dtype) { return row(dtype).size; }
std::string_view dtype_name(DType dtype) { return row(dtype).name; }
uint32_t dtype_exponent_bits(DType dtype) { return row(dtype).exponent_bits; }

bool dtype_is_float(DType dtype) {
  return dtype == DType::F64 || dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}
bool dtype_holds_floats(DType dtype) { return row(dtype).exponent_bits != 0; }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& r : kRows)
    if (r.name == name) return r.dtype;
  return std::nullopt;
}

std::optional<DType> dtype_from_code(uint8_t code) {
  for (const auto& r : kRows)
    if (static_cast<uint8_t>(r.dtype) == code) return r.dtype;
  return std::nullopt;
}

}  // namespace wpack
