// Element types of the safetensors specification, as wpack names and stores them.
// The numeric values are stored in .wpk files (docs/FORMAT.md): never renumber.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace wpack {

enum class DType : uint8_t {
  F64 = 1, F32 = 2, F16 = 3, BF16 = 4, F8_E4M3 = 5, F8_E5M2 = 6,
  I64 = 7, I32 = 8, I16 = 9, I8 = 10, U64 = 11, U32 = 12, U16 = 13, U8 = 14, BOOL = 15,
};

// Bytes per element (BOOL is one byte, as in safetensors).
uint32_t dtype_size(DType dtype);
// The safetensors spelling: "F32", "BF16", "F8_E4M3", ...
std::string_view dtype_name(DType dtype);
// Parses the safetensors spelling; nullopt for an unknown name.
std::optional<DType> parse_dtype(std::string_view name);
// From the stored byte; nullopt for a value that names no dtype.
std::optional<DType> dtype_from_code(uint8_t code);
// True for F64/F32/F16/BF16 (IEEE-like layout: sign, exponent, mantissa): the dtypes a lossy
// scheme quantizes.
bool dtype_is_float(DType dtype);
// True for every dtype of float values: those above and FP8 E4M3/E5M2 (packer/quantize.h
// convert_to_f32 reads them all).
bool dtype_holds_floats(DType dtype);
// Exponent width in bits for the float dtypes (F64 11, F32 8, F16 5, BF16 8, E4M3 4, E5M2 5), else 0.
uint32_t dtype_exponent_bits(DType dtype);

}  // namespace wpack
