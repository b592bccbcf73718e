// Reversible byte filters applied to a tile's raw bytes before entropy coding.
//
// Every filter maps n elements of `elem_size` bytes (n * elem_size bytes in) to exactly as many
// bytes out, and splits its output into planes that the codec then codes separately:
//
//   kNone         1 plane: the bytes unchanged.
//   kByteShuffle  elem_size planes of n bytes; plane p holds byte p (little-endian order, p = 0 is
//                 the least significant byte) of every element, elements in order.
//   kBitShuffle   1 plane. The first n8 = n - n % 8 elements are transposed as one bit matrix:
//                 bit plane b (b = 0 .. 8*elem_size-1, bit b of the little-endian element) is
//                 n8/8 bytes, and bit i of byte j of that plane is bit b of element 8j+i. Planes
//                 in order of b. The last n % 8 elements follow unchanged.
//   kFloatPlanes  elem_size planes of n bytes, for IEEE-like floats: each element is rotated left
//                 by one bit (sign moves to bit 0, the exponent to the top bits), then plane 0 holds
//                 the most significant byte of every element, plane 1 the next, and so on. For BF16
//                 and F32 plane 0 is exactly the 8 exponent bits; for F16 the 5 exponent bits with
//                 the sign and 2 mantissa bits; for F64 the top 8 of the 11 exponent bits.
//
// The numeric values are stored in .wpk files (docs/FORMAT.md): never renumber.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace wpack {

enum class Filter : uint8_t { kNone = 0, kByteShuffle = 1, kBitShuffle = 2, kFloatPlanes = 3 };

// Filter-byte values of the tiles of lossy (quantized) tensors. They name a tile layout, not a byte
// transform: such tiles are never passed to apply_filter/undo_filter/filter_plane_count (which,
// like filter_from_code, know only the lossless filters above); packer/quant_tile.h codes them.
//   4 quant_dense   2 planes: side data; the codes of every element
//   5 quant_sparse  2 planes: side data + occupancy bitmap; the codes of the occupied elements
//   6 quant_dense_zrel  2 planes: side data; (code - zero) mod 2^bits of every element (rANS-coded
//                   tiles of tensors with zero points only; format v3). Its constant,
//                   kFilterQuantDenseZeroRel, is in packer/quant_tile.h.
inline constexpr uint8_t kFilterQuantDense = 4;
inline constexpr uint8_t kFilterQuantSparse = 5;

std::string_view filter_name(Filter filter);  // "none", "byteshuffle", "bitshuffle", "floatplanes"
std::optional<Filter> parse_filter(std::string_view name);
std::optional<Filter> filter_from_code(uint8_t code);

// Number of planes the filter splits its output into (1, or elem_size for byte/float planes).
uint32_t filter_plane_count(Filter filter, uint32_t elem_size);

// Forward and inverse transforms. `in` and `out` have the same size, a multiple of elem_size
// (1, 2, 4 or 8), and must not overlap. Throws Error(kInvalidArgument) on a size mismatch or an
// element size the filter does not take (kFloatPlanes: 2, 4, 8).
// These are the fast paths; detail/filters_ref.h has the scalar references they are tested against.
void apply_filter(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out);
void undo_filter(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace wpack
