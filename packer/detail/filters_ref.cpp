// Scalar references for packer/filters.h; see detail/filters_ref.h. Written for obviousness.
#include "packer/detail/filters_ref.h"

#include <cstring>
#include <string>

#include "formats/error.h"

namespace wpack::ref {
namespace {

// Bit `bit` of a little-endian byte string: bit 0 is bit 0 of byte 0, bit 8 is bit 0 of byte 1.
int get_bit(const uint8_t* bytes, uint64_t bit) { return (bytes[bit / 8] >> (bit % 8)) & 1; }
void set_bit(uint8_t* bytes, uint64_t bit, int value) {
  if (value) bytes[bit / 8] = static_cast<uint8_t>(bytes[bit / 8] | (1u << (bit % 8)));
}

// The same checks as the fast paths, written out separately so the reference stands alone.
void check_args(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (elem_size != 1 && elem_size != 2 && elem_size != 4 && elem_size != 8)
    throw Error(ErrorCode::kInvalidArgument, "filter reference: element size " + std::to_string(elem_size) +
                                                 " is not 1, 2, 4 or 8");
  if (filter == Filter::kFloatPlanes && elem_size == 1)
    throw Error(ErrorCode::kInvalidArgument, "filter reference: floatplanes needs an element size of 2, 4 or 8");
  if (filter != Filter::kNone && filter != Filter::kByteShuffle && filter != Filter::kBitShuffle &&
      filter != Filter::kFloatPlanes)
    throw Error(ErrorCode::kInvalidArgument, "filter reference: unknown filter");
  if (in.size() != out.size())
    throw Error(ErrorCode::kInvalidArgument, "filter reference: input is " + std::to_string(in.size()) +
                                                 " bytes but output is " + std::to_string(out.size()));
  if (in.size() % elem_size != 0)
    throw Error(ErrorCode::kInvalidArgument, "filter reference: " + std::to_string(in.size()) +
                                                 " bytes is not a multiple of the element size " +
                                                 std::to_string(elem_size));
}

// Where bit `bit` (little-endian) of element `elem` lands in the filtered output, as a bit index
// into the output. Every filter is a permutation of bits; apply moves input bit (elem, bit) to
// this position and undo moves it back.
uint64_t filtered_bit_position(Filter filter, uint64_t elem_size, uint64_t n, uint64_t elem, uint64_t bit) {
  const uint64_t elem_bits = 8 * elem_size;
  switch (filter) {
    case Filter::kNone:
      return elem * elem_bits + bit;
    case Filter::kByteShuffle: {
      // Plane p = byte p of every element; inside it, element `elem` is byte `elem`.
      const uint64_t byte_in_elem = bit / 8;
      return (byte_in_elem * n + elem) * 8 + bit % 8;
    }
    case Filter::kBitShuffle: {
      const uint64_t n8 = n - n % 8;
      if (elem >= n8) return elem * elem_bits + bit;  // the tail follows unchanged, after the planes
      // Bit plane `bit` is n8/8 bytes = n8 bits; element `elem` is bit `elem` of that plane
      // (bit i of byte j is element 8j+i).
      return bit * n8 + elem;
    }
    case Filter::kFloatPlanes: {
      // Rotate left by one: bit b moves to bit (b+1) mod elem_bits.
      const uint64_t rotated_bit = (bit + 1) % elem_bits;
      // Plane 0 is the most significant byte of the rotated element, plane elem_size-1 the least.
      const uint64_t plane = elem_size - 1 - rotated_bit / 8;
      return (plane * n + elem) * 8 + rotated_bit % 8;
    }
  }
  return 0;  // unreachable: check_args rejected unknown filters
}

}  // namespace

void apply_filter_ref(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out) {
  check_args(filter, elem_size, in, out);
  if (in.empty()) return;
  std::memset(out.data(), 0, out.size());
  const uint64_t n = in.size() / elem_size;
  for (uint64_t elem = 0; elem < n; ++elem) {
    for (uint64_t bit = 0; bit < 8 * uint64_t{elem_size}; ++bit) {
      const int value = get_bit(in.data(), elem * 8 * elem_size + bit);
      set_bit(out.data(), filtered_bit_position(filter, elem_size, n, elem, bit), value);
    }
  }
}

void undo_filter_ref(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out) {
  check_args(filter, elem_size, in, out);
  if (in.empty()) return;
  std::memset(out.data(), 0, out.size());
  const uint64_t n = in.size() / elem_size;
  for (uint64_t elem = 0; elem < n; ++elem) {
    for (uint64_t bit = 0; bit < 8 * uint64_t{elem_size}; ++bit) {
      const int value = get_bit(in.data(), filtered_bit_position(filter, elem_size, n, elem, bit));
      set_bit(out.data(), elem * 8 * elem_size + bit, value);
    }
  }
}

}  // namespace wpack::ref
