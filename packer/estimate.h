// Order-0 entropy estimates: the lossless bound that `inspect` prints for an unpacked model and
// that the benchmarks compare the packed size with.
#pragma once

#include <cstdint>
#include <span>

#include "formats/dtype.h"

namespace wpack {

// Shannon entropy of the byte histogram, in bits per byte (0 for empty input).
double order0_entropy_bits(std::span<const uint8_t> bytes);

// Bytes an ideal order-0 coder needs for a tensor coded plane by plane: the tensor is split into
// byte planes (float-plane layout for F16/BF16/F32/F64, byte planes otherwise, packer/filters.h)
// and each plane costs H(plane) * elements / 8 bytes. For BF16 this is the bound
// (H(exponent byte) + H(sign/mantissa byte)) per element, at most H(exponent) + 8 bits.
double lossless_entropy_bytes(DType dtype, std::span<const uint8_t> bytes);

}  // namespace wpack
